//! Starting a command from a supervisor the way `posix_spawn` does: a child that shares
//! the supervisor's memory (`clone` with `CLONE_VM | CLONE_VFORK`, the supervisor waiting
//! until it has exec'd), so that nothing of the supervisor is copied. `posix_spawn` itself
//! cannot ask for PR_SET_PDEATHSIG, which the command needs; a `fork` would copy the
//! supervisor's page tables only for the `exec` to drop them.
//!
//! Everything the child needs is prepared before: the arguments, the environment (the
//! supervisor's own, with the request's variables set), and where to look for the program
//! (as `execvp` does, but on the `PATH` of that environment). The supervisor's own folder
//! and environment never change, so it can take the next request as it was.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::protocol::Request;

/// The room the child has for its stack (it calls only a few system calls).
const STACK: usize = 32 * 1024;

/// Where `execvp` looks when `PATH` is not set.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What the child is given, and where it says why it failed.
struct Child {
    /// The files to try, in order: the program itself when its name holds a `/`, else
    /// each folder of `PATH` joined to it.
    candidates: Vec<*const libc::c_char>,
    /// The arguments, NULL-terminated, the program first.
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh`, a slot for the file found, then the arguments after the program,
    /// NULL-terminated: for a file that is not an executable format (a script without
    /// `#!`), run by the shell as `execvp` does.
    sh_argv: Vec<*const libc::c_char>,
    /// The environment, NULL-terminated `NAME=value` strings.
    envp: Vec<*const libc::c_char>,
    /// The folder to run in (NULL: the supervisor's).
    dir: *const libc::c_char,
    /// Its stdout and stderr.
    out: libc::c_int,
    /// /dev/null, its stdin.
    null: libc::c_int,
    /// The errno of the step that failed (0: none).
    errno: libc::c_int,
    /// Whether the step that failed was entering `dir`.
    in_dir: bool,
}

