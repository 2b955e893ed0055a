//! `pipe run`: checks the options, runs the plan's missing instances with the executor
//! `--executor` names (looked up in `exec::executors`), then prints a summary (or one
//! JSON object) and every failure.

use crate::cli::{errln, outln};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::builder::{PossibleValue, PossibleValuesParser};
use petgraph::graph::NodeIndex;
use serde::Serialize;

use super::progress::Progress;
use super::{Item, PipelineArgs, Verbosity, load, print_json};
use pipe_engine::error::Error;
use pipe_engine::exec::executor::{Executor, ExecutorOptions, Interrupt};
use pipe_engine::exec::registry;
use pipe_engine::exec::{self, Outcome, RunOptions, RunReport};
use pipe_engine::plan::Plan;
use pipe_engine::runs::{self, JobRecord, RunRecord};
use pipe_engine::store::remote::Remote;
use pipe_engine::store::{Removal, Store};

/// Arguments of `pipe run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Thread budget: running instances use at most this many threads together [default: cores].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Show what would run, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only this stage, or `stage[var=value,...]`, and what it needs (repeatable).
    #[arg(long, value_name = "STAGE[POINT]")]
    pub only: Vec<String>,
    /// Run only the instances at this point and what they need: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Compute these instances again although cached (`train[noise=0.4]`; repeatable):
    /// their artifacts and parts are removed first, and dependents rerun only if the new
    /// output differs.
    #[arg(long, value_name = "STAGE[POINT]")]
    pub force: Vec<String>,
    /// Stop starting instances after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Print one JSON object on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Where instances run: on this machine, or as Slurm jobs.
    #[arg(long, default_value = "local", value_parser = executor_names())]
    pub executor: String,
    /// Slurm partition for every job.
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,
    /// Extra `sbatch` argument for every job (repeatable), e.g. `--slurm-arg=--qos=long`.
    #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub submit_args: Vec<String>,
    /// With `--executor slurm`: submit the jobs and return; `pipe status` shows them.
    #[arg(long)]
    pub detach: bool,
    /// With `--executor slurm`: seconds between two `squeue` polls.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub poll: f64,
    /// Remote cache, `s3://BUCKET/PREFIX` [default: the pipeline's `[cache] remote`].
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Place GPU instances on these GPUs, one at a time each (`--gpus 0,1`; local executor).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub gpus: Vec<u32>,
    /// With `--gpus`: how many instances share one GPU at a time (spread over the GPUs
    /// first), for models too small to keep a GPU busy alone.
    #[arg(long, value_name = "N")]
    pub per_gpu: Option<usize>,
    /// A name for the run, shown by `pipe runs`, `table` and `export`; `--run NAME` finds it.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A note kept with the run's record, shown by `pipe runs`.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

/// `--executor`'s values: every registered executor's name, with its line of help.
fn executor_names() -> PossibleValuesParser {
    PossibleValuesParser::new(
        registry::executors()
            .iter()
            .map(|e| PossibleValue::new(e.name()).help(e.about())),
    )
}

/// The executor options of `pipe run`'s arguments.
fn executor_options(args: &RunArgs) -> ExecutorOptions {
    ExecutorOptions {
        queue: args.partition.clone(),
        submit_args: args.submit_args.clone(),
        detach: args.detach,
        poll_seconds: args.poll,
        gpus: args.gpus.clone(),
        exe: None,
    }
}

/// Rejects options of executors that submit jobs for one that does not, a poll interval
/// that is not a positive number, and what the executor itself does not take.
fn check_options(executor: &dyn Executor, opts: &ExecutorOptions) -> Result<(), Error> {
    if opts.asks_for_submission() && !executor.submits_jobs() {
        return Err(Error::usage(format!(
            "--detach, --partition and --slurm-arg need --executor {}",
            registry::job_executors().join(" or --executor ")
        )));
    }
    if !opts.poll_is_valid() {
        return Err(Error::usage("--poll must be a positive number of seconds"));
    }
    executor.check(opts).map_err(Error::usage)
}

