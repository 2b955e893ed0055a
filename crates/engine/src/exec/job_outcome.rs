//! The outcome file a job leaves beside its job file when it ends
//! (`jobs/RECIPE.outcome.json`): how it ended and the key it resolved on its node. The
//! submitting run reads it to report the job, and a dependent job reads it to learn an
//! input's key that planning could not know.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Outcome;
use crate::store::write_atomic;

/// What a job writes when it ends, `jobs/RECIPE.outcome.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobOutcome {
    /// `executed`, `cached` or `failed`.
    pub outcome: String,
    /// The failure, if any.
    pub message: Option<String>,
    /// Whether the failure was the data's fault.
    pub bad_data: bool,
    /// Seconds the stage ran.
    pub seconds: f64,
    /// The key the job resolved, if it got that far.
    #[serde(default)]
    pub key: Option<String>,
}

impl JobOutcome {
    /// The record of an outcome.
    pub fn of(o: &Outcome) -> JobOutcome {
        match o {
            Outcome::Executed { seconds } => JobOutcome {
                outcome: "executed".into(),
                message: None,
                bad_data: false,
                seconds: *seconds,
                key: None,
            },
            Outcome::Cached => JobOutcome {
                outcome: "cached".into(),
                message: None,
                bad_data: false,
                seconds: 0.0,
                key: None,
            },
            Outcome::Failed {
                message, bad_data, ..
            } => JobOutcome {
                outcome: "failed".into(),
                message: Some(message.clone()),
                bad_data: *bad_data,
                seconds: 0.0,
                key: None,
            },
            Outcome::Skipped { reason } => JobOutcome {
                outcome: "skipped".into(),
                message: Some(reason.clone()),
                bad_data: false,
                seconds: 0.0,
                key: None,
            },
        }
    }

    /// The outcome file of the job in `job_file`, if the job has ended and wrote one.
    pub fn read(job_file: &Path) -> Option<JobOutcome> {
        let bytes = std::fs::read(outcome_path(job_file)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes this outcome beside the job file `job_file`.
    pub fn write(&self, job_file: &Path) -> std::io::Result<PathBuf> {
        let path = outcome_path(job_file);
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        write_atomic(&path, &bytes).map(|()| path)
    }
}

/// The key a job resolved, from its outcome file (once it has ended). A recorded key that
/// is not a key (64 hex digits) is refused, so it never names a path.
pub fn resolved_key(job_file: &Path) -> Result<Option<String>, String> {
    let Some(key) = JobOutcome::read(job_file).and_then(|o| o.key) else {
        return Ok(None);
    };
    if !crate::key::is_key(&key) {
        return Err(format!(
            "{}: {:?} is not a key (64 hex digits)",
            outcome_path(job_file).display(),
            crate::key::short(&key, 70)
        ));
    }
    Ok(Some(key))
}

/// The key the upstream job `job_file` resolved, for a job computing in the cache `store`:
/// the job file must lie inside the cache (nothing outside it is read) and its recorded
/// key must be a key.
pub fn upstream_key(
    store: &crate::store::Store,
    job_file: &Path,
) -> Result<Option<String>, String> {
    let inside = match (
        job_file.parent().map(std::fs::canonicalize),
        std::fs::canonicalize(store.root()),
    ) {
        (Some(Ok(dir)), Ok(root)) => dir.starts_with(&root),
        _ => false,
    };
    if !inside || job_file.file_name().is_none() {
        return Err(format!(
            "{}: an input's job file must lie inside the cache {}",
            job_file.display(),
            store.root().display()
        ));
    }
    resolved_key(job_file)
}

/// Where a job's outcome goes, beside its job file.
pub fn outcome_path(job_file: &Path) -> PathBuf {
    job_file.with_extension("outcome.json")
}
