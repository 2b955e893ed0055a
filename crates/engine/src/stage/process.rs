//! Commands a stage starts: waiting with a deadline, and killing their process groups so
//! that none outlives its instance or `pipe`.

/// A stage ran past its `timeout` and was stopped.
#[derive(Debug)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it ran past its timeout and was killed")
    }
}

impl std::error::Error for TimedOut {}

/// Waits for a child process; at the deadline kills it (with its process group when
/// `group`, for commands that start their own children) and fails with [`TimedOut`].
pub fn wait_until(
    child: &mut std::process::Child,
    deadline: Option<std::time::Instant>,
    group: bool,
) -> anyhow::Result<std::process::ExitStatus> {
    let pgid = child.id() as i32;
    if group {
        live_groups().push(pgid);
    }
    let status = wait_for(child, deadline, group);
    if group {
        // What the command left running in its group (`sleep 1000 &`) must not outlive it:
        // it could write into the artifact after it is sealed.
        // SAFETY: kill(2) on our own child's process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        live_groups().retain(|g| *g != pgid);
    }
    status
}

/// The process groups of the commands running now (see [`kill_live_groups`]).
fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    static GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every process group of a command still running (on SIGINT or SIGTERM, before
/// `pipe` exits), so that no command or its background children outlive it.
pub fn kill_live_groups() {
    for g in live_groups().iter() {
        // SAFETY: kill(2) on a process group this process started; no memory is touched.
        unsafe {
            libc::kill(-g, libc::SIGKILL);
        }
    }
}

/// Waits for `child`, killing it (and with `group` its process group) at `deadline`.
fn wait_for(
    child: &mut std::process::Child,
    deadline: Option<std::time::Instant>,
    group: bool,
) -> anyhow::Result<std::process::ExitStatus> {
    let Some(deadline) = deadline else {
        return Ok(child.wait()?);
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            if group {
                // SAFETY: kill(2) on our own child's process group; no memory is touched.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow::Error::new(TimedOut));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
