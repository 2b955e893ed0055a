//! The [`Executor`] trait: what `pipe run`, `status` and `cancel` ask of a place where
//! instances run (this machine, a Slurm cluster, ...), so that the command line names no
//! executor. Each executor is one file in `exec/`, declared in `exec/mod.rs` and listed
//! once in [`super::registry::executors`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{Observer, RunOptions, RunReport};
use crate::error::Error;
use crate::plan::Plan;
use crate::runs::RunRecord;
use crate::store::Store;

/// Options of `pipe run` that only some executors take. Those of executors that submit
/// jobs are refused for the others by the caller ([`Executor::submits_jobs`]); each
/// executor refuses the rest it does not take ([`Executor::check`]) and interprets them.
#[derive(Clone, Debug, Default)]
pub struct ExecutorOptions {
    /// The queue (Slurm partition) every job goes to (`--partition`).
    pub queue: Option<String>,
    /// Extra arguments for the submission command, passed as given (`--slurm-arg`).
    pub submit_args: Vec<String>,
    /// Submit and return without waiting for the jobs (`--detach`).
    pub detach: bool,
    /// Seconds between two polls of the cluster's queue (`--poll`).
    pub poll_seconds: f64,
    /// GPUs of this machine to place instances on (`--gpus`).
    pub gpus: Vec<u32>,
    /// The `pipe` binary a job runs on its node (on a filesystem the nodes share); `None`:
    /// this process's binary.
    pub exe: Option<PathBuf>,
}

impl ExecutorOptions {
    /// Whether any option of an executor that submits jobs (queue, submit arguments,
    /// detach) is given.
    pub fn asks_for_submission(&self) -> bool {
        self.detach || !self.submit_args.is_empty() || self.queue.is_some()
    }

    /// Whether the poll interval is a positive number of seconds.
    pub fn poll_is_valid(&self) -> bool {
        self.poll_seconds.is_finite() && self.poll_seconds > 0.0
    }

    /// The poll interval (2 s when [`ExecutorOptions::poll_is_valid`] is false).
    pub fn poll(&self) -> Duration {
        Duration::try_from_secs_f64(self.poll_seconds)
            .ok()
            .filter(|_| self.poll_is_valid())
            .unwrap_or(Duration::from_secs(2))
    }
}

/// How a run of an executor reacts to Ctrl-C or SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Its instances run in this process: the signal handler kills their commands, cleans
    /// up and ends the process at once.
    ExitProcess,
    /// Its instances run elsewhere: the handler sets the `interrupted` flag, and the
    /// executor cancels what it submitted and returns.
    CancelAndReturn,
}

/// What [`Executor::run`] gives back.
#[derive(Debug)]
pub struct ExecutorRun {
    /// The outcome of every instance settled so far, in plan order.
    pub report: RunReport,
    /// The run's record, with what the executor added (its jobs, whether it finished).
    pub record: RunRecord,
    /// The executor returned before its work ended (a detached submission).
    pub detached: bool,
}

/// An instance being computed by a run of an executor, as `pipe status` shows it.
#[derive(Clone, Debug)]
pub struct LiveInstance {
    /// The executor's name.
    pub executor: &'static str,
    /// The run id.
    pub run: String,
    /// The job's id.
    pub job_id: String,
    /// The job's state in the executor's words (`PENDING`, `RUNNING`, ...).
    pub state: String,
    /// Why it is in that state, in the executor's words (may be empty).
    pub reason: String,
}

/// A place where a run's instances are computed. Every executor computes an instance
/// through [`super::job::compute_instance`] and reports through an [`Observer`].
pub trait Executor: Sync {
    /// Its name: the `--executor` value, and the `executor` field of its run records.
    fn name(&self) -> &'static str;

    /// One line for `--executor`'s help.
    fn about(&self) -> &'static str;

    /// Whether it submits instances as jobs with ids and logs, which its run records,
    /// `pipe run --json` and `pipe cancel` list.
    fn submits_jobs(&self) -> bool;

    /// How a run reacts to Ctrl-C or SIGTERM.
    fn interrupt(&self) -> Interrupt;

    /// Rejects options it does not take (beyond those of executors that submit jobs,
    /// which the caller checks with [`Executor::submits_jobs`]), with the message the
    /// user sees.
    fn check(&self, opts: &ExecutorOptions) -> Result<(), String>;

    /// Computes (or submits) the selected instances whose artifacts are missing.
    /// `record` is the run's record, begun and saved by the caller; the executor adds to
    /// it and returns it. `interrupted` is set by the caller's signal handler.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        plan: &Plan,
        store: &Store,
        opts: &RunOptions,
        executor_opts: &ExecutorOptions,
        observer: &dyn Observer,
        interrupted: &AtomicBool,
        record: RunRecord,
    ) -> Result<ExecutorRun, Error>;

    /// The instances among `recipes` that its unfinished runs are computing, by recipe.
    fn live_instances(
        &self,
        store: &Store,
        recipes: &HashSet<&str>,
    ) -> HashMap<String, LiveInstance>;

    /// Cancels what a run of it still has queued or running; returns the job ids it
    /// cancelled. The caller marks the record cancelled and settles it.
    fn cancel(&self, record: &RunRecord) -> Result<Vec<String>, String>;

    /// Brings the record of a run that returned before its work ended (a detached run) up
    /// to date: once none of its jobs is queued or running (or at once with `now`, after a
    /// cancel), fills in its counts from what its jobs left, its end time and exit code,
    /// and marks it finished. Returns whether the record changed. Executors that never
    /// return early have nothing to settle.
    fn settle(&self, _store: &Store, _record: &mut RunRecord, _now: bool) -> bool {
        false
    }
}
