//! Executors: run a plan's missing instances and store their artifacts.
//!
//! [`local`] runs instances on this machine with a thread budget; [`slurm`] submits them
//! as Slurm jobs. Both compute an instance with [`job::run_job`]. Executors report what
//! happens through an [`Observer`]; they never print.

pub mod job;
pub mod local;
pub mod slurm;

use std::path::PathBuf;

use petgraph::graph::NodeIndex;

use crate::plan::Plan;
use crate::store::Holder;

/// What happened to one instance in a run.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It ran and its artifact is stored.
    Executed {
        /// Wall-clock seconds.
        seconds: f64,
    },
    /// Its artifact was already in the cache (or another process just made it).
    Cached,
    /// It failed; nothing was stored.
    Failed {
        /// What went wrong, in one line.
        message: String,
        /// Its log.
        log: PathBuf,
        /// The user's data was at fault ([`crate::stage::BadData`]): exit code 2.
        bad_data: bool,
    },
    /// Not run, because an input failed (or `--fail-fast` stopped the run).
    Skipped {
        /// Why, in words.
        reason: String,
    },
}

/// Events an executor reports while it works.
pub enum Event<'a> {
    /// The run starts: how many instances must run and how many are cached.
    Begin {
        /// Instances to compute.
        to_run: usize,
        /// Instances already cached.
        cached: usize,
    },
    /// An instance started, with the threads it was given.
    Started(NodeIndex, usize),
    /// An instance waits for another process that holds its key's lock.
    Waiting(NodeIndex, &'a Holder),
    /// An instance ended.
    Finished(NodeIndex, &'a Outcome),
}

/// Receives an executor's events (the CLI turns them into progress output).
pub trait Observer: Sync {
    /// Called for every event, from any thread.
    fn event(&self, plan: &Plan, event: Event<'_>);
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: &Plan, _: Event<'_>) {}
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Thread budget: the total threads of running instances stays within it.
    pub jobs: usize,
    /// Stop starting instances after the first failure.
    pub fail_fast: bool,
    /// Run only these stages (and what they need); empty means all.
    pub only: Vec<String>,
}

/// The outcome of every instance the run looked at, in plan order.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Instance and outcome.
    pub outcomes: Vec<(NodeIndex, Outcome)>,
}

impl RunReport {
    /// Whether any instance failed.
    pub fn any_failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed { .. }))
    }

    /// Whether a failure was caused by bad data rather than by a stage.
    pub fn any_bad_data(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed { bad_data: true, .. }))
    }
}

/// The instances a run covers: all, or the `only` stages and everything they need.
pub fn selected(plan: &Plan, only: &[String]) -> Vec<NodeIndex> {
    if only.is_empty() {
        return plan.order.clone();
    }
    let mut keep = vec![false; plan.graph.node_count()];
    for &n in &plan.order {
        if only.iter().any(|s| s == plan.stage_name(n)) {
            for a in plan.ancestors_and_self(n) {
                keep[a.index()] = true;
            }
        }
    }
    plan.order
        .iter()
        .copied()
        .filter(|n| keep[n.index()])
        .collect()
}
