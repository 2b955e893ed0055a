//! The pipeline's own figures: each `[[report.plot]]` draws `y` against `x` from a table
//! the stages write (an `exec` stage's `tables`), one line per value of `series`, the mean
//! over the rows that share a series and x (the seeds, say) with a band of ±1 sd.
//!
//! A name is looked up first among the table's columns, then among the instance's sweep
//! variables, so `series = "noise"` works whether or not the command wrote a noise column.
//!
//! Each point averages over the sweep variables `mean_over` (default: those `pipe report
//! --over` names, the seeds); the other sweep variables that are neither `x` nor `series`
//! get a panel per value, so nothing is averaged that the plot does not say. The caption
//! says what each point averages over.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::array_value_to_string;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use super::chart::{self, Line, Panel, XScale};
use super::findings::{Figure, FigureData, slug};
use super::stats::Stat;
use pipe_engine::spec::template;
use pipe_engine::spec::top_level::PlotSpec;

/// The figures of the pipeline's `[[report.plot]]` entries (finding 0 on the page).
pub fn plots(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for (i, plot) in data.plan.spec.plots.iter().enumerate() {
        let what = format!("{}: report.plot[{i}]", plot.loc);
        out.extend(figure(data, plot, i).with_context(|| what)?);
    }
    Ok(out)
}

/// One column (or sweep variable) of one instance's table, row by row.
enum Values {
    /// The column's values.
    Column(ArrayRef),
    /// The instance's sweep variable: the same on every row.
    Var(Json),
}

impl Values {
    /// Finds `name` in `batch`, else in the instance's `point`.
    fn find(name: &str, batch: &RecordBatch, point: &Json) -> Option<Values> {
        if let Some(col) = batch.column_by_name(name) {
            return Some(Values::Column(col.clone()));
        }
        point.get(name).cloned().map(Values::Var)
    }

    /// Row `i` as a number (null, text or a non-finite value: `None`).
    fn number(&self, i: usize) -> Option<f64> {
        let v = match self {
            Values::Column(c) => {
                if c.is_null(i) {
                    return None;
                }
                let c = arrow::compute::cast(&c.slice(i, 1), &DataType::Float64).ok()?;
                let c = c.as_any().downcast_ref::<Float64Array>()?;
                (!c.is_null(0)).then(|| c.value(0))?
            }
            Values::Var(v) => v.as_f64()?,
        };
        v.is_finite().then_some(v)
    }

    /// Row `i` as text (a line's name).
    fn text(&self, i: usize) -> String {
        match self {
            Values::Column(c) => array_value_to_string(c, i).unwrap_or_default(),
            Values::Var(v) => template::display(v),
        }
    }
}

/// The figure of one plot (none when no cached instance has its table).
fn figure(data: &FigureData<'_>, plot: &PlotSpec, i: usize) -> Result<Option<Figure>> {
    let Some(parts) = data.gathered.tables.get(&plot.table) else {
        check_declared(data, plot)?;
        return Ok(None);
    };
    let mean_over: Vec<String> = match &plot.mean_over {
        Some((names, _)) => names.clone(),
        None => data.over.to_vec(),
    };
    let mut facets = Facets::new();
    for (node, batch) in parts {
        add_rows(&mut facets, data, plot, &mean_over, *node, batch)?;
    }
    if facets.values().all(|f| f.rows.is_empty()) {
        bail!(
            "no row of table `{}` has numbers in both `{}` and `{}`",
            plot.table,
            plot.x,
            plot.y
        );
    }
    facets.retain(|_, f| !f.rows.is_empty());
    let title = plot
        .title
        .clone()
        .unwrap_or_else(|| format!("{} against {}", plot.y, plot.x));
    let faceted = facets.len() > 1 || facets.keys().any(|k| !k.is_empty());
    let mut csv = String::from("panel,series,x,mean,sd,n\n");
    let mut panels = Vec::new();
    for (label, facet) in &facets {
        let panel_name = if faceted { label.as_str() } else { &title };
        let lines = mean_lines(&mut csv, panel_name, &facet.rows);
        panels.push(Panel {
            title: if faceted {
                label.clone()
            } else {
                format!("table {}: mean ± sd of rows sharing x", plot.table)
            },
            x_label: plot.x.clone(),
            y_label: plot.y.clone(),
            x_names: None,
            x_scale: XScale::Linear,
            markers_only: false,
            y_floor: None,
            y_range: None,
            lines,
        });
    }
    Ok(Some(Figure {
        finding: 0,
        claim: None,
        caption: caption(&mean_over, &facets),
        stem: format!("plot-{}-{}", i + 1, slug(&title)),
        title: title.clone(),
        svg: chart::panels_svg(&title, &panels, panels.len().min(3))
            .with_context(|| format!("table `{}`, x `{}`, y `{}`", plot.table, plot.x, plot.y))?,
        csv,
    }))
}

/// One panel's rows, and what its points average over.
#[derive(Default)]
struct Facet {
    /// The y values by series and x.
    rows: SeriesRows,
    /// The distinct values of the averaged variables among its instances, as labels.
    runs: BTreeSet<String>,
    /// The sweep variables that make the panel, e.g. `["width"]`.
    vars: Vec<String>,
}

/// The panels of a plot by their label (`width=64`; empty for the one panel of a plot
/// with no other sweep variable), in the order first seen.
type Facets = IndexMap<String, Facet>;

