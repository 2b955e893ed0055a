//! Commands a stage starts: started under a supervisor (the `pipe-reap` crate) so that no
//! descendant outlives its instance or `pipe`, waited for with a deadline, and stopped on
//! SIGINT or SIGTERM ([`kill_live_groups`]).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A stage ran past its `timeout` and was stopped.
#[derive(Debug)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it ran past its timeout and was killed")
    }
}

impl std::error::Error for TimedOut {}

/// A command could not start (its program not found, not executable, its folder missing):
/// why.
#[derive(Debug)]
pub struct NotStarted(pub String);

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotStarted {}

/// A command to start so that nothing it starts outlives it. In the `pipe` binary (which
/// calls [`pipe_reap::main_if_server`]) it runs under a supervisor process that kills
/// every descendant when the command ends, is stopped, or `pipe` dies; elsewhere (unit
/// tests) the command runs directly, in a process group of its own that is killed when it
/// ends. Either way it dies with `pipe`. Its stdin is /dev/null.
pub struct Supervised(Start);

/// How a [`Supervised`] command is to start.
enum Start {
    /// Under a supervisor.
    Supervised(pipe_reap::client::Command),
    /// Without one.
    Direct(Command),
}

impl Supervised {
    /// The command `argv` (its program first; not empty), in `pipe`'s folder and
    /// environment until told otherwise, its output discarded until [`Supervised::output`].
    pub fn new(argv: &[String]) -> std::io::Result<Supervised> {
        let cmd = pipe_reap::client::Command::new(argv)?;
        if pipe_reap::enabled() {
            return Ok(Supervised(Start::Supervised(cmd)));
        }
        let mut direct = Command::new(&argv[0]);
        direct
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            direct.pre_exec(|| pdeathsig(libc::SIGKILL));
        }
        Ok(Supervised(Start::Direct(direct)))
    }

    /// Runs it in `dir`.
    pub fn current_dir(&mut self, dir: &Path) -> &mut Supervised {
        match &mut self.0 {
            Start::Supervised(c) => {
                c.current_dir(dir);
            }
            Start::Direct(c) => {
                c.current_dir(dir);
            }
        }
        self
    }

    /// Sets the variable `key` to `value` in its environment.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Supervised {
        let (key, value) = (key.as_ref(), value.as_ref());
        match &mut self.0 {
            Start::Supervised(c) => {
                c.env(key, value);
            }
            Start::Direct(c) => {
                c.env(key, value);
            }
        }
        self
    }

    /// Sends its stdout and stderr to `file`.
    pub fn output(&mut self, file: &File) -> std::io::Result<&mut Supervised> {
        match &mut self.0 {
            Start::Supervised(c) => {
                c.output(file.try_clone()?);
            }
            Start::Direct(c) => {
                c.stdout(file.try_clone()?).stderr(file.try_clone()?);
            }
        }
        Ok(self)
    }

    /// Starts the command. An error says why it could not start, or that `pipe` is
    /// stopping on a signal; under a supervisor, a program not found or not executable is
    /// [`NotStarted`] from [`SupervisedChild::wait_until`] instead.
    pub fn spawn(self) -> std::io::Result<SupervisedChild> {
        if stopping() {
            return Err(std::io::Error::other(
                "pipe is stopping (SIGINT or SIGTERM)",
            ));
        }
        let running = match self.0 {
            Start::Supervised(cmd) => Running::Supervised(cmd.start()?),
            Start::Direct(mut cmd) => Running::Direct(cmd.spawn()?),
        };
        let child = SupervisedChild {
            running: Some(running),
        };
        let mut live = live();
        let me = child.live();
        if stopping() {
            me.stop();
        }
        live.push(me);
        Ok(child)
    }
}

