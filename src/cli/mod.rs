//! The command line: the `Command` enum, `main` and the dispatch to one function per
//! subcommand. Each subcommand's file (`dag.rs`, `gc.rs`, ...) holds its clap argument
//! struct beside its handler; what several share lives in `args.rs` (the pipeline file,
//! `--set` and `--run` selection, loading the plan, `--only`/`--point`), `cache.rs` (which
//! cache) and `output.rs` (JSON and notes), with the printing macros here. Nothing else in
//! the crate writes to the terminal.
//!
//! Every `--json` output is a `#[derive(Serialize)]` view defined in its command's file.
//! Their fields are declared in alphabetical order, the order these outputs have always had
//! (they used to go through `serde_json`'s sorted maps), so the bytes printed stay the same.

mod args;
mod cache;
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
mod output;
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

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use pipe_engine::error::Error;

pub use args::PipelineArgs;
pub use cache::find_cache;
// What the commands share, named here as `super::NAME` for every command's file.
use args::{load, selectors};
use cache::{cache_dir, pipeline_cache, relative_to_cwd};
use output::{Item, note_left_out, print_json};

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

/// Where `pipe run` computes instances.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// On this machine, within the `--jobs` thread budget.
    Local,
    /// As Slurm jobs (`sbatch`), on a cache every node shares.
    Slurm,
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
    Dag(dag::DagArgs),
    /// Rehash every artifact in the cache and report damaged ones.
    Verify(verify::VerifyArgs),
    /// Gather each table kind across the sweep into one Parquet file per kind.
    Export(export::ExportArgs),
    /// Write a static HTML report: figures of the study's findings, the pipeline's own plots, the run.
    Report(report::ReportArgs),
    /// Show an artifact's manifest: kind, parameters, inputs, files.
    Show(show::ShowArgs),
    /// Print the log of an instance (failed ones included).
    Log(log::LogArgs),
    /// The results, one row per train instance: point, final and best test accuracy, fit of the corrupted labels.
    Table(table::TableArgs),
    /// Compare two instances or two runs: parameters and final metrics side by side.
    Diff(diff::DiffArgs),
    /// Remove the artifacts (and parts) of instances: `pipe rm 'train[noise=0.4]' sweep.toml`.
    Rm(rm::RmArgs),
    /// List the artifacts in the cache.
    Ls(ls::LsArgs),
    /// Remove artifacts that no given pipeline, recent run or live run uses (keeps 30 days by default).
    Gc(gc::GcArgs),
    /// List the stage kinds and their parameters.
    Kinds,
    /// Print a shell completion script: `pipe completions bash > /etc/bash_completion.d/pipe`.
    Completions(completions::CompletionsArgs),
}

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
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Slurm partition for every job.
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,
    /// Extra `sbatch` argument for every job (repeatable), e.g. `--slurm-arg=--qos=long`.
    #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub slurm_args: Vec<String>,
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
}

/// Arguments of `pipe runs`.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// Only the runs of this pipeline file.
    pub file: Option<PathBuf>,
    /// Show at most N runs.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,
    /// The cache directory [default: $PIPE_CACHE, else the file's, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe cancel`.
#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// The run id `pipe run --executor slurm` printed, or a unique prefix of it.
    pub run: String,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print `{"run", "cancelled": [job ids], "jobs"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe job`.
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The job file, written by `pipe run --executor slurm`.
    pub file: PathBuf,
    /// The cache directory.
    #[arg(long, value_name = "DIR")]
    pub cache: PathBuf,
}

/// Arguments of `pipe status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Only the instances at this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
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
