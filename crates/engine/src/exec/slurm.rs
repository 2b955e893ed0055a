//! The Slurm executor: every instance that must run becomes one `sbatch` job whose
//! dependencies are its inputs' jobs (`--dependency=afterok:...`). A job runs
//! `pipe job --cache DIR JOBFILE` on its node, which computes the instance from the job
//! file in the shared cache with [`compute_instance`](super::job::compute_instance), exactly as a local run
//! does. Progress comes from one `squeue` call per poll interval for the whole run.
//!
//! Each run keeps its files in `CACHE/runs/RUN/`: `run.json` (the job ids), `jobs/RECIPE.json`
//! (the job), `jobs/RECIPE.outcome.json` (written by the job, with the key it resolved),
//! `logs/RECIPE.out` (Slurm's log). A job whose key planning could not know (an input's
//! content was not known yet) resolves it on its node once its inputs exist, from its
//! inputs' manifests and, for inputs computed in the same run, their outcome files; if that
//! key is cached it exits at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;

use super::executor::{Executor, ExecutorOptions, ExecutorRun, Interrupt, LiveInstance};
use super::job::InstanceJob;
use super::job_outcome::{JobOutcome, resolved_key};
use super::{Event, Observer, Outcome, RunOptions, RunReport, Triage, conclude, triage};
use crate::error::Error;
use crate::plan::Plan;
use crate::resources::Resources;
use crate::runs::{JobRecord, RunRecord, records, save_record};
use crate::store::{Store, write_atomic};

/// The Slurm executor, `--executor slurm`: one `sbatch` job per instance.
pub struct Slurm;

impl Executor for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn about(&self) -> &'static str {
        "As Slurm jobs (`sbatch`), on a cache every node shares"
    }

    fn submits_jobs(&self) -> bool {
        true
    }

    fn interrupt(&self) -> Interrupt {
        Interrupt::CancelAndReturn
    }

    fn check(&self, opts: &ExecutorOptions) -> Result<(), String> {
        if !opts.gpus.is_empty() {
            return Err("--gpus places instances on this machine's GPUs (local executor); on Slurm, give the stage `resources = { gpus = 1 }` or `device = \"cuda\"`".into());
        }
        Ok(())
    }

    fn run(
        &self,
        plan: &Plan,
        store: &Store,
        opts: &RunOptions,
        executor_opts: &ExecutorOptions,
        observer: &dyn Observer,
        interrupted: &AtomicBool,
        record: RunRecord,
    ) -> Result<ExecutorRun, Error> {
        let slurm = SlurmOptions::of(executor_opts)?;
        let (report, record) = run(plan, store, opts, &slurm, observer, interrupted, record)?;
        Ok(ExecutorRun {
            report,
            record,
            detached: slurm.detach,
        })
    }

    fn live_instances(
        &self,
        store: &Store,
        recipes: &HashSet<&str>,
    ) -> HashMap<String, LiveInstance> {
        live_jobs(store, recipes)
    }

    fn settle(&self, store: &Store, record: &mut RunRecord, now: bool) -> bool {
        if record.finished || (record.jobs.is_empty() && !now) {
            return false;
        }
        if !now {
            let ids: Vec<&str> = record.jobs.iter().map(|j| j.job_id.as_str()).collect();
            let Ok(states) = query(&ids) else {
                return false;
            };
            if ids
                .iter()
                .any(|id| states.get(*id).is_some_and(|q| is_active(&q.state)))
            {
                return false;
            }
        }
        settle_from_outcomes(store, record);
        true
    }

    fn cancel(&self, record: &RunRecord) -> Result<Vec<String>, String> {
        let ids: Vec<&str> = record.jobs.iter().map(|j| j.job_id.as_str()).collect();
        let states = query(&ids)?;
        let active: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| states.get(*id).is_some_and(|q| !has_ended(&q.state)))
            .collect();
        cancel(&active)?;
        Ok(active.into_iter().map(str::to_string).collect())
    }
}

/// Options of a Slurm run, from the executor options.
#[derive(Clone, Debug)]
struct SlurmOptions {
    /// `--partition` for every job.
    partition: Option<String>,
    /// Extra `sbatch` arguments, passed as given.
    args: Vec<String>,
    /// Submit and return without waiting.
    detach: bool,
    /// Time between two `squeue` polls.
    poll: Duration,
    /// The `pipe` binary the jobs run (on a filesystem the nodes share).
    exe: PathBuf,
}

