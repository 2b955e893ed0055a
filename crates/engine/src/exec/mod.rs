//! Executors: run a plan's missing instances and store their artifacts.
//!
//! Every executor implements [`executor::Executor`] and is listed once in
//! [`registry::executors`]: [`local`] runs instances on this machine with a thread budget;
//! [`slurm`] submits them as Slurm jobs. All compute an instance with
//! [`job::compute_instance`]. Executors report what happens through an [`Observer`]; they
//! never print.
//!
//! This file holds what every executor shares (outcomes, events, options, the triage and
//! conclusion of a run) and uses none of its submodules, so that they form no cycle:
//! `job_outcome`, `job` and `executor` use this file; `local` and `slurm` use those;
//! `registry` uses the executors.

pub mod executor;
pub mod job;
pub mod job_outcome;
pub mod local;
pub mod registry;
pub mod slurm;
mod workers;

use std::path::PathBuf;

use petgraph::graph::NodeIndex;

use crate::plan::Plan;
use crate::store::remote::{Pulled, Remote};
use crate::store::{Holder, Store};

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
    /// Something worth saying about an instance besides its outcome: its artifact was
    /// pulled or pushed (`warning: false`), or a push, a pull or a cached input was bad
    /// (`warning: true`; the run goes on, recomputing what it must).
    Note {
        /// The instance.
        node: NodeIndex,
        /// What happened, in words.
        message: String,
        /// Whether it went wrong.
        warning: bool,
    },
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
    pub only: Vec<crate::select::Selector>,
    /// The remote cache: pull missing artifacts before computing, push what was computed.
    pub remote: Option<std::sync::Arc<Remote>>,
    /// GPUs to place instances on (local executor): an instance whose resources ask for a
    /// GPU runs on one of these, `per_gpu` instances per GPU at a time, and sees only it
    /// (`CUDA_VISIBLE_DEVICES`); the others see none. Empty: no placement.
    pub gpus: Vec<u32>,
    /// How many instances share one GPU of `gpus` at a time (at least 1).
    pub per_gpu: usize,
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

/// The instances a run covers: all, or those `only` selects and everything they need.
pub fn selected(plan: &Plan, only: &[crate::select::Selector]) -> Vec<NodeIndex> {
    crate::select::closure(plan, only)
}

/// The keys an instance stores: its own and its parts' (checkpoints); none while its key
/// is not known.
pub fn stored_keys(plan: &Plan, n: NodeIndex) -> Vec<String> {
    let Some(key) = plan.key(n) else {
        return Vec::new();
    };
    let mut keys = vec![key];
    keys.extend(plan.parts(n).unwrap_or_default().into_iter().map(|p| p.key));
    keys
}

/// Pulls from the remote cache each of `nodes` it has (with its parts); returns the
/// instances that are now complete locally. Failures are reported and left to compute.
pub fn pull_missing(
    plan: &Plan,
    store: &Store,
    remote: &Remote,
    nodes: &[NodeIndex],
    observer: &dyn Observer,
) -> std::collections::HashSet<NodeIndex> {
    // Several instances at once: each pull waits on the network far more than it works.
    const PARALLEL: usize = 8;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(std::collections::HashSet::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(nodes.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&n) = nodes.get(i) else { break };
                    if pull_one(plan, store, remote, n, observer) {
                        done.lock().unwrap_or_else(|e| e.into_inner()).insert(n);
                    }
                }
            });
        }
    });
    done.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Pulls one instance's artifact and parts; true if it is now complete locally.
