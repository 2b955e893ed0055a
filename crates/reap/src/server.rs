//! The server: one per `pipe` run, forking a [`supervisor`](crate::supervisor) per
//! command `pipe` sends it. Single-threaded (so a forked child may do anything) and small
//! (so a fork is cheap). It ends when its socket (stdin) closes, or on SIGTERM, which
//! PR_SET_PDEATHSIG sends when `pipe` dies; each supervisor is then told by its own
//! PR_SET_PDEATHSIG, and kills its command and every descendant.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use crate::protocol::{self, IN_MEMFD, Report, Request};

/// Serves the socket on stdin until it closes; `ppid` is `pipe`'s pid. Returns the exit
/// code.
pub(crate) fn serve(ppid: i32) -> i32 {
    // SAFETY: prctl with integer arguments; no memory is touched.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    // `pipe` died before PR_SET_PDEATHSIG took effect: serve nothing.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != ppid {
        return 1;
    }
    let socket = match socket_from_stdin() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pipe {}: no socket on stdin: {e}", crate::ARG);
            return 2;
        }
    };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    loop {
        reap_ended_supervisors();
        let (bytes, mut fds) = match protocol::recv(socket.as_fd(), protocol::REQUEST_MAX) {
            Ok(Some(message)) => message,
            // `pipe` closed the socket: it has ended, or has nothing more to run.
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("pipe {}: reading a request: {e}", crate::ARG);
                return 1;
            }
        };
        if fds.len() < 2 {
            continue;
        }
        let rest = fds.split_off(2);
        let channel = fds.pop().expect("two descriptors");
        let out = fds.pop().expect("two descriptors");
        let request = if bytes == IN_MEMFD {
            rest.first()
                .and_then(|memfd| protocol::read_memfd(memfd).ok())
                .and_then(|b| Request::decode(&b))
        } else {
            Request::decode(&bytes)
        };
        drop(rest);
        let Some(request) = request else {
            refuse(&channel, "internal: a malformed request");
            continue;
        };
        // SAFETY: this process has one thread, so the child may go on as a normal process.
        match unsafe { libc::fork() } {
            0 => {
                drop(socket);
                let code = crate::supervisor::supervise(me, request, out, channel);
                std::process::exit(code);
            }
            -1 => {
                let e = std::io::Error::last_os_error();
                refuse(&channel, &format!("cannot fork its supervisor: {e}"));
            }
            // The supervisor holds its own copies of `out` and `channel`; ours close here.
            _ => {}
        }
    }
}

/// Tells `pipe` on `channel` that the command cannot start, and why.
fn refuse(channel: &OwnedFd, why: &str) {
    let _ = protocol::send(channel.as_fd(), &Report::Error(why.into()).encode(), &[]);
}

/// The socket `pipe` passed as stdin, moved to a descriptor of its own (closed on exec);
/// stdin becomes /dev/null.
fn socket_from_stdin() -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl and dup2 on descriptor numbers; the new descriptor is owned below and
    // nothing else here owns it.
    unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let socket = OwnedFd::from_raw_fd(fd);
        let null = std::fs::File::open("/dev/null")?;
        if libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(socket)
    }
}

/// Reaps the supervisors that have ended (before each request: until then they are
/// zombies, at most one per command `pipe` runs at a time).
fn reap_ended_supervisors() {
    loop {
        // SAFETY: waitpid on our own children; the status is not read.
        let p = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if p <= 0 {
            return;
        }
    }
}
