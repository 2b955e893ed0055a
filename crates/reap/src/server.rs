//! The server: one per `pipe` run, keeping at least [`SPARES`] idle
//! [supervisors](crate::supervisor) forked in advance, each waiting for a request on the
//! shared socket (the kernel hands each message to one of them). A supervisor runs
//! command after command, so a command waits neither for a fork nor for a hop through
//! the server; when one takes a request and too few are left idle, it tells the server,
//! which forks more (see [`Board`]). Single-threaded (so a forked child may do anything)
//! and small (so a fork is cheap). It ends when `pipe` closes the socket (the idle
//! supervisors then see its end too), or on SIGTERM, which PR_SET_PDEATHSIG sends when
//! `pipe` dies; each supervisor is then told by its own PR_SET_PDEATHSIG, and kills its
//! command and every descendant.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags};

use crate::board::Board;
use crate::protocol::{self, Report};

/// How many supervisors the server keeps idle at least.
pub(crate) const SPARES: usize = 2;

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
    // Where a supervisor that leaves too few idle wakes the server.
    let (wake_r, wake_w) = match rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pipe {}: no pipe: {e}", crate::ARG);
            return 2;
        }
    };
    let board = match Board::new() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pipe {}: no shared memory: {e}", crate::ARG);
            return 2;
        }
    };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let fds = Fds {
        socket: socket.as_raw_fd(),
        wake_r: wake_r.as_raw_fd(),
        wake_w: wake_w.as_raw_fd(),
    };
    let second = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    let mut said_full = false;
    loop {
        for ended in reap_ended_children() {
            board.free(ended);
        }
        while board.idle() < SPARES {
            let Some(slot) = board.take(-1) else {
                if !said_full {
                    eprintln!(
                        "pipe {}: {} commands at once: no more can start",
                        crate::ARG,
                        crate::board::SLOTS
                    );
                    said_full = true;
                }
                break;
            };
            // SAFETY: this process has one thread, so the child may go on as a normal
            // process; it never returns here.
            match unsafe { libc::fork() } {
                0 => {
                    // SAFETY: getpid has no preconditions.
                    board.set_pid(slot, unsafe { libc::getpid() });
                    std::process::exit(crate::supervisor::run(me, fds, &board, slot));
                }
                -1 => {
                    let e = std::io::Error::last_os_error();
                    eprintln!("pipe {}: cannot fork a supervisor: {e}", crate::ARG);
                    board.set_pid(slot, 0);
                    break;
                }
                pid => board.set_pid(slot, pid),
            }
        }
        let mut wait = [
            PollFd::new(&wake_r, PollFlags::IN),
            // No event asked for: only its end (POLLHUP) is reported.
            PollFd::new(&socket, PollFlags::empty()),
        ];
        match rustix::event::poll(&mut wait, Some(&second)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                eprintln!("pipe {}: waiting: {e}", crate::ARG);
                return 1;
            }
        }
        if wait[1]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::ERR)
        {
            // `pipe` closed the socket: it has ended, or has nothing more to run. The
            // idle supervisors see the end too; each is reaped once it has ended.
            drop(socket);
            // SAFETY: waitpid on our own children until none is left; the status is not
            // read.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
            return 0;
        }
        let mut drained = [0u8; 64];
        while matches!(rustix::io::read(&wake_r, &mut drained), Ok(n) if n > 0) {}
    }
}

/// The server's descriptors, as a supervisor inherits them.
#[derive(Clone, Copy)]
pub(crate) struct Fds {
    /// The socket requests come on.
    pub socket: RawFd,
    /// Where the server is woken (the supervisor closes its copy).
    pub wake_r: RawFd,
    /// Where a supervisor wakes the server.
    pub wake_w: RawFd,
}

/// Tells `pipe` on `channel` that the command cannot start, and why.
pub(crate) fn refuse(channel: &OwnedFd, why: &str) {
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

/// Reaps the children that have ended (spares and supervisors: until then they are
/// zombies); returns their pids.
fn reap_ended_children() -> Vec<i32> {
    let mut ended = Vec::new();
    loop {
        // SAFETY: waitpid on our own children; the status is not read.
        let p = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if p <= 0 {
            return ended;
        }
        ended.push(p);
    }
}