impl SlurmOptions {
    /// What the executor options ask of Slurm; the jobs run this process's binary unless
    /// the options name one.
    fn of(opts: &ExecutorOptions) -> Result<SlurmOptions, Error> {
        let exe = match &opts.exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()
                .map_err(|e| Error::usage(format!("cannot find the pipe binary: {e}")))?,
        };
        Ok(SlurmOptions {
            partition: opts.queue.clone(),
            args: opts.submit_args.clone(),
            detach: opts.detach,
            poll: opts.poll(),
            exe,
        })
    }
}

/// The queued or running jobs, by recipe, of unfinished runs that compute one of
/// `recipes` (one `squeue` call). Runs none of whose jobs is queued or running any more are marked
/// finished.
fn live_jobs(store: &Store, recipes: &HashSet<&str>) -> HashMap<String, LiveInstance> {
    let mut out = HashMap::new();
    if recipes.is_empty() {
        // Nothing to look for (a status of cached instances): no record is read.
        return out;
    }
    let open: Vec<RunRecord> = records(store).into_iter().filter(|r| !r.finished).collect();
    if open.is_empty() {
        return out;
    }
    let ids: Vec<&str> = open
        .iter()
        .flat_map(|r| r.jobs.iter().map(|j| j.job_id.as_str()))
        .collect();
    let Ok(states) = query(&ids) else {
        return out;
    };
    for mut r in open {
        let mut active = false;
        for j in &r.jobs {
            let Some(q) = states.get(&j.job_id).filter(|q| is_active(&q.state)) else {
                continue;
            };
            active = true;
            if recipes.contains(j.recipe.as_str()) {
                out.insert(
                    j.recipe.clone(),
                    LiveInstance {
                        executor: Slurm.name(),
                        run: r.id.clone(),
                        job_id: j.job_id.clone(),
                        state: q.state.clone(),
                        reason: q.reason.clone(),
                    },
                );
            }
        }
        if !active {
            settle_from_outcomes(store, &mut r);
            let _ = save_record(store, &r);
        }
    }
    out
}

/// Marks a run whose jobs have all left the queue finished: its counts from the outcome
/// files its jobs wrote (a job that left none, cancelled or killed before it could, counts
/// as skipped after a cancel and as failed otherwise), its end the last outcome's time,
/// its exit 1 if any job failed.
fn settle_from_outcomes(store: &Store, r: &mut RunRecord) {
    let (mut executed, mut cached, mut failed, mut skipped) = (0, 0, 0, 0);
    let mut ended = r.submitted;
    for j in &r.jobs {
        let job_file = crate::runs::runs_dir(store)
            .join(&r.id)
            .join("jobs")
            .join(format!("{}.json", j.recipe));
        match JobOutcome::read(&job_file) {
            Some(o) => {
                match o.outcome.as_str() {
                    "executed" => executed += 1,
                    "cached" => cached += 1,
                    "skipped" => skipped += 1,
                    _ => failed += 1,
                }
                if let Some(t) = std::fs::metadata(super::job_outcome::outcome_path(&job_file))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                {
                    ended = ended.max(t.as_secs_f64());
                }
            }
            None if r.cancelled => skipped += 1,
            None => failed += 1,
        }
    }
    r.counts.executed = executed;
    r.counts.cached += cached;
    r.counts.failed = failed;
    r.counts.skipped = skipped;
    r.finished = true;
    r.ended = Some(if r.cancelled {
        crate::store::unix_now()
    } else {
        ended
    });
    r.exit = Some(if failed > 0 { 1 } else { 0 });
}

/// A job's state as `squeue` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueState {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, ...
    pub state: String,
    /// Slurm's reason (`Dependency`, `None`, `NonZeroExitCode`, ...).
    pub reason: String,
}

/// Parses `squeue -h -o '%i|%T|%r'` output.
pub fn parse_squeue(text: &str) -> HashMap<String, QueueState> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, '|');
            let id = f.next()?.trim().to_string();
            let state = f.next()?.trim().to_string();
            let reason = f.next().unwrap_or("").trim().to_string();
            (!id.is_empty()).then_some((id, QueueState { state, reason }))
        })
        .collect()
}

