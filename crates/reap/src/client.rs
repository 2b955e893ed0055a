//! `pipe`'s side: starting the server (once, the first time a command is to run), sending
//! it commands, following each on its status channel, and stopping one by a message on
//! that channel (never by a signal: the supervisor may have moved on to another command).

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::protocol::{self, IN_MEMFD, INLINE_MAX, Report, Request};

/// A command to run under a supervisor.
pub struct Command {
    /// What the server is sent.
    request: Request,
    /// Where its stdout and stderr go (`None`: /dev/null).
    output: Option<OwnedFd>,
}

impl Command {
    /// The command `argv` (its program first; not empty), run in `pipe`'s folder and
    /// environment unless set otherwise, its stdin /dev/null.
    pub fn new(argv: &[String]) -> std::io::Result<Command> {
        if argv.is_empty() {
            return Err(std::io::Error::other("the command is empty"));
        }
        Ok(Command {
            request: Request {
                argv: argv.iter().map(OsString::from).collect(),
                ..Request::default()
            },
            output: None,
        })
    }

    /// Runs it in `dir`.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.request.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets the variable `key` to `value` in its environment.
    pub fn env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> &mut Command {
        self.request.env.push((key.into(), value.into()));
        self
    }

    /// Sends its stdout and stderr to `file`.
    pub fn output(&mut self, file: impl Into<OwnedFd>) -> &mut Command {
        self.output = Some(file.into());
        self
    }

    /// Starts it under a supervisor (starting the server first if this process has none,
    /// or a new one if the last has ended). An error here says why the request could not
    /// be sent (a NUL in an argument); one from the supervisor (the program not found, not
    /// executable) comes as [`Ended::not_started`].
    pub fn start(self) -> std::io::Result<Started> {
        let bytes = self.request.encode()?;
        let output = match self.output {
            Some(fd) => fd,
            None => std::fs::File::options()
                .write(true)
                .open("/dev/null")?
                .into(),
        };
        let (channel, theirs) = protocol::socket_pair()?;
        let memfd = match bytes.len() > INLINE_MAX {
            true => Some(protocol::memfd_with(&bytes)?),
            false => None,
        };
        let message = if memfd.is_some() { IN_MEMFD } else { &bytes };
        let mut fds = vec![output.as_fd(), theirs.as_fd()];
        fds.extend(memfd.as_ref().map(|m| m.as_fd()));
        send_to_server(message, &fds)?;
        // The supervisor holds its own copy: ours is closed, so that the channel ends when
        // the supervisor does. Whether the command could start is known from its first
        // report, which [`Started::wait`] reads (no round trip is waited for here).
        drop(theirs);
        Ok(Started {
            channel: Arc::new(Channel {
                fd: channel,
                ended: (Mutex::new(false), Condvar::new()),
            }),
        })
    }
}

/// A started command's status channel, shared with whoever may stop it.
pub struct Channel {
    /// Our end.
    fd: OwnedFd,
    /// Whether the command has ended (its supervisor reported it), and its change.
    ended: (Mutex<bool>, Condvar),
}

impl Channel {
    /// Tells the supervisor to stop the command: it kills the command and every
    /// descendant, then reports. Nothing happens once the command has ended. The channel
    /// is shut for writing (the supervisor sees its end): no message is left unread
    /// there, which would make the supervisor's close reset the channel before its report
    /// is read.
    pub fn stop(&self) {
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Write);
    }

    /// Whether the command has ended (and every descendant), waiting up to `within` for
    /// it to (its [`Started::wait`] must be running meanwhile).
    pub fn has_ended(&self, within: Duration) -> bool {
        let (ended, changed) = &self.ended;
        let ended = ended.lock().unwrap_or_else(|e| e.into_inner());
        let (ended, _) = changed
            .wait_timeout_while(ended, within, |e| !*e)
            .unwrap_or_else(|e| e.into_inner());
        *ended
    }

    /// Notes that the command has ended.
    fn set_ended(&self) {
        let (ended, changed) = &self.ended;
        *ended.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }
}

/// A started command.
pub struct Started {
    /// Where its supervisor reports.
    channel: Arc<Channel>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// It could not start: why (then nothing else is set).
    pub not_started: Option<String>,
    /// Its wait status (as `waitpid` gives it); `None` when its supervisor ended without
    /// reporting one (it was killed).
    pub status: Option<i32>,
    /// It ran past its deadline and was stopped.
    pub timed_out: bool,
    /// Some of its descendants could not be killed within 10 s.
    pub survivors: bool,
}

impl Started {
    /// Its status channel, to [`Channel::stop`] it from anywhere.
    pub fn channel(&self) -> Arc<Channel> {
        self.channel.clone()
    }

