//! `pipe runs`: the recorded runs, newest first: id, start, duration, state, pipeline file,
//! overrides and counts.

use crate::cli::outln;

use serde::Serialize;
use std::path::PathBuf;

use super::{cache_dir, pipeline_cache, print_json};
use pipe_engine::error::Error;
use pipe_engine::runs::{self, RunCounts, RunRecord, local_time};
use pipe_engine::store::Store;

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

/// One run in `pipe runs --json`.
#[derive(Serialize)]
struct RunJson<'a> {
    /// Instances by outcome.
    counts: &'a RunCounts,
    /// Unix time it ended (`null` while running or if it died).
    ended: Option<f64>,
    /// Its exit code.
    exit: Option<i32>,
    /// The executor's name (`local`, `slurm`).
    executor: &'a str,
    /// The pipeline file.
    file: Option<&'a std::path::Path>,
    /// blake3 of the file when the run started.
    file_hash: &'a str,
    /// Whether the file has changed since (`null` if it cannot be read).
    file_changed: Option<bool>,
    /// Host it ran on.
    host: &'a str,
    /// The run id.
    id: &'a str,
    /// How many keys it read or wrote.
    keys: usize,
    /// Its name (`pipe run --name`).
    name: Option<&'a str>,
    /// Its note (`pipe run --note`).
    note: Option<&'a str>,
    /// `--only` stages.
    only: &'a [String],
    /// The `--set` overrides.
    overrides: &'a [String],
    /// Its process id.
    pid: u32,
    /// The pipeline's name.
    pipeline: &'a str,
    /// Unix time it started.
    started: f64,
    /// `ok`, `failed (exit 1)`, `running`, `died`, `interrupted`, `submitted`, `cancelled`.
    state: String,
}

/// Runs `pipe runs`; returns its exit code.
pub fn runs(args: &RunsArgs) -> Result<i32, Error> {
    let dir = match &args.file {
        Some(f) => pipeline_cache(&args.cache, f)?,
        None => cache_dir(&args.cache)?,
    };
    let store = Store::new(dir);
    // A detached run's record reaches its end the first time a command looks after it.
    pipe_engine::exec::registry::settle_open_runs(&store);
    let all = runs::records(&store);
    let file = args
        .file
        .as_ref()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()));
    let mut shown: Vec<&RunRecord> = all
        .iter()
        .rev()
        .filter(|r| file.is_none() || r.file == file)
        .collect();
    if let Some(n) = args.limit {
        shown.truncate(n);
    }
    if args.json {
        let items: Vec<RunJson> = shown
            .iter()
            .map(|r| RunJson {
                counts: &r.counts,
                ended: r.ended,
                exit: r.exit,
                executor: &r.executor,
                file: r.file.as_deref(),
                file_hash: &r.file_hash,
                file_changed: r.file_changed(),
                host: &r.host,
                id: &r.id,
                keys: runs::keys_of(&store, r).len(),
                name: r.name.as_deref(),
                note: r.note.as_deref(),
                only: &r.only,
                overrides: &r.overrides,
                pid: r.pid,
                pipeline: &r.pipeline,
                started: r.submitted,
                state: r.state(&store),
            })
            .collect();
        return print_json(&items).map(|_| 0);
    }
    if shown.is_empty() {
        outln!("no runs recorded in {}", store.root().display());
        return Ok(0);
    }
    // Named runs get a column for their names; each note goes on a line under its run.
    let name_width = shown
        .iter()
        .filter_map(|r| r.name.as_ref().map(|n| n.chars().count()))
        .max()
        .map(|w| w.max(4));
    let name_cell = |name: Option<&str>| match name_width {
        Some(w) => format!("{:<w$}  ", name.unwrap_or("-")),
        None => String::new(),
    };
    outln!(
        "{:<20}  {}{:<16}  {:>7}  {:<14}  {:<28}  {:<24}  overrides, narrowed to",
        "run",
        name_cell(Some("name")),
        "started",
        "took",
        "state",
        "file",
        "executed/cached/failed"
    );
    for r in shown {
        let took = r
            .ended
            .map_or_else(|| "-".to_string(), |e| duration(e - r.submitted));
        let file = r.file.as_ref().map_or_else(String::new, |f| {
            let short = super::relative_to_cwd(f.clone()).display().to_string();
            if r.file_changed() == Some(true) {
                format!("{short} (changed)")
            } else {
                short
            }
        });
        let c = &r.counts;
        outln!(
            "{:<20}  {}{:<16}  {:>7}  {:<14}  {:<28}  {:<24}  {}",
            r.id,
            name_cell(r.name.as_deref()),
            local_time(r.submitted),
            took,
            r.state(&store),
            file,
            format!("{}/{}/{} of {}", c.executed, c.cached, c.failed, c.planned),
            narrowed(&r.overrides, &r.only)
        );
        if let Some(note) = &r.note {
            outln!("{:<20}  note: {note}", "");
        }
    }
    Ok(0)
}

/// Overrides as `--set` arguments, then what the run was narrowed to (`--only` and
/// `--point`, as the selectors they made), or `-`.
fn narrowed(set: &[String], only: &[String]) -> String {
    let mut words = Vec::new();
    if !set.is_empty() {
        words.push(overrides(set));
    }
    words.extend(only.iter().map(|o| format!("only {o}")));
    if words.is_empty() {
        "-".into()
    } else {
        words.join(" ")
    }
}

/// Overrides as `--set` arguments, or `-`.
pub fn overrides(set: &[String]) -> String {
    if set.is_empty() {
        return "-".into();
    }
    set.iter()
        .map(|o| format!("--set '{o}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which run and overrides a plan was made with, in words, for a report's header:
/// `run 20261203-074228-3fa9 with --set 'sweep.noise=[0.6]'`, or empty.
pub fn describe(run: Option<&RunRecord>, set: &[String]) -> String {
    let with = if set.is_empty() {
        "without overrides".to_string()
    } else {
        format!("with {}", overrides(set))
    };
    match run {
        Some(r) if r.overrides == set => format!("run {} {with}", r.id),
        _ if set.is_empty() => String::new(),
        _ => with,
    }
}

/// Seconds in words: `42.0s`, `3m 05s`, `2h 10m`.
fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}
