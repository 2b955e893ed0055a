//! A supervisor: the server's forked child that runs one command to its end and kills
//! every descendant (see the crate's documentation), reporting on the status channel.

use std::os::fd::{AsFd, OwnedFd};

use crate::protocol::{self, Report, Request};

/// Runs `request`'s command with its output into `out`, reporting on `channel`; `server`
/// is the server's pid. Returns the exit code (the command's, or 128 + its signal).
pub(crate) fn supervise(server: i32, request: Request, out: OwnedFd, channel: OwnedFd) -> i32 {
    let signals = blocked_signals();
    // When the server ends (`pipe` died, or it was killed), we are told: SIGTERM, blocked
    // above and waited for below.
    // SAFETY: prctl with integer arguments; no memory is touched.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    }
    // The server died before PR_SET_PDEATHSIG took effect: start nothing.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != server {
        return 1;
    }
    let report = |r: Report| {
        let _ = protocol::send(channel.as_fd(), &r.encode(), &[]);
    };
    let pidfd = match rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            report(Report::Error(format!("no pidfd for its supervisor: {e}")));
            return 127;
        }
    };
    let pid = match start(&request, &out) {
        Ok(pid) => pid,
        Err(e) => {
            report(Report::Error(e.to_string()));
            return 127;
        }
    };
    let started = protocol::send(channel.as_fd(), &Report::Started.encode(), &[pidfd.as_fd()]);
    drop((pidfd, out));
    if started.is_ok() {
        wait_for_end(pid, server, &signals);
    }
    // `pipe` did not hear of the start (it is gone): the command is killed at once.
    let (status, all_gone) = kill_descendants(pid);
    report(Report::Status(status));
    if !all_gone {
        eprintln!("pipe: processes the command started could not be killed within 10 s");
        report(Report::Survivors);
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Starts the command in `request`'s folder and environment (set in this process, which
/// the command inherits as `pipe`'s own would), in a process group of its own, stdin
/// /dev/null, stdout and stderr `out`; returns its pid.
fn start(request: &Request, out: &OwnedFd) -> std::io::Result<i32> {
    if let Some(dir) = &request.dir {
        std::env::set_current_dir(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    for (k, v) in &request.env {
        // SAFETY: this process has one thread (a fork of the single-threaded server).
        unsafe {
            std::env::set_var(k, v);
        }
    }
    crate::spawn::spawn(&request.argv, out)
}

/// Blocks the signals the supervisor waits for (SIGCHLD, and those that stop it) and
/// returns their set. The command is started with an empty mask.
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
/// process group id cannot be reused) or the supervisor is told to stop; reaps the orphans
/// that end meanwhile.
fn wait_for_end(pid: i32, server: i32, signals: &libc::sigset_t) {
    let second = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: a valid set and timeout; the siginfo is not read.
        let sig = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &second) };
        match sig {
            libc::SIGCHLD => {}
            // A timeout: the server may have died without the signal (a missed PDEATHSIG).
            // SAFETY: getppid has no preconditions.
            -1 if unsafe { libc::getppid() } == server => {}
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
/// child the supervisor has, until it has none; returns the command's wait status, and
/// whether all are gone (false when some were left after 10 s: stuck in the kernel, or
/// hidden).
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
        // own children come to the supervisor when they die, and are killed in the next
        // round.
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

/// The supervisor's children, from the parent pid in each `/proc/PID/stat`.
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
