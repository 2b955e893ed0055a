//! The local executor: runs ready instances in parallel within a thread budget.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::job::{InstanceJob, compute_instance};
use super::{Event, Observer, Outcome, RunOptions, RunReport, Triage, conclude, triage};
use crate::plan::Plan;
use crate::store::Store;
use crate::store::remote::Remote;

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
    let (tx, rx) = mpsc::channel::<(NodeIndex, usize, Outcome)>();

    // Outcomes to settle: from finished threads, or found at once (an instance whose
    // key, known once its inputs are, is already cached: early cutoff).
    let mut settled: Vec<(NodeIndex, usize, Outcome)> = Vec::new();

    std::thread::scope(|scope| {
        loop {
            while let Some(&n) = ready.first().filter(|_| !stop) {
                if resolve_ready(plan, store, n) {
                    ready.pop_first();
                    settled.push((n, 0, Outcome::Cached));
                    continue;
                }
                let want = plan.graph[n].threads.min(jobs);
                if threads_in_use + want > jobs {
                    break;
                }
                ready.pop_first();
                threads_in_use += want;
                running += 1;
                let tx = tx.clone();
                observer.event(plan, Event::Started(n, want));
                let remote = opts.remote.as_deref();
                scope.spawn(move || {
                    let outcome = run_instance(plan, store, remote, n, want, observer);
                    let _ = tx.send((n, want, outcome));
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
            for (n, used, outcome) in std::mem::take(&mut settled) {
                threads_in_use -= used;
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
    let outcome = compute_instance(&mut job, kind, store, threads, &mut |h| {
        observer.event(plan, Event::Waiting(n, h))
    });
    if let (Some(r), Outcome::Executed { .. }) = (remote, &outcome) {
        super::push_done(plan, store, r, n, observer);
    }
    outcome
}
