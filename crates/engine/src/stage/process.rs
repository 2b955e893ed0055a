//! Commands a stage starts: started under a reaper (see `reaper.rs`) so that no descendant
//! outlives its instance or `pipe`, waited for with a deadline, and stopped on SIGINT or
//! SIGTERM ([`kill_live_groups`]).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::reaper;

/// A stage ran past its `timeout` and was stopped.
#[derive(Debug)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it ran past its timeout and was killed")
    }
}

impl std::error::Error for TimedOut {}

/// A command to start so that nothing it starts outlives it. In the `pipe` binary (which
/// calls [`reaper_main`](super::reaper_main)) it runs under a reaper process that kills
/// every descendant when the command ends, is stopped, or `pipe` dies; elsewhere (unit
/// tests) the command runs directly, in a process group of its own that is killed when it
/// ends. Either way it dies with `pipe`.
pub struct Supervised {
    /// The process to start: the reaper, or the command itself.
    cmd: Command,
    /// The pipe on which the reaper reports (when there is one).
    channel: Option<(std::io::PipeReader, std::io::PipeWriter)>,
}

impl Supervised {
    /// The command `argv` (its program first; not empty). Set its folder, environment and
    /// stdio through [`Supervised::command`].
    pub fn new(argv: &[String]) -> std::io::Result<Supervised> {
        let Some((program, args)) = argv.split_first() else {
            return Err(std::io::Error::other("the command is empty"));
        };
        if !reaper::ENABLED.load(Ordering::SeqCst) {
            let mut cmd = Command::new(program);
            cmd.args(args).process_group(0);
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| pdeathsig(libc::SIGKILL));
            }
            return Ok(Supervised { cmd, channel: None });
        }
        let (reader, writer) = std::io::pipe()?;
        let mut cmd = Command::new(reaper::program());
        cmd.arg0("pipe")
            .arg(reaper::ARG)
            .arg(std::process::id().to_string())
            .env(reaper::ARGV_VAR, serde_json::to_string(argv)?)
            // Its own group: a signal to pipe's group (Ctrl-C, `kill -9 -PGID`) must not
            // kill the reaper before it has killed the command's descendants.
            .process_group(0);
        // No `pre_exec` hook: without one the standard library starts the reaper with
        // `posix_spawn` (a vfork, not a copy of this process's page tables); the reaper
        // asks for PR_SET_PDEATHSIG itself, and its status channel is its stdin.
        Ok(Supervised {
            cmd,
            channel: Some((reader, writer)),
        })
    }

    /// The process to be started, to set its folder, environment and stdio (not its
    /// program or arguments). Under a reaper the command's stdin is always /dev/null.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Starts the command. An error says why it could not start (not found, not
    /// executable), or that `pipe` is stopping on a signal.
    pub fn spawn(self) -> std::io::Result<SupervisedChild> {
        if stopping() {
            return Err(std::io::Error::other(
                "pipe is stopping (SIGINT or SIGTERM)",
            ));
        }
        let Supervised { mut cmd, channel } = self;
        let reader = match channel {
            Some((reader, writer)) => {
                // The reaper reports on its stdin (the command gets /dev/null there).
                cmd.stdin(writer);
                Some(reader)
            }
            None => None,
        };
        let child = cmd.spawn();
        // The command holds our copy of the channel's write end: dropped now, so that the
        // channel ends when the reaper does.
        drop(cmd);
        let child = child?;
        let channel = reader.map(BufReader::new);
        let mut child = SupervisedChild {
            child,
            channel,
            waited: false,
        };
        {
            let mut live = live();
            if stopping() {
                child.stop();
            }
            live.push(child.live());
        }
        if let Some(channel) = child.channel.as_mut() {
            let mut line = String::new();
            let _ = channel.read_line(&mut line);
            if line.trim_end() != "started" {
                let _ = child.wait_until(None);
                return Err(std::io::Error::other(match line.strip_prefix("error ") {
                    Some(e) => e.trim_end().to_string(),
                    None => "its supervisor process ended before starting it".to_string(),
                }));
            }
        }
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

/// A started [`Supervised`] command.
pub struct SupervisedChild {
    /// The reaper, or the command itself.
    child: Child,
    /// Where the reaper reports the command's wait status.
    channel: Option<BufReader<std::io::PipeReader>>,
    /// Whether it has been waited for.
    waited: bool,
}

impl SupervisedChild {
    /// Its entry in the list of live commands.
    fn live(&self) -> Live {
        let pid = self.child.id() as i32;
        match self.channel {
            Some(_) => Live::Reaper(pid),
            None => Live::Group(pid),
        }
    }

    /// Stops the command and every descendant: the reaper is told to (it kills them all
    /// with SIGKILL, then ends); without one, the command's group is killed.
    fn stop(&mut self) {
        self.live().stop();
    }

    /// Waits for the command and every process it started to end; at `deadline` stops
    /// them and fails with [`TimedOut`]. Returns the command's exit status; fails when the
    /// reaper could not kill every descendant.
    pub fn wait_until(mut self, deadline: Option<Instant>) -> anyhow::Result<ExitStatus> {
        self.waited = true;
        let result = self.wait_for(deadline);
        let me = self.live();
        if let Live::Group(pgid) = me {
            // What the command left running in its group (`sleep 1000 &`) must not outlive
            // it: it could write into the artifact after it is sealed.
            // SAFETY: kill(2) on our own child's process group; no memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        live().retain(|l| *l != me);
        let status = result?;
        // The reaper's last line is the command's own wait status.
        let mut rest = String::new();
        if let Some(channel) = self.channel.as_mut() {
            let _ = channel.read_to_string(&mut rest);
        }
        if rest.lines().any(|l| l == "survivors") {
            anyhow::bail!(
                "processes the command started could not be killed within 10 s (stuck in the kernel?)"
            );
        }
        let reported = rest
            .lines()
            .find_map(|l| l.strip_prefix("status ")?.trim().parse::<i32>().ok());
        Ok(reported.map_or(status, ExitStatus::from_raw))
    }

    /// Waits for the process, stopping it at `deadline`.
    fn wait_for(&mut self, deadline: Option<Instant>) -> anyhow::Result<ExitStatus> {
        let Some(deadline) = deadline else {
            return Ok(self.child.wait()?);
        };
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.stop();
                if self.channel.is_none() {
                    let _ = self.child.kill();
                }
                let _ = self.child.wait();
                return Err(anyhow::Error::new(TimedOut));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SupervisedChild {
    /// A command never waited for (its stage failed on the way) is stopped and waited for.
    fn drop(&mut self) {
        if !self.waited {
            self.stop();
            let _ = self.child.wait();
            let me = self.live();
            live().retain(|l| *l != me);
        }
    }
}

/// A command running now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Live {
    /// The reaper of a command, by pid.
    Reaper(i32),
    /// A command started without a reaper, by process group.
    Group(i32),
}

impl Live {
    /// Stops it (see [`SupervisedChild::stop`]).
    fn stop(self) {
        // SAFETY: kill(2) on a process (group) this process started; no memory is touched.
        unsafe {
            match self {
                Live::Reaper(pid) => libc::kill(pid, libc::SIGTERM),
                Live::Group(pgid) => libc::kill(-pgid, libc::SIGKILL),
            };
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
/// its descendants, and waits (up to 2 s) until their reapers report them gone. No command
/// starts after this ([`stopping`]).
pub fn kill_live_groups() {
    let reapers: Vec<i32> = {
        let live = live();
        STOPPING.store(true, Ordering::SeqCst);
        for l in live.iter() {
            l.stop();
        }
        live.iter()
            .filter_map(|l| match l {
                Live::Reaper(pid) => Some(*pid),
                Live::Group(_) => None,
            })
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(2);
    for pid in reapers {
        while !ended(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether our child `pid` has ended (or was already reaped), without reaping it.
fn ended(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) != 0 || info.si_pid() == pid
    }
}
