//! `pipe export`: one Parquet file per table kind across the sweep.

use crate::cli::{errln, outln};
use crate::compare::Side;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Item, PipelineArgs, load, note_left_out, print_json};
use crate::export::ExportedTable;
use pipe_engine::error::Error;

/// Arguments of `pipe export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The folder to write `metrics.parquet`, `labels.parquet`, ... into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Every run of the file side by side (with `run` and differing-parameter columns);
    /// `--run A --run B` does so for the runs named.
    #[arg(long, conflicts_with = "set")]
    pub all_runs: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pipe export --json` of runs side by side.
#[derive(Serialize)]
struct RunsExportJson<'a> {
    /// Instances with tables that are not cached (left out), as `stage[point] of run ID`.
    missing: &'a [String],
    /// The parameter columns added: those that differ between the runs.
    params: &'a [String],
    /// The runs, in order.
    runs: Vec<&'a str>,
    /// The files written.
    tables: Vec<TableJson<'a>>,
    /// Tables left out because they could not be read, with the reason.
    unreadable: &'a [String],
}

/// `pipe export --json`.
#[derive(Serialize)]
struct ExportJson<'a> {
    /// Instances with tables that are not cached (left out).
    missing: Vec<Item<'a>>,
    /// The files written.
    tables: Vec<TableJson<'a>>,
    /// Tables left out because they could not be read, with the reason.
    unreadable: &'a [String],
}

/// One written table in `pipe export --json`.
#[derive(Serialize)]
struct TableJson<'a> {
    /// Instances it gathers.
    instances: usize,
    /// Table kind (`metrics`, `labels`, ...).
    name: &'a str,
    /// The file written.
    path: &'a Path,
    /// Rows in it.
    rows: usize,
}

impl<'a> TableJson<'a> {
    /// The JSON view of an exported table.
    fn of(t: &'a ExportedTable) -> TableJson<'a> {
        TableJson {
            instances: t.instances,
            name: &t.name,
            path: &t.path,
            rows: t.rows,
        }
    }
}

/// Runs `pipe export`; returns its exit code.
pub fn export(args: &ExportArgs) -> Result<i32, Error> {
    if let Some(all) = super::args::load_runs(&args.pipeline, args.all_runs)? {
        return export_runs(args, &all);
    }
    let loaded = load(&args.pipeline, true)?;
    let (plan, store) = (loaded.plan, loaded.store);
    let report = crate::export::export(&plan, &store, &args.out)?;
    if args.json {
        print_json(&ExportJson {
            missing: Item::list(&plan, &report.missing),
            tables: report.tables.iter().map(TableJson::of).collect(),
            unreadable: &report.unreadable,
        })?;
    } else {
        for t in &report.tables {
            outln!(
                "{}: {} rows from {} instances",
                t.path.display(),
                t.rows,
                t.instances
            );
        }
        if report.tables.is_empty() {
            outln!("nothing to export: no instance with tables is cached (run the pipeline first)");
        }
    }
    note_left_out(&plan, &report.missing);
    for u in &report.unreadable {
        eprintln!("warning: left out {u}");
    }
    Ok(0)
}

/// `pipe export --run A --run B` (or `--all-runs`): the runs' tables side by side.
fn export_runs(args: &ExportArgs, all: &[super::args::Loaded]) -> Result<i32, Error> {
    let Some(store) = all.first().map(|l| &l.store) else {
        return Ok(0);
    };
    let sides: Vec<Side<'_>> = all
        .iter()
        .filter_map(|l| l.run.as_ref().map(|r| Side::of(&l.plan, r)))
        .collect();
    let report = crate::export::export_runs(&sides, store, &args.out)?;
    if args.json {
        print_json(&RunsExportJson {
            missing: &report.missing,
            params: &report.params,
            runs: sides.iter().map(|s| s.run.id.as_str()).collect(),
            tables: report.tables.iter().map(TableJson::of).collect(),
            unreadable: &report.unreadable,
        })?;
    } else {
        for t in &report.tables {
            outln!(
                "{}: {} rows from {} instances of {} runs",
                t.path.display(),
                t.rows,
                t.instances,
                sides.len()
            );
        }
        if report.params.is_empty() {
            outln!("parameters that differ between the runs: none");
        } else {
            outln!(
                "parameters that differ between the runs (columns): {}",
                report.params.join(", ")
            );
        }
    }
    if !report.missing.is_empty() {
        errln!(
            "note: left out {} instances not in the cache: {}",
            report.missing.len(),
            report.missing.join(", ")
        );
    }
    for u in &report.unreadable {
        errln!("warning: left out {u}");
    }
    Ok(0)
}
