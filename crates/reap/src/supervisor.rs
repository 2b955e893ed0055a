//! A supervisor: a child of the server that runs commands one after the other, each to
//! its end, killing every descendant (see the crate's documentation) and reporting on the
//! command's status channel. Between commands it has no child at all (it has reaped every
//! process that was handed to it), so the next command starts from a clean slate; one
//! that could not kill everything ends instead of taking another.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};

use crate::board::Board;
use crate::protocol::{self, IN_MEMFD, Report, Request};
use crate::server::{Fds, SPARES, refuse};

/// Runs requests from the server's socket until it closes or the supervisor is told to
/// end; `server` is the server's pid, `slot` this supervisor's on `board`. Returns the
/// exit code.
pub(crate) fn run(server: i32, fds: Fds, board: &Board, slot: usize) -> i32 {
    // While idle, SIGTERM (the server died) ends it at once; while it supervises, the
    // signal is blocked and read below.
    // SAFETY: prctl with integer arguments, getppid and close with no preconditions; the
    // descriptor closed is this process's copy, never used again.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != server {
            return 1;
        }
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        libc::close(fds.wake_r);
    }
    let signals = signal_set();
    // SAFETY: a valid set; the new descriptor is owned below.
    let signal_fd = unsafe { libc::signalfd(-1, &signals, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if signal_fd < 0 {
        eprintln!(
            "pipe {}: no signalfd: {}",
            crate::ARG,
            std::io::Error::last_os_error()
        );
        return 2;
    }
    // SAFETY: a new descriptor, owned by nobody else.
    let signal_fd = unsafe { OwnedFd::from_raw_fd(signal_fd) };
    // SAFETY: the socket stays open in this process for as long as it runs.
    let socket = unsafe { BorrowedFd::borrow_raw(fds.socket) };
    let null = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pipe {}: no /dev/null: {e}", crate::ARG);
            return 2;
        }
    };
    let me = Supervisor {
        server,
        base_env: std::env::vars_os().collect(),
        null: null.into(),
        signal_fd,
    };
    let mut buffer = vec![0u8; protocol::REQUEST_MAX];
    loop {
        let (n, mut received) = match protocol::recv_into(socket, &mut buffer) {
            Ok(Some((n, received))) if received.len() >= 2 => (n, received),
            // Not a request of `pipe`'s: wait for the next.
            Ok(Some(_)) => continue,
            // `pipe` closed the socket.
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("pipe {}: reading a request: {e}", crate::ARG);
                return 1;
            }
        };
        block(&signals, true);
        board.set_busy(slot, true);
        if board.idle() < SPARES {
            // SAFETY: a write of one byte from a local (the pipe does not block: a full
            // one has woken the server already).
            unsafe {
                libc::write(fds.wake_w, [1u8].as_ptr().cast(), 1);
            }
        }
        let rest = received.split_off(2);
        let channel = received.pop().expect("two descriptors");
        let out = received.pop().expect("two descriptors");
        let bytes = &buffer[..n];
        let request = if bytes == IN_MEMFD {
            rest.first()
                .and_then(|memfd| protocol::read_memfd(memfd).ok())
                .and_then(|b| Request::decode(&b))
        } else {
            Request::decode(bytes)
        };
        drop(rest);
        let again = match request {
            Some(request) => me.supervise(&request, out, channel),
            None => {
                refuse(&channel, "internal: a malformed request");
                true
            }
        };
        // Told to end meanwhile (the server died): end now.
        if !again || told_to_end(&me.signal_fd) {
            return 0;
        }
        board.set_busy(slot, false);
        block(&signals, false);
    }
}

/// What a supervisor keeps from one command to the next.
struct Supervisor {
    /// The server's pid.
    server: i32,
    /// The environment every command starts from, with its request's variables set.
    base_env: Vec<(OsString, OsString)>,
    /// /dev/null, every command's stdin.
    null: OwnedFd,
    /// Where the blocked signals are read.
    signal_fd: OwnedFd,
}

impl Supervisor {
    /// Runs one command with its output into `out`, reporting on `channel`. Returns
    /// whether this supervisor may take another: false when it was told to end (SIGTERM,
    /// the server gone) or could not kill every descendant.
    fn supervise(&self, request: &Request, out: OwnedFd, channel: OwnedFd) -> bool {
        let report = |r: Report| {
            let _ = protocol::send(channel.as_fd(), &r.encode(), &[]);
        };
        let pid = match crate::spawn::spawn(request, &self.base_env, &out, &self.null) {
            Ok(pid) => pid,
            Err(e) => {
                report(Report::Error(e.to_string()));
                return true;
            }
        };
        drop(out);
        // `pipe` gone meanwhile (the channel's end) stops the command at once.
        let told_to_end = wait_for_end(pid, self.server, &self.signal_fd, &channel);
        let (status, all_gone) = kill_descendants(pid);
        if !all_gone {
            eprintln!("pipe: processes the command started could not be killed within 10 s");
        }
        report(Report::Ended {
            status,
            survivors: !all_gone,
        });
        all_gone && !told_to_end
    }
}

/// The signals a supervisor reads while it supervises: SIGCHLD, and those that end it.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the signals of `set` (they are then read from the signalfd), or unblocks them.
fn block(set: &libc::sigset_t, blocked: bool) {
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: a valid set; the old mask is not asked for.
    unsafe {
        libc::sigprocmask(how, set, std::ptr::null_mut());
    }
}

/// Reads every signal pending on `signal_fd`; whether one of them ends the supervisor.
fn told_to_end(signal_fd: &OwnedFd) -> bool {
    let mut end = false;
    loop {
        // SAFETY: signalfd_siginfo is plain data, filled in by read.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`.
        let n = unsafe {
            libc::read(
                signal_fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            return end;
        }
        end |= info.ssi_signo != libc::SIGCHLD as u32;
    }
}

/// Waits until the command `pid` has exited (it is left unreaped, so that its pid and
/// process group id cannot be reused), `pipe` asks for it to stop (a message on the
/// channel, or the channel's end), or the supervisor is told to end (returns true); reaps
/// the orphans that end meanwhile.
fn wait_for_end(pid: i32, server: i32, signal_fd: &OwnedFd, channel: &OwnedFd) -> bool {
    let second = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        let mut wait = [
            PollFd::new(signal_fd, PollFlags::IN),
            PollFd::new(channel, PollFlags::IN),
        ];
        match rustix::event::poll(&mut wait, Some(&second)) {
            Ok(0) => {
                // The server may have died without the signal (a missed PDEATHSIG).
                // SAFETY: getppid has no preconditions.
                if unsafe { libc::getppid() } != server {
                    return true;
                }
                continue;
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return true,
        }
        if !wait[1].revents().is_empty() {
            return false;
        }
        if told_to_end(signal_fd) {
            return true;
        }
        loop {
            match exited_child() {
                None => break,
                Some(p) if p == pid => return false,
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
