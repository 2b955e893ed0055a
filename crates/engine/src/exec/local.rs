//! The local executor: runs ready instances in parallel within a thread budget.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::executor::{Executor, ExecutorOptions, ExecutorRun, Interrupt, LiveInstance};
use super::job::{InstanceJob, compute_instance};
use super::workers::Workers;
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
    let Triage {
        nodes,
        outcomes,
        to_run,
    } = triage(plan, store, opts, observer);
    let mut scheduler = Scheduler::new(plan, store, opts, observer, &to_run, outcomes);
    let (tx, rx) = mpsc::channel::<Message>();

    std::thread::scope(|scope| {
        let workers = Workers::new(scope);
        loop {
            scheduler.start_ready(&workers, &tx);
            if !scheduler.await_settled(&rx) {
                break;
            }
            scheduler.settle_all();
        }
    });

    scheduler.skip_never_started(&to_run);
    // Published artifacts' renames are durable once the run returns.
    store.sync()?;
    conclude(plan, store, &nodes, scheduler.outcomes)
}

/// An instance that ended or was found cached: its node, the threads and GPU it held, and
/// its outcome.
type Ended = (NodeIndex, usize, Option<u32>, Outcome);

/// What an instance's thread tells the scheduler.
enum Message {
    /// Its output is sealed and waits for the group commit: the threads and GPU it held
    /// are free for the next instance.
    Sealed(usize, Option<u32>),
    /// It ended (with what it still held).
    Ended(Ended),
}

/// The state of one local run: which instances wait, are ready or run, and the thread
/// budget and GPUs they hold.
struct Scheduler<'a> {
    plan: &'a Plan,
    store: &'a Store,
    opts: &'a RunOptions,
    observer: &'a dyn Observer,
    /// The thread budget (`--jobs`, at least 1).
    jobs: usize,
    /// Each outcome so far, by instance.
    outcomes: HashMap<NodeIndex, Outcome>,
    /// For each instance not yet settled, how many of its inputs are not settled yet.
    pending: HashMap<NodeIndex, usize>,
    /// Instances whose inputs are all settled, ordered by node index, which is plan order:
    /// inputs first, then declaration and sweep order.
    ready: BTreeSet<NodeIndex>,
    /// How many instances run in threads now.
    running: usize,
    /// Threads the running instances hold.
    threads_in_use: usize,
    /// Whether nothing more starts (--fail-fast after a failure).
    stop: bool,
    /// The run's GPUs, free or held.
    gpus: GpuSlots,
    /// Which instances hold a GPU while they run (asked once, not at every scheduling step).
    on_gpu: BTreeSet<NodeIndex>,
    /// Outcomes to settle: from finished threads, or found at once (an instance whose
    /// key, known once its inputs are, is already cached: early cutoff).
    settled: Vec<Ended>,
}

