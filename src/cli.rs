//! Subcommands and everything `pipe` prints. Nothing else in the crate writes to the terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use petgraph::graph::NodeIndex;
use serde_json::{Value as Json, json};

use crate::error::{Error, suggest};
use crate::exec::{self, Event, Observer, Outcome, RunOptions};
use crate::plan::{FileHasher, Plan};
use crate::render::{self, DagFormat};
use crate::spec::Spec;
use crate::stages;
use crate::status::{self, State};
use crate::store::Store;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    name = "pipe",
    version,
    about = "Content-addressed pipelines for deep-learning experiments"
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
    /// Print only errors and failures (no progress, no summary).
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more: every start, lock waits, and the end of each failed instance's log.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

/// How much `pipe run` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors and failures only.
    Quiet,
    /// Progress and a summary.
    Normal,
    /// Also starts, waits and failed logs.
    Verbose,
}

/// Where `pipe run` computes instances.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// On this machine, within the `--jobs` thread budget.
    Local,
    /// As Slurm jobs (`sbatch`), on a cache every node shares.
    Slurm,
}

/// Options every pipeline command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (TOML).
    pub file: PathBuf,
    /// Override a value: `--set stage.train.epochs=40`, `--set sweep.noise=[0.0,0.5]` (VALUE is TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The cache directory [default: $PIPE_CACHE, else ./cache].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every instance whose artifact is not cached.
    Run {
        /// Pipeline, overrides, cache.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Thread budget: running instances use at most this many threads together [default: cores].
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Show what would run, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run only this stage and what it needs (repeatable).
        #[arg(long, value_name = "STAGE")]
        only: Vec<String>,
        /// Stop starting instances after the first failure.
        #[arg(long)]
        fail_fast: bool,
        /// Print one JSON object on stdout instead of a summary.
        #[arg(long)]
        json: bool,
        /// Where instances run: on this machine, or as Slurm jobs.
        #[arg(long, value_enum, default_value = "local")]
        executor: ExecutorKind,
        /// Slurm partition for every job.
        #[arg(long, value_name = "P")]
        partition: Option<String>,
        /// Extra `sbatch` argument for every job (repeatable), e.g. `--slurm-arg=--qos=long`.
        #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
        slurm_args: Vec<String>,
        /// With `--executor slurm`: submit the jobs and return; `pipe status` shows them.
        #[arg(long)]
        detach: bool,
        /// With `--executor slurm`: seconds between two `squeue` polls.
        #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
        poll: f64,
        /// Remote cache, `s3://BUCKET/PREFIX` [default: the pipeline's `[cache] remote`].
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
    },
    /// Cancel the Slurm jobs of a run (`scancel`).
    Cancel {
        /// The run id `pipe run --executor slurm` printed, or a unique prefix of it.
        run: String,
        /// The cache directory [default: $PIPE_CACHE, else ./cache].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Print `{"run", "cancelled": [job ids], "jobs"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compute one instance from a job file (what a Slurm job runs on its node).
    #[command(hide = true)]
    Job {
        /// The job file, written by `pipe run --executor slurm`.
        file: PathBuf,
        /// The cache directory.
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
    },
    /// Say for every instance whether it is cached, missing or stale, and why.
    Status {
        /// Pipeline, overrides, cache.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Print the instance DAG.
    Dag {
        /// Pipeline, overrides, cache.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: DagFormat,
    },
    /// Rehash every artifact in the cache and report damaged ones.
    Verify {
        /// The cache directory [default: $PIPE_CACHE, else ./cache].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Remove damaged artifacts (they are recomputed by the next run).
        #[arg(long)]
        fix: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Gather each table kind across the sweep into one Parquet file per kind.
    Export {
        /// Pipeline, overrides, cache.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The folder to write `metrics.parquet`, `labels.parquet`, ... into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a static HTML report: figures of the four findings and a table of the run.
    Report {
        /// Pipeline, overrides, cache.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The folder to write `index.html` and `figures/` into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Sweep variable to average over (repeatable) [default: seed].
        #[arg(long, value_name = "VAR")]
        over: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an artifact's manifest: kind, parameters, inputs, files.
    Show {
        /// The key, or a unique prefix of it.
        key: String,
        /// The cache directory [default: $PIPE_CACHE, else ./cache].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the log of an instance (failed ones included).
    Log {
        /// The key, or a unique prefix of it.
        key: String,
        /// The cache directory [default: $PIPE_CACHE, else ./cache].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Print `{"key", "path", "text"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the artifacts in the cache.
    Ls {
        /// Only artifacts made by this stage name.
        #[arg(long)]
        stage: Option<String>,
        /// The cache directory [default: $PIPE_CACHE, else ./cache].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove artifacts that none of the given pipelines reaches and that are older than N days.
    Gc {
        /// Pipelines whose artifacts (at their current sweep) are kept.
        files: Vec<PathBuf>,
        /// Keep unreachable artifacts younger than this many days.
        #[arg(long, value_name = "N")]
        keep_days: Option<f64>,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The cache directory [default: $PIPE_CACHE, else ./cache].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the stage kinds and their parameters.
    Kinds,
    /// Print a shell completion script: `pipe completions bash > /etc/bash_completion.d/pipe`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn cache_dir(arg: &Option<PathBuf>) -> PathBuf {
    arg.clone()
        .or_else(|| std::env::var_os("PIPE_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cache"))
}

fn load_plan(args: &PipelineArgs) -> Result<Plan, Error> {
    let registry = stages::registry();
    let spec = Spec::load(&args.file, &args.set, &registry)?;
    Plan::build(spec, &mut FileHasher::default())
}

/// Says on stderr which instances `export` or `report` left out because they are not cached.
fn note_left_out(plan: &Plan, missing: &[NodeIndex]) {
    if !missing.is_empty() {
        eprintln!(
            "note: {} instances are not in the cache and were left out (run the pipeline to include them): {}",
            missing.len(),
            missing
                .iter()
                .take(5)
                .map(|&n| plan.label(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn item(plan: &Plan, n: NodeIndex) -> Json {
    let inst = &plan.graph[n];
    json!({"stage": plan.stage_name(n), "point": inst.point, "key": inst.key})
}

fn dispatch(cli: Cli) -> Result<i32, Error> {
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    match cli.command {
        Command::Run {
            pipeline,
            jobs,
            dry_run,
            only,
            fail_fast,
            json,
            executor,
            partition,
            slurm_args,
            detach,
            poll,
            remote,
        } => {
            if executor == ExecutorKind::Local
                && (detach || !slurm_args.is_empty() || partition.is_some())
            {
                return Err(Error::usage(
                    "--detach, --partition and --slurm-arg need --executor slurm",
                ));
            }
            if !(poll.is_finite() && poll > 0.0) {
                return Err(Error::usage("--poll must be a positive number of seconds"));
            }
            let plan = load_plan(&pipeline)?;
            for s in &only {
                if plan.spec.stage(s).is_none() {
                    let names: Vec<&str> =
                        plan.spec.stages.iter().map(|s| s.name.as_str()).collect();
                    return Err(Error::usage(format!(
                        "--only {s}: no such stage{}; stages: {}",
                        suggest(s, names.iter().copied()),
                        names.join(", ")
                    )));
                }
            }
            let store = Store::new(cache_dir(&pipeline.cache));
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if jobs == 0 {
                return Err(Error::usage("--jobs must be at least 1"));
            }
            if dry_run {
                return Ok(dry_run_report(&plan, &store, &only, json));
            }
            let remote = match remote.or_else(|| plan.spec.remote.clone()) {
                Some(url) => Some(std::sync::Arc::new(
                    crate::store::remote::Remote::open(&url).map_err(Error::usage)?,
                )),
                None => None,
            };
            let slurm = (executor == ExecutorKind::Slurm)
                .then(|| -> Result<exec::slurm::SlurmOptions, Error> {
                    Ok(exec::slurm::SlurmOptions {
                        partition,
                        args: slurm_args,
                        detach,
                        poll: std::time::Duration::from_secs_f64(poll),
                        exe: std::env::current_exe().map_err(|e| {
                            Error::usage(format!("cannot find the pipe binary: {e}"))
                        })?,
                    })
                })
                .transpose()?;
            run(
                &plan,
                &store,
                RunOptions {
                    jobs,
                    fail_fast,
                    only,
                    remote,
                },
                slurm,
                json,
                verbosity,
            )
        }
        Command::Cancel { run, cache, json } => {
            let store = Store::new(cache_dir(&cache));
            let mut record = exec::slurm::find_record(&store, &run)?;
            let ids: Vec<&str> = record.jobs.iter().map(|j| j.job_id.as_str()).collect();
            let states = exec::slurm::query(&ids).map_err(Error::usage)?;
            let active: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| {
                    states.get(*id).is_some_and(|q| {
                        !matches!(
                            q.state.as_str(),
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
                    })
                })
                .collect();
            exec::slurm::cancel(&active).map_err(Error::usage)?;
            let n = active.len();
            record.finished = true;
            exec::slurm::save_record(&store, &record)?;
            if json {
                println!(
                    "{}",
                    json!({"run": record.id, "cancelled": active, "jobs": record.jobs.len()})
                );
            } else if verbosity > Verbosity::Quiet {
                println!(
                    "run {}: cancelled {n} queued or running jobs of {}",
                    record.id,
                    record.jobs.len()
                );
            }
            Ok(0)
        }
        Command::Job { file, cache } => {
            let store = Store::new(cache);
            let text = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
            let job: exec::job::InstanceJob = serde_json::from_slice(&text)
                .map_err(|e| Error::usage(format!("{}: not a job file: {e}", file.display())))?;
            let registry = stages::registry();
            let kind = registry.get(&job.kind).ok_or_else(|| {
                Error::usage(format!("this pipe has no stage kind `{}`", job.kind))
            })?;
            let threads = std::env::var("SLURM_CPUS_PER_TASK")
                .ok()
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            let outcome = exec::job::compute_instance(&job, kind, &store, threads, &mut |h| {
                eprintln!("waiting for {h}, which holds the lock of {}", job.key);
            });
            if let (Some(url), Outcome::Executed { .. }) = (&job.remote, &outcome) {
                let keys = std::iter::once(&job.key).chain(&job.parts);
                if let Err(e) = crate::store::remote::Remote::open(url)
                    .and_then(|r| r.push_all(&store, keys.map(String::as_str)))
                {
                    eprintln!("warning: {e}");
                }
            }
            let record = exec::slurm::JobOutcome::of(&outcome);
            let path = exec::slurm::outcome_path(&file);
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            crate::store::write_atomic(&path, &bytes).map_err(|e| Error::io(&path, e))?;
            match outcome {
                Outcome::Executed { seconds } => {
                    eprintln!("{} {}: done in {seconds:.2}s", job.stage, job.key);
                    Ok(0)
                }
                Outcome::Cached => Ok(0),
                Outcome::Failed {
                    message,
                    log,
                    bad_data,
                } => {
                    eprintln!(
                        "{} {} failed: {message}\n  log: {}",
                        job.stage,
                        job.key,
                        log.display()
                    );
                    Ok(if bad_data { 2 } else { 1 })
                }
                Outcome::Skipped { .. } => Ok(1),
            }
        }
        Command::Status { pipeline, json } => {
            let plan = load_plan(&pipeline)?;
            let store = Store::new(cache_dir(&pipeline.cache));
            let index = store.read_index(&plan.spec.name);
            let states = status::status(&plan, &store, &index);
            let pending: std::collections::HashSet<&str> = states
                .iter()
                .filter(|s| s.state != State::Cached)
                .map(|s| plan.graph[s.node].key.as_str())
                .collect();
            let jobs = exec::slurm::live_jobs(&store, &pending);
            if json {
                let arr: Vec<Json> = states
                    .iter()
                    .map(|s| {
                        let mut v = item(&plan, s.node);
                        v["state"] = json!(s.state);
                        v["reason"] = json!(s.reason);
                        if let Some(j) = jobs.get(&plan.graph[s.node].key) {
                            v["job"] = json!({"run": j.run, "job_id": j.job_id, "state": j.state, "reason": j.reason});
                        }
                        if !s.parts.is_empty() {
                            v["parts"] = Json::Array(
                                s.parts
                                    .iter()
                                    .map(|(p, cached)| json!({"name": p.name, "key": p.key, "cached": cached}))
                                    .collect(),
                            );
                        }
                        v
                    })
                    .collect();
                println!("{}", Json::Array(arr));
            } else {
                let mut out = std::io::stdout().lock();
                let width = plan
                    .order
                    .iter()
                    .map(|&n| plan.label(n).len())
                    .max()
                    .unwrap_or(0);
                for s in &states {
                    let state = match s.state {
                        State::Cached => "cached",
                        State::Missing => "missing",
                        State::Stale => "stale",
                    };
                    let job = jobs
                        .get(&plan.graph[s.node].key)
                        .map(|j| {
                            format!(
                                " [slurm job {} of run {}: {}{}]",
                                j.job_id,
                                j.run,
                                j.state,
                                if j.reason.is_empty() || j.reason == "None" {
                                    String::new()
                                } else {
                                    format!(", {}", j.reason)
                                }
                            )
                        })
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{state:<8} {:<width$}  {}  {}{job}",
                        plan.label(s.node),
                        &plan.graph[s.node].key[..12],
                        s.reason
                    );
                    if !s.parts.is_empty() {
                        let have: Vec<&str> = s
                            .parts
                            .iter()
                            .filter(|(_, c)| *c)
                            .map(|(p, _)| p.name.as_str())
                            .collect();
                        let lack: Vec<&str> = s
                            .parts
                            .iter()
                            .filter(|(_, c)| !*c)
                            .map(|(p, _)| p.name.as_str())
                            .collect();
                        let _ = writeln!(
                            out,
                            "{:8} parts cached: {}; missing: {}",
                            "",
                            if have.is_empty() {
                                "none".to_string()
                            } else {
                                have.join(", ")
                            },
                            if lack.is_empty() {
                                "none".to_string()
                            } else {
                                lack.join(", ")
                            }
                        );
                    }
                }
                let count = |st| states.iter().filter(|s| s.state == st).count();
                let _ = writeln!(
                    out,
                    "{} instances: {} cached, {} missing, {} stale",
                    states.len(),
                    count(State::Cached),
                    count(State::Missing),
                    count(State::Stale)
                );
            }
            Ok(0)
        }
        Command::Dag { pipeline, format } => {
            let plan = load_plan(&pipeline)?;
            print!("{}", render::dag(&plan, format));
            Ok(0)
        }
        Command::Verify { cache, fix, json } => {
            let store = Store::new(cache_dir(&cache));
            let (n, damages) = store.verify(fix).map_err(|e| Error::io(store.root(), e))?;
            if json {
                println!(
                    "{}",
                    json!({"checked": n, "damaged": damages, "removed": fix})
                );
            } else {
                for d in &damages {
                    println!("damaged {}: {}", d.key, d.problem);
                }
                println!(
                    "{n} artifacts checked, {} damaged{}",
                    damages.len(),
                    if fix && !damages.is_empty() {
                        " (removed)"
                    } else {
                        ""
                    }
                );
            }
            Ok(if damages.is_empty() || fix { 0 } else { 1 })
        }
        Command::Export {
            pipeline,
            out,
            json,
        } => {
            let plan = load_plan(&pipeline)?;
            let store = Store::new(cache_dir(&pipeline.cache));
            let report = crate::export::export(&plan, &store, &out)?;
            if json {
                let missing: Vec<Json> = report.missing.iter().map(|&n| item(&plan, n)).collect();
                println!("{}", json!({"tables": report.tables, "missing": missing}));
            } else {
                for t in &report.tables {
                    println!(
                        "{}: {} rows from {} instances",
                        t.path.display(),
                        t.rows,
                        t.instances
                    );
                }
                if report.tables.is_empty() {
                    println!(
                        "nothing to export: no instance with tables is cached (run the pipeline first)"
                    );
                }
            }
            note_left_out(&plan, &report.missing);
            Ok(0)
        }
        Command::Show { key, cache, json } => {
            let store = Store::new(cache_dir(&cache));
            let key = store.resolve_key(&key, false).map_err(Error::usage)?;
            let m = store.manifest(&key).ok_or_else(|| {
                Error::usage(format!(
                    "artifact {key} has no readable manifest; `pipe verify` checks the cache"
                ))
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
            } else {
                println!("key       {}", m.key);
                println!("kind      {} (version {})", m.kind, m.version);
                println!(
                    "stage     {} in pipeline {}, point {}",
                    m.stage,
                    m.pipeline,
                    crate::plan::point_label(&m.point)
                );
                println!("params    {}", m.params);
                for (slot, k) in &m.inputs {
                    println!("input     {slot} = {k}");
                }
                for (name, h) in &m.declared_files {
                    println!("declared  {name} = {h}");
                }
                println!(
                    "ran       {:.2}s on {} with pipe {}",
                    m.seconds, m.host, m.pipe_version
                );
                println!("folder    {}", store.artifact_dir(&key).display());
                for f in &m.files {
                    println!("file      {} ({} bytes)", f.path, f.size);
                }
            }
            Ok(0)
        }
        Command::Log { key, cache, json } => {
            let store = Store::new(cache_dir(&cache));
            let key = store.resolve_key(&key, true).map_err(Error::usage)?;
            let path = store.log_path(&key);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            if json {
                println!("{}", json!({"key": key, "path": path, "text": text}));
            } else {
                print!("{text}");
            }
            Ok(0)
        }
        Command::Report {
            pipeline,
            out,
            over,
            json,
        } => {
            let plan = load_plan(&pipeline)?;
            let store = Store::new(cache_dir(&pipeline.cache));
            let explicit = !over.is_empty();
            let over = if explicit {
                over
            } else {
                vec!["seed".to_string()]
            };
            let over = crate::report::check_over(&plan, &over, explicit)?;
            let w = crate::report::report(&plan, &store, &out, &over)?;
            if json {
                let missing: Vec<Json> = w.missing.iter().map(|&n| item(&plan, n)).collect();
                println!(
                    "{}",
                    json!({
                        "index": w.index,
                        "figures": w.figures,
                        "without_figure": w.without_figure,
                        "missing": missing,
                    })
                );
            } else if verbosity > Verbosity::Quiet {
                println!(
                    "{} with {} figures{}",
                    w.index.display(),
                    w.figures.len(),
                    if w.without_figure.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; no data for finding(s) {}",
                            w.without_figure
                                .iter()
                                .map(|i| i.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                );
            }
            note_left_out(&plan, &w.missing);
            Ok(0)
        }
        Command::Ls { stage, cache, json } => {
            let store = Store::new(cache_dir(&cache));
            let keys = store.keys().map_err(|e| Error::io(store.root(), e))?;
            let mut rows = Vec::new();
            for k in keys {
                let Some(m) = store.manifest(&k) else {
                    continue;
                };
                if stage.as_ref().is_some_and(|s| *s != m.stage) {
                    continue;
                }
                rows.push(m);
            }
            if json {
                let v: Vec<Json> = rows
                    .iter()
                    .map(|m| json!({"key": m.key, "kind": m.kind, "stage": m.stage, "pipeline": m.pipeline, "point": m.point, "bytes": m.files.iter().map(|f| f.size).sum::<u64>(), "seconds": m.seconds}))
                    .collect();
                println!("{}", Json::Array(v));
            } else {
                for m in &rows {
                    let bytes: u64 = m.files.iter().map(|f| f.size).sum();
                    println!(
                        "{}  {:<18} {:<16} {:<28} {:>10} bytes {:>8.2}s",
                        &m.key[..12],
                        m.kind,
                        m.stage,
                        crate::plan::point_label(&m.point),
                        bytes,
                        m.seconds
                    );
                }
                println!("{} artifacts", rows.len());
            }
            Ok(0)
        }
        Command::Gc {
            files,
            keep_days,
            dry_run,
            cache,
            json,
        } => {
            if files.is_empty() && keep_days.is_none() {
                return Err(Error::usage(
                    "pipe gc: name the pipelines whose artifacts to keep (pipe gc pipelines/*.toml), or give --keep-days N to remove everything older",
                ));
            }
            let store = Store::new(cache_dir(&cache));
            let mut reachable = std::collections::HashSet::new();
            for f in &files {
                let plan = load_plan(&PipelineArgs {
                    file: f.clone(),
                    set: Vec::new(),
                    cache: cache.clone(),
                })?;
                for &n in &plan.order {
                    reachable.insert(plan.graph[n].key.clone());
                    for (part, _) in status::parts(&plan, &store, &plan.graph[n]) {
                        reachable.insert(part.key);
                    }
                }
            }
            let report = store
                .gc(&reachable, keep_days.unwrap_or(0.0) * 86_400.0, dry_run)
                .map_err(|e| Error::io(store.root(), e))?;
            if json {
                println!(
                    "{}",
                    json!({"removed": report.removed, "freed_bytes": report.freed_bytes, "kept": report.kept, "dry_run": dry_run})
                );
            } else {
                for k in &report.removed {
                    println!("{} {k}", if dry_run { "would remove" } else { "removed" });
                }
                println!(
                    "{} {} artifacts, {:.1} MB; kept {} unreachable (too recent or in use)",
                    if dry_run { "would free" } else { "freed" },
                    report.removed.len(),
                    report.freed_bytes as f64 / 1e6,
                    report.kept
                );
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "pipe", &mut std::io::stdout());
            Ok(0)
        }
        Command::Kinds => {
            for k in stages::registry().all() {
                println!("{} (version {}): {}", k.name(), k.version(), k.about());
                for p in k.params() {
                    let presence = match p.presence {
                        crate::stage::Presence::Required => "required".to_string(),
                        crate::stage::Presence::Optional => "optional".to_string(),
                        crate::stage::Presence::Default(d) => format!("default {d}"),
                    };
                    println!(
                        "  {:<12} {} ({presence}{}): {}",
                        p.name,
                        p.ty.describe(),
                        if p.in_key { "" } else { ", not in key" },
                        p.doc
                    );
                }
            }
            Ok(0)
        }
    }
}

fn dry_run_report(plan: &Plan, store: &Store, only: &[String], json: bool) -> i32 {
    let nodes = exec::selected(plan, only);
    let (cached, todo): (Vec<NodeIndex>, Vec<NodeIndex>) = nodes
        .into_iter()
        .partition(|&n| store.is_complete(&plan.graph[n].key));
    if json {
        let list = |v: &[NodeIndex]| Json::Array(v.iter().map(|&n| item(plan, n)).collect());
        println!(
            "{}",
            json!({"executed": [], "cached": list(&cached), "failed": [], "skipped": [], "would_run": list(&todo)})
        );
    } else {
        for &n in &todo {
            println!("would run  {}  {}", &plan.graph[n].key[..12], plan.label(n));
        }
        println!("{} to run, {} cached", todo.len(), cached.len());
    }
    0
}

/// Turns executor events into a progress bar (terminal) or log lines (otherwise).
struct Progress {
    bar: Option<ProgressBar>,
    level: Verbosity,
    done: Mutex<usize>,
    total: Mutex<usize>,
}

impl Progress {
    fn say(&self, msg: String) {
        if self.level == Verbosity::Quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }
}

impl Observer for Progress {
    fn event(&self, plan: &Plan, event: Event<'_>) {
        match event {
            Event::Begin { to_run, cached } => {
                *self.total.lock().unwrap_or_else(|e| e.into_inner()) = to_run;
                if let Some(b) = &self.bar {
                    b.set_length(to_run as u64);
                }
                self.say(format!(
                    "pipe: {} instances to run, {cached} cached",
                    to_run
                ));
            }
            Event::Started(n, threads) => {
                if let Some(b) = &self.bar {
                    b.set_message(plan.label(n));
                }
                if self.bar.is_none() || self.level == Verbosity::Verbose {
                    self.say(format!(
                        "start {} ({threads} thread{})",
                        plan.label(n),
                        if threads == 1 { "" } else { "s" }
                    ));
                }
            }
            Event::Waiting(n, holder) => {
                self.say(format!(
                    "wait  {}: another pipe ({holder}) is computing it",
                    plan.label(n)
                ));
            }
            Event::Finished(n, outcome) => {
                let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
                *done += 1;
                let total = *self.total.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(b) = &self.bar {
                    b.inc(1);
                }
                let label = plan.label(n);
                let msg = match outcome {
                    Outcome::Executed { seconds } => {
                        format!("[{}/{total}] done   {label} ({seconds:.2}s)", *done)
                    }
                    Outcome::Cached => format!(
                        "[{}/{total}] cached {label} (computed by another run)",
                        *done
                    ),
                    Outcome::Failed { message, .. } => {
                        format!("[{}/{total}] FAILED {label}: {message}", *done)
                    }
                    Outcome::Skipped { reason } => {
                        format!("[{}/{total}] skip   {label}: {reason}", *done)
                    }
                };
                drop(done);
                if self.bar.is_none() || !matches!(outcome, Outcome::Executed { .. }) {
                    self.say(msg);
                }
            }
            Event::Note {
                node,
                message,
                warning,
            } => {
                let msg = format!("{}: {message}", plan.label(node));
                if warning {
                    match &self.bar {
                        Some(b) => b.println(format!("warning: {msg}")),
                        None => eprintln!("warning: {msg}"),
                    }
                } else {
                    self.say(msg);
                }
            }
        }
    }
}

fn run(
    plan: &Plan,
    store: &Store,
    opts: RunOptions,
    slurm: Option<exec::slurm::SlurmOptions>,
    json: bool,
    level: Verbosity,
) -> Result<i32, Error> {
    let clock = Instant::now();
    let terminal = std::io::stderr().is_terminal() && level != Verbosity::Quiet;
    let bar = terminal.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    });
    let progress = Progress {
        bar,
        level,
        done: Mutex::new(0),
        total: Mutex::new(0),
    };
    let mut run_id = None;
    let mut was_interrupted = false;
    let report = match &slurm {
        None => exec::local::run(plan, store, &opts, &progress)
            .map_err(|e| Error::io(store.root(), e))?,
        Some(s) => {
            let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = interrupted.clone();
            let _ =
                ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
            let (report, record) =
                exec::slurm::run(plan, store, &opts, s, &progress, &interrupted)?;
            if s.detach && !json && level > Verbosity::Quiet {
                if let Some(b) = &progress.bar {
                    b.finish_and_clear();
                }
                println!(
                    "run {}: submitted {} jobs ({} cached); `pipe status` shows them, `pipe cancel {}` cancels them",
                    record.id,
                    record.jobs.len(),
                    report.outcomes.len(),
                    record.id
                );
                return Ok(0);
            }
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("interrupted: cancelled the jobs of run {}", record.id);
                was_interrupted = true;
            }
            run_id = Some(record);
            report
        }
    };
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    let pick = |f: fn(&Outcome) -> bool| -> Vec<NodeIndex> {
        report
            .outcomes
            .iter()
            .filter(|(_, o)| f(o))
            .map(|(n, _)| *n)
            .collect()
    };
    let executed = pick(|o| matches!(o, Outcome::Executed { .. }));
    let cached = pick(|o| matches!(o, Outcome::Cached));
    let failed = pick(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = pick(|o| matches!(o, Outcome::Skipped { .. }));
    if json {
        let list = |v: &[NodeIndex]| Json::Array(v.iter().map(|&n| item(plan, n)).collect());
        let mut v = json!({"executed": list(&executed), "cached": list(&cached), "failed": list(&failed), "skipped": list(&skipped)});
        if let Some(r) = &run_id {
            v["run"] = json!(r.id);
            v["submitted"] = json!(r.jobs.len());
            v["jobs"] = json!(r.jobs);
        }
        println!("{v}");
    } else if level != Verbosity::Quiet {
        println!(
            "{} executed, {} cached, {} failed, {} skipped in {:.1}s",
            executed.len(),
            cached.len(),
            failed.len(),
            skipped.len(),
            clock.elapsed().as_secs_f64()
        );
    }
    for (n, o) in &report.outcomes {
        if let Outcome::Failed { message, log, .. } = o {
            eprintln!(
                "failed: {} (key {}): {message}\n  log: {}",
                plan.label(*n),
                &plan.graph[*n].key[..12],
                log.display()
            );
            if level == Verbosity::Verbose {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                for line in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("  | {line}");
                }
            }
        }
    }
    Ok(if was_interrupted {
        130
    } else if report.any_bad_data() {
        2
    } else if report.any_failed() {
        1
    } else {
        0
    })
}
