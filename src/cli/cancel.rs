//! `pipe cancel`: cancels the queued or running Slurm jobs of a run and marks it finished.

use crate::cli::outln;
use serde::Serialize;

use super::{CancelArgs, Verbosity, cache_dir, print_json};
use pipe_engine::error::Error;
use pipe_engine::exec::slurm;
use pipe_engine::store::Store;

/// `pipe cancel --json`.
#[derive(Serialize)]
struct CancelJson<'a> {
    /// The job ids cancelled (those still queued or running).
    cancelled: &'a [&'a str],
    /// How many jobs the run has.
    jobs: usize,
    /// The run id.
    run: &'a str,
}

/// Whether Slurm reports a job in this state as ended, so that there is nothing to cancel.
fn ended(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
    )
}

/// Runs `pipe cancel`; returns its exit code.
pub fn cancel(args: &CancelArgs, verbosity: Verbosity) -> Result<i32, Error> {
    let store = Store::new(cache_dir(&args.cache));
    let mut record = slurm::find_record(&store, &args.run)?;
    let ids: Vec<&str> = record.jobs.iter().map(|j| j.job_id.as_str()).collect();
    let states = slurm::query(&ids).map_err(Error::usage)?;
    let active: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| states.get(*id).is_some_and(|q| !ended(&q.state)))
        .collect();
    slurm::cancel(&active).map_err(Error::usage)?;
    let n = active.len();
    record.finished = true;
    slurm::save_record(&store, &record)?;
    if args.json {
        print_json(&CancelJson {
            cancelled: &active,
            jobs: record.jobs.len(),
            run: &record.id,
        })?;
    } else if verbosity > Verbosity::Quiet {
        outln!(
            "run {}: cancelled {n} queued or running jobs of {}",
            record.id,
            record.jobs.len()
        );
    }
    Ok(0)
}