impl<'a> Scheduler<'a> {
    /// A scheduler for the instances to run, given the outcomes triage already knows.
    fn new(
        plan: &'a Plan,
        store: &'a Store,
        opts: &'a RunOptions,
        observer: &'a dyn Observer,
        to_run: &[NodeIndex],
        outcomes: HashMap<NodeIndex, Outcome>,
    ) -> Scheduler<'a> {
        let mut pending: HashMap<NodeIndex, usize> = HashMap::new();
        for &n in to_run {
            let waiting = plan
                .graph
                .neighbors_directed(n, Direction::Incoming)
                .filter(|up| !outcomes.contains_key(up))
                .count();
            pending.insert(n, waiting);
        }
        let ready = to_run.iter().copied().filter(|n| pending[n] == 0).collect();
        let gpus = GpuSlots::new(&opts.gpus, opts.per_gpu);
        let on_gpu = if gpus.placing() {
            to_run
                .iter()
                .copied()
                .filter(|&n| wants_gpu(plan, n))
                .collect()
        } else {
            BTreeSet::new()
        };
        Scheduler {
            plan,
            store,
            opts,
            observer,
            jobs: opts.jobs.max(1),
            outcomes,
            pending,
            ready,
            running: 0,
            threads_in_use: 0,
            stop: false,
            gpus,
            on_gpu,
            settled: Vec::new(),
        }
    }

    /// The first ready instance that can start (a GPU instance waits for a free GPU
    /// without holding back the CPU instances behind it); none once the run stops.
    fn next_startable(&self) -> Option<NodeIndex> {
        self.ready
            .iter()
            .copied()
            .find(|&n| !self.on_gpu.contains(&n) || self.gpus.any_free())
            .filter(|_| !self.stop)
    }

    /// Starts ready instances in plan order, each on a thread of `workers` that sends its
    /// outcome to `tx`, until the thread budget is spent or none can start; a ready
    /// instance whose key is already cached is settled instead.
    fn start_ready<'scope>(&mut self, workers: &Workers<'scope, '_>, tx: &mpsc::Sender<Message>)
    where
        'a: 'scope,
    {
        let (plan, store, observer) = (self.plan, self.store, self.observer);
        while let Some(n) = self.next_startable() {
            if resolve_ready(plan, store, n) {
                self.ready.remove(&n);
                self.settled.push((n, 0, None, Outcome::Cached));
                continue;
            }
            let want = plan.graph[n].threads.min(self.jobs);
            if self.threads_in_use + want > self.jobs {
                break;
            }
            self.ready.remove(&n);
            let gpu = if self.on_gpu.contains(&n) {
                self.gpus.take()
            } else {
                None
            };
            let visible = self
                .gpus
                .placing()
                .then(|| gpu.map_or(String::new(), |g| g.to_string()));
            self.threads_in_use += want;
            self.running += 1;
            let tx = tx.clone();
            observer.event(plan, Event::Started(n, want));
            let remote = self.opts.remote.as_deref();
            workers.run(move || {
                let mut held = (want, gpu);
                let mut on_sealed = || {
                    let _ = tx.send(Message::Sealed(held.0, held.1));
                    held = (0, None);
                };
                let outcome = run_instance(
                    plan,
                    store,
                    remote,
                    n,
                    (want, visible),
                    observer,
                    &mut on_sealed,
                );
                let _ = tx.send(Message::Ended((n, held.0, held.1, outcome)));
            });
        }
    }

    /// Makes sure there is an outcome to settle, waiting for a running instance to end if
    /// need be; false when there is none and none can come (the run is over). A running
    /// instance whose output was sealed frees its threads and GPU, which also returns true
    /// (something more may start).
    fn await_settled(&mut self, rx: &mpsc::Receiver<Message>) -> bool {
        if !self.settled.is_empty() {
            return true;
        }
        if self.running == 0 {
            return false;
        }
        match rx.recv() {
            Ok(Message::Sealed(used, gpu)) => {
                self.threads_in_use -= used;
                self.gpus.give_back(gpu);
            }
            Ok(Message::Ended(done)) => {
                self.running -= 1;
                self.settled.push(done);
            }
            Err(_) => return false,
        }
        true
    }

    /// Settles every outcome waiting to be settled, in the order they came.
    fn settle_all(&mut self) {
        for ended in std::mem::take(&mut self.settled) {
            self.settle(ended);
        }
    }

    /// Settles one outcome: frees its threads and GPU, reports it, and either skips what
    /// depends on it (a failure) or readies the instances it was the last input of.
    fn settle(&mut self, (n, used, gpu, outcome): Ended) {
        let plan = self.plan;
        self.threads_in_use -= used;
        self.gpus.give_back(gpu);
        if matches!(outcome, Outcome::Executed { .. }) {
            plan.forget_digest(n);
        }
        self.observer.event(plan, Event::Finished(n, &outcome));
        let failed = matches!(outcome, Outcome::Failed { .. });
        self.outcomes.insert(n, outcome);
        if failed {
            self.skip_descendants(n);
            if self.opts.fail_fast {
                self.stop = true;
            }
            return;
        }
        for d in plan.graph.neighbors_directed(n, Direction::Outgoing) {
            if let Some(c) = self.pending.get_mut(&d) {
                *c -= 1;
                if *c == 0 {
                    self.ready.insert(d);
                }
            }
        }
        self.pending.remove(&n);
    }

    /// Skips every instance still waiting that depends on the failed instance `n`.
    fn skip_descendants(&mut self, n: NodeIndex) {
        let plan = self.plan;
        let label = plan.label(n);
        for d in plan.descendants(n) {
            if self.pending.remove(&d).is_some() {
                let o = Outcome::Skipped {
                    reason: format!("input {label} failed"),
                };
                self.observer.event(plan, Event::Finished(d, &o));
                self.outcomes.insert(d, o);
            }
        }
    }

    /// With --fail-fast, skips whatever never started.
    fn skip_never_started(&mut self, to_run: &[NodeIndex]) {
        for &n in to_run {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.outcomes.entry(n) {
                let o = Outcome::Skipped {
                    reason: "the run stopped at the first failure (--fail-fast)".into(),
                };
                self.observer.event(self.plan, Event::Finished(n, &o));
                slot.insert(o);
            }
        }
    }
}

