//! `pipe cancel`: cancels the queued or running jobs of a run (through the executor that
//! ran it) and marks it finished.

use crate::cli::outln;
use serde::Serialize;
use std::path::PathBuf;

use super::{Verbosity, cache_dir, print_json};
use pipe_engine::error::Error;
use pipe_engine::exec::registry;
use pipe_engine::runs;
use pipe_engine::store::Store;

/// Arguments of `pipe cancel`.
#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// The run id `pipe run --executor slurm` printed, or a unique prefix of it.
    pub run: String,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print `{"run", "cancelled": [job ids], "jobs"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

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

/// Runs `pipe cancel`; returns its exit code.
pub fn cancel(args: &CancelArgs, verbosity: Verbosity) -> Result<i32, Error> {
    let store = Store::new(cache_dir(&args.cache)?);
    store
        .check_marked()
        .map_err(|e| Error::io(store.root(), e))?;
    let mut record = runs::find_record(&store, &args.run)?;
    let cancelled = registry::of_record(&record)
        .cancel(&record)
        .map_err(Error::usage)?;
    let active: Vec<&str> = cancelled.iter().map(String::as_str).collect();
    let n = active.len();
    record.cancelled = true;
    let executor = registry::of_record(&record);
    if !executor.settle(&store, &mut record, true) {
        record.finished = true;
    }
    runs::save_record(&store, &record)?;
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
