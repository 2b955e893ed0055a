//! `pipe export`: one Parquet file per table kind across the sweep.

use crate::cli::outln;
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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
