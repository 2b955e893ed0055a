//! The registry of executors: one line per executor. `pipe run --executor NAME` and the
//! commands that read run records find executors here.

use super::executor::Executor;
use super::{local, slurm};
use crate::runs::RunRecord;

/// Every executor, one line each; the first is the default.
static EXECUTORS: &[&dyn Executor] = &[&local::Local, &slurm::Slurm];

/// Every executor, in the order `--executor` lists them (the first is the default).
pub fn executors() -> &'static [&'static dyn Executor] {
    EXECUTORS
}

/// The executor named `name` (`local`, `slurm`).
pub fn by_name(name: &str) -> Option<&'static dyn Executor> {
    EXECUTORS.iter().copied().find(|e| e.name() == name)
}

/// The executor that made a run record; for a record that names none (or one this build
/// lacks), the first that submits jobs if it lists jobs, else the first that does not.
pub fn of_record(record: &RunRecord) -> &'static dyn Executor {
    by_name(&record.executor).unwrap_or_else(|| {
        let jobs = !record.jobs.is_empty();
        EXECUTORS
            .iter()
            .copied()
            .find(|e| e.submits_jobs() == jobs)
            .unwrap_or(EXECUTORS[0])
    })
}

/// Settles the record of every run that returned before its work ended
/// ([`Executor::settle`]) and saves those that changed: what any command that reads run
/// records calls first, so a detached run's record reaches its end.
pub fn settle_open_runs(store: &crate::store::Store) {
    for mut r in crate::runs::records(store) {
        if !r.finished && r.exit == Some(0) && of_record(&r).settle(store, &mut r, false) {
            let _ = crate::runs::save_record(store, &r);
        }
    }
}

/// The names of the executors that submit jobs (those that take `--detach`,
/// `--partition` and `--slurm-arg`).
pub fn job_executors() -> Vec<&'static str> {
    EXECUTORS
        .iter()
        .filter(|e| e.submits_jobs())
        .map(|e| e.name())
        .collect()
}
