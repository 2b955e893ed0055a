//! `pipe job` (hidden): computes one instance from a job file; what a cluster executor's
//! job runs on its node. Writes the outcome next to the job file for the submitting `pipe run`.

use crate::cli::errln;
use std::path::{Path, PathBuf};

use pipe_engine::error::Error;
use pipe_engine::exec::Outcome;
use pipe_engine::exec::job::{InstanceJob, compute_instance};
use pipe_engine::exec::job_outcome::JobOutcome;
use pipe_engine::store::Store;
use pipe_engine::store::remote::Remote;
use pipe_kinds::stages;

/// Arguments of `pipe job`.
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The job file, written by `pipe run --executor slurm`.
    pub file: PathBuf,
    /// The cache directory.
    #[arg(long, value_name = "DIR")]
    pub cache: PathBuf,
}

/// Runs `pipe job`; returns its exit code (0 done or cached, 1 failed, 2 bad data).
pub fn job(args: &JobArgs) -> Result<i32, Error> {
    let file = &args.file;
    let store = Store::new(args.cache.clone());
    let text = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let mut job: InstanceJob = serde_json::from_slice(&text)
        .map_err(|e| Error::usage(format!("{}: not a job file: {e}", file.display())))?;
    let keys = job
        .key
        .iter()
        .chain(job.inputs.iter().filter_map(|i| i.key.as_ref()))
        .chain(
            job.inputs
                .iter()
                .flat_map(|i| i.parts.iter().map(|(_, k)| k)),
        );
    for k in keys {
        if !pipe_engine::key::is_key(k) {
            return Err(Error::usage(format!(
                "{}: {:?} is not a key (64 hex digits)",
                file.display(),
                pipe_engine::key::short(k, 70)
            )));
        }
    }
    // An input's key may come from its upstream job's outcome file: that file must be in
    // the cache and its key a key, or nothing is read or written.
    for input in job.inputs.iter().filter(|i| i.key.is_none()) {
        if let Some(up) = &input.job {
            pipe_engine::exec::job_outcome::upstream_key(&store, up)
                .map_err(|e| Error::usage(format!("{}: {e}", file.display())))?;
        }
    }
    // The submitting run prepared the cache: a folder without pipe's marker is not one,
    // and nothing is written or removed in it.
    if !store.is_marked() {
        return Err(Error::io(store.root(), store.not_a_cache()));
    }
    let registry = stages::registry();
    let kind = registry
        .get(&job.kind)
        .ok_or_else(|| Error::usage(format!("this pipe has no stage kind `{}`", job.kind)))?;
    let threads = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    // Resolve the key first: with the remote cache, a key it has is pulled, not computed.
    let remote = job.remote.as_deref().map(Remote::open);
    let mut keys: Vec<String> = Vec::new();
    if let (Some(Ok(r)), Ok(())) = (&remote, job.resolve(&store, kind)) {
        keys = std::iter::once(job.key().to_string())
            .chain(job.part_keys(kind))
            .collect();
        for key in keys.iter().filter(|k| !store.is_complete(k)) {
            if let Err(e) = r.pull(&store, key) {
                errln!("warning: {e}; computing it here");
                break;
            }
        }
    }
    let stage = job.stage.clone();
    let mut outcome = compute_instance(
        &mut job,
        kind,
        &store,
        threads,
        &mut |h| {
            errln!("waiting for {h}, which computes the same artifact of {stage}");
        },
        &mut || {},
    );
    // The artifact's rename is durable before the job says it was stored.
    if matches!(outcome, Outcome::Executed { .. })
        && let Err(e) = store.sync()
    {
        outcome = Outcome::Failed {
            message: format!("could not sync the cache: {e}"),
            log: store.log_path(job.key()),
            bad_data: false,
        };
    }
    if let (Some(Ok(r)), Outcome::Executed { .. }) = (&remote, &outcome) {
        if keys.is_empty() {
            keys = std::iter::once(job.key().to_string())
                .chain(job.part_keys(kind))
                .collect();
        }
        if let Err(e) = r.push_all(&store, keys.iter().map(String::as_str)) {
            errln!("warning: {e}");
        }
    } else if let Some(Err(e)) = &remote {
        errln!("warning: {e}");
    }
    write_outcome(file, &outcome, job.key.clone())?;
    Ok(report(&job, outcome))
}

/// Writes the outcome file the submitting run reads.
fn write_outcome(file: &Path, outcome: &Outcome, key: Option<String>) -> Result<(), Error> {
    let mut record = JobOutcome::of(outcome);
    record.key = key;
    record
        .write(file)
        .map(|_| ())
        .map_err(|e| Error::io(&pipe_engine::exec::job_outcome::outcome_path(file), e))
}

/// Says how the job ended on stderr; returns the exit code.
fn report(job: &InstanceJob, outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Executed { seconds } => {
            errln!("{} {}: done in {seconds:.2}s", job.stage, job.key());
            0
        }
        Outcome::Cached => 0,
        Outcome::Failed {
            message,
            log,
            bad_data,
        } => {
            errln!(
                "{} {} failed: {message}\n  log: {}",
                job.stage,
                job.key(),
                log.display()
            );
            if bad_data { 2 } else { 1 }
        }
        Outcome::Skipped { .. } => 1,
    }
}