/// Starts `request`'s command in a process group of its own, in its folder, with
/// `base_env` and its variables, stdin `null` (/dev/null), stdout and stderr `out`, an empty
/// signal mask, and PR_SET_PDEATHSIG = SIGKILL (should the supervisor be killed, the
/// command goes too). Returns its pid.
pub(crate) fn spawn(
    request: &Request,
    base_env: &[(OsString, OsString)],
    out: &OwnedFd,
    null: &OwnedFd,
) -> std::io::Result<i32> {
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| std::io::Error::other("a NUL byte in the command"))
    };
    let args: Vec<CString> = request
        .argv
        .iter()
        .map(|a| c(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let Some(program) = args.first() else {
        return Err(std::io::Error::other("the command is empty"));
    };
    let env = environment(base_env, &request.env);
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()?;
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(OsStr::new(DEFAULT_PATH), |(_, v)| v.as_os_str());
    let candidates: Vec<CString> = candidates(program.as_bytes(), path.as_bytes())
        .iter()
        .map(|p| c(p))
        .collect::<Result<_, _>>()?;
    let dir = request
        .dir
        .as_ref()
        .map(|d| c(d.as_os_str().as_bytes()))
        .transpose()?;
    let sh = c(b"/bin/sh")?;
    let terminated = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let mut child = Child {
        candidates: candidates.iter().map(|a| a.as_ptr()).collect(),
        argv: terminated(&args),
        sh_argv: [sh.as_ptr(), std::ptr::null()]
            .into_iter()
            .chain(args[1..].iter().map(|a| a.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        envp: terminated(&envp),
        dir: dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
        out: out.as_raw_fd(),
        null: null.as_raw_fd(),
        errno: 0,
        in_dir: false,
    };
    // Not initialized: only the child writes there, before it reads.
    let mut stack = Vec::<u8>::with_capacity(STACK);
    // The stack grows down from its (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + stack.capacity()) & !15;
    // SAFETY: the child runs `start` on its own stack, sharing our memory while we wait
    // (CLONE_VFORK) until it has exec'd or exited; it only makes async-signal-safe calls,
    // reads `child` and writes its `errno`, `in_dir` and the slot of `sh_argv`. Signals
    // stay blocked until just before the exec (they are blocked in the supervisor), so no
    // handler of ours runs in it.
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
    let (errno, in_dir) = unsafe {
        (
            std::ptr::read_volatile(&child.errno),
            std::ptr::read_volatile(&child.in_dir),
        )
    };
    drop(stack);
    if errno != 0 {
        // SAFETY: reaps our own child, which exited; the status is not read.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let e = std::io::Error::from_raw_os_error(errno);
        return Err(match (&request.dir, in_dir) {
            (Some(d), true) => std::io::Error::new(e.kind(), format!("{}: {e}", d.display())),
            _ => e,
        });
    }
    Ok(pid)
}

/// `base` with `set` applied in order (a later value of a name wins), in `base`'s order
/// then that of the new names.
fn environment(
    base: &[(OsString, OsString)],
    set: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = base.to_vec();
    for (k, v) in set {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(entry) => entry.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// The files `execvp` tries for `program` on `path`: the program itself when its name
/// holds a `/`, else each folder of `path` joined to it (an empty folder is the current
/// one).
fn candidates(program: &[u8], path: &[u8]) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    if program.is_empty() {
        return Vec::new();
    }
    path.split(|b| *b == b':')
        .map(|dir| match dir {
            b"" => program.to_vec(),
            _ => [dir, b"/", program].concat(),
        })
        .collect()
}

/// The child: sets itself up, then execs the first candidate that can be; on failure
/// records errno and exits 127.
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
            && libc::setpgid(0, 0) == 0;
        if ok && !child.dir.is_null() && libc::chdir(child.dir) != 0 {
            child.in_dir = true;
        } else if ok
            && libc::dup2(child.null, 0) >= 0
            && libc::dup2(child.out, 1) >= 0
            && libc::dup2(child.out, 2) >= 0
            && libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == 0
        {
            exec_first(child);
        }
        let errno = *libc::__errno_location();
        std::ptr::write_volatile(&mut child.errno, if errno == 0 { libc::EIO } else { errno });
        libc::_exit(127)
    }
}

/// Execs the first candidate that can be, as `execvp` does: a folder where the file is
/// missing is passed over, as is one where it may not be run (EACCES, reported if no
/// other is found); a file that is not an executable format is run by `/bin/sh`. Returns
/// only on failure, errno set.
///
/// # Safety
/// In the child of [`spawn`], with its `Child`.
unsafe fn exec_first(child: &mut Child) {
    // SAFETY: the pointers are the NULL-terminated arrays of C strings `spawn` made.
    unsafe {
        let mut denied = false;
        let mut last = libc::ENOENT;
        for &file in &child.candidates {
            libc::execve(file, child.argv.as_ptr(), child.envp.as_ptr());
            match *libc::__errno_location() {
                libc::ENOEXEC => {
                    *child.sh_argv.as_mut_ptr().add(1) = file;
                    libc::execve(
                        *child.sh_argv.as_ptr(),
                        child.sh_argv.as_ptr(),
                        child.envp.as_ptr(),
                    );
                    return;
                }
                libc::EACCES => denied = true,
                e @ (libc::ENOENT
                | libc::ENOTDIR
                | libc::ESTALE
                | libc::ENODEV
                | libc::ETIMEDOUT) => last = e,
                _ => return,
            }
        }
        *libc::__errno_location() = if denied { libc::EACCES } else { last };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_looked_for_as_execvp_does() {
        assert_eq!(
            candidates(b"./run.sh", b"/bin:/usr/bin"),
            vec![b"./run.sh".to_vec()]
        );
        assert_eq!(candidates(b"/x/y", b"/bin"), vec![b"/x/y".to_vec()]);
        assert_eq!(
            candidates(b"sh", b"/a::/b"),
            vec![b"/a/sh".to_vec(), b"sh".to_vec(), b"/b/sh".to_vec()]
        );
        assert!(candidates(b"", b"/bin").is_empty());
    }

    #[test]
    fn the_requests_variables_are_set_on_the_base_environment() {
        let os = |v: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
            v.iter().map(|(k, v)| (k.into(), v.into())).collect()
        };
        let env = environment(
            &os(&[("HOME", "/h"), ("PATH", "/bin"), ("X", "1")]),
            &os(&[("PATH", "/opt"), ("NEW", "a"), ("X", "2"), ("NEW", "b")]),
        );
        assert_eq!(
            env,
            os(&[("HOME", "/h"), ("PATH", "/opt"), ("X", "2"), ("NEW", "b")])
        );
    }
}
