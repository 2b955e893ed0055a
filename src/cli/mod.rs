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
mod serve;
mod show;
mod status;
mod table;
mod target;
mod trained;
mod verify;

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

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every instance whose artifact is not cached.
    Run(Box<run::RunArgs>),
    /// List the recorded runs, newest first: file, overrides, state, counts.
    Runs(runs::RunsArgs),
    /// Cancel the Slurm jobs of a run (`scancel`).
    Cancel(cancel::CancelArgs),
    /// Compute one instance from a job file (what a Slurm job runs on its node).
    #[command(hide = true)]
    Job(job::JobArgs),
    /// Say for every instance whether it is cached, missing, stale, running or failed, and why.
    Status(status::StatusArgs),
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
    /// Serve a local page that redraws the training curves of running and finished instances as epochs complete.
    Serve(serve::ServeArgs),
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
        Command::Run(args) => run::run(*args, verbosity),
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
        Command::Serve(args) => serve::serve(&args),
        Command::Diff(args) => diff::diff(&args),
        Command::Rm(args) => rm::rm(&args),
        Command::Ls(args) => ls::ls(&args),
        Command::Gc(args) => gc::gc(&args),
        Command::Kinds => Ok(kinds::kinds()),
        Command::Completions(args) => Ok(completions::completions(&args)),
    }
}
