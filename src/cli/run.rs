//! `pipe run`: checks the options, runs the plan's missing instances on this machine or as
//! Slurm jobs, then prints a summary (or one JSON object) and every failure.

use crate::cli::{errln, outln};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use serde::Serialize;

use super::progress::Progress;
use super::{ExecutorKind, Item, RunArgs, Verbosity, load, print_json};
use pipe_engine::error::Error;
use pipe_engine::exec::slurm::{JobRecord, SlurmOptions};
use pipe_engine::exec::{self, Outcome, RunOptions, RunReport};
use pipe_engine::plan::Plan;
use pipe_engine::runs::{self, RunRecord};
use pipe_engine::store::Store;
use pipe_engine::store::remote::Remote;

/// `pipe run --json` (and `--dry-run --json`): the instances by outcome, and for a Slurm
/// run its id and jobs.
#[derive(Serialize)]
struct RunJson<'a> {
    /// Instances found in the cache.
    cached: Vec<Item<'a>>,
    /// Instances computed.
    executed: Vec<Item<'a>>,
    /// Instances that failed.
    failed: Vec<Item<'a>>,
    /// A Slurm run's jobs, in submission order.
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<Vec<JobJson<'a>>>,
    /// A Slurm run's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a str>,
    /// Instances not run because something they need failed.
    skipped: Vec<Item<'a>>,
    /// How many jobs a Slurm run submitted.
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

/// One submitted Slurm job in `pipe run --json`.
#[derive(Serialize)]
struct JobJson<'a> {
    /// Slurm's job id.
    job_id: &'a str,
    /// The instance's recipe (its job's name; its key may be known only on the node).
    recipe: &'a str,
    /// `stage[point]`.
    label: &'a str,
    /// Slurm's log of the job.
    slurm_log: &'a Path,
}