/// The GPUs of a run (`--gpus`), each held by at most `--per-gpu` instances at a time.
#[derive(Debug)]
pub struct GpuSlots {
    /// Free slots of each GPU.
    free: BTreeMap<u32, usize>,
    /// Whether the run places instances on GPUs at all.
    placing: bool,
}

impl GpuSlots {
    /// Slots for these GPUs, `per_gpu` each (no GPUs: no placement).
    pub fn new(gpus: &[u32], per_gpu: usize) -> GpuSlots {
        GpuSlots {
            free: gpus.iter().map(|&g| (g, per_gpu.max(1))).collect(),
            placing: !gpus.is_empty(),
        }
    }
    /// Whether the run places instances on GPUs.
    pub fn placing(&self) -> bool {
        self.placing
    }
    /// Whether a GPU has a free slot.
    pub fn any_free(&self) -> bool {
        self.free.values().any(|&n| n > 0)
    }
    /// Takes a slot of the GPU with the most free slots (the lowest index of equals), so
    /// that instances spread over the GPUs before they share one.
    pub fn take(&mut self) -> Option<u32> {
        let (&g, _) = self
            .free
            .iter()
            .filter(|(_, n)| **n > 0)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
        *self.free.get_mut(&g)? -= 1;
        Some(g)
    }
    /// Frees the slot an instance held.
    pub fn give_back(&mut self, gpu: Option<u32>) {
        if let Some(n) = gpu.and_then(|g| self.free.get_mut(&g)) {
            *n += 1;
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
/// cache, pulls it first if the remote has it, and pushes it once computed. `slot` is the
/// threads it may use and the GPUs it sees (`CUDA_VISIBLE_DEVICES`, when GPUs are placed).
fn run_instance(
    plan: &Plan,
    store: &Store,
    remote: Option<&Remote>,
    n: NodeIndex,
    (threads, visible_gpus): (usize, Option<String>),
    observer: &dyn Observer,
    on_sealed: &mut dyn FnMut(),
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
    let outcome = compute_instance(
        &mut job,
        kind,
        store,
        threads,
        &mut |h| observer.event(plan, Event::Waiting(n, h)),
        on_sealed,
    );
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
        let mut g = GpuSlots::new(&[3, 1], 1);
        assert!(g.placing() && g.any_free());
        assert_eq!(g.take(), Some(1));
        assert_eq!(g.take(), Some(3));
        assert!(!g.any_free());
        assert_eq!(g.take(), None);
        g.give_back(Some(3));
        g.give_back(None);
        assert_eq!(g.take(), Some(3));
        assert!(!GpuSlots::new(&[], 4).placing());
    }

    #[test]
    fn per_gpu_slots_spread_over_the_gpus_before_sharing_one() {
        let mut g = GpuSlots::new(&[0, 1], 3);
        let taken: Vec<u32> = (0..6).map_while(|_| g.take()).collect();
        assert_eq!(taken, [0, 1, 0, 1, 0, 1]);
        assert!(!g.any_free());
        g.give_back(Some(1));
        g.give_back(Some(1));
        g.give_back(Some(0));
        // GPU 1 has two free slots, GPU 0 one.
        assert_eq!(g.take(), Some(1));
        assert_eq!(g.take(), Some(0));
        assert_eq!(g.take(), Some(1));
        assert_eq!(g.take(), None);
    }
}
