//! The reaper: a small supervisor process between `pipe` and each command a stage starts,
//! so that no descendant of the command outlives it, whatever the descendant does (a new
//! process group, a new session, a double fork) and however `pipe` ends (`kill -9`).
//!
//! The `pipe` binary runs it as `pipe-reap __reap PPID` (the small binary beside it,
//! [`BINARY`]; or, without it, as `pipe __reap PPID`), with the command's arguments as a
//! JSON list in `PIPE_REAP_ARGV` (not on its own command line, so that `ps` and `pgrep -f`
//! show the command once), see [`Supervised`](super::Supervised). It makes itself a child subreaper, so that every
//! orphaned descendant of the command becomes its child; starts the command in a process
//! group of its own; and when the command exits, or on SIGTERM, SIGINT or SIGHUP (`pipe`
//! stops it, or dies: the reaper sets PR_SET_PDEATHSIG = SIGTERM first thing, then checks
//! that its parent is still PPID), kills the
//! command's group, then each of its children with SIGKILL, again and again as orphans are
//! handed to it, until it has none. Only then does it tell `pipe` the command's wait status
//! (a line on its stdin, which `pipe` opens as the write end of a pipe; the command gets
//! /dev/null there) and exit. Linux only.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The first argument that starts the `pipe` binary as a reaper.
pub(super) const ARG: &str = "__reap";

/// The variable that holds the command's arguments (a JSON list of strings).
pub(super) const ARGV_VAR: &str = "PIPE_REAP_ARGV";

/// The small binary that holds only the reaper, installed beside `pipe`.
pub(super) const BINARY: &str = "pipe-reap";

/// The program to start as a reaper: [`BINARY`] beside this binary when it is there (it
/// loads in a fraction of the time the whole `pipe` binary takes, and one starts per
/// command), else this binary itself.
pub(super) fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .map(|exe| exe.with_file_name(BINARY))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
    })
}

/// Whether this binary can be started as a reaper (it called [`reaper_main`]).
pub(super) static ENABLED: AtomicBool = AtomicBool::new(false);

/// Call first in `main` of a binary that runs stages: when the process was started as a
/// reaper it supervises the command and returns the exit code to end with; otherwise it
/// notes that this binary can be one (commands are then started through it) and returns
/// `None`.
pub fn reaper_main() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(ARG)) {
        ENABLED.store(true, Ordering::SeqCst);
        return None;
    }
    let args: Vec<OsString> = args.collect();
    let argv = std::env::var(ARGV_VAR).unwrap_or_default();
    match parse(&args, &argv) {
        Some((ppid, argv)) => Some(reap(ppid, &argv)),
        None => {
            eprintln!(
                "pipe {ARG}: internal; usage: {ARGV_VAR}='[\"COMMAND\", ...]' pipe {ARG} PPID <&STATUS_FD"
            );
            Some(2)
        }
    }
}

/// `PPID` and the JSON list of arguments -> the expected parent and the command.
fn parse(args: &[OsString], argv: &str) -> Option<(i32, Vec<String>)> {
    let [ppid] = args else {
        return None;
    };
    let ppid = ppid.to_str()?.parse::<i32>().ok().filter(|n| *n > 1)?;
    let argv: Vec<String> = serde_json::from_str(argv).ok()?;
    if argv.is_empty() {
        return None;
    }
    Some((ppid, argv))
}