fn pull_one(
    plan: &Plan,
    store: &Store,
    remote: &Remote,
    n: NodeIndex,
    observer: &dyn Observer,
) -> bool {
    let mut fetched = 0;
    let mut failed = None;
    for key in stored_keys(plan, n) {
        if store.is_complete(&key) {
            continue;
        }
        match remote.pull(store, &key) {
            Ok(Pulled::Fetched) => fetched += 1,
            Ok(Pulled::Absent) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failed {
        observer.event(
            plan,
            Event::Note {
                node: n,
                message: format!("{e}; computing it here"),
                warning: true,
            },
        );
    } else if fetched > 0 {
        observer.event(
            plan,
            Event::Note {
                node: n,
                message: format!("pulled {fetched} artifact(s) from {}", remote.url()),
                warning: false,
            },
        );
    }
    plan.key(n).is_some_and(|k| store.is_complete(&k))
}

/// Pushes an instance's artifact and parts to the remote cache; reports a failure as a
/// warning (the local artifact is fine).
pub fn push_done(
    plan: &Plan,
    store: &Store,
    remote: &Remote,
    n: NodeIndex,
    observer: &dyn Observer,
) {
    let keys = stored_keys(plan, n);
    let (message, warning) = match remote.push_all(store, keys.iter().map(String::as_str)) {
        Ok(0) => return,
        Ok(pushed) => (
            format!("pushed {pushed} artifact(s) to {}", remote.url()),
            false,
        ),
        Err(e) => (e, true),
    };
    observer.event(
        plan,
        Event::Note {
            node: n,
            message,
            warning,
        },
    );
}

/// Rehashes every cached artifact (and checkpoint) that the instances about to run will
/// read. A damaged one is removed and computed again in this run, before anything reads
/// it, so no instance consumes damaged data; a no-op run checks nothing.
pub fn recheck_inputs(
    plan: &Plan,
    store: &Store,
    outcomes: &mut std::collections::HashMap<NodeIndex, Outcome>,
    to_run: &mut Vec<NodeIndex>,
    observer: &dyn Observer,
) {
    let mut queue = to_run.clone();
    let mut checked = std::collections::HashSet::new();
    while let Some(n) = queue.pop() {
        for (_, up) in &plan.graph[n].inputs {
            let up = *up;
            if !matches!(outcomes.get(&up), Some(Outcome::Cached)) || !checked.insert(up) {
                continue;
            }
            // Every stored key that is there at all: a part with a file missing is damaged
            // like one with a flipped byte.
            let damaged: Vec<(String, String)> = stored_keys(plan, up)
                .into_iter()
                .filter(|k| std::fs::symlink_metadata(store.artifact_dir(k)).is_ok())
                .filter_map(|k| store.check(&k).err().map(|e| (k, e)))
                .collect();
            if damaged.is_empty() {
                continue;
            }
            for (key, problem) in &damaged {
                let _ = store.remove(key);
                observer.event(
                    plan,
                    Event::Note {
                        node: up,
                        message: format!(
                            "cached artifact {} is damaged ({problem}); removed, computing it again",
                            crate::key::short(key, 12)
                        ),
                        warning: true,
                    },
                );
            }
            if let Some(k) = plan.key(up) {
                let _ = store.remove(&k);
            }
            plan.forget_digest(up);
            outcomes.remove(&up);
            to_run.push(up);
            queue.push(up);
        }
    }
    to_run.sort();
}

/// What a run must do, decided before anything runs.
pub struct Triage {
    /// The instances the run covers, in plan order.
    pub nodes: Vec<NodeIndex>,
    /// Those already settled (cached, or pulled from the remote cache).
    pub outcomes: std::collections::HashMap<NodeIndex, Outcome>,
    /// Those to compute, in plan order.
    pub to_run: Vec<NodeIndex>,
}

/// The first step of every executor: which selected instances are cached, which the remote
/// cache provides, which cached inputs are damaged; then reports [`Event::Begin`].
pub fn triage(plan: &Plan, store: &Store, opts: &RunOptions, observer: &dyn Observer) -> Triage {
    let nodes = selected(plan, &opts.only);
    let mut outcomes = std::collections::HashMap::new();
    plan.resolve_all(store);
    // Each check reads a manifest and stats its files: spread over the cores.
    let complete: Vec<bool> = {
        use rayon::prelude::*;
        let scan = store.scan();
        nodes
            .par_iter()
            .map(|&n| plan.key(n).is_some_and(|k| scan.is_complete(&k)))
            .collect()
    };
    let mut to_run = Vec::new();
    for (&n, cached) in nodes.iter().zip(complete) {
        if cached {
            outcomes.insert(n, Outcome::Cached);
        } else {
            to_run.push(n);
        }
    }
    if let Some(remote) = &opts.remote {
        // Pulling an artifact can make its dependents' keys known: pull in waves.
        let mut tried = std::collections::HashSet::new();
        loop {
            let wave: Vec<NodeIndex> = to_run
                .iter()
                .copied()
                .filter(|&n| plan.resolve(n, store).is_some() && tried.insert(n))
                .collect();
            if wave.is_empty() {
                break;
            }
            let pulled = pull_missing(plan, store, remote, &wave, observer);
            if pulled.is_empty() {
                break;
            }
            to_run.retain(|n| !pulled.contains(n));
            for n in pulled {
                outcomes.insert(n, Outcome::Cached);
            }
        }
    }
    recheck_inputs(plan, store, &mut outcomes, &mut to_run, observer);
    observer.event(
        plan,
        Event::Begin {
            to_run: to_run.len(),
            cached: nodes.len() - to_run.len(),
        },
    );
    Triage {
        nodes,
        outcomes,
        to_run,
    }
}

/// The last step of every executor: remembers in the index what each stage and point now
/// has, and orders the outcomes as the plan does.
pub fn conclude(
    plan: &Plan,
    store: &Store,
    nodes: &[NodeIndex],
    mut outcomes: std::collections::HashMap<NodeIndex, Outcome>,
) -> std::io::Result<RunReport> {
    let done: Vec<NodeIndex> = nodes
        .iter()
        .copied()
        .filter(|n| {
            matches!(
                outcomes.get(n),
                Some(Outcome::Executed { .. } | Outcome::Cached)
            )
        })
        .collect();
    // A rerun that changed nothing compares only keys and input keys with the index; the
    // full entries are built only when one differs.
    let briefs: Vec<_> = done
        .iter()
        .map(|&n| crate::plan::index_brief(plan, &plan.graph[n]))
        .collect();
    store.record_in_index(&plan.spec.name, &briefs, || {
        done.iter()
            .map(|&n| crate::plan::index_entry(plan, &plan.graph[n]))
            .collect()
    })?;
    Ok(RunReport {
        outcomes: nodes
            .iter()
            .filter_map(|n| outcomes.remove(n).map(|o| (*n, o)))
            .collect(),
    })
}