/// The states of these jobs, finished ones included, in one `squeue` call. Jobs Slurm has
/// forgotten are absent.
pub fn query(ids: &[&str]) -> Result<HashMap<String, QueueState>, String> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%T|%r", "-j", &ids.join(",")])
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // A single forgotten id is an error for squeue; it is just not there.
        if ids.len() == 1 && err.contains("Invalid job id") {
            return Ok(HashMap::new());
        }
        return Err(format!("squeue failed: {}", err.trim()));
    }
    Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
}

/// Cancels jobs with `scancel`.
pub fn cancel(ids: &[&str]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let out = Command::new("scancel")
        .args(ids)
        .output()
        .map_err(|e| format!("cannot run scancel: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scancel failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Quotes a word for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Slurm states in which a job has ended, so that there is nothing to cancel.
fn has_ended(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
    )
}

/// Slurm states in which a job will still run or is running.
fn is_active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "CONFIGURING"
            | "RUNNING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "RESIZING"
            | "STAGE_OUT"
            | "SIGNALING"
    )
}

/// A submitted, unfinished job.
struct Live {
    job_id: String,
    job_file: PathBuf,
    slurm_log: PathBuf,
    cpus: usize,
    started: bool,
    misses: u32,
}

/// Submits the plan's missing instances as Slurm jobs and (unless detached) waits for
/// them. `record` is the run's record, begun by the caller; the jobs are added to it.
/// Returns each instance's outcome and the run's record.
fn run(
    plan: &Plan,
    store: &Store,
    opts: &RunOptions,
    slurm: &SlurmOptions,
    observer: &dyn Observer,
    interrupted: &AtomicBool,
    mut record: RunRecord,
) -> Result<(RunReport, RunRecord), Error> {
    store.prepare().map_err(|e| Error::io(store.root(), e))?;
    let root = std::fs::canonicalize(store.root()).map_err(|e| Error::io(store.root(), e))?;
    let base_dir =
        std::fs::canonicalize(&plan.spec.base_dir).unwrap_or_else(|_| plan.spec.base_dir.clone());
    let Triage {
        nodes,
        outcomes,
        to_run,
    } = triage(plan, store, opts, observer);
    record.finished = to_run.is_empty();
    if to_run.is_empty() {
        let report =
            conclude(plan, store, &nodes, outcomes).map_err(|e| Error::io(store.root(), e))?;
        return Ok((report, record));
    }
    let dir = root.join("runs").join(&record.id);
    for sub in ["jobs", "logs"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    let mut run = SlurmRun {
        plan,
        store,
        opts,
        slurm,
        observer,
        root,
        dir,
        record,
        live: HashMap::new(),
        outcomes,
    };
    // Submit in plan order, so that every input's job id is known before its users'.
    for &n in &to_run {
        run.submit(n, &base_dir)?;
    }
    save_record(store, &run.record)?;
    if slurm.detach {
        return Ok((report(&nodes, run.outcomes), run.record));
    }
    run.wait(interrupted);
    run.record.finished = run.live.is_empty();
    save_record(store, &run.record)?;
    let report =
        conclude(plan, store, &nodes, run.outcomes).map_err(|e| Error::io(store.root(), e))?;
    Ok((report, run.record))
}

/// A Slurm run being submitted and watched: what its steps share.
struct SlurmRun<'a> {
    /// The plan.
    plan: &'a Plan,
    /// The cache.
    store: &'a Store,
    /// The run's options.
    opts: &'a RunOptions,
    /// The Slurm options.
    slurm: &'a SlurmOptions,
    /// Where events go.
    observer: &'a dyn Observer,
    /// The cache folder, canonical (as the jobs are given it).
    root: PathBuf,
    /// The run's folder, `CACHE/runs/RUN`.
    dir: PathBuf,
    /// The run's record.
    record: RunRecord,
    /// The submitted jobs that have not ended, by instance.
    live: HashMap<NodeIndex, Live>,
    /// The instances' outcomes so far.
    outcomes: HashMap<NodeIndex, Outcome>,
}

