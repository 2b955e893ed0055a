//! The command line: argument types, dispatch to one function per subcommand, and the
//! helpers the subcommands share. Nothing else in the crate writes to the terminal.
//!
//! Every `--json` output is a `#[derive(Serialize)]` view defined in its command's file.
//! Their fields are declared in alphabetical order, the order these outputs have always had
//! (they used to go through `serde_json`'s sorted maps), so the bytes printed stay the same.

mod cancel;
mod completions;
mod dag;
mod diff;
mod export;
mod gc;
mod job;
mod kinds;
mod log;
mod ls;
mod progress;
mod report;
mod rm;
mod run;
mod runs;
mod show;
mod status;
mod table;
mod target;
mod verify;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use petgraph::graph::NodeIndex;
use serde::Serialize;
use serde_json::Value as Json;

use crate::render::DagFormat;
use pipe_engine::error::Error;
use pipe_engine::plan::{FileHasher, Plan};
use pipe_engine::spec::Spec;
use pipe_kinds::stages;

use cancel::CancelArgs;
use job::JobArgs;
use run::RunArgs;
use runs::RunsArgs;
use status::StatusArgs;

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
    /// Print more: every start, lock waits, and 40 (not 12) last lines of each failed instance's log.
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

/// Options every pipeline command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (TOML) [default: the file of `--run`].
    pub file: Option<PathBuf>,
    /// Override a value: `--set stage.train.epochs=40`, `--set sweep.noise=[0.0,0.5]` (VALUE is TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The cache directory [default: $PIPE_CACHE, else the file's `[cache] dir`, else found from the file's folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Use the pipeline file and overrides of a recorded run: an id (or prefix), `last`, or
    /// `none` (the file alone, without its last run's overrides).
    #[arg(long, value_name = "ID|last|none")]
    pub run: Option<String>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every instance whose artifact is not cached.
    Run(RunArgs),
    /// List the recorded runs, newest first: file, overrides, state, counts.
    Runs(RunsArgs),
    /// Cancel the Slurm jobs of a run (`scancel`).
    Cancel(CancelArgs),
    /// Compute one instance from a job file (what a Slurm job runs on its node).
    #[command(hide = true)]
    Job(JobArgs),
    /// Say for every instance whether it is cached, missing, stale, running or failed, and why.
    Status(StatusArgs),
    /// Print the instance DAG.
    Dag(DagArgs),
    /// Rehash every artifact in the cache and report damaged ones.
    Verify(VerifyArgs),
    /// Gather each table kind across the sweep into one Parquet file per kind.
    Export(ExportArgs),
    /// Write a static HTML report: figures of the study's findings, the pipeline's own plots, the run.
    Report(ReportArgs),
    /// Show an artifact's manifest: kind, parameters, inputs, files.
    Show(ShowArgs),
    /// Print the log of an instance (failed ones included).
    Log(LogArgs),
    /// The results, one row per train instance: point, final and best test accuracy, fit of the corrupted labels.
    Table(TableArgs),
    /// Compare two instances or two runs: parameters and final metrics side by side.
    Diff(DiffArgs),
    /// Remove the artifacts (and parts) of instances: `pipe rm 'train[noise=0.4]' sweep.toml`.
    Rm(RmArgs),
    /// List the artifacts in the cache.
    Ls(LsArgs),
    /// Remove artifacts that no given pipeline, recent run or live run uses (keeps 30 days by default).
    Gc(GcArgs),
    /// List the stage kinds and their parameters.
    Kinds,
    /// Print a shell completion script: `pipe completions bash > /etc/bash_completion.d/pipe`.
    Completions(CompletionsArgs),
}

/// Arguments of `pipe dag`.
#[derive(clap::Args, Debug)]
pub struct DagArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DagFormat,
}

