//! The local executor: runs ready instances in parallel within a thread budget.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::job::{InstanceJob, compute_instance};
use super::{Event, Observer, Outcome, RunOptions, RunReport, Triage, conclude, triage};
use crate::plan::Plan;
use crate::store::Store;

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

    std::thread::scope(|scope| {
        loop {
            while let Some(&n) = ready.first().filter(|_| !stop) {
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
                    let outcome = run_instance(plan, store, n, want, observer);
                    if let (Some(r), Outcome::Executed { .. }) = (remote, &outcome) {
                        super::push_done(plan, store, r, n, observer);
                    }
                    let _ = tx.send((n, want, outcome));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((n, used, outcome)) = rx.recv() else {
                break;
            };
            running -= 1;
            threads_in_use -= used;
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

/// Runs one instance under its key's lock, storing the artifact on success.
fn run_instance(
    plan: &Plan,
    store: &Store,
    n: NodeIndex,
    threads: usize,
    observer: &dyn Observer,
) -> Outcome {
    let kind = plan.spec.stages[plan.graph[n].stage].kind;
    compute_instance(&InstanceJob::of(plan, n), kind, store, threads, &mut |h| {
        observer.event(plan, Event::Waiting(n, h))
    })
}
