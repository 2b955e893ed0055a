//! `pipe table`: the results in the terminal, one row per trained run (a `train` or an
//! `import` instance, both with a `metrics` table): its sweep point, final and best test
//! accuracy, how much of the corrupted labels it fits, epochs and state. `--where`,
//! `--sort`, `--json`, `--csv`.

use crate::cli::outln;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use super::trained::{metrics_so_far, trained_states};
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
    /// Every run of the file side by side (with `run` and differing-parameter columns);
    /// `--run A --run B` does so for the runs named.
    #[arg(long, conflicts_with = "set")]
    pub all_runs: bool,
}

/// One row: a train or import instance (of one run, when runs are side by side).
#[derive(Serialize, Clone)]
struct Row {
    /// The run it belongs to (runs side by side only).
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    /// That run's name, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_name: Option<String>,
    /// Its stage.
    stage: String,
    /// Its sweep point.
    point: Json,
    /// The parameters that differ between the runs shown, as `stage.param` (runs side by
    /// side only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    params: BTreeMap<String, Json>,
    /// Its key (`null` while unknown).
    key: Option<String>,
    /// `cached`, `missing`, `stale`, `running`, `failed`, `may-run`.
    state: State,
    /// Epochs trained (the last row of its metrics; while it runs, the latest epoch).
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
    let (mut rows, sortable, what) = match super::args::load_runs(&args.pipeline, args.all_runs)? {
        Some(all) => runs_rows(args, &all)?,
        None => {
            let loaded = load(&args.pipeline, true)?;
            let (plan, store) = (&loaded.plan, &loaded.store);
            let filters = where_filters(&args.filter, &[plan])?;
            let rows = plan_rows(plan, store, &filters);
            let vars = plan.spec.sweep.var_names();
            let sortable: Vec<String> = vars.iter().map(|v| v.to_string()).collect();
            (rows, sortable, plan.spec.path.display().to_string())
        }
    };
    if let Some(col) = &args.sort {
        sort_rows(&mut rows, col, &sortable)?;
    }
    if rows.is_empty() {
        let where_asked = if args.filter.is_empty() {
            ""
        } else {
            " where asked"
        };
        return Err(Error::usage(format!(
            "{what} has no train or import instance{where_asked}"
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

/// The rows of the train and import instances that every filter matches.
fn plan_rows(plan: &Plan, store: &pipe_engine::store::Store, filters: &[Selector]) -> Vec<Row> {
    trained_states(plan, store, filters)
        .iter()
        .map(|s| row(plan, store, s.node, s.state))
        .collect()
}

/// The rows of several runs side by side: each run's train instances (those it covered)
/// with its id and name and the parameters that differ between the rows' runs; the
/// columns `--sort` takes beside the fixed ones; and what the rows are of, in words.
fn runs_rows(
    args: &TableArgs,
    all: &[super::args::Loaded],
) -> Result<(Vec<Row>, Vec<String>, String), Error> {
    use crate::compare::{Side, differing, settings};
    let plans: Vec<&Plan> = all.iter().map(|l| &l.plan).collect();
    let filters = where_filters(&args.filter, &plans)?;
    let mut rows = Vec::new();
    let mut sets: Vec<(usize, BTreeMap<String, Json>)> = Vec::new();
    let mut vars: Vec<String> = Vec::new();
    for (i, l) in all.iter().enumerate() {
        let Some(run) = &l.run else { continue };
        let side = Side::of(&l.plan, run);
        let index = l.store.read_index(&l.plan.spec.name);
        let states = status::status(&l.plan, &l.store, &index);
        for v in l.plan.spec.sweep.var_names() {
            if !vars.iter().any(|x| x == v) {
                vars.push(v.to_string());
            }
        }
        let wanted: std::collections::HashSet<_> = side.nodes.iter().copied().collect();
        for s in states.iter().filter(|s| wanted.contains(&s.node)) {
            let plan = &l.plan;
            if plan.spec.stages[plan.graph[s.node].stage].kind.name()
                != pipe_kinds::stages::train::NAME
                || !filters
                    .iter()
                    .all(|f| f.check(plan).is_err() || f.matches(plan, s.node))
            {
                continue;
            }
            let mut r = row(plan, &l.store, s.node, s.state);
            r.run = Some(run.id.clone());
            r.run_name = run.name.clone();
            rows.push(r);
            sets.push((i, settings(plan, s.node)));
        }
    }
    let by_ref: Vec<(usize, &BTreeMap<String, Json>)> = sets.iter().map(|(i, s)| (*i, s)).collect();
    let params = differing(&by_ref);
    for (r, (_, s)) in rows.iter_mut().zip(&sets) {
        r.params = params
            .iter()
            .map(|p| (p.clone(), s.get(p).cloned().unwrap_or(Json::Null)))
            .collect();
    }
    let mut sortable = vars;
    sortable.extend(params);
    let what = match &args.pipeline.file {
        Some(f) => format!("{} (in {} runs)", f.display(), all.len()),
        None => format!("the {} runs", all.len()),
    };
    Ok((rows, sortable, what))
}

/// The `--where VARIABLE=VALUE,...` filters, each checked against at least one plan.
fn where_filters(given: &[String], plans: &[&Plan]) -> Result<Vec<Selector>, Error> {
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
        if let Some(Err(e)) = plans
            .iter()
            .map(|p| f.check(p))
            .find(|c| c.is_ok())
            .or_else(|| plans.first().map(|p| f.check(p)))
        {
            return Err(Error::usage(e));
        }
    }
    Ok(filters)
}

/// Sorts by `--sort COLUMN` (`-COLUMN`: descending), a column or a sweep variable.
fn sort_rows(rows: &mut [Row], col: &str, vars: &[String]) -> Result<(), Error> {
    let (col, desc) = match col.strip_prefix('-') {
        Some(c) => (c, true),
        None => (col, false),
    };
    if !COLUMNS.contains(&col) && !vars.iter().any(|v| v == col) {
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
    let params: Vec<String> = rows
        .first()
        .map(|r| r.params.keys().cloned().collect())
        .unwrap_or_default();
    let runs = rows.iter().any(|r| r.run.is_some());
    let named = rows.iter().any(|r| r.run_name.is_some());
    let shown = |v: Option<&Json>| {
        v.filter(|v| !v.is_null())
            .map_or(String::new(), pipe_engine::spec::template::display)
    };
    let cells = |r: &Row| -> Vec<String> {
        let mut c = Vec::new();
        if runs {
            c.push(r.run.clone().unwrap_or_default());
        }
        if named {
            c.push(r.run_name.clone().unwrap_or_default());
        }
        c.push(r.stage.clone());
        c.extend(vars.iter().map(|v| shown(r.point.get(v))));
        c.extend(params.iter().map(|p| shown(r.params.get(p))));
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
    let mut header: Vec<String> = Vec::new();
    if runs {
        header.push("run".into());
    }
    if named {
        header.push("run_name".into());
    }
    header.push("stage".into());
    header.extend(vars.iter().cloned());
    header.extend(params.iter().cloned());
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
        var => r
            .point
            .get(var)
            .or_else(|| r.params.get(var))
            .and_then(Json::as_f64),
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
    // A running instance shows its epochs so far, from beside its log.
    let metrics = metrics_so_far(store, key.as_deref(), state).unwrap_or_default();
    let last = metrics.rows().checked_sub(1);
    let best = (0..metrics.rows())
        .filter(|&i| metrics.epoch[i] > 0)
        .max_by(|&a, &b| metrics.test_acc[a].total_cmp(&metrics.test_acc[b]));
    Row {
        run: None,
        run_name: None,
        stage: plan.stage_name(n).to_string(),
        point: plan.point(n),
        params: BTreeMap::new(),
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