/// Arguments of `pipe verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Remove damaged artifacts (they are recomputed by the next run).
    #[arg(long)]
    pub fix: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The folder to write `metrics.parquet`, `labels.parquet`, ... into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The folder to write `index.html` and `figures/` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Sweep variable to average over (repeatable) [default: seed].
    #[arg(long, value_name = "VAR")]
    pub over: Vec<String>,
    /// The layer whose 2-D embedding is drawn [default: the last layer embedded].
    #[arg(long, value_name = "LAYER")]
    pub embed_layer: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// A key (or unique prefix), or `stage[var=value,...]`.
    pub key: String,
    /// The pipeline file to look `stage[point]` up in [default: the cache's manifests].
    pub file: Option<PathBuf>,
    /// Narrow `stage` to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe log`.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// A key (or unique prefix), or `stage[var=value,...]`.
    pub key: String,
    /// The pipeline file to look `stage[point]` up in [default: the cache's manifests and indexes].
    pub file: Option<PathBuf>,
    /// Narrow `stage` to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Keep printing what is appended to the log until the instance ends (like `tail -f`).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print `{"key", "path", "text"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe table`.
#[derive(clap::Args, Debug)]
pub struct TableArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Only rows at this point (`--where noise=0.4`; repeatable, all must hold).
    #[arg(long = "where", value_name = "VAR=VALUE,...")]
    pub filter: Vec<String>,
    /// Sort by a column or sweep variable; `-COLUMN` sorts descending.
    #[arg(long, value_name = "COLUMN", allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Print a JSON array.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

