//! The local executor: runs ready instances in parallel within a thread budget.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::Instant;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::{Event, Observer, Outcome, RunOptions, RunReport, selected};
use crate::plan::Plan;
use crate::stage::{BadData, InputArtifact, RunContext};
use crate::status::index_entry;
use crate::store::{Manifest, Parts, Store, unix_now};

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
    let nodes = selected(plan, &opts.only);
    store.prepare()?;
    let jobs = opts.jobs.max(1);
    let mut outcomes: HashMap<NodeIndex, Outcome> = HashMap::new();
    let mut pending: HashMap<NodeIndex, usize> = HashMap::new();
    let mut to_run = Vec::new();
    for &n in &nodes {
        if store.is_complete(&plan.graph[n].key) {
            outcomes.insert(n, Outcome::Cached);
        } else {
            to_run.push(n);
        }
    }
    for &n in &to_run {
        let waiting = plan
            .graph
            .neighbors_directed(n, Direction::Incoming)
            .filter(|up| !outcomes.contains_key(up))
            .count();
        pending.insert(n, waiting);
    }
    observer.event(
        plan,
        Event::Begin {
            to_run: to_run.len(),
            cached: nodes.len() - to_run.len(),
        },
    );

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
                scope.spawn(move || {
                    let outcome = run_instance(plan, store, n, want, observer);
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

    let updates: Vec<_> = nodes
        .iter()
        .filter(|n| {
            matches!(
                outcomes.get(n),
                Some(Outcome::Executed { .. } | Outcome::Cached)
            )
        })
        .map(|&n| index_entry(plan, &plan.graph[n]))
        .collect();
    store.update_index(&plan.spec.name, updates)?;

    Ok(RunReport {
        outcomes: nodes
            .iter()
            .filter_map(|n| outcomes.remove(n).map(|o| (*n, o)))
            .collect(),
    })
}

/// Runs one instance under its key's lock, storing the artifact on success.
fn run_instance(
    plan: &Plan,
    store: &Store,
    n: NodeIndex,
    threads: usize,
    observer: &dyn Observer,
) -> Outcome {
    let inst = &plan.graph[n];
    let stage = &plan.spec.stages[inst.stage];
    let log_path = store.log_path(&inst.key);
    let fail = |message: String| Outcome::Failed {
        message,
        log: log_path.clone(),
        bad_data: false,
    };

    let _lock = match store.lock(&inst.key, &mut |h| {
        observer.event(plan, Event::Waiting(n, h))
    }) {
        Ok(l) => l,
        Err(e) => {
            return fail(format!(
                "cannot take the lock for key {}: {e}",
                &inst.key[..12]
            ));
        }
    };
    if store.is_complete(&inst.key) {
        return Outcome::Cached;
    }
    // Append mode: a worker process writes into the same log while this one holds it open.
    let opened = std::fs::write(&log_path, b"")
        .and_then(|_| std::fs::OpenOptions::new().append(true).open(&log_path));
    let mut log = match opened {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create log {}: {e}", log_path.display())),
    };
    let mut inputs = Vec::with_capacity(inst.inputs.len());
    for (slot, up) in &inst.inputs {
        let key = &plan.graph[*up].key;
        if !store.is_complete(key) {
            return fail(format!(
                "input {} ({}) is missing or damaged in the cache",
                plan.label(*up),
                &key[..12]
            ));
        }
        inputs.push(InputArtifact {
            slot: slot.clone(),
            key: key.clone(),
            dir: store.artifact_dir(key),
        });
    }
    let parts = parts_of(plan, store, n);
    let tmp = match store.begin(&inst.key) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot create a temp folder in the cache: {e}")),
    };
    let _ = writeln!(
        log,
        "# pipe {}: stage {} ({}), key {}, point {}, {} thread(s)",
        env!("CARGO_PKG_VERSION"),
        stage.name,
        stage.kind.name(),
        inst.key,
        inst.point,
        threads
    );
    let started = unix_now();
    let clock = Instant::now();
    let result = {
        let mut ctx = RunContext {
            params: &inst.params,
            inputs: &inputs,
            parts: &parts,
            out: &tmp,
            log: &mut log,
            log_path: &log_path,
            threads,
            base_dir: &plan.spec.base_dir,
            key: &inst.key,
            point: &inst.point,
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| stage.kind.run(&mut ctx)))
    };
    let seconds = clock.elapsed().as_secs_f64();
    let mut bad_data = false;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            bad_data = e.chain().any(|c| c.is::<BadData>());
            Some(format!("{e:#}"))
        }
        Err(panic) => Some(format!(
            "the stage panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    };
    if let Some(message) = error {
        let _ = writeln!(log, "# failed after {seconds:.3}s: {message}");
        store.discard(&tmp);
        return Outcome::Failed {
            message,
            log: log_path,
            bad_data,
        };
    }
    let mut draft = parts.template.clone();
    draft.started = started;
    draft.seconds = seconds;
    match store.commit(&tmp, draft) {
        Ok(_) => {
            let _ = writeln!(log, "# done in {seconds:.3}s");
            Outcome::Executed { seconds }
        }
        Err(e) => {
            let message = format!("could not store the artifact: {e}");
            let _ = writeln!(log, "# failed: {message}");
            fail(message)
        }
    }
}

/// The parts handle of an instance: the cache and a manifest template describing it.
fn parts_of(plan: &Plan, store: &Store, node: NodeIndex) -> Parts {
    let inst = &plan.graph[node];
    let stage = &plan.spec.stages[inst.stage];
    Parts {
        cache: store.root().to_path_buf(),
        template: Manifest {
            key: inst.key.clone(),
            kind: stage.kind.name().to_string(),
            version: stage.kind.version(),
            stage: stage.name.clone(),
            pipeline: plan.spec.name.clone(),
            point: inst.point.clone(),
            params: serde_json::Value::Object(inst.key_params.clone()),
            inputs: inst
                .inputs
                .iter()
                .map(|(s, up)| (s.clone(), plan.graph[*up].key.clone()))
                .collect::<BTreeMap<_, _>>(),
            declared_files: inst.files.iter().cloned().collect(),
            files: Vec::new(),
            started: 0.0,
            seconds: 0.0,
            pipe_version: env!("CARGO_PKG_VERSION").to_string(),
            host: store.host().to_string(),
        },
    }
}