/// Refuses a run name that `--run` would read as something else (`last`, `none`) or that
/// is empty or holds a line break.
fn check_name(name: Option<&str>) -> Result<(), Error> {
    match name {
        Some(n) if n.trim().is_empty() || n.contains('\n') => {
            Err(Error::usage("--name: give a non-empty name on one line"))
        }
        Some(n @ ("last" | "none")) => Err(Error::usage(format!(
            "--name {n}: `--run {n}` means something else; choose another name"
        ))),
        _ => Ok(()),
    }
}

/// The executor `--executor` names (clap accepts only registered names).
fn executor_of(args: &RunArgs) -> Result<&'static dyn Executor, Error> {
    registry::by_name(&args.executor)
        .ok_or_else(|| Error::usage(format!("no executor `{}`", args.executor)))
}

/// `pipe run --json` (and `--dry-run --json`): the instances by outcome, the run's id,
/// and the jobs of an executor that submits jobs.
#[derive(Serialize)]
struct RunJson<'a> {
    /// Instances found in the cache.
    cached: Vec<Item<'a>>,
    /// Instances computed.
    executed: Vec<Item<'a>>,
    /// Instances that failed.
    failed: Vec<Item<'a>>,
    /// The run's jobs, in submission order (executors that submit jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<Vec<JobJson<'a>>>,
    /// The run's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a str>,
    /// Instances not run because something they need failed.
    skipped: Vec<Item<'a>>,
    /// How many jobs the run submitted (executors that submit jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    submitted: Option<usize>,
    /// With `--dry-run`: the instances that would run.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_run: Option<Vec<Item<'a>>>,
    /// With `--dry-run`: the instances whose key depends on an input's output not
    /// computed yet; they run only if that output differs from what they last read.
    #[serde(skip_serializing_if = "Option::is_none")]
    may_run: Option<Vec<Item<'a>>>,
}

/// One submitted job in `pipe run --json`.
#[derive(Serialize)]
struct JobJson<'a> {
    /// The job's id.
    job_id: &'a str,
    /// The instance's recipe (its job's name; its key may be known only on the node).
    recipe: &'a str,
    /// `stage[point]`.
    label: &'a str,
    /// The cluster's log of the job (the field's name predates other executors).
    #[serde(rename = "slurm_log")]
    log: &'a Path,
}

impl<'a> JobJson<'a> {
    /// The JSON view of a job record.
    fn of(j: &'a JobRecord) -> JobJson<'a> {
        JobJson {
            job_id: &j.job_id,
            recipe: &j.recipe,
            label: &j.label,
            log: &j.log,
        }
    }
}

/// Set by the SIGINT/SIGTERM handler of a run whose instances run in this process, which
/// then ends the process.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Runs `pipe run`; returns its exit code.
pub fn run(args: RunArgs, level: Verbosity) -> Result<i32, Error> {
    let executor = executor_of(&args)?;
    let executor_opts = executor_options(&args);
    check_options(executor, &executor_opts)?;
    let mut loaded = load(&args.pipeline, false)?;
    if !args.force.is_empty() && !args.dry_run {
        force(&loaded.plan, &loaded.store, &args.force, level)?;
        // Plan again: the keys of what reads a forced instance's output are not known now.
        loaded = load(&args.pipeline, false)?;
    }
    let (plan, store) = (loaded.plan, loaded.store);
    let only = super::selectors(&plan, &args.only, args.point.as_deref())?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        return Err(Error::usage("--jobs must be at least 1"));
    }
    check_gpus(&args.gpus, args.per_gpu)?;
    check_name(args.name.as_deref())?;
    if args.dry_run {
        return dry_run(&plan, &store, &only, args.json);
    }
    if let Some((n, path)) = missing_data(&plan, &exec::selected(&plan, &only)).first() {
        return Err(Error::usage(format!(
            "data missing: {} ({} reads it); nothing was run",
            path.display(),
            plan.label(*n)
        )));
    }
    let remote = match args.remote.clone().or_else(|| plan.spec.remote.clone()) {
        Some(url) => Some(Arc::new(Remote::open(&url).map_err(Error::usage)?)),
        None => None,
    };
    let json = args.json;
    let opts = RunOptions {
        jobs,
        fail_fast: args.fail_fast,
        only: only.clone(),
        remote,
        gpus: args.gpus.clone(),
        per_gpu: args.per_gpu.unwrap_or(1),
    };
    let mut record = RunRecord::begin(&plan.spec.name, Some(&loaded.file), &loaded.set);
    record.only = only.iter().map(|s| s.to_string()).collect();
    record.executor = executor.name().into();
    record.name = args.name.clone();
    record.note = args.note.clone();
    let how = How {
        executor,
        options: executor_opts,
        json,
        level,
    };
    execute(&plan, &store, opts, &how, record)
}