/// Arguments of `pipe diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// An instance (key or prefix, or `stage[point]`) or a run (`run:ID`, `run:last`).
    pub a: String,
    /// The other one, of the same sort.
    pub b: String,
    /// The pipeline file to look `stage[point]` up in [default: the cache's manifests].
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// A key (or unique prefix), or `stage` / `stage[var=value,...]`: every instance it names.
    pub target: String,
    /// The pipeline file to look the stage up in [default: the cache's manifests].
    pub file: Option<PathBuf>,
    /// Narrow to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Keep the instances' parts (checkpoints), so a rerun resumes from them.
    #[arg(long)]
    pub keep_parts: bool,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The cache directory [default: $PIPE_CACHE, else found from the file or working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// Arguments of `pipe ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only artifacts made by this stage name.
    #[arg(long)]
    pub stage: Option<String>,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe gc`.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Pipelines whose artifacts (at their current sweep, as written and with their last
    /// run's overrides) are kept whatever their age.
    pub files: Vec<PathBuf>,
    /// Keep what any run of the last N days read or wrote, and every artifact younger
    /// than N days; `--keep-days 0` keeps only what the pipelines reach and live runs hold.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 30.0,
        allow_negative_numbers = true
    )]
    pub keep_days: f64,
    /// Also keep what this run read or wrote (an id or prefix, or `last`; repeatable).
    #[arg(long, value_name = "ID|last")]
    pub run: Vec<String>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The cache directory [default: $PIPE_CACHE, else the first file's, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Prints a line to standard output like `println!`, but a closed pipe (`pipe ls | head`)
/// ends the command quietly with exit code 0 instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}
pub(crate) use outln;

/// Prints to standard output like `print!`; see [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}
pub(crate) use out;

/// Prints a line to standard error like `eprintln!`, but a closed stderr (`pipe run ... 2>&1
/// | head`) is ignored instead of a panic: there is nowhere left to say anything.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use errln;

/// Standard output failed: a reader that went away (a closed pipe) ends the command with
/// exit code 0, as `head` expects; any other failure is reported with exit code 1.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    errln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
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
            errln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Runs one subcommand; returns its exit code.
fn dispatch(cli: Cli) -> Result<i32, Error> {
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    match cli.command {
        Command::Run(args) => run::run(args, verbosity),
        Command::Runs(args) => runs::runs(&args),
        Command::Cancel(args) => cancel::cancel(&args, verbosity),
        Command::Job(args) => job::job(&args),
        Command::Status(args) => status::status(&args),
        Command::Dag(args) => dag::dag(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Export(args) => export::export(&args),
        Command::Report(args) => report::report(args, verbosity),
        Command::Show(args) => show::show(&args),
        Command::Log(args) => log::log(&args),
        Command::Table(args) => table::table(&args),
        Command::Diff(args) => diff::diff(&args),
        Command::Rm(args) => rm::rm(&args),
        Command::Ls(args) => ls::ls(&args),
        Command::Gc(args) => gc::gc(&args),
        Command::Kinds => Ok(kinds::kinds()),
        Command::Completions(args) => Ok(completions::completions(&args)),
    }
}

/// The cache directory of a command that names no pipeline file: `--cache`, else
/// `$PIPE_CACHE`, else the one found from the working folder ([`find_cache`]).
fn cache_dir(arg: &Option<PathBuf>) -> PathBuf {
    arg.clone()
        .or_else(|| std::env::var_os("PIPE_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| find_cache(Path::new(".")))
}

/// The cache directory of a pipeline file: `--cache`, else `$PIPE_CACHE`, else the file's
/// `[cache] dir`, else the one found from the file's folder ([`find_cache`]), so every
/// command finds the same cache wherever it is run from.
fn pipeline_cache(arg: &Option<PathBuf>, file: &Path) -> PathBuf {
    arg.clone()
        .or_else(|| std::env::var_os("PIPE_CACHE").map(PathBuf::from))
        .or_else(|| pipe_engine::spec::cache_dir_of(file))
        .unwrap_or_else(|| find_cache(file.parent().unwrap_or(Path::new("."))))
}

/// The default cache seen from folder `start`: the nearest `cache/` folder holding
/// `artifacts/` in `start` or a folder above it; else `cache/` in the nearest folder above
/// that is a project root (holds `.git`); else `start/cache`.
pub fn find_cache(start: &Path) -> PathBuf {
    let start = if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        start
    };
    let abs = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    for dir in abs.ancestors() {
        if dir.join("cache").join("artifacts").is_dir() {
            return relative_to_cwd(dir.join("cache"));
        }
        if dir.join(".git").exists() {
            return relative_to_cwd(dir.join("cache"));
        }
    }
    relative_to_cwd(abs.join("cache"))
}

/// `path` relative to the working folder when it lies under it (messages stay short).
pub(crate) fn relative_to_cwd(path: PathBuf) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
}

/// A pipeline loaded for a command: the plan, its cache, and the run it was taken from.
struct Loaded {
    /// The plan, with every key the cache allows resolved.
    plan: Plan,
    /// The cache.
    store: pipe_engine::store::Store,
    /// The pipeline file.
    file: PathBuf,
    /// The overrides applied.
    set: Vec<String>,
    /// The recorded run whose file and overrides were used, if any.
    run: Option<pipe_engine::runs::RunRecord>,
}

/// Which pipeline file and overrides a command uses: those given; with `--run ID|last`,
/// the run's; with `implicit` and a file without `--set`, the overrides of that file's last
/// run (said on stderr), unless `--run none`.
fn select(
    args: &PipelineArgs,
    implicit: bool,
) -> Result<
    (
        PathBuf,
        Vec<String>,
        PathBuf,
        Option<pipe_engine::runs::RunRecord>,
    ),
    Error,
> {
    use pipe_engine::runs;
    let cache = |file: Option<&Path>| match file {
        Some(f) => pipeline_cache(&args.cache, f),
        None => cache_dir(&args.cache),
    };
    match args.run.as_deref() {
        Some("none") => {
            let file = args
                .file
                .clone()
                .ok_or_else(|| Error::usage("--run none: name the pipeline file"))?;
            let dir = cache(Some(&file));
            Ok((file, args.set.clone(), dir, None))
        }
        Some(id) => {
            if !args.set.is_empty() {
                return Err(Error::usage(format!(
                    "--run {id} takes the run's overrides; drop --set, or drop --run"
                )));
            }
            let dir = cache(args.file.as_deref());
            let store = pipe_engine::store::Store::new(&dir);
            let r = runs::find_run(&store, id, args.file.as_deref())?;
            let Some(file) = r.file.clone() else {
                return Err(Error::usage(format!(
                    "run {} did not record its pipeline file",
                    r.id
                )));
            };
            if let Some(given) = &args.file
                && std::fs::canonicalize(given).ok().as_ref() != Some(&file)
            {
                return Err(Error::usage(format!(
                    "run {} ran {}, not {}",
                    r.id,
                    file.display(),
                    given.display()
                )));
            }
            let set = r.overrides.clone();
            Ok((file, set, dir, Some(r)))
        }
        None => {
            let file = args
                .file
                .clone()
                .ok_or_else(|| Error::usage("name the pipeline file, or give --run ID|last"))?;
            let dir = cache(Some(&file));
            if !implicit || !args.set.is_empty() {
                return Ok((file, args.set.clone(), dir, None));
            }
            let store = pipe_engine::store::Store::new(&dir);
            let all = runs::records(&store);
            match runs::last_of(&all, &file) {
                Some(r) if !r.overrides.is_empty() => {
                    errln!(
                        "note: using the overrides of run {}, this file's last: {} (--run none for the file alone)",
                        r.id,
                        r.overrides
                            .iter()
                            .map(|o| format!("--set '{o}'"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    Ok((file, r.overrides.clone(), dir, Some(r.clone())))
                }
                r => Ok((file, Vec::new(), dir, r.cloned())),
            }
        }
    }
}

/// Loads the pipeline that `args` select ([`select`]) and plans it, with every key that
/// the cache allows resolved.
fn load(args: &PipelineArgs, implicit: bool) -> Result<Loaded, Error> {
    let (file, set, dir, run) = select(args, implicit)?;
    let registry = stages::registry();
    let spec = Spec::load(&file, &set, &registry)?;
    for w in &spec.unused_vars {
        errln!("warning: {w}");
    }
    let plan = Plan::build(spec, &mut FileHasher::default())?;
    let store = pipe_engine::store::Store::new(dir);
    plan.resolve_all(&store);
    Ok(Loaded {
        plan,
        store,
        file,
        set,
        run,
    })
}

/// Prints `value` on stdout as one line of JSON.
fn print_json<T: Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string(value)
        .map_err(|e| Error::usage(format!("cannot print JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}

/// Says on stderr which instances `export` or `report` left out because they are not cached.
fn note_left_out(plan: &Plan, missing: &[NodeIndex]) {
    if !missing.is_empty() {
        errln!(
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

/// An instance in JSON output: `{"key", "point", "stage"}`.
#[derive(Serialize)]
struct Item<'a> {
    /// The instance's key (`null` while an input's output is not known).
    key: Option<String>,
    /// Its sweep point.
    point: Json,
    /// Its stage's name.
    stage: &'a str,
}

impl<'a> Item<'a> {
    /// The item of instance `n` of `plan`.
    fn of(plan: &'a Plan, n: NodeIndex) -> Item<'a> {
        let inst = &plan.graph[n];
        Item {
            key: inst.key(),
            point: plan.point_of(inst),
            stage: plan.stage_name(n),
        }
    }

    /// The items of instances `nodes` of `plan`.
    fn list(plan: &'a Plan, nodes: &[NodeIndex]) -> Vec<Item<'a>> {
        nodes.iter().map(|&n| Item::of(plan, n)).collect()
    }
}

/// The selectors of `--only` (stages or `stage[point]`) narrowed by `--point`, checked
/// against the plan; empty when neither is given (everything).
fn selectors(
    plan: &Plan,
    only: &[String],
    point: Option<&str>,
) -> Result<Vec<pipe_engine::select::Selector>, Error> {
    use pipe_engine::select::Selector;
    let point = match point {
        Some(p) => {
            let s = Selector::parse(p).map_err(|e| Error::usage(format!("--point: {e}")))?;
            if s.stage.is_some() || s.point.is_empty() {
                return Err(Error::usage(format!(
                    "--point {p}: write VARIABLE=VALUE,... (a stage goes in --only)"
                )));
            }
            Some(s)
        }
        None => None,
    };
    let mut out = Vec::new();
    for o in only {
        let s = Selector::parse(o).map_err(|e| Error::usage(format!("--only: {e}")))?;
        out.push(match &point {
            Some(p) => s.with_point(p),
            None => s,
        });
    }
    if out.is_empty()
        && let Some(p) = point
    {
        out.push(p);
    }
    for s in &out {
        s.check(plan).map_err(Error::usage)?;
    }
    Ok(out)
}
