//! `pipe table`: the results in the terminal, one row per trained run (a `train` or an
//! `import` instance, both with a `metrics` table): its sweep point, final and best test
//! accuracy, how much of the corrupted labels it fits, epochs and state. `--where`,
//! `--sort`, `--json`, `--csv`.

use crate::cli::outln;
use pipe_engine::table::StoredTable;
use pipe_kinds::tables::Metrics;

use serde::Serialize;
use serde_json::Value as Json;

use super::{PipelineArgs, load, print_json};
use pipe_engine::error::Error;
use pipe_engine::plan::Plan;
use pipe_engine::select::Selector;
use pipe_engine::status::{self, State};
use pipe_engine::table::Table;

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

/// One row: a train or import instance.
#[derive(Serialize, Clone)]
struct Row {
    /// Its stage.
    stage: String,
    /// Its sweep point.
    point: Json,
    /// Its key (`null` while unknown).
    key: Option<String>,
    /// `cached`, `missing`, `stale`, `running`, `failed`, `may-run`.
    state: State,
    /// Epochs trained (the last row of its metrics).
    epochs: Option<i64>,
    /// Test accuracy after the last epoch.
    final_test_acc: Option<f64>,
    /// Best test accuracy over epochs.
    best_test_acc: Option<f64>,
    /// The epoch of the best test accuracy.
    best_epoch: Option<i64>,
    /// After the last epoch: fraction of corrupted examples predicted as their (wrong)
    /// training label: how much noise the network has memorized.
    corrupted_fit: Option<f64>,
    /// After the last epoch: accuracy on the clean training examples.
    clean_acc: Option<f64>,
}

/// The columns, in order, as printed.
const COLUMNS: &[&str] = &[
    "final_test_acc",
    "best_test_acc",
    "best_epoch",
    "corrupted_fit",
    "clean_acc",
    "epochs",
    "state",
];

/// Runs `pipe table`; returns its exit code.
pub fn table(args: &TableArgs) -> Result<i32, Error> {
    let loaded = load(&args.pipeline, true)?;
    let (plan, store) = (&loaded.plan, &loaded.store);
    let filters = where_filters(&args.filter, plan)?;
    let index = store.read_index(&plan.spec.name);
    let states = status::status(plan, store, &index);
    let mut rows: Vec<Row> = states
        .iter()
        .filter(|s| {
            let kind = plan.spec.stages[plan.graph[s.node].stage].kind.name();
            pipe_kinds::stages::slots::TRAINED.kinds.contains(&kind)
        })
        .filter(|s| filters.iter().all(|f| f.matches(plan, s.node)))
        .map(|s| row(plan, store, s.node, s.state))
        .collect();
    if let Some(col) = &args.sort {
        sort_rows(&mut rows, col, &plan.spec.sweep.var_names())?;
    }
    if rows.is_empty() {
        let where_asked = if filters.is_empty() {
            ""
        } else {
            " where asked"
        };
        return Err(Error::usage(format!(
            "{} has no train or import instance{where_asked}",
            plan.spec.path.display(),
        )));
    }
    if args.json {
        return print_json(&rows).map(|_| 0);
    }
    let (header, body) = text_cells(&rows);
    if args.csv {
        outln!("{}", header.join(","));
        for b in &body {
            outln!(
                "{}",
                b.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",")
            );
        }
    } else {
        print_aligned(&header, &body);
    }
    Ok(0)
}