/// Every key instances `nodes` of the plan read or write that is known now: theirs and
/// their parts'.
fn known_keys(plan: &Plan, nodes: &[NodeIndex]) -> Vec<String> {
    let mut keys = Vec::new();
    for &n in nodes {
        keys.extend(plan.key(n));
        keys.extend(plan.parts(n).unwrap_or_default().into_iter().map(|p| p.key));
    }
    keys
}

/// Rejects `--gpus` naming a GPU this machine lacks, or one twice, and a `--per-gpu` of 0
/// or without `--gpus`.
fn check_gpus(gpus: &[u32], per_gpu: Option<usize>) -> Result<(), Error> {
    match per_gpu {
        Some(0) => return Err(Error::usage("--per-gpu must be at least 1")),
        Some(_) if gpus.is_empty() => {
            return Err(Error::usage(
                "--per-gpu shares the GPUs that --gpus names: give --gpus too (e.g. --gpus 0 --per-gpu 4)",
            ));
        }
        _ => {}
    }
    if gpus.is_empty() {
        return Ok(());
    }
    let count = pipe_kinds::worker::cuda_devices().map_err(Error::usage)?;
    for (i, g) in gpus.iter().enumerate() {
        if *g as usize >= count {
            return Err(Error::usage(format!(
                "--gpus {g}: this machine has {count} CUDA device{}",
                if count == 1 { "" } else { "s" }
            )));
        }
        if gpus[..i].contains(g) {
            return Err(Error::usage(format!("--gpus names GPU {g} twice")));
        }
    }
    Ok(())
}