    /// Waits until the command and every process it started have ended; at `deadline`,
    /// stops them and goes on waiting for the supervisor to have killed them all.
    pub fn wait(self, deadline: Option<Instant>) -> std::io::Result<Ended> {
        let result = self.wait_for_report(deadline);
        self.channel.set_ended();
        result
    }

    /// [`Started::wait`], before the end is noted.
    fn wait_for_report(&self, deadline: Option<Instant>) -> std::io::Result<Ended> {
        let mut ended = Ended {
            not_started: None,
            status: None,
            timed_out: false,
            survivors: false,
        };
        loop {
            if let Some(deadline) = deadline.filter(|_| !ended.timed_out) {
                let left = deadline.saturating_duration_since(Instant::now());
                if !readable(&self.channel.fd, Some(left))? {
                    self.channel.stop();
                    ended.timed_out = true;
                    continue;
                }
            }
            let report = match protocol::recv(self.channel.fd.as_fd(), protocol::REPORT_MAX) {
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => None,
                report => report?,
            };
            match report {
                // The supervisor ended without reporting (it was killed).
                None => return Ok(ended),
                Some((bytes, _)) => match Report::decode(&bytes) {
                    Some(Report::Ended { status, survivors }) => {
                        ended.status = Some(status);
                        ended.survivors = survivors;
                        return Ok(ended);
                    }
                    Some(Report::Error(e)) => {
                        ended.not_started = Some(e);
                        return Ok(ended);
                    }
                    None => {}
                },
            }
        }
    }
}

/// Whether `fd` is readable, waiting up to `within` (`None`: for ever).
fn readable(fd: &OwnedFd, within: Option<Duration>) -> std::io::Result<bool> {
    let timeout = within.map(|d| rustix::event::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The server of this process, on the `pipe` side: the socket to send it requests on.
struct Server {
    /// Our end of its socket.
    socket: OwnedFd,
    /// Told when the server has ended (and been reaped).
    ended: Mutex<std::sync::mpsc::Receiver<()>>,
}

/// Ends this process's server, if it has one, and waits up to `within` for it to have
/// ended: call last, when no command runs any more. Its idle supervisors end at once (they
/// see the socket's end), and it reaps them before it ends, so that no finished process
/// of pipe's is left for init to reap.
pub fn shutdown(within: Duration) {
    let Some(server) = current().take() else {
        return;
    };
    // Another thread still sending would hold it: then leave it to end with the process.
    if let Ok(Server { socket, ended }) = Arc::try_unwrap(server) {
        drop(socket);
        let _ = ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(within);
    }
}

/// The server now (`None` until the first command, or once it has been found ended).
fn current() -> std::sync::MutexGuard<'static, Option<Arc<Server>>> {
    static SERVER: Mutex<Option<Arc<Server>>> = Mutex::new(None);
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends a request to the server, starting one first if there is none, or a new one if
/// the last has ended (someone killed it).
fn send_to_server(message: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> std::io::Result<()> {
    for attempt in 0..2 {
        let server = {
            let mut current = current();
            match current.as_ref() {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(start_server()?);
                    *current = Some(s.clone());
                    s
                }
            }
        };
        match protocol::send(server.socket.as_fd(), message, fds) {
            Ok(()) => return Ok(()),
            Err(e) if attempt == 0 && gone(&e) => {
                let mut current = current();
                if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, &server)) {
                    *current = None;
                }
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the second attempt returns")
}

/// Whether a send failed because the server has ended.
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNREFUSED | libc::ECONNRESET | libc::ENOTCONN)
    )
}

/// Starts a server, from a thread that waits for it to end: PR_SET_PDEATHSIG fires when
/// the *thread* that started a process ends, and this one lives as long as the server.
fn start_server() -> std::io::Result<Server> {
    let (ours, theirs) = protocol::socket_pair()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (ended_tx, ended) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pipe-reap".into())
        .spawn(move || {
            let child = std::process::Command::new(program())
                .arg0("pipe")
                .arg(crate::ARG)
                .arg(std::process::id().to_string())
                .stdin(Stdio::from(theirs))
                .stdout(Stdio::null())
                // Its own group: a signal to pipe's group (Ctrl-C, `kill -9 -PGID`) must
                // not end the server before its supervisors have killed their commands.
                .process_group(0)
                .spawn();
            // No `pre_exec` hook: without one the standard library starts the server with
            // `posix_spawn`; the server asks for PR_SET_PDEATHSIG itself.
            match child {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                    let _ = ended_tx.send(());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the thread starting the supervision server ended"))??;
    Ok(Server {
        socket: ours,
        ended: Mutex::new(ended),
    })
}

/// The program to start as the server: [`BINARY`](crate::BINARY) beside this binary when
/// it is there (it forks faster than the whole `pipe` binary would), else this binary.
fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .map(|exe| exe.with_file_name(crate::BINARY))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
    })
}