/// The `--where VARIABLE=VALUE,...` filters, checked against the plan.
fn where_filters(given: &[String], plan: &Plan) -> Result<Vec<Selector>, Error> {
    let filters = given
        .iter()
        .map(|w| Selector::parse(w).map_err(|e| Error::usage(format!("--where: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    for f in &filters {
        if f.stage.is_some() {
            return Err(Error::usage(format!(
                "--where {f}: write VARIABLE=VALUE,... (no stage)"
            )));
        }
        f.check(plan).map_err(Error::usage)?;
    }
    Ok(filters)
}

/// Sorts by `--sort COLUMN` (`-COLUMN`: descending), a column or a sweep variable.
fn sort_rows(rows: &mut [Row], col: &str, vars: &[&str]) -> Result<(), Error> {
    let (col, desc) = match col.strip_prefix('-') {
        Some(c) => (c, true),
        None => (col, false),
    };
    if !COLUMNS.contains(&col) && !vars.contains(&col) {
        return Err(Error::usage(format!(
            "--sort {col}: sort by one of {} or a sweep variable ({})",
            COLUMNS.join(", "),
            vars.join(", ")
        )));
    }
    rows.sort_by(|a, b| {
        let o = sort_value(a, col).total_cmp(&sort_value(b, col));
        if desc { o.reverse() } else { o }
    });
    Ok(())
}

/// The header (stage, sweep variables, [`COLUMNS`]) and each row's cells as text.
fn text_cells(rows: &[Row]) -> (Vec<String>, Vec<Vec<String>>) {
    let vars: Vec<String> = vars_of(rows);
    let cells = |r: &Row| -> Vec<String> {
        let mut c = vec![r.stage.clone()];
        c.extend(vars.iter().map(|v| {
            r.point
                .get(v)
                .map_or(String::new(), pipe_engine::spec::template::display)
        }));
        c.extend([
            num(r.final_test_acc),
            num(r.best_test_acc),
            r.best_epoch.map_or(String::new(), |e| e.to_string()),
            num(r.corrupted_fit),
            num(r.clean_acc),
            r.epochs.map_or(String::new(), |e| e.to_string()),
            r.state.word().to_string(),
        ]);
        c
    };
    let mut header: Vec<String> = vec!["stage".into()];
    header.extend(vars.iter().cloned());
    header.extend(COLUMNS.iter().map(|c| c.to_string()));
    (header, rows.iter().map(cells).collect())
}

/// Prints the cells in left-aligned columns (each at most 120 wide), two spaces apart.
fn print_aligned(header: &[String], body: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .map(|b| b[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
                .min(120)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    outln!("{}", line(header));
    for b in body {
        outln!("{}", line(b));
    }
}

/// The sweep variables the rows have, in order of first appearance.
fn vars_of(rows: &[Row]) -> Vec<String> {
    let mut vars: Vec<String> = Vec::new();
    for r in rows {
        if let Json::Object(m) = &r.point {
            for k in m.keys() {
                if !vars.contains(k) {
                    vars.push(k.clone());
                }
            }
        }
    }
    vars
}

/// A value for sorting (missing values last).
fn sort_value(r: &Row, col: &str) -> f64 {
    let v = match col {
        "final_test_acc" => r.final_test_acc,
        "best_test_acc" => r.best_test_acc,
        "best_epoch" => r.best_epoch.map(|e| e as f64),
        "corrupted_fit" => r.corrupted_fit,
        "clean_acc" => r.clean_acc,
        "epochs" => r.epochs.map(|e| e as f64),
        "state" => Some(r.state as u8 as f64),
        var => r.point.get(var).and_then(Json::as_f64),
    };
    v.unwrap_or(f64::INFINITY)
}

/// A number with 4 decimals, or empty.
fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.4}"))
}

/// A CSV cell, quoted when it holds a comma or a quote.
fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// The row of train or import instance `n`.
fn row(
    plan: &Plan,
    store: &pipe_engine::store::Store,
    n: petgraph::graph::NodeIndex,
    state: State,
) -> Row {
    let key = plan.key(n);
    let metrics = key
        .as_ref()
        .filter(|k| store.is_complete(k))
        .and_then(|k| Metrics::read_in(&store.artifact_dir(k)).ok())
        .unwrap_or_default();
    let last = metrics.rows().checked_sub(1);
    let best = (0..metrics.rows())
        .filter(|&i| metrics.epoch[i] > 0)
        .max_by(|&a, &b| metrics.test_acc[a].total_cmp(&metrics.test_acc[b]));
    Row {
        stage: plan.stage_name(n).to_string(),
        point: plan.point(n),
        key,
        state,
        epochs: last.map(|i| metrics.epoch[i]),
        final_test_acc: last.map(|i| metrics.test_acc[i]),
        best_test_acc: best.map(|i| metrics.test_acc[i]),
        best_epoch: best.map(|i| metrics.epoch[i]),
        corrupted_fit: last.and_then(|i| metrics.corrupted_train_acc[i]),
        clean_acc: last.map(|i| metrics.clean_acc[i]),
    }
}
