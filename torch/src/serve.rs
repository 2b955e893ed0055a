//! `pipe-torch serve`: one worker process running a run's libtorch instances one after the
//! other, so that libtorch's start (about 0.2 s of static initialization per process) is
//! paid once per worker, not once per instance.
//!
//! Protocol: one [`WorkerJob`] per line on stdin; after each, one [`WorkerReply`] line on
//! the process's original stdout. While a job runs, its stdout and stderr go to the
//! instance's log; between jobs, to /dev/null. A job that
//! panics is answered, then the process exits: libtorch's state is not trusted after it.

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd};

use pipe_kinds::worker::{WorkerJob, WorkerReply};

/// Points fd 1 and 2 at `fd`.
fn redirect_output(fd: i32) {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: dup2 on descriptors this process owns; no memory is touched.
    unsafe {
        libc::dup2(fd, 1);
        libc::dup2(fd, 2);
    }
}

/// Runs jobs from stdin until it closes; returns the exit code.
pub fn serve() -> i32 {
    crate::stop::install();
    let mut served = 0u64;
    // SAFETY: dup(1) gives a new descriptor this process owns, wrapped once.
    let proto = unsafe { libc::dup(1) };
    if proto < 0 {
        eprintln!("pipe-torch: error: cannot duplicate stdout");
        return 1;
    }
    let mut replies = unsafe { std::fs::File::from_raw_fd(proto) };
    let Ok(null) = OpenOptions::new().write(true).open("/dev/null") else {
        eprintln!("pipe-torch: error: cannot open /dev/null");
        return 1;
    };
    redirect_output(null.as_raw_fd());
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return 1 };
        if line.trim().is_empty() {
            continue;
        }
        served += 1;
        let (reply, fatal) = run_line(&line, served);
        redirect_output(null.as_raw_fd());
        let text = serde_json::to_string(&reply).unwrap_or_default();
        if writeln!(replies, "{text}")
            .and_then(|_| replies.flush())
            .is_err()
            || fatal
        {
            return 1;
        }
    }
    0
}

/// What to do about the failure `message` says, added to it where pipe knows: a GPU out of
/// memory (several instances may share it, `--per-gpu`).
fn with_hint(message: String) -> String {
    if message.contains("CUDA out of memory") || message.contains("CUDA error: out of memory") {
        format!(
            "{message} (the GPU ran out of memory: with --per-gpu, fewer instances per GPU may fit; or a smaller batch_size or model)"
        )
    } else {
        message
    }
}

/// Runs one job line with its output in the job's log; the reply, and whether the worker
/// must stop (the job panicked).
fn run_line(line: &str, served: u64) -> (WorkerReply, bool) {
    let job: WorkerJob = match serde_json::from_str(line) {
        Ok(j) => j,
        Err(e) => return (WorkerReply::failed(format!("not a job: {e}"), false), false),
    };
    let log = match OpenOptions::new().append(true).create(true).open(&job.log) {
        Ok(f) => f,
        Err(e) => {
            let m = format!("cannot open the log {}: {e}", job.log.display());
            return (WorkerReply::failed(m, false), false);
        }
    };
    redirect_output(log.as_raw_fd());
    eprintln!(
        "# worker {}: job {served} of this process",
        std::process::id()
    );
    let result = std::panic::catch_unwind(|| crate::stages::run_job(job));
    let _ = std::io::stdout().flush();
    match result {
        Ok(Ok(())) => (WorkerReply::done(), false),
        Ok(Err(e)) => {
            if let Some(i) = e.downcast_ref::<pipe_kinds::worker::Interrupted>() {
                eprintln!("pipe-torch: {i}");
                return (WorkerReply::interrupted(i), false);
            }
            let message = with_hint(format!("{e:#}").replace('\n', " "));
            eprintln!("pipe-torch: error: {message}");
            let bad = e.chain().any(|c| c.is::<pipe_engine::stage::BadData>());
            (WorkerReply::failed(message, bad), false)
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
                .to_string();
            let message = with_hint(message);
            eprintln!("pipe-torch: error: the worker panicked: {message}");
            (
                WorkerReply::failed(format!("the worker panicked: {message}"), false),
                true,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_out_of_memory_says_what_to_lower() {
        let m = with_hint("CUDA out of memory. Tried to allocate 2.00 GiB".into());
        assert!(
            m.ends_with(
                "with --per-gpu, fewer instances per GPU may fit; or a smaller batch_size or model)"
            ),
            "{m}"
        );
        assert_eq!(with_hint("shape mismatch".into()), "shape mismatch");
    }
}
