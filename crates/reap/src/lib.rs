//! Supervision of the commands `pipe`'s stages start, so that no descendant of a command
//! outlives it, whatever the descendant does (a new process group, a new session, a double
//! fork) and however `pipe` ends (`kill -9`). Linux only.
//!
//! Three kinds of process take part:
//! - **`pipe`** ([`client`]) starts one *server* per run, the first time a command is to
//!   run, and sends each command as a `Request` (`protocol.rs`) on the server's
//!   socket, with the command's output file and a fresh *status channel* (descriptors
//!   passed along).
//! - **The server** (`server.rs`: `pipe-reap __reap PPID`, the small binary beside `pipe`,
//!   or `pipe __reap PPID` without it) keeps a few idle supervisors forked in advance, and
//!   forks more when too few are idle. It ends when `pipe` does (the socket closes, or
//!   PR_SET_PDEATHSIG = SIGTERM fires).
//! - **Supervisors** (`supervisor.rs`) take requests straight from the socket and run
//!   command after command. Each is a child subreaper (every orphaned descendant of its
//!   command becomes its child); it starts the command in a process group of its own, and
//!   when the command exits, `pipe` shuts the status channel (a timeout, Ctrl-C, or `pipe`
//!   gone), or SIGTERM comes (the server ended), kills the command's group, then each of
//!   its children with SIGKILL, again and again as orphans are handed to it, until it has
//!   none. Only then does it report the command's wait status on the channel, and take
//!   the next request (or end, when it was told to or could not kill everything).
//!
//! No process starts per command but the command itself, which is what a command's
//! supervision used to cost (an `exec` of a reaper binary). This crate depends on nothing
//! of `pipe`, so that the server's binary, whose forks are the supervisors, stays small.

mod board;
pub mod client;
mod protocol;
mod server;
mod spawn;
mod supervisor;

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The first argument that starts a binary as the server.
pub const ARG: &str = "__reap";

/// The small binary that holds only the server, installed beside `pipe`.
pub const BINARY: &str = "pipe-reap";

/// Whether this process can start a server ([`main_if_server`] ran and it was not one):
/// commands are then supervised; otherwise (unit tests of other crates) they run in a
/// process group of their own that is killed when they end.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether [`client`] supervises commands in this process (see [`main_if_server`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// Call first in `main` of a binary that runs stages: when the process was started as the
/// server, it serves and returns the exit code to end with; otherwise it notes that this
/// binary can be one (commands are then supervised) and returns `None`.
pub fn main_if_server() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(ARG)) {
        ENABLED.store(true, Ordering::SeqCst);
        return None;
    }
    let ppid = args
        .next()
        .and_then(|a| a.to_str()?.parse::<i32>().ok())
        .filter(|p| *p > 1);
    match (ppid, args.next()) {
        (Some(ppid), None) => Some(server::serve(ppid)),
        _ => {
            eprintln!("pipe {ARG}: internal; usage: pipe {ARG} PPID <&SOCKET");
            Some(2)
        }
    }
}