impl SlurmRun<'_> {
    /// Writes instance `n`'s job file (relative paths resolving against `base_dir`) and
    /// submits its job, depending on its inputs' jobs. If `sbatch` refuses it, the jobs
    /// submitted before are cancelled.
    fn submit(&mut self, n: NodeIndex, base_dir: &Path) -> Result<(), Error> {
        let plan = self.plan;
        let inst = &plan.graph[n];
        let stage = &plan.spec.stages[inst.stage];
        let mut job = InstanceJob::of(plan, n);
        job.base_dir = base_dir.to_path_buf();
        job.remote = self.opts.remote.as_ref().map(|r| r.url().to_string());
        for (input, (_, up)) in job.inputs.iter_mut().zip(&inst.inputs) {
            if input.key.is_none() {
                input.job = self.live.get(up).map(|l| l.job_file.clone());
            }
        }
        let job_file = self.dir.join("jobs").join(format!("{}.json", inst.recipe));
        let text = serde_json::to_vec_pretty(&job).unwrap_or_default();
        write_atomic(&job_file, &text).map_err(|e| Error::io(&job_file, e))?;
        let res = stage
            .kind
            .resources(&inst.params)
            .overridden_by(&stage.resources);
        let slurm_log = self.dir.join("logs").join(format!("{}.out", inst.recipe));
        let cpus = res.cpus.unwrap_or(1).max(1);
        let mut args: Vec<String> = vec![
            "--parsable".into(),
            format!("--job-name=pipe-{}-{}", self.record.id, stage.name),
            format!("--output={}", slurm_log.display()),
            "--kill-on-invalid-dep=yes".into(),
        ];
        args.extend(resource_args(&res, cpus, self.slurm.partition.as_deref()));
        let deps: Vec<&str> = inst
            .inputs
            .iter()
            .filter_map(|(_, up)| self.live.get(up).map(|l| l.job_id.as_str()))
            .collect();
        if !deps.is_empty() {
            args.push(format!("--dependency=afterok:{}", deps.join(":")));
        }
        args.extend(self.slurm.args.iter().cloned());
        args.push(format!(
            "--wrap=exec {} job --cache {} {}",
            sh_quote(&self.slurm.exe.to_string_lossy()),
            sh_quote(&self.root.to_string_lossy()),
            sh_quote(&job_file.to_string_lossy())
        ));
        let job_id = self.sbatch(n, &args)?;
        self.record.jobs.push(JobRecord {
            recipe: inst.recipe.clone(),
            label: plan.label(n),
            job_id: job_id.clone(),
            log: slurm_log.clone(),
        });
        self.live.insert(
            n,
            Live {
                job_id,
                job_file,
                slurm_log,
                cpus: cpus as usize,
                started: false,
                misses: 0,
            },
        );
        Ok(())
    }

    /// Runs `sbatch` with `args` for instance `n` and returns the job id; when it fails,
    /// cancels every job submitted so far.
    fn sbatch(&self, n: NodeIndex, args: &[String]) -> Result<String, Error> {
        let submitted = Command::new("sbatch").args(args).output();
        match submitted {
            Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .to_string()),
            Ok(out) => {
                let ids: Vec<&str> = self.live.values().map(|l| l.job_id.as_str()).collect();
                let _ = cancel(&ids);
                Err(Error::usage(format!(
                    "sbatch refused the job of {}: {}(the {} jobs submitted before it were cancelled)",
                    self.plan.label(n),
                    String::from_utf8_lossy(&out.stderr),
                    ids.len()
                )))
            }
            Err(e) => {
                let ids: Vec<&str> = self.live.values().map(|l| l.job_id.as_str()).collect();
                let _ = cancel(&ids);
                Err(Error::usage(format!(
                    "cannot run sbatch ({e}); --executor slurm needs the Slurm client commands on PATH"
                )))
            }
        }
    }

    /// Polls the queue once per poll interval until every job has ended, or cancels the
    /// jobs left when the run is `interrupted`.
    fn wait(&mut self, interrupted: &AtomicBool) {
        let mut last_poll = Instant::now() - self.slurm.poll;
        while !self.live.is_empty() {
            if interrupted.load(Ordering::SeqCst) {
                self.cancel_interrupted();
                break;
            }
            let wait = self.slurm.poll.saturating_sub(last_poll.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                continue;
            }
            last_poll = Instant::now();
            let ids: Vec<&str> = self.live.values().map(|l| l.job_id.as_str()).collect();
            let states = match query(&ids) {
                Ok(s) => s,
                Err(_) => continue,
            };
            let ended = self.poll(&states);
            self.settle(ended);
        }
    }

    /// Cancels every live job of an interrupted run; their instances are skipped.
    fn cancel_interrupted(&mut self) {
        let ids: Vec<&str> = self.live.values().map(|l| l.job_id.as_str()).collect();
        let _ = cancel(&ids);
        let nodes: Vec<NodeIndex> = self.live.keys().copied().collect();
        for n in nodes {
            self.live.remove(&n);
            let o = Outcome::Skipped {
                reason: format!(
                    "run {} was interrupted; its jobs were cancelled",
                    self.record.id
                ),
            };
            self.observer.event(self.plan, Event::Finished(n, &o));
            self.outcomes.insert(n, o);
        }
    }

    /// Goes through the live jobs in plan order with the queue's `states`: reports the
    /// ones that started, and returns the outcomes of the ones that ended.
    fn poll(&mut self, states: &HashMap<String, QueueState>) -> Vec<(NodeIndex, Outcome)> {
        let mut order: Vec<NodeIndex> = self.live.keys().copied().collect();
        order.sort();
        order
            .into_iter()
            .filter_map(|n| self.check(n, states).map(|o| (n, o)))
            .collect()
    }

    /// What the queue's `states` say about instance `n`'s job: `None` while it is queued
    /// or running (reporting its start), else how it ended. A job the queue has forgotten
    /// has ended when its artifact is in the cache, or after three polls.
    fn check(&mut self, n: NodeIndex, states: &HashMap<String, QueueState>) -> Option<Outcome> {
        let key = self.key_now(n);
        let l = self.live.get_mut(&n).expect("live job");
        match states.get(&l.job_id) {
            Some(q) if q.state == "PENDING" && q.reason.contains("DependencyNeverSatisfied") => {
                let _ = cancel(&[l.job_id.as_str()]);
                Some(Outcome::Skipped {
                    reason: "an input's job failed".into(),
                })
            }
            Some(q) if is_active(&q.state) => {
                l.misses = 0;
                if !l.started && q.state != "PENDING" {
                    l.started = true;
                    self.observer.event(self.plan, Event::Started(n, l.cpus));
                }
                None
            }
            Some(q) if q.state == "CANCELLED" && q.reason.contains("Dependency") => {
                Some(Outcome::Skipped {
                    reason: "an input's job failed".into(),
                })
            }
            Some(q) => Some(finished(self.store, key.as_deref(), l, &q.state)),
            None => {
                // Forgotten by Slurm (or not yet visible): the cache decides.
                l.misses += 1;
                (key.as_deref().is_some_and(|k| self.store.is_complete(k)) || l.misses >= 3)
                    .then(|| finished(self.store, key.as_deref(), l, "gone from the queue"))
            }
        }
    }

    /// Instance `n`'s key: known at planning, or resolved once its inputs are in the
    /// cache (as its job resolves it), or the one its job's outcome file records.
    fn key_now(&self, n: NodeIndex) -> Option<String> {
        if let Some(k) = self.plan.key(n) {
            return Some(k);
        }
        if let Some(k) = self.plan.resolve(n, self.store) {
            return Some(k);
        }
        self.live
            .get(&n)
            .and_then(|l| resolved_key(&l.job_file).ok().flatten())
    }

    /// Records the outcomes of jobs that ended (each instance once); after a failure,
    /// skips and cancels what can no longer run.
    fn settle(&mut self, ended: Vec<(NodeIndex, Outcome)>) {
        for (n, outcome) in ended {
            if self.live.remove(&n).is_none() {
                continue;
            }
            if matches!(outcome, Outcome::Executed { .. } | Outcome::Cached) {
                // Its key (and its dependents') now follow from what is in the cache.
                self.plan.unresolve(n);
                self.plan.resolve(n, self.store);
            }
            let failed = matches!(outcome, Outcome::Failed { .. });
            self.observer.event(self.plan, Event::Finished(n, &outcome));
            self.outcomes.insert(n, outcome);
            if failed {
                self.skip_after_failure(n);
            }
        }
    }

    /// After instance `n` failed: skips and cancels its descendants' live jobs, or every
    /// live job with `--fail-fast`.
    fn skip_after_failure(&mut self, n: NodeIndex) {
        let label = self.plan.label(n);
        let mut cancelled: Vec<String> = Vec::new();
        let skip: HashSet<NodeIndex> = if self.opts.fail_fast {
            self.live.keys().copied().collect()
        } else {
            self.plan.descendants(n).into_iter().collect()
        };
        for d in skip {
            if let Some(l) = self.live.remove(&d) {
                cancelled.push(l.job_id);
                let o = Outcome::Skipped {
                    reason: if self.opts.fail_fast {
                        "the run stopped at the first failure (--fail-fast)".into()
                    } else {
                        format!("input {label} failed")
                    },
                };
                self.observer.event(self.plan, Event::Finished(d, &o));
                self.outcomes.insert(d, o);
            }
        }
        let ids: Vec<&str> = cancelled.iter().map(String::as_str).collect();
        let _ = cancel(&ids);
    }
}

