//! Starting the command from a supervisor the way `posix_spawn` does: a child that shares
//! the supervisor's memory (`clone` with `CLONE_VM | CLONE_VFORK`, the supervisor waiting
//! until it has exec'd), so that nothing of the supervisor is copied. `posix_spawn` itself
//! cannot ask for PR_SET_PDEATHSIG, which the command needs; a `fork` would copy the
//! supervisor's page tables only for the `exec` to drop them.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

/// The room the child has for its stack: `execvp`'s search of `PATH` and its fallback
/// to `/bin/sh` for a script without `#!` keep copies of the name and arguments there.
const STACK: usize = 64 * 1024;

/// What the child is given, and where it says why it failed.
struct Child {
    /// The arguments, NULL-terminated, the program first.
    argv: Vec<*const libc::c_char>,
    /// Its stdout and stderr.
    out: libc::c_int,
    /// /dev/null, its stdin.
    null: libc::c_int,
    /// The errno of the step that failed (0: none).
    errno: libc::c_int,
}

/// Starts `argv` (the program found on `PATH` as `execvp` does) in a process group of its
/// own, with stdin /dev/null, stdout and stderr `out`, an empty signal mask, and
/// PR_SET_PDEATHSIG = SIGKILL (should the supervisor be killed, the command goes too), in
/// this process's folder and environment. Returns its pid.
pub(crate) fn spawn(argv: &[OsString], out: &OwnedFd) -> std::io::Result<i32> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.clone().into_vec()))
        .collect::<Result<_, _>>()
        .map_err(|_| std::io::Error::other("an argument holds a NUL byte"))?;
    if args.is_empty() {
        return Err(std::io::Error::other("the command is empty"));
    }
    let null = std::fs::File::open("/dev/null")?;
    let mut child = Child {
        argv: args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        out: out.as_raw_fd(),
        null: null.as_raw_fd(),
        errno: 0,
    };
    let bytes: usize = args.iter().map(|a| a.as_bytes().len() + 16).sum();
    let mut stack = vec![0u8; STACK + 2 * bytes];
    // The stack grows down from its (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs `start` on its own stack, sharing our memory while we wait
    // (CLONE_VFORK) until it has exec'd or exited; it only makes async-signal-safe calls,
    // reads `child` and writes its `errno`. Signals stay blocked until just before the
    // exec (they are blocked in the supervisor), so no handler of ours runs in it.
    let pid = unsafe {
        libc::clone(
            start,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut child as *mut Child as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the child has exec'd or exited: nothing writes `child` any more.
    let errno = unsafe { std::ptr::read_volatile(&child.errno) };
    drop(stack);
    if errno != 0 {
        // SAFETY: reaps our own child, which exited; the status is not read.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    Ok(pid)
}

/// The child: sets itself up, then execs; on failure records errno and exits 127.
extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Child` of `spawn`, alive while it waits for us; every call is
    // async-signal-safe.
    unsafe {
        let child = &mut *(arg as *mut Child);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        // The supervisor ignores SIGPIPE (as every Rust program does), and glibc's two
        // internal signals (`posix_spawn` ignores them in the server it starts); a command
        // starts with them at their default (`yes | head` ends by SIGPIPE). What `pipe`
        // itself ignores (under `nohup`, SIGHUP) stays ignored. Dispositions are this
        // child's own: it does not share the supervisor's.
        let ok = [libc::SIGPIPE, 32, 33]
            .into_iter()
            .all(|s| default_action(s) == 0)
            && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0
            && libc::setpgid(0, 0) == 0
            && libc::dup2(child.null, 0) >= 0
            && libc::dup2(child.out, 1) >= 0
            && libc::dup2(child.out, 2) >= 0
            && libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == 0;
        if ok {
            libc::execvp(*child.argv.as_ptr(), child.argv.as_ptr());
        }
        let errno = *libc::__errno_location();
        std::ptr::write_volatile(&mut child.errno, if errno == 0 { libc::EIO } else { errno });
        libc::_exit(127)
    }
}

/// Sets the action of signal `sig` to its default with the system call itself (glibc's
/// `sigaction` refuses its internal signals, 32 and 33); 0 on success.
///
/// # Safety
/// Changes this process's signal dispositions.
unsafe fn default_action(sig: libc::c_int) -> libc::c_long {
    /// The kernel's `struct sigaction` (x86-64 and aarch64 layout).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a valid action of the kernel's layout, no old action asked for, and the
    // kernel's signal set size.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &act as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            std::mem::size_of::<u64>(),
        )
    }
}