/// Sets the signal this (forked) process gets when the thread that started it ends.
fn pdeathsig(signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments; no memory is touched.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A command as it runs.
enum Running {
    /// Under a supervisor.
    Supervised(pipe_reap::client::Started),
    /// Without one, in a process group of its own.
    Direct(Child),
}

/// A started [`Supervised`] command.
pub struct SupervisedChild {
    /// The command; `None` once waited for.
    running: Option<Running>,
}

impl SupervisedChild {
    /// Its entry in the list of live commands.
    fn live(&self) -> Live {
        match &self.running {
            Some(Running::Supervised(s)) => Live::Supervisor(s.channel()),
            Some(Running::Direct(c)) => Live::Group(c.id() as i32),
            None => Live::Group(0),
        }
    }

    /// Waits for the command and every process it started to end; at `deadline` stops
    /// them and fails with [`TimedOut`]. Returns the command's exit status; fails with
    /// [`NotStarted`] when it could not start, and when the supervisor could not kill every
    /// descendant.
    pub fn wait_until(mut self, deadline: Option<Instant>) -> anyhow::Result<ExitStatus> {
        let me = self.live();
        let result = match self.running.take() {
            Some(Running::Supervised(started)) => wait_supervised(started, deadline),
            Some(Running::Direct(child)) => wait_direct(child, deadline),
            None => unreachable!("a command is waited for once"),
        };
        live().retain(|l| *l != me);
        result
    }
}

/// Waits for a command under a supervisor (see [`SupervisedChild::wait_until`]).
fn wait_supervised(
    started: pipe_reap::client::Started,
    deadline: Option<Instant>,
) -> anyhow::Result<ExitStatus> {
    let ended = started.wait(deadline)?;
    if let Some(why) = ended.not_started {
        return Err(anyhow::Error::new(NotStarted(why)));
    }
    if ended.timed_out {
        return Err(anyhow::Error::new(TimedOut));
    }
    if ended.survivors {
        anyhow::bail!(
            "processes the command started could not be killed within 10 s (stuck in the kernel?)"
        );
    }
    match ended.status {
        Some(s) => Ok(ExitStatus::from_raw(s)),
        None => anyhow::bail!(
            "its supervisor process was killed before it reported how the command ended"
        ),
    }
}

/// Waits for a command started without a supervisor, stopping it at `deadline`; then
/// kills what it left running in its group (`sleep 1000 &`), which must not outlive it:
/// it could write into the artifact after it is sealed.
fn wait_direct(mut child: Child, deadline: Option<Instant>) -> anyhow::Result<ExitStatus> {
    let pgid = child.id() as i32;
    let kill_group = || {
        // SAFETY: kill(2) on our own child's process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    };
    let status = match deadline {
        None => child.wait()?,
        Some(deadline) => loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                kill_group();
                let _ = child.kill();
                let _ = child.wait();
                return Err(anyhow::Error::new(TimedOut));
            }
            std::thread::sleep(Duration::from_millis(20));
        },
    };
    kill_group();
    Ok(status)
}

impl Drop for SupervisedChild {
    /// A command never waited for (its stage failed on the way) is stopped and waited for.
    fn drop(&mut self) {
        if self.running.is_some() {
            let me = self.live();
            me.stop();
            match self.running.take() {
                Some(Running::Supervised(started)) => {
                    let _ = started.wait(None);
                }
                Some(Running::Direct(mut child)) => {
                    let _ = child.wait();
                }
                None => {}
            }
            live().retain(|l| *l != me);
        }
    }
}

/// A command running now.
#[derive(Clone)]
enum Live {
    /// A command under a supervisor, by its status channel.
    Supervisor(Arc<pipe_reap::client::Channel>),
    /// A command started without a supervisor, by process group.
    Group(i32),
}

impl PartialEq for Live {
    fn eq(&self, other: &Live) -> bool {
        match (self, other) {
            (Live::Supervisor(a), Live::Supervisor(b)) => Arc::ptr_eq(a, b),
            (Live::Group(a), Live::Group(b)) => a == b,
            _ => false,
        }
    }
}

impl Live {
    /// Stops it: the supervisor is told to (it kills the command and every descendant
    /// with SIGKILL, then ends); without one, the command's group is killed.
    fn stop(&self) {
        match self {
            Live::Supervisor(channel) => channel.stop(),
            // SAFETY: kill(2) on a process group this process started; no memory is
            // touched.
            Live::Group(pgid) => unsafe {
                if *pgid > 0 {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            },
        }
    }
}

/// The commands running now (see [`kill_live_groups`]).
fn live() -> std::sync::MutexGuard<'static, Vec<Live>> {
    static LIVE: std::sync::Mutex<Vec<Live>> = std::sync::Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set by [`kill_live_groups`]: `pipe` is stopping on a signal.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether `pipe` is stopping on SIGINT or SIGTERM ([`kill_live_groups`] has run): no
/// command starts any more, and a failed attempt is not retried.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// On SIGINT or SIGTERM, before `pipe` exits: stops every command still running with all
/// its descendants, and waits (up to 2 s) until their supervisors report them gone. No
/// command starts after this ([`stopping`]).
pub fn kill_live_groups() {
    let supervised: Vec<Arc<pipe_reap::client::Channel>> = {
        let live = live();
        STOPPING.store(true, Ordering::SeqCst);
        for l in live.iter() {
            l.stop();
        }
        live.iter()
            .filter_map(|l| match l {
                Live::Supervisor(channel) => Some(channel.clone()),
                Live::Group(_) => None,
            })
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(2);
    for channel in supervised {
        channel.has_ended(until.saturating_duration_since(Instant::now()));
    }
}