/// `--force`: removes the cached artifacts (and parts) of the selected instances, so that
/// the run computes them again.
fn force(plan: &Plan, store: &Store, force: &[String], level: Verbosity) -> Result<(), Error> {
    let mut chosen = Vec::new();
    for f in force {
        let sel = pipe_engine::select::Selector::parse(f)
            .map_err(|e| Error::usage(format!("--force: {e}")))?;
        sel.check(plan).map_err(Error::usage)?;
        chosen.extend(plan.order.iter().copied().filter(|&n| sel.matches(plan, n)));
    }
    chosen.sort();
    chosen.dedup();
    // Nothing is removed while a running instance computes or reads any of it.
    let busy = |n: NodeIndex, key: &str, who: &str| Error {
        kind: pipe_engine::error::ErrorKind::StageFailed,
        message: format!(
            "--force: {} ({}) is in use by {who}, an instance computing or reading it; nothing was removed: run again when it ends",
            plan.label(n),
            pipe_engine::key::short(key, 12)
        ),
    };
    for &n in &chosen {
        for k in exec::stored_keys(plan, n) {
            if let Some(h) = store.user_of(&k) {
                return Err(busy(n, &k, &h.to_string()));
            }
        }
    }
    for &n in &chosen {
        let mut removed = 0;
        for k in exec::stored_keys(plan, n) {
            match store
                .remove_unread(&k)
                .map_err(|e| Error::io(store.root(), e))?
            {
                Removal::Removed => removed += 1,
                Removal::Absent => {}
                Removal::InUse(who) => return Err(busy(n, &k, &who)),
            }
        }
        if level > Verbosity::Quiet && removed > 0 {
            errln!(
                "force: removed {} ({removed} artifact{}), computing it again",
                plan.label(n),
                if removed == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

/// `--dry-run`: lists what would run (or prints it as JSON); runs nothing.
fn dry_run(
    plan: &Plan,
    store: &Store,
    only: &[pipe_engine::select::Selector],
    json: bool,
) -> Result<i32, Error> {
    let nodes = exec::selected(plan, only);
    let (cached, rest): (Vec<NodeIndex>, Vec<NodeIndex>) = nodes
        .into_iter()
        .partition(|&n| plan.key(n).is_some_and(|k| store.is_complete(&k)));
    let index = store.read_index(&plan.spec.name);
    // Each instance left, in plan order, with whether it may run (else it will).
    let rest: Vec<(NodeIndex, bool)> = rest
        .into_iter()
        .map(|n| (n, pipe_engine::status::may_run(plan, &index, n)))
        .collect();
    let of =
        |may: bool| -> Vec<NodeIndex> { rest.iter().filter(|r| r.1 == may).map(|r| r.0).collect() };
    let (may, todo) = (of(true), of(false));
    if json {
        print_json(&RunJson {
            cached: Item::list(plan, &cached),
            executed: Vec::new(),
            failed: Vec::new(),
            jobs: None,
            run: None,
            skipped: Vec::new(),
            submitted: None,
            would_run: Some(Item::list(plan, &todo)),
            may_run: Some(Item::list(plan, &may)),
        })?;
    } else {
        let missing = missing_data(plan, &rest.iter().map(|r| r.0).collect::<Vec<_>>());
        for &(n, may_run) in &rest {
            if let Some((_, path)) = missing.iter().find(|m| m.0 == n) {
                outln!(
                    "would run  {}  {} (data missing: {})",
                    plan.short_key(n),
                    plan.label(n),
                    path.display()
                );
            } else if !may_run {
                outln!("would run  {}  {}", plan.short_key(n), plan.label(n));
            } else {
                outln!(
                    "may run    {}  {} ({})",
                    plan.short_key(n),
                    plan.label(n),
                    pipe_engine::status::may_run_reason(plan, store, n)
                );
            }
        }
        let may_text = if may.is_empty() {
            String::new()
        } else {
            format!(", {} may run", may.len())
        };
        outln!("{} to run{may_text}, {} cached", todo.len(), cached.len());
        if !missing.is_empty() {
            outln!(
                "data missing for {} instance(s): `pipe run` refuses until it is there",
                missing.len()
            );
        }
    }
    Ok(0)
}

/// The instances among `nodes` whose declared data files are not all there, with the first
/// missing file of each.
fn missing_data(plan: &Plan, nodes: &[NodeIndex]) -> Vec<(NodeIndex, std::path::PathBuf)> {
    nodes
        .iter()
        .filter_map(|&n| Some((n, plan.graph[n].missing.clone()?)))
        .collect()
}

/// How a run is carried out and reported: the executor, its options, and the output.
struct How {
    /// The executor `--executor` names.
    executor: &'static dyn Executor,
    /// Its options.
    options: ExecutorOptions,
    /// Print one JSON object.
    json: bool,
    /// How much to print.
    level: Verbosity,
}

/// Runs the plan with the chosen executor, then reports; returns the exit code.
/// The run is recorded (`runs/RUN/run.json`) and holds a lease while it runs, so that `gc`
/// keeps everything it reads or writes.
fn execute(
    plan: &Plan,
    store: &Store,
    opts: RunOptions,
    how: &How,
    mut record: RunRecord,
) -> Result<i32, Error> {
    let (json, level) = (how.json, how.level);
    let clock = Instant::now();
    store.prepare().map_err(|e| Error::io(store.root(), e))?;
    let nodes = exec::selected(plan, &opts.only);
    record.counts.planned = nodes.len();
    record.add_keys(known_keys(plan, &nodes));
    let lease = runs::lease(store, &record.id).map_err(|e| Error::io(store.root(), e))?;
    runs::save_record(store, &record)?;
    let progress = Progress::new(level, store.root());
    let interrupted = on_interrupt(how.executor.interrupt(), store, &record);
    let result = how.executor.run(
        plan,
        store,
        &opts,
        &how.options,
        &progress,
        &interrupted,
        record,
    );
    if SIGNALLED.load(Ordering::SeqCst) {
        // The handler is cleaning up and ends the process with 130.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let done = result?;
    let (report, mut record) = (done.report, done.record);
    if done.detached && !json && level > Verbosity::Quiet {
        progress.finish();
        end_record(store, &mut record, plan, &nodes, Some(&report), 0);
        drop(lease);
        outln!(
            "run {}: submitted {} jobs ({} cached); `pipe status` shows them, `pipe cancel {}` cancels them",
            record.id,
            record.jobs.len(),
            report.outcomes.len(),
            record.id
        );
        return Ok(0);
    }
    let interrupted = interrupted.load(Ordering::SeqCst);
    if interrupted {
        errln!("interrupted: cancelled the jobs of run {}", record.id);
    }
    progress.finish();
    let code = if interrupted {
        130
    } else if report.any_bad_data() {
        2
    } else if report.any_failed() {
        1
    } else {
        0
    };
    end_record(store, &mut record, plan, &nodes, Some(&report), code);
    drop(lease);
    let jobs = how.executor.submits_jobs();
    summarize(plan, &report, &record, jobs, json, level, clock)?;
    print_failures(plan, &report, level);
    Ok(code)
}

/// How long pipe waits on SIGINT or SIGTERM for the train instances it runs to keep their
/// resume points.
const KEEP_WITHIN: Duration = Duration::from_secs(5);

/// Installs the Ctrl-C / SIGTERM handler the executor asks for; returns the flag it sets
/// for an executor that cancels and returns.
fn on_interrupt(how: Interrupt, store: &Store, record: &RunRecord) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    match how {
        Interrupt::ExitProcess => {
            // Ask train instances in workers to keep resume points, kill every running
            // command's process group, say what was kept, remove this run's temp folders and
            // locks, record the run as interrupted.
            let (root, rec) = (store.root().to_path_buf(), record.clone());
            let _ = ctrlc::set_handler(move || {
                SIGNALLED.store(true, Ordering::SeqCst);
                pipe_kinds::worker::keep_resume_points();
                pipe_engine::stage::kill_live_groups();
                for line in pipe_kinds::worker::kept_resume_points(KEEP_WITHIN) {
                    errln!("{line}");
                }
                let store = Store::new(&root);
                store.release_mine();
                let mut rec = rec.clone();
                rec.ended = Some(pipe_engine::store::unix_now());
                rec.exit = Some(130);
                rec.finished = true;
                let _ = runs::save_record(&store, &rec);
                std::process::exit(130);
            });
        }
        Interrupt::CancelAndReturn => {
            let flag = interrupted.clone();
            let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
        }
    }
    interrupted
}

/// Completes a run's record: end time, exit code, counts, and the keys known now.
fn end_record(
    store: &Store,
    record: &mut RunRecord,
    plan: &Plan,
    nodes: &[NodeIndex],
    report: Option<&RunReport>,
    code: i32,
) {
    record.add_keys(known_keys(plan, nodes));
    if let Some(report) = report {
        let count = |f: fn(&Outcome) -> bool| report.outcomes.iter().filter(|(_, o)| f(o)).count();
        record.counts.executed = count(|o| matches!(o, Outcome::Executed { .. }));
        record.counts.cached = count(|o| matches!(o, Outcome::Cached));
        record.counts.failed = count(|o| matches!(o, Outcome::Failed { .. }));
        record.counts.skipped = count(|o| matches!(o, Outcome::Skipped { .. }));
    }
    record.ended = Some(pipe_engine::store::unix_now());
    record.exit = Some(code);
    if let Err(e) = runs::save_record(store, record) {
        errln!("warning: cannot record the run: {e}");
    }
}

/// The instances whose outcome passes `f`, in plan order.
fn nodes_where(report: &RunReport, f: fn(&Outcome) -> bool) -> Vec<NodeIndex> {
    report
        .outcomes
        .iter()
        .filter(|(_, o)| f(o))
        .map(|(n, _)| *n)
        .collect()
}

/// Prints the counts of each outcome on stdout (nothing when quiet), or the JSON report.
fn summarize(
    plan: &Plan,
    report: &RunReport,
    record: &RunRecord,
    jobs: bool,
    json: bool,
    level: Verbosity,
    clock: Instant,
) -> Result<(), Error> {
    let executed = nodes_where(report, |o| matches!(o, Outcome::Executed { .. }));
    let cached = nodes_where(report, |o| matches!(o, Outcome::Cached));
    let failed = nodes_where(report, |o| matches!(o, Outcome::Failed { .. }));
    let skipped = nodes_where(report, |o| matches!(o, Outcome::Skipped { .. }));
    if json {
        print_json(&RunJson {
            cached: Item::list(plan, &cached),
            executed: Item::list(plan, &executed),
            failed: Item::list(plan, &failed),
            jobs: jobs.then(|| record.jobs.iter().map(JobJson::of).collect()),
            run: Some(record.id.as_str()),
            skipped: Item::list(plan, &skipped),
            submitted: jobs.then_some(record.jobs.len()),
            would_run: None,
            may_run: None,
        })?;
    } else if level != Verbosity::Quiet {
        outln!(
            "{} executed, {} cached, {} failed, {} skipped in {:.1}s (run {})",
            executed.len(),
            cached.len(),
            failed.len(),
            skipped.len(),
            clock.elapsed().as_secs_f64(),
            record.id
        );
    }
    Ok(())
}

/// Prints every failure on stderr: the message, the last lines of its log (a Python
/// traceback, say; 40 with `--verbose`, none with `--quiet`) and the log's path.
fn print_failures(plan: &Plan, report: &RunReport, level: Verbosity) {
    let keep = match level {
        Verbosity::Quiet => 0,
        Verbosity::Normal => 12,
        Verbosity::Verbose => 40,
    };
    // Each log ending shown so far, with the instances that ended that way.
    let mut told: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for (n, o) in &report.outcomes {
        if let Outcome::Failed { message, log, .. } = o {
            errln!(
                "failed: {} (key {}): {message}",
                plan.label(*n),
                plan.short_key(*n)
            );
            let text = pipe_engine::status::read_log(log).unwrap_or_default();
            // The log's own header and footer lines (`# ...`) say nothing the message does not.
            let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("# ")).collect();
            let tail: Vec<String> = lines[lines.len().saturating_sub(keep)..]
                .iter()
                .map(|l| l.to_string())
                .collect();
            // The same traceback once: a later instance that ended the same way names the first.
            match told.iter_mut().find(|(t, _)| !t.is_empty() && *t == tail) {
                Some((_, same)) => {
                    errln!("  | (its log ends as {}'s above)", same[0]);
                    same.push(plan.label(*n));
                }
                None => {
                    for line in &tail {
                        errln!("  | {line}");
                    }
                    told.push((tail, vec![plan.label(*n)]));
                }
            }
            errln!("  log: {}", log.display());
        }
    }
    for (_, same) in told.iter().filter(|(_, same)| same.len() > 1) {
        errln!(
            "{} instances failed the same way: {}",
            same.len(),
            same.join(", ")
        );
    }
}