/// What each point of a plot averages over, e.g. "Each point: mean over seed (3 values);
/// a panel per width".
fn caption(mean_over: &[String], facets: &Facets) -> String {
    let runs = facets.values().map(|f| f.runs.len()).max().unwrap_or(0);
    let mut text = if mean_over.is_empty() || runs == 0 {
        "Each point: mean of one run's rows sharing x (nothing averaged across the sweep)"
            .to_string()
    } else {
        format!(
            "Each point: mean over {} ({runs} {})",
            mean_over.join(" x "),
            if runs == 1 { "value" } else { "values" }
        )
    };
    let vars: BTreeSet<&String> = facets.values().flat_map(|f| &f.vars).collect();
    match (facets.len(), facets.keys().next()) {
        (1, Some(label)) if !label.is_empty() => {
            let _ = write!(text, "; {label}");
        }
        (n, _) if n > 1 => {
            let vars: Vec<&str> = vars.iter().map(|v| v.as_str()).collect();
            let _ = write!(text, "; a panel per {}", vars.join(" x "));
        }
        _ => {}
    }
    text
}

/// A plot's y values: series name -> x (as ordered bits) -> values.
type SeriesRows = IndexMap<String, BTreeMap<OrderedX, Vec<f64>>>;

/// For a plot whose table no cached instance has: an error if no stage of the plan writes
/// that table at all (a misspelt name), else fine (nothing computed yet).
fn check_declared(data: &FigureData<'_>, plot: &PlotSpec) -> Result<()> {
    let declared = data.plan.order.iter().any(|&n| {
        let inst = &data.plan.graph[n];
        data.plan.spec.stages[inst.stage]
            .kind
            .tables(&inst.params)
            .contains(&plot.table)
    });
    if !declared {
        bail!(
            "no stage writes a table `{}` (declare it in an exec stage's `tables`)",
            plot.table
        );
    }
    Ok(())
}

/// Adds the rows of one instance's table with numbers in both x and y to its panel (the
/// instance's sweep variables outside `mean_over`, `x` and `series`), under their series
/// (`series = value`, or the y name without a series); an x, y or series name found
/// neither among the columns nor the sweep variables is an error.
fn add_rows(
    facets: &mut Facets,
    data: &FigureData<'_>,
    plot: &PlotSpec,
    mean_over: &[String],
    node: NodeIndex,
    batch: &RecordBatch,
) -> Result<()> {
    let point = data.plan.point(node);
    let (mut panel, mut runs, mut vars) = (Vec::new(), Vec::new(), Vec::new());
    if let Json::Object(m) = &point {
        for (k, v) in m {
            let value = template::display(v);
            if mean_over.contains(k) {
                runs.push(format!("{k}={value}"));
            } else if *k != plot.x && Some(k.as_str()) != plot.series.as_deref() {
                panel.push(format!("{k}={value}"));
                vars.push(k.clone());
            }
        }
    }
    let facet = facets.entry(panel.join(", ")).or_default();
    facet.vars = vars;
    if !runs.is_empty() {
        facet.runs.insert(runs.join(","));
    }
    let acc = &mut facet.rows;
    let find = |name: &str| {
        Values::find(name, batch, &point).with_context(|| {
            format!(
                "table `{}` of {} has no column `{name}` (columns: {}) and the instance no such sweep variable",
                plot.table,
                data.plan.label(node),
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    let (xs, ys) = (find(&plot.x)?, find(&plot.y)?);
    let series = plot.series.as_deref().map(find).transpose()?;
    for row in 0..batch.num_rows() {
        let (Some(x), Some(y)) = (xs.number(row), ys.number(row)) else {
            continue;
        };
        let name = series.as_ref().map_or_else(
            || plot.y.clone(),
            |s| format!("{} = {}", plot.series.as_deref().unwrap_or(""), s.text(row)),
        );
        acc.entry(name)
            .or_default()
            .entry(OrderedX(x))
            .or_default()
            .push(y);
    }
    Ok(())
}

/// One line per series, through the mean (± sd) of the values at each x; the CSV rows of
/// those points (`panel,series,x,mean,sd,n`) are added to `csv`.
fn mean_lines(csv: &mut String, panel: &str, acc: &SeriesRows) -> Vec<Line> {
    acc.iter()
        .map(|(name, xs)| Line {
            name: name.clone(),
            points: xs
                .iter()
                .filter_map(|(x, v)| {
                    let s = Stat::of(v)?;
                    let _ = writeln!(
                        csv,
                        "{},{},{},{},{},{}",
                        field(panel),
                        field(name),
                        x.0,
                        s.mean,
                        s.sd,
                        s.n
                    );
                    Some((x.0, s))
                })
                .collect(),
        })
        .collect()
}

/// An x value usable as a map key, in numeric order.
#[derive(Clone, Copy, Debug, PartialEq)]
struct OrderedX(f64);

impl Eq for OrderedX {}

impl PartialOrd for OrderedX {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedX {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A CSV field, quoted when needed.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caption_says_what_each_point_averages_over_and_what_makes_the_panels() {
        let facet = |runs: &[&str], vars: &[&str]| Facet {
            rows: SeriesRows::new(),
            runs: runs.iter().map(|r| r.to_string()).collect(),
            vars: vars.iter().map(|v| v.to_string()).collect(),
        };
        let seeds = ["seed=1", "seed=2", "seed=3"];
        let mut one = Facets::new();
        one.insert("width=64".into(), facet(&seeds, &["width"]));
        assert_eq!(
            caption(&["seed".into()], &one),
            "Each point: mean over seed (3 values); width=64"
        );
        one.insert("width=128".into(), facet(&seeds, &["width"]));
        assert_eq!(
            caption(&["seed".into()], &one),
            "Each point: mean over seed (3 values); a panel per width"
        );
        let mut plain = Facets::new();
        plain.insert(String::new(), facet(&[], &[]));
        assert_eq!(
            caption(&[], &plain),
            "Each point: mean of one run's rows sharing x (nothing averaged across the sweep)"
        );
    }
}
