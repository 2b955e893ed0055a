//! `pipe report`: a static page with figures of the findings of science.md (mean and
//! spread over seeds) and a table of the run, built from the cached tables of a pipeline.
//!
//! Layout of the output folder: `index.html`, and `figures/NAME.svg` with the numbers
//! behind each figure in `figures/NAME.csv`.

mod chart;
mod class_names;
mod findings;
mod html;
mod plots;
mod stats;
mod sweep_shown;

use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;

pub use findings::Figure;
pub use stats::Stat;

use crate::export::gather;
use crate::owned::OwnedDir;
use pipe_engine::error::{Error, suggest};
use pipe_engine::plan::{Plan, point_label};
use pipe_engine::store::{Store, unix_now};

/// What a report wrote.
#[derive(Debug)]
pub struct Written {
    /// The page.
    pub index: PathBuf,
    /// The figure files (SVG), in page order.
    pub figures: Vec<PathBuf>,
    /// Findings (by number) with no figure, for want of cached tables.
    pub without_figure: Vec<usize>,
    /// Instances with tables that are not in the cache (left out).
    pub missing: Vec<NodeIndex>,
    /// Tables that could not be read (left out), with the reason.
    pub unreadable: Vec<String>,
}

/// Checks the variables to average over against the sweep: each must be a sweep variable,
/// except the default `seed`, which may be absent.
pub fn check_over(plan: &Plan, over: &[String], explicit: bool) -> Result<Vec<String>, Error> {
    let names: Vec<&str> = plan.spec.sweep.var_names();
    let mut kept = Vec::new();
    for o in over {
        if names.contains(&o.as_str()) {
            kept.push(o.clone());
        } else if explicit {
            return Err(Error::usage(format!(
                "--over {o}: the pipeline has no sweep variable `{o}`{}; its variables are: {}",
                suggest(o, names.iter().copied()),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    Ok(kept)
}

/// Writes the report of `plan` into `out`, averaging over the sweep variables `over`;
/// the embedding figure shows `embed_layer` (default: the last layer embedded). `source`
/// names the run and overrides the plan was made with (`run 2026... with --set ...`).
pub fn report(
    plan: &Plan,
    store: &Store,
    out: &Path,
    over: &[String],
    embed_layer: Option<&str>,
    source: &str,
) -> Result<Written, Error> {
    let gathered = gather(plan, store)?;
    let data = findings::FigureData {
        plan,
        gathered: &gathered,
        over,
        embed_layer,
        store,
    };
    let mut figures = Vec::new();
    for build in [findings::figures, plots::plots] {
        figures.extend(build(&data).map_err(|e| Error::usage(format!("{e:#}")))?);
    }
    let mut sections = findings::sections(plan);
    if !plan.spec.plots.is_empty() {
        sections.push(0);
    }
    let page = html::page(
        &plan.spec.name,
        plan.spec.description.as_deref().unwrap_or(""),
        &format!(
            "{} UTC from {}{}",
            html::utc(unix_now()),
            plan.spec.path.display(),
            if source.is_empty() {
                String::new()
            } else {
                format!(", {source}")
            }
        ),
        &sweep_shown::describe(plan, &gathered),
        over,
        &sections,
        &figures,
        &run_rows(plan, store),
    );
    let dir = write_files(out, &figures, &page)?;
    Ok(Written {
        index: out.join("index.html"),
        figures: figures
            .iter()
            .map(|f| dir.join(format!("{}.svg", f.stem)))
            .collect(),
        without_figure: sections
            .iter()
            .copied()
            .filter(|i| *i != 0 && !figures.iter().any(|f| f.finding == *i))
            .collect(),
        missing: gathered.missing,
        unreadable: gathered.unreadable,
    })
}

/// The run table: every instance of the plan, in plan order, with its manifest if cached.
fn run_rows(plan: &Plan, store: &Store) -> Vec<html::RunRow> {
    plan.order
        .iter()
        .map(|&n| {
            let inst = &plan.graph[n];
            let key = inst.key();
            let m = key.as_deref().and_then(|k| store.complete_manifest(k));
            html::RunRow {
                stage: plan.stage_name(n).to_string(),
                point: point_label(&plan.point_of(inst)),
                kind: plan.spec.stages[inst.stage].kind.name().to_string(),
                key: key.unwrap_or_default(),
                cached: m.is_some(),
                started: m.as_ref().map(|m| html::utc(m.started)),
                seconds: m.as_ref().map(|m| m.seconds),
                host: m.map(|m| m.host),
            }
        })
        .collect()
}

/// Writes `out/figures/` and then `out/index.html`; returns the figures' folder.
///
/// Each file is replaced atomically, the figures before the page, and figures of an earlier
/// report go only after the new page is in place: a reader never sees a page naming figures
/// that are not there. Files in `out` that pipe did not write are never touched.
fn write_files(out: &Path, figures: &[Figure], page: &str) -> Result<PathBuf, Error> {
    let mut dir = OwnedDir::open(out)?;
    let mut files: Vec<(String, &str)> = Vec::new();
    for f in figures {
        for (ext, text) in [("svg", &f.svg), ("csv", &f.csv)] {
            files.push((format!("figures/{}.{ext}", f.stem), text));
        }
    }
    files.push(("index.html".to_string(), page));
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    dir.claim(&names)?;
    for (name, text) in &files {
        dir.write(name, text.as_bytes())?;
    }
    dir.finish()?;
    Ok(out.join("figures"))
}