/// Runs the command to its end and kills every descendant; returns the exit code.
fn reap(ppid: i32, argv: &[String]) -> i32 {
    let signals = blocked_signals();
    // When `pipe` (the thread that started us) ends, we are told: SIGTERM, blocked above
    // and waited for below.
    // SAFETY: prctl with integer arguments; no memory is touched.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    }
    // `pipe` died before PR_SET_PDEATHSIG took effect: start nothing.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != ppid {
        return 1;
    }
    let mut channel = match status_channel() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pipe {ARG}: no status channel on stdin: {e}");
            return 2;
        }
    };
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_remove(ARGV_VAR).process_group(0);
    // SAFETY: prctl and sigprocmask are async-signal-safe and touch only the child's state.
    unsafe {
        cmd.pre_exec(|| {
            // Should the reaper itself be killed with SIGKILL, the command goes with it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(channel, "error {e}");
            return 127;
        }
    };
    let _ = writeln!(channel, "started");
    let pid = child.id() as i32;
    wait_for_end(pid, ppid, &signals);
    let (status, all_gone) = kill_descendants(pid);
    let _ = writeln!(channel, "status {status}");
    if !all_gone {
        eprintln!("pipe: processes the command started could not be killed within 10 s");
        let _ = writeln!(channel, "survivors");
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// The status channel `pipe` passed as stdin, moved to a descriptor of its own (closed
/// on exec); stdin becomes /dev/null, which the command inherits.
fn status_channel() -> std::io::Result<std::fs::File> {
    // SAFETY: fcntl and dup2 on descriptor numbers; the new descriptor is owned below and
    // nothing else here owns it.
    unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let channel = std::fs::File::from_raw_fd(fd);
        let null = std::fs::File::open("/dev/null")?;
        if libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(channel)
    }
}

/// Blocks the signals the reaper waits for (SIGCHLD, and those that stop it) and returns
/// their set. The command is started with an empty mask.
fn blocked_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits until the command `pid` has exited (it is left unreaped, so that its pid and
/// process group id cannot be reused) or the reaper is told to stop; reaps the orphans
/// that end meanwhile.
fn wait_for_end(pid: i32, ppid: i32, signals: &libc::sigset_t) {
    let second = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: a valid set and timeout; the siginfo is not read.
        let sig = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &second) };
        match sig {
            libc::SIGCHLD => {}
            // A timeout: `pipe` may have died without the signal (a missed PDEATHSIG).
            // SAFETY: getppid has no preconditions.
            -1 if unsafe { libc::getppid() } == ppid => {}
            -1 => return,
            _ => return,
        }
        loop {
            match exited_child() {
                None => break,
                Some(p) if p == pid => return,
                Some(p) => {
                    // SAFETY: reaps our own exited child; the status is not read.
                    unsafe {
                        libc::waitpid(p, std::ptr::null_mut(), libc::WNOHANG);
                    }
                }
            }
        }
    }
}

/// A child that has exited, without reaping it.
fn exited_child() -> Option<i32> {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_ALL, 0, &mut info, flags) != 0 {
            return None;
        }
        Some(info.si_pid()).filter(|p| *p > 0)
    }
}

/// Kills the command `pid` (unreaped, or still running), its process group and then every
/// child the reaper has, until it has none; returns the command's wait status, and whether
/// all are gone (false when some were left after 10 s: stuck in the kernel, or hidden).
fn kill_descendants(pid: i32) -> (i32, bool) {
    // SAFETY: kill(2) on our unreaped child and its group; no memory is touched.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    // The wait status of a process killed by SIGKILL, until the command's own is known.
    let mut status = libc::SIGKILL;
    let mut pause = std::time::Duration::from_micros(500);
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        loop {
            let mut s = 0;
            // SAFETY: waitpid writes the status into `s`.
            let p = unsafe { libc::waitpid(-1, &mut s, libc::WNOHANG) };
            if p == pid {
                status = s;
            } else if p == 0 {
                break;
            } else if p < 0 {
                // ECHILD: no child left, so no descendant either.
                return (status, true);
            }
        }
        // Only children are killed: unreaped, their pids cannot have been reused. Their
        // own children come to the reaper when they die, and are killed in the next round.
        for child in children() {
            // SAFETY: kill(2) on our own child; no memory is touched.
            unsafe {
                libc::kill(child, libc::SIGKILL);
            }
        }
        if std::time::Instant::now() > give_up {
            return (status, false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// The reaper's children, from the parent pid in each `/proc/PID/stat`.
fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<i32>().ok());
            ppid == Some(me)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let cmd = r#"["true", "x"]"#;
        let (ppid, argv) = parse(&a(&["100"]), cmd).unwrap();
        assert_eq!((ppid, argv), (100, vec!["true".into(), "x".into()]));
        for (bad, argv) in [
            (a(&["100"]), "[]"),
            (a(&["100"]), ""),
            (a(&["100"]), "[1]"),
            (a(&["x"]), cmd),
            (a(&["1"]), cmd),
            (a(&[]), cmd),
            (a(&["5", "100"]), cmd),
        ] {
            assert!(parse(&bad, argv).is_none(), "{bad:?} {argv}");
        }
    }
}
