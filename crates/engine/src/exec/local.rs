//! The local executor: runs ready instances in parallel within a thread budget.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::executor::{Executor, ExecutorOptions, ExecutorRun, Interrupt, LiveInstance};
use super::job::{InstanceJob, compute_instance};
use super::{Event, Observer, Outcome, RunOptions, RunReport, Triage, conclude, triage};
use crate::error::Error;
use crate::plan::Plan;
use crate::runs::{self, RunRecord};
use crate::store::remote::Remote;
use crate::store::{Store, unix_now};

/// The local executor, `--executor local`: instances run in this process's threads.
pub struct Local;

impl Executor for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn about(&self) -> &'static str {
        "On this machine, within the `--jobs` thread budget"
    }

    fn submits_jobs(&self) -> bool {
        false
    }

    fn interrupt(&self) -> Interrupt {
        Interrupt::ExitProcess
    }

    fn check(&self, _: &ExecutorOptions) -> Result<(), String> {
        Ok(())
    }

    fn run(
        &self,
        plan: &Plan,
        store: &Store,
        opts: &RunOptions,
        _: &ExecutorOptions,
        observer: &dyn Observer,
        _: &AtomicBool,
        mut record: RunRecord,
    ) -> Result<ExecutorRun, Error> {
        match run(plan, store, opts, observer) {
            Ok(report) => {
                record.finished = true;
                Ok(ExecutorRun {
                    report,
                    record,
                    detached: false,
                })
            }
            Err(e) => {
                // The store failed before anything ran: the run ended with exit code 1.
                record.ended = Some(unix_now());
                record.exit = Some(1);
                record.finished = true;
                let _ = runs::save_record(store, &record);
                Err(Error::io(store.root(), e))
            }
        }
    }

    fn live_instances(&self, _: &Store, _: &HashSet<&str>) -> HashMap<String, LiveInstance> {
        // A running local instance holds its key's lock, which `status` reads itself.
        HashMap::new()
    }

    fn cancel(&self, _: &RunRecord) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// Runs every selected instance whose artifact is missing; returns each one's outcome.
///
/// Errors are only the store's own (the cache folder cannot be created); stage failures
/// are outcomes.
pub fn run(
    plan: &Plan,
    store: &Store,
    opts: &RunOptions,
    observer: &dyn Observer,
) -> std::io::Result<RunReport> {
    store.prepare()?;
    let jobs = opts.jobs.max(1);
    let Triage {
        nodes,
        mut outcomes,
        to_run,
    } = triage(plan, store, opts, observer);
    let mut pending: HashMap<NodeIndex, usize> = HashMap::new();
    for &n in &to_run {
        let waiting = plan
            .graph
            .neighbors_directed(n, Direction::Incoming)
            .filter(|up| !outcomes.contains_key(up))
            .count();
        pending.insert(n, waiting);
    }

    // Ordered by node index, which is plan order: inputs first, then declaration and sweep order.
    let mut ready: BTreeSet<NodeIndex> =
        to_run.iter().copied().filter(|n| pending[n] == 0).collect();
    let mut running = 0usize;
    let mut threads_in_use = 0usize;
    let mut stop = false;
    let mut gpus = GpuSlots::new(&opts.gpus);
    // Which instances hold a GPU while they run (asked once, not at every scheduling step).
    let on_gpu: BTreeSet<NodeIndex> = if gpus.placing() {
        to_run
            .iter()
            .copied()
            .filter(|&n| wants_gpu(plan, n))
            .collect()
    } else {
        BTreeSet::new()
    };
    let (tx, rx) = mpsc::channel::<(NodeIndex, usize, Option<u32>, Outcome)>();

    // Outcomes to settle: from finished threads, or found at once (an instance whose
    // key, known once its inputs are, is already cached: early cutoff).
    let mut settled: Vec<(NodeIndex, usize, Option<u32>, Outcome)> = Vec::new();

    std::thread::scope(|scope| {
        loop {
            // The first ready instance that can start (a GPU instance waits for a free GPU
            // without holding back the CPU instances behind it).
            while let Some(n) = ready
                .iter()
                .copied()
                .find(|&n| !on_gpu.contains(&n) || gpus.any_free())
                .filter(|_| !stop)
            {
                if resolve_ready(plan, store, n) {
                    ready.remove(&n);
                    settled.push((n, 0, None, Outcome::Cached));
                    continue;
                }
                let want = plan.graph[n].threads.min(jobs);
                if threads_in_use + want > jobs {
                    break;
                }
                ready.remove(&n);
                let gpu = if on_gpu.contains(&n) {
                    gpus.take()
                } else {
                    None
                };
                let visible = gpus
                    .placing()
                    .then(|| gpu.map_or(String::new(), |g| g.to_string()));
                threads_in_use += want;
                running += 1;
                let tx = tx.clone();
                observer.event(plan, Event::Started(n, want));
                let remote = opts.remote.as_deref();
                scope.spawn(move || {
                    let outcome = run_instance(plan, store, remote, n, want, visible, observer);
                    let _ = tx.send((n, want, gpu, outcome));
                });
            }
            if settled.is_empty() {
                if running == 0 {
                    break;
                }
                let Ok(done) = rx.recv() else {
                    break;
                };
                running -= 1;
                settled.push(done);
            }
            for (n, used, gpu, outcome) in std::mem::take(&mut settled) {
                threads_in_use -= used;
                gpus.give_back(gpu);
                if matches!(outcome, Outcome::Executed { .. }) {
                    plan.forget_digest(n);
                }
                observer.event(plan, Event::Finished(n, &outcome));
                let failed = matches!(outcome, Outcome::Failed { .. });
                outcomes.insert(n, outcome);
                if failed {
                    let label = plan.label(n);
                    for d in plan.descendants(n) {
                        if pending.remove(&d).is_some() {
                            let o = Outcome::Skipped {
                                reason: format!("input {label} failed"),
                            };
                            observer.event(plan, Event::Finished(d, &o));
                            outcomes.insert(d, o);
                        }
                    }
                    if opts.fail_fast {
                        stop = true;
                    }
                    continue;
                }
                for d in plan.graph.neighbors_directed(n, Direction::Outgoing) {
                    if let Some(c) = pending.get_mut(&d) {
                        *c -= 1;
                        if *c == 0 {
                            ready.insert(d);
                        }
                    }
                }
                pending.remove(&n);
            }
        }
    });

    // With --fail-fast, whatever never started is skipped.
    for &n in &to_run {
        if let std::collections::hash_map::Entry::Vacant(slot) = outcomes.entry(n) {
            let o = Outcome::Skipped {
                reason: "the run stopped at the first failure (--fail-fast)".into(),
            };
            observer.event(plan, Event::Finished(n, &o));
            slot.insert(o);
        }
    }

    conclude(plan, store, &nodes, outcomes)
}