/// `sbatch` arguments for what a job asks for: `cpus` CPUs (at least 1), the GPUs, memory
/// and time limit of `res` where given, and the partition.
fn resource_args(res: &Resources, cpus: u32, partition: Option<&str>) -> Vec<String> {
    let mut args = vec![format!("--cpus-per-task={cpus}")];
    if let Some(g) = res.gpus.filter(|g| *g > 0) {
        args.push(format!("--gpus={g}"));
    }
    if let Some(m) = &res.mem {
        args.push(format!("--mem={m}"));
    }
    if let Some(t) = &res.time {
        args.push(format!("--time={t}"));
    }
    if let Some(p) = partition {
        args.push(format!("--partition={p}"));
    }
    args
}

/// The report of a detached run: the outcomes known so far, in `nodes` order.
fn report(nodes: &[NodeIndex], mut outcomes: HashMap<NodeIndex, Outcome>) -> RunReport {
    RunReport {
        outcomes: nodes
            .iter()
            .filter_map(|n| outcomes.remove(n).map(|o| (*n, o)))
            .collect(),
    }
}

/// The outcome of a job that left the queue, from its outcome file and the cache.
fn finished(store: &Store, key: Option<&str>, l: &Live, state: &str) -> Outcome {
    let recorded = JobOutcome::read(&l.job_file);
    let key = key
        .map(str::to_string)
        .or_else(|| {
            recorded
                .as_ref()
                .and_then(|r| r.key.clone())
                .filter(|k| crate::key::is_key(k))
        })
        .unwrap_or_default();
    let key = key.as_str();
    let instance_log = store.log_path(key);
    let log = if !key.is_empty() && instance_log.exists() {
        instance_log
    } else {
        l.slurm_log.clone()
    };
    if !key.is_empty() && store.is_complete(key) {
        return match recorded {
            Some(r) if r.outcome == "cached" => Outcome::Cached,
            Some(r) => Outcome::Executed { seconds: r.seconds },
            None => Outcome::Executed {
                seconds: store.manifest(key).map_or(0.0, |m| m.seconds),
            },
        };
    }
    let (message, bad_data) = match recorded {
        Some(r) if r.outcome == "failed" => (r.message.unwrap_or_default(), r.bad_data),
        _ => (
            format!("the job ended {state} without storing the artifact"),
            false,
        ),
    };
    Outcome::Failed {
        message: format!(
            "{message} (slurm job {}, {state}; slurm log {})",
            l.job_id,
            l.slurm_log.display()
        ),
        log,
        bad_data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_and_quoting() {
        let s = parse_squeue(
            "12|PENDING|Dependency\n13|COMPLETED|None\n\n 14|CANCELLED|DependencyNeverSatisfied\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(
            s["12"],
            QueueState {
                state: "PENDING".into(),
                reason: "Dependency".into()
            }
        );
        assert_eq!(s["14"].reason, "DependencyNeverSatisfied");
        assert_eq!(sh_quote("a b'c"), "'a b'\\''c'");
        assert!(is_active("RUNNING") && !is_active("COMPLETED") && !is_active("FAILED"));
    }
}
