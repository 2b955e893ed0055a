//! The four findings of science.md as figures: which table rows go into which line,
//! averaged over the seed-like sweep variables.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use super::chart::{self, Heat, Line, Panel};
use super::columns::{floats, strings};
use super::stats::Stat;
use crate::export::Gathered;
use crate::plan::{Plan, point_label};

/// One figure of the report, with the numbers behind it.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Which finding (1 to 4) it shows.
    pub finding: usize,
    /// File stem under `figures/` (`.svg` and `.csv` are added).
    pub stem: String,
    /// Heading on the page.
    pub title: String,
    /// The SVG drawing.
    pub svg: String,
    /// The plotted means as CSV: `panel,series,x,mean,sd,n`.
    pub csv: String,
}

/// Values collected per line and per x before averaging: series -> x -> values.
type Acc = IndexMap<String, BTreeMap<i64, Vec<f64>>>;

/// What the figures are built from: a plan, its gathered tables, the variables averaged over.
pub struct Source<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Its instances' tables.
    pub gathered: &'a Gathered,
    /// Sweep variables averaged over (the seeds).
    pub over: &'a [String],
}

impl Source<'_> {
    fn rows(&self, table: &str) -> &[(NodeIndex, RecordBatch)] {
        self.gathered
            .tables
            .get(table)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The instance's sweep point without the averaged variables, e.g. `noise=0.4`.
    fn group(&self, node: NodeIndex) -> String {
        let point = match &self.plan.graph[node].point {
            Json::Object(m) => Json::Object(
                m.iter()
                    .filter(|(k, _)| !self.over.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        };
        match point_label(&point).as_str() {
            "-" => "all".to_string(),
            label => label.to_string(),
        }
    }

    fn context(&self, node: NodeIndex, table: &str) -> String {
        format!("table `{table}` of {}", self.plan.label(node))
    }
}

fn push(acc: &mut Acc, series: &str, x: i64, value: Option<f64>) {
    if let Some(v) = value.filter(|v| v.is_finite()) {
        acc.entry(series.to_string())
            .or_default()
            .entry(x)
            .or_default()
            .push(v);
    }
}

fn lines(acc: &Acc) -> Vec<Line> {
    acc.iter()
        .map(|(name, xs)| Line {
            name: name.clone(),
            points: xs
                .iter()
                .filter_map(|(x, v)| Stat::of(v).map(|s| (*x as f64, s)))
                .collect(),
        })
        .collect()
}

fn csv_rows(csv: &mut String, panel: &str, acc: &Acc, x_name: impl Fn(i64) -> String) {
    for (series, xs) in acc {
        for (x, v) in xs {
            if let Some(s) = Stat::of(v) {
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{}",
                    field(panel),
                    field(series),
                    field(&x_name(*x)),
                    s.mean,
                    s.sd,
                    s.n
                );
            }
        }
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

/// A file-name-safe form of a label.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

const CSV_HEADER: &str = "panel,series,x,mean,sd,n\n";

/// Finding 1: test accuracy and corrupted-example accuracy against epoch, a line per
/// noise level (per group), one figure per training stage.
pub fn accuracy(src: &Source<'_>) -> Result<Vec<Figure>> {
    const PANELS: [(&str, &str); 3] = [
        ("test_acc", "Test accuracy"),
        (
            "corrupted_train_acc",
            "Corrupted examples vs training labels",
        ),
        ("corrupted_true_acc", "Corrupted examples vs true labels"),
    ];
    let mut by_stage: IndexMap<String, [Acc; 3]> = IndexMap::new();
    for (node, batch) in src.rows("metrics") {
        let (stage, group) = (src.plan.stage_name(*node), src.group(*node));
        let ctx = || src.context(*node, "metrics");
        let epochs = floats(batch, "epoch").with_context(ctx)?;
        let accs = by_stage.entry(stage.to_string()).or_default();
        for (acc, (column, _)) in accs.iter_mut().zip(PANELS) {
            for (e, v) in epochs.iter().zip(floats(batch, column).with_context(ctx)?) {
                if let Some(e) = e {
                    push(acc, &group, *e as i64, v);
                }
            }
        }
    }
    let mut figures = Vec::new();
    for (stage, accs) in by_stage {
        let mut csv = CSV_HEADER.to_string();
        let panels: Vec<Panel> = accs
            .iter()
            .zip(PANELS)
            .map(|(acc, (column, title))| {
                csv_rows(&mut csv, column, acc, |x| x.to_string());
                Panel {
                    title: title.to_string(),
                    x_label: "epoch".into(),
                    y_label: "accuracy".into(),
                    x_names: None,
                    lines: lines(acc),
                }
            })
            .collect();
        let title = format!("Accuracy during training: stage {stage}");
        figures.push(Figure {
            finding: 1,
            stem: format!("1-accuracy-{}", slug(&stage)),
            svg: chart::panels_svg(&title, &panels, 3)?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// Finding 2: capacity, radius and dimension against layer for the three labelings,
/// at the earliest epoch after initialization and at the final epoch.
pub fn geometry(src: &Source<'_>) -> Result<Vec<Figure>> {
    const METRICS: [&str; 3] = ["capacity", "radius", "dimension"];
    struct Rows {
        layers: Vec<String>,
        /// (metric, epoch) -> labeling -> layer index -> values.
        acc: HashMap<(usize, i64), Acc>,
        epochs: BTreeSet<i64>,
    }
    let mut by: IndexMap<(String, String), Rows> = IndexMap::new();
    for (node, batch) in src.rows("probe") {
        let ctx = || src.context(*node, "probe");
        let key = (src.plan.stage_name(*node).to_string(), src.group(*node));
        let rows = by.entry(key).or_insert_with(|| Rows {
            layers: Vec::new(),
            acc: HashMap::new(),
            epochs: BTreeSet::new(),
        });
        let epochs = floats(batch, "epoch").with_context(ctx)?;
        let layers = strings(batch, "layer").with_context(ctx)?;
        let labelings = strings(batch, "labeling").with_context(ctx)?;
        let values: Vec<Vec<Option<f64>>> = METRICS
            .iter()
            .map(|m| floats(batch, m).with_context(ctx))
            .collect::<Result<_>>()?;
        for i in 0..batch.num_rows() {
            let (Some(e), Some(layer), Some(labeling)) = (epochs[i], &layers[i], &labelings[i])
            else {
                continue;
            };
            let e = e as i64;
            rows.epochs.insert(e);
            let l = match rows.layers.iter().position(|x| x == layer) {
                Some(l) => l,
                None => {
                    rows.layers.push(layer.clone());
                    rows.layers.len() - 1
                }
            };
            for (m, v) in values.iter().enumerate() {
                push(
                    rows.acc.entry((m, e)).or_default(),
                    labeling,
                    l as i64,
                    v[i],
                );
            }
        }
    }
    let mut figures = Vec::new();
    for ((stage, group), rows) in by {
        let (Some(&first), Some(&last)) = (rows.epochs.first(), rows.epochs.last()) else {
            continue;
        };
        let early = rows
            .epochs
            .iter()
            .copied()
            .find(|&e| e > 0)
            .unwrap_or(first);
        let shown: Vec<i64> = if early == last {
            vec![last]
        } else {
            vec![early, last]
        };
        let mut csv = CSV_HEADER.to_string();
        let mut panels = Vec::new();
        for (m, metric) in METRICS.iter().enumerate() {
            for &e in &shown {
                let empty = Acc::new();
                let acc = rows.acc.get(&(m, e)).unwrap_or(&empty);
                let name = format!("{metric} at epoch {e}");
                csv_rows(&mut csv, &name, acc, |x| {
                    rows.layers.get(x as usize).cloned().unwrap_or_default()
                });
                panels.push(Panel {
                    title: name,
                    x_label: "layer".into(),
                    y_label: metric.to_string(),
                    x_names: Some(rows.layers.clone()),
                    lines: lines(acc),
                });
            }
        }
        let title = format!("Manifold geometry per layer: stage {stage}, {group}");
        figures.push(Figure {
            finding: 2,
            stem: format!("2-geometry-{}-{}", slug(&stage), slug(&group)),
            svg: chart::panels_svg(&title, &panels, shown.len())?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// Finding 3: the corrupted examples' share of the gradient norm against epoch, a line per
/// layer; groups without corrupted examples are left out.
pub fn gradients(src: &Source<'_>) -> Result<Vec<Figure>> {
    let mut by: IndexMap<(String, String), Acc> = IndexMap::new();
    for (node, batch) in src.rows("gradnorm") {
        let ctx = || src.context(*node, "gradnorm");
        let epochs = floats(batch, "epoch").with_context(ctx)?;
        let layers = strings(batch, "layer").with_context(ctx)?;
        let share = floats(batch, "corrupted_share").with_context(ctx)?;
        let acc = by
            .entry((src.plan.stage_name(*node).to_string(), src.group(*node)))
            .or_default();
        for i in 0..batch.num_rows() {
            if let (Some(e), Some(layer)) = (epochs[i], &layers[i]) {
                push(acc, layer, e as i64, share[i]);
            }
        }
    }
    let mut figures = Vec::new();
    for ((stage, group), acc) in by {
        if acc.is_empty() {
            continue;
        }
        let mut csv = CSV_HEADER.to_string();
        csv_rows(&mut csv, "corrupted_share", &acc, |x| x.to_string());
        let title = format!("Corrupted examples' share of the gradient: stage {stage}, {group}");
        let panel = Panel {
            title: "share of the gradient norm from corrupted examples".into(),
            x_label: "epoch".into(),
            y_label: "corrupted share".into(),
            x_names: None,
            lines: lines(&acc),
        };
        figures.push(Figure {
            finding: 3,
            stem: format!("3-gradients-{}-{}", slug(&stage), slug(&group)),
            svg: chart::panels_svg(&title, &[panel], 1)?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// Finding 4: test accuracy after rolling layers back, as a heat map of the epoch rolled
/// back to against the first layer rolled back, beside the accuracy without rollback
/// (the stage's row with a negative `cutoff_index`).
pub fn rollback(src: &Source<'_>) -> Result<Vec<Figure>> {
    #[derive(Default)]
    struct Rows {
        /// cut-off -> its index in the network.
        cutoffs: BTreeMap<String, i64>,
        /// (from_epoch, cut-off) -> values.
        cells: BTreeMap<(i64, String), Vec<f64>>,
        baseline: Vec<f64>,
    }
    let mut by: IndexMap<(String, String), Rows> = IndexMap::new();
    for (node, batch) in src.rows("rollback") {
        let ctx = || src.context(*node, "rollback");
        let from = floats(batch, "from_epoch").with_context(ctx)?;
        let cutoff = strings(batch, "cutoff").with_context(ctx)?;
        let index = floats(batch, "cutoff_index").with_context(ctx)?;
        let test = floats(batch, "test_acc").with_context(ctx)?;
        let rows = by
            .entry((src.plan.stage_name(*node).to_string(), src.group(*node)))
            .or_default();
        for i in 0..batch.num_rows() {
            let (Some(e), Some(c), Some(t)) = (from[i], &cutoff[i], test[i]) else {
                continue;
            };
            // The stage's own row for the final weights, nothing rolled back.
            if index[i].is_some_and(|k| k < 0.0) {
                rows.baseline.push(t);
                continue;
            }
            rows.cutoffs
                .insert(c.clone(), index[i].map_or(i64::MAX, |k| k as i64));
            rows.cells.entry((e as i64, c.clone())).or_default().push(t);
        }
    }
    let mut figures = Vec::new();
    for ((stage, group), rows) in by {
        let mut cols: Vec<(&String, &i64)> = rows.cutoffs.iter().collect();
        cols.sort_by_key(|(name, k)| (**k, (*name).clone()));
        let cols: Vec<String> = cols.into_iter().map(|(n, _)| n.clone()).collect();
        let epochs: BTreeSet<i64> = rows.cells.keys().map(|(e, _)| *e).collect();
        let mut csv = "from_epoch,cutoff,mean,sd,n\n".to_string();
        let cells: Vec<Vec<Option<Stat>>> = epochs
            .iter()
            .map(|e| {
                cols.iter()
                    .map(|c| {
                        let s = rows.cells.get(&(*e, c.clone())).and_then(|v| Stat::of(v));
                        if let Some(s) = s {
                            let _ = writeln!(csv, "{e},{},{},{},{}", field(c), s.mean, s.sd, s.n);
                        }
                        s
                    })
                    .collect()
            })
            .collect();
        let reference = Stat::of(&rows.baseline).map(|s| ("no rollback".to_string(), s));
        if let Some((_, s)) = &reference {
            let _ = writeln!(csv, ",no rollback,{},{},{}", s.mean, s.sd, s.n);
        }
        let title = format!("Test accuracy after rollback: stage {stage}, {group}");
        let heat = Heat {
            title: title.clone(),
            x_label: "first layer rolled back (it and all after it)".into(),
            y_label: "epoch rolled back to".into(),
            cols,
            rows: epochs.iter().map(|e| e.to_string()).collect(),
            cells,
            reference,
        };
        figures.push(Figure {
            finding: 4,
            stem: format!("4-rollback-{}-{}", slug(&stage), slug(&group)),
            svg: chart::heat_svg(&heat)?,
            title,
            csv,
        });
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_csv_fields() {
        assert_eq!(slug("noise=0.4,width=512"), "noise-0.4-width-512");
        assert_eq!(slug("train"), "train");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("q\",x"), "\"q\"\",x\"");
    }
}
