//! `pipe report`: a static HTML page with the findings' figures and a table of the run.

use crate::cli::outln;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Item, PipelineArgs, Verbosity, load, note_left_out, print_json};
use pipe_engine::error::Error;

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

/// `pipe report --json`.
#[derive(Serialize)]
struct ReportJson<'a> {
    /// The figure files (SVG), in page order.
    figures: &'a [PathBuf],
    /// The page.
    index: &'a Path,
    /// Instances with tables that are not cached (left out).
    missing: Vec<Item<'a>>,
    /// Findings (1 to 7) with no figure.
    without_figure: &'a [usize],
}

/// Runs `pipe report`; returns its exit code.
pub fn report(args: ReportArgs, verbosity: Verbosity) -> Result<i32, Error> {
    let loaded = load(&args.pipeline, true)?;
    let source = super::runs::describe(loaded.run.as_ref(), &loaded.set);
    let (plan, store) = (loaded.plan, loaded.store);
    let explicit = !args.over.is_empty();
    let over = if explicit {
        args.over
    } else {
        vec!["seed".to_string()]
    };
    let over = crate::report::check_over(&plan, &over, explicit)?;
    let w = crate::report::report(
        &plan,
        &store,
        &args.out,
        &over,
        args.embed_layer.as_deref(),
        &source,
    )?;
    if args.json {
        print_json(&ReportJson {
            figures: &w.figures,
            index: &w.index,
            missing: Item::list(&plan, &w.missing),
            without_figure: &w.without_figure,
        })?;
    } else if verbosity > Verbosity::Quiet {
        outln!(
            "{} with {} figures{}",
            w.index.display(),
            w.figures.len(),
            without_figure(&w.without_figure)
        );
    }
    note_left_out(&plan, &w.missing);
    for u in &w.unreadable {
        eprintln!("warning: left out {u}");
    }
    Ok(0)
}

/// `; no data for finding(s) 2, 4`, or nothing when every finding has a figure.
fn without_figure(findings: &[usize]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    format!(
        "; no data for finding(s) {}",
        findings
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