impl<'a> JobJson<'a> {
    /// The JSON view of a job record.
    fn of(j: &'a JobRecord) -> JobJson<'a> {
        JobJson {
            job_id: &j.job_id,
            recipe: &j.recipe,
            label: &j.label,
            slurm_log: &j.slurm_log,
        }
    }
}

/// Set by the SIGINT/SIGTERM handler of a local run, which then ends the process.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Runs `pipe run`; returns its exit code.
pub fn run(args: RunArgs, level: Verbosity) -> Result<i32, Error> {
    check_flags(&args)?;
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
    check_gpus(&args.gpus)?;
    if args.dry_run {
        return dry_run(&plan, &store, &only, args.json);
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
    };
    let mut record = RunRecord::begin(&plan.spec.name, Some(&loaded.file), &loaded.set);
    record.only = only.iter().map(|s| s.to_string()).collect();
    let slurm = slurm_options(args)?;
    if slurm.is_some() {
        record.executor = "slurm".into();
    }
    execute(&plan, &store, opts, slurm, record, json, level)
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

/// Rejects Slurm options without `--executor slurm`, and a poll interval that is not a
/// positive number.
fn check_flags(args: &RunArgs) -> Result<(), Error> {
    if args.executor == ExecutorKind::Local
        && (args.detach || !args.slurm_args.is_empty() || args.partition.is_some())
    {
        return Err(Error::usage(
            "--detach, --partition and --slurm-arg need --executor slurm",
        ));
    }
    if !(args.poll.is_finite() && args.poll > 0.0) {
        return Err(Error::usage("--poll must be a positive number of seconds"));
    }
    if args.executor == ExecutorKind::Slurm && !args.gpus.is_empty() {
        return Err(Error::usage(
            "--gpus places instances on this machine's GPUs (local executor); on Slurm, give the stage `resources = { gpus = 1 }` or `device = \"cuda\"`",
        ));
    }
    Ok(())
}

/// Rejects `--gpus` naming a GPU this machine lacks, or one twice.
fn check_gpus(gpus: &[u32]) -> Result<(), Error> {
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
    for f in force {
        let sel = pipe_engine::select::Selector::parse(f)
            .map_err(|e| Error::usage(format!("--force: {e}")))?;
        sel.check(plan).map_err(Error::usage)?;
        for &n in &plan.order {
            if !sel.matches(plan, n) {
                continue;
            }
            let keys = exec::stored_keys(plan, n);
            let mut removed = 0;
            for k in &keys {
                if store.is_complete(k) {
                    store.remove(k).map_err(|e| Error::io(store.root(), e))?;
                    removed += 1;
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
    }
    Ok(())
}

/// The Slurm options, with `--executor slurm`.
fn slurm_options(args: RunArgs) -> Result<Option<SlurmOptions>, Error> {
    if args.executor != ExecutorKind::Slurm {
        return Ok(None);
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::usage(format!("cannot find the pipe binary: {e}")))?;
    Ok(Some(SlurmOptions {
        partition: args.partition,
        args: args.slurm_args,
        detach: args.detach,
        poll: Duration::from_secs_f64(args.poll),
        exe,
    }))
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
        for &(n, may_run) in &rest {
            if !may_run {
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
    }
    Ok(0)
}

/// Runs the plan with the local or the Slurm executor, then reports; returns the exit code.
/// The run is recorded (`runs/RUN/run.json`) and holds a lease while it runs, so that `gc`
/// keeps everything it reads or writes.
fn execute(
    plan: &Plan,
    store: &Store,
    opts: RunOptions,
    slurm: Option<SlurmOptions>,
    mut record: RunRecord,
    json: bool,
    level: Verbosity,
) -> Result<i32, Error> {
    let clock = Instant::now();
    store.prepare().map_err(|e| Error::io(store.root(), e))?;
    let nodes = exec::selected(plan, &opts.only);
    record.counts.planned = nodes.len();
    record.add_keys(known_keys(plan, &nodes));
    let lease = runs::lease(store, &record.id).map_err(|e| Error::io(store.root(), e))?;
    runs::save_record(store, &record)?;
    let progress = Progress::new(level, store.root());
    let (report, interrupted) = match &slurm {
        None => {
            // Ctrl-C or SIGTERM: kill every running command's process group, remove this
            // run's temp folders and locks, record the run as interrupted.
            let (root, rec) = (store.root().to_path_buf(), record.clone());
            let _ = ctrlc::set_handler(move || {
                SIGNALLED.store(true, Ordering::SeqCst);
                pipe_engine::stage::kill_live_groups();
                let store = Store::new(&root);
                store.release_mine();
                let mut rec = rec.clone();
                rec.ended = Some(pipe_engine::store::unix_now());
                rec.exit = Some(130);
                rec.finished = true;
                let _ = runs::save_record(&store, &rec);
                std::process::exit(130);
            });
            let report = exec::local::run(plan, store, &opts, &progress);
            if SIGNALLED.load(Ordering::SeqCst) {
                // The handler is cleaning up and ends the process with 130.
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    end_record(store, &mut record, plan, &nodes, None, 1);
                    return Err(Error::io(store.root(), e));
                }
            };
            (report, false)
        }
        Some(s) => {
            let (report, rec, interrupted) =
                run_slurm(plan, store, &opts, s, &progress, record.clone())?;
            record = rec;
            if s.detach && !json && level > Verbosity::Quiet {
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
            if interrupted {
                errln!("interrupted: cancelled the jobs of run {}", record.id);
            }
            (report, interrupted)
        }
    };
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
    summarize(plan, &report, &record, json, level, clock)?;
    print_failures(plan, &report, level);
    Ok(code)
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
    if record.executor != "slurm" {
        record.finished = true;
    }
    if let Err(e) = runs::save_record(store, record) {
        errln!("warning: cannot record the run: {e}");
    }
}

/// Runs the plan as Slurm jobs, cancelling them on Ctrl-C; also says whether it was
/// interrupted.
fn run_slurm(
    plan: &Plan,
    store: &Store,
    opts: &RunOptions,
    slurm: &SlurmOptions,
    progress: &Progress,
    record: RunRecord,
) -> Result<(RunReport, RunRecord, bool), Error> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let (report, record) =
        exec::slurm::run(plan, store, opts, slurm, progress, &interrupted, record)?;
    Ok((report, record, interrupted.load(Ordering::SeqCst)))
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
            jobs: (record.executor == "slurm")
                .then(|| record.jobs.iter().map(JobJson::of).collect()),
            run: Some(record.id.as_str()),
            skipped: Item::list(plan, &skipped),
            submitted: (record.executor == "slurm").then_some(record.jobs.len()),
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
    for (n, o) in &report.outcomes {
        if let Outcome::Failed { message, log, .. } = o {
            errln!(
                "failed: {} (key {}): {message}",
                plan.label(*n),
                plan.short_key(*n)
            );
            let text = std::fs::read_to_string(log).unwrap_or_default();
            // The log's own header and footer lines (`# ...`) say nothing the message does not.
            let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("# ")).collect();
            for line in &lines[lines.len().saturating_sub(keep)..] {
                errln!("  | {line}");
            }
            errln!("  log: {}", log.display());
        }
    }
}