/// The GPUs of a run (`--gpus`), each held by at most one instance at a time.
#[derive(Debug)]
pub struct GpuSlots {
    /// Free GPUs; the lowest index is taken first.
    free: BTreeSet<u32>,
    /// Whether the run places instances on GPUs at all.
    placing: bool,
}

impl GpuSlots {
    /// Slots for these GPUs (none: no placement).
    pub fn new(gpus: &[u32]) -> GpuSlots {
        GpuSlots {
            free: gpus.iter().copied().collect(),
            placing: !gpus.is_empty(),
        }
    }
    /// Whether the run places instances on GPUs.
    pub fn placing(&self) -> bool {
        self.placing
    }
    /// Whether a GPU is free.
    pub fn any_free(&self) -> bool {
        !self.free.is_empty()
    }
    /// Takes the free GPU with the lowest index.
    pub fn take(&mut self) -> Option<u32> {
        self.free.pop_first()
    }
    /// Frees a GPU an instance held.
    pub fn give_back(&mut self, gpu: Option<u32>) {
        if let Some(g) = gpu {
            self.free.insert(g);
        }
    }
}

/// Whether an instance's resources (its kind's, overridden by the stage's `resources`)
/// ask for a GPU.
fn wants_gpu(plan: &Plan, n: NodeIndex) -> bool {
    let inst = &plan.graph[n];
    let stage = &plan.spec.stages[inst.stage];
    let res = stage
        .kind
        .resources(&inst.params)
        .overridden_by(&stage.resources);
    res.gpus.unwrap_or(0) > 0
}

/// Resolves the key of an instance whose inputs are all settled (afresh: an input may
/// have been computed again); true if that key is already cached.
fn resolve_ready(plan: &Plan, store: &Store, n: NodeIndex) -> bool {
    if plan.graph[n].inputs.is_empty() {
        return false;
    }
    plan.unresolve(n);
    plan.resolve(n, store)
        .is_some_and(|k| store.is_complete(&k))
}

/// Runs one instance under its key's lock, storing the artifact on success; with a remote
/// cache, pulls it first if the remote has it, and pushes it once computed.
fn run_instance(
    plan: &Plan,
    store: &Store,
    remote: Option<&Remote>,
    n: NodeIndex,
    threads: usize,
    visible_gpus: Option<String>,
    observer: &dyn Observer,
) -> Outcome {
    if let Some(r) = remote
        && plan.graph[n].key().is_some()
        && super::pull_missing(plan, store, r, &[n], observer).contains(&n)
    {
        return Outcome::Cached;
    }
    let kind = plan.spec.stages[plan.graph[n].stage].kind;
    let mut job = InstanceJob::of(plan, n);
    job.visible_gpus = visible_gpus;
    let outcome = compute_instance(&mut job, kind, store, threads, &mut |h| {
        observer.event(plan, Event::Waiting(n, h))
    });
    if let (Some(r), Outcome::Executed { .. }) = (remote, &outcome) {
        super::push_done(plan, store, r, n, observer);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_held_one_instance_at_a_time_lowest_first() {
        let mut g = GpuSlots::new(&[3, 1]);
        assert!(g.placing() && g.any_free());
        assert_eq!(g.take(), Some(1));
        assert_eq!(g.take(), Some(3));
        assert!(!g.any_free());
        assert_eq!(g.take(), None);
        g.give_back(Some(3));
        g.give_back(None);
        assert_eq!(g.take(), Some(3));
        assert!(!GpuSlots::new(&[]).placing());
    }
}
