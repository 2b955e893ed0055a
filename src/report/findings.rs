//! The four findings of science.md as figures: which table rows go into which line,
//! averaged over the seed-like sweep variables. Tables are read as their types in
//! [`crate::tables`], so no column is named here but as a label.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use super::chart::{self, Heat, Line, Panel};
use super::stats::Stat;
use crate::export::Gathered;
use crate::plan::{Plan, point_label};
use crate::table::Table;
use crate::tables::{GradNorm, Metrics, Probe, Rollback};

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
pub struct FigureData<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Its instances' tables.
    pub gathered: &'a Gathered,
    /// Sweep variables averaged over (the seeds).
    pub over: &'a [String],
}

impl FigureData<'_> {
    /// Every instance's table `name` (e.g. `metrics`), read as `T`, in plan order.
    fn tables<T: Table>(&self, name: &str) -> Result<Vec<(NodeIndex, T)>> {
        let parts = self
            .gathered
            .tables
            .get(name)
            .map_or(&[][..], Vec::as_slice);
        read_tables(parts, name, |node| self.plan.label(node))
    }

    /// The instance's sweep point without the averaged variables, e.g. `noise=0.4`.
    fn group(&self, node: NodeIndex) -> String {
        let point = match self.plan.point(node) {
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

    /// The instance's stage name and [`group`](Self::group): one figure each.
    fn stage_and_group(&self, node: NodeIndex) -> (String, String) {
        (self.plan.stage_name(node).to_string(), self.group(node))
    }
}

/// Reads each instance's batch of table `name` as `T`; a batch that does not read says
/// which table of which instance (`label`) it is: "table `metrics` of train[seed=1]: ...".
fn read_tables<T: Table>(
    parts: &[(NodeIndex, RecordBatch)],
    name: &str,
    label: impl Fn(NodeIndex) -> String,
) -> Result<Vec<(NodeIndex, T)>> {
    parts
        .iter()
        .map(|(node, batch)| {
            let table = T::from_batch(batch)
                .with_context(|| format!("table `{name}` of {}", label(*node)))?;
            Ok((*node, table))
        })
        .collect()
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
pub fn accuracy(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    // Each panel's CSV label (its `metrics` column) and title, in the order of the values
    // the loop below takes from each table.
    const PANELS: [(&str, &str); 3] = [
        ("test_acc", "Test accuracy"),
        (
            "corrupted_train_acc",
            "Corrupted examples vs training labels",
        ),
        ("corrupted_true_acc", "Corrupted examples vs true labels"),
    ];
    let mut by_stage: IndexMap<String, [Acc; 3]> = IndexMap::new();
    for (node, m) in data.tables::<Metrics>("metrics")? {
        let group = data.group(node);
        let accs = by_stage
            .entry(data.plan.stage_name(node).to_string())
            .or_default();
        let panels = [
            m.test_acc.iter().copied().map(Some).collect(),
            m.corrupted_train_acc,
            m.corrupted_true_acc,
        ];
        for (acc, values) in accs.iter_mut().zip(panels) {
            for (&e, v) in m.epoch.iter().zip(values) {
                push(acc, &group, e, v);
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

/// Finding 2's measures, as panel labels, in the order of [`geometry_values`].
const GEOMETRY: [&str; 3] = ["capacity", "radius", "dimension"];

/// One row's values of the [`GEOMETRY`] measures.
fn geometry_values(p: &Probe, row: usize) -> [f64; 3] {
    [p.capacity[row], p.radius[row], p.dimension[row]]
}

/// Finding 2's values of one (stage, group).
#[derive(Default)]
struct GeometryRows {
    /// Layers in the order first seen.
    layers: Vec<String>,
    /// (measure, epoch) -> labeling -> layer index -> values.
    acc: HashMap<(usize, i64), Acc>,
    /// Every epoch seen.
    epochs: BTreeSet<i64>,
}

/// Collects the `probe` tables by (stage, group).
fn geometry_rows(data: &FigureData<'_>) -> Result<IndexMap<(String, String), GeometryRows>> {
    let mut by: IndexMap<(String, String), GeometryRows> = IndexMap::new();
    for (node, p) in data.tables::<Probe>("probe")? {
        let rows = by.entry(data.stage_and_group(node)).or_default();
        for (i, (&e, layer)) in p.epoch.iter().zip(&p.layer).enumerate() {
            rows.epochs.insert(e);
            let l = match rows.layers.iter().position(|x| x == layer) {
                Some(l) => l,
                None => {
                    rows.layers.push(layer.clone());
                    rows.layers.len() - 1
                }
            };
            for (m, v) in geometry_values(&p, i).into_iter().enumerate() {
                let acc = rows.acc.entry((m, e)).or_default();
                push(acc, &p.labeling[i], l as i64, Some(v));
            }
        }
    }
    Ok(by)
}

/// Finding 2: capacity, radius and dimension against layer for the three labelings,
/// at the earliest epoch after initialization and at the final epoch.
pub fn geometry(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for ((stage, group), rows) in geometry_rows(data)? {
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
        for (m, measure) in GEOMETRY.iter().enumerate() {
            for &e in &shown {
                let empty = Acc::new();
                let acc = rows.acc.get(&(m, e)).unwrap_or(&empty);
                let name = format!("{measure} at epoch {e}");
                csv_rows(&mut csv, &name, acc, |x| {
                    rows.layers.get(x as usize).cloned().unwrap_or_default()
                });
                panels.push(Panel {
                    title: name,
                    x_label: "layer".into(),
                    y_label: measure.to_string(),
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
pub fn gradients(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    let mut by: IndexMap<(String, String), Acc> = IndexMap::new();
    for (node, g) in data.tables::<GradNorm>("gradnorm")? {
        let acc = by.entry(data.stage_and_group(node)).or_default();
        for ((&e, layer), &share) in g.epoch.iter().zip(&g.layer).zip(&g.corrupted_share) {
            push(acc, layer, e, share);
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

/// Finding 4's test accuracies of one (stage, group).
#[derive(Default)]
struct RollbackRows {
    /// cut-off -> its index in the network.
    cutoffs: BTreeMap<String, i64>,
    /// (from_epoch, cut-off) -> values.
    cells: BTreeMap<(i64, String), Vec<f64>>,
    /// The final weights' accuracies, nothing rolled back.
    baseline: Vec<f64>,
}

/// Collects the `rollback` tables by (stage, group).
fn rollback_rows(data: &FigureData<'_>) -> Result<IndexMap<(String, String), RollbackRows>> {
    let mut by: IndexMap<(String, String), RollbackRows> = IndexMap::new();
    for (node, r) in data.tables::<Rollback>("rollback")? {
        let rows = by.entry(data.stage_and_group(node)).or_default();
        for (i, cutoff) in r.cutoff.iter().enumerate() {
            let (index, test) = (r.cutoff_index[i], r.test_acc[i]);
            // The stage's own row for the final weights, nothing rolled back.
            if index < 0 {
                rows.baseline.push(test);
                continue;
            }
            rows.cutoffs.insert(cutoff.clone(), index);
            let cell = (r.from_epoch[i], cutoff.clone());
            rows.cells.entry(cell).or_default().push(test);
        }
    }
    Ok(by)
}

/// Finding 4: test accuracy after rolling layers back, as a heat map of the epoch rolled
/// back to against the first layer rolled back, beside the accuracy without rollback
/// (the stage's row with a negative `cutoff_index`).
pub fn rollback(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for ((stage, group), rows) in rollback_rows(data)? {
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

    #[test]
    fn tables_read_as_their_type_or_say_which_table_of_which_instance() {
        use arrow::array::{Float32Array, Int32Array};
        use arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;

        let m = Metrics {
            epoch: vec![0, 1],
            lr: vec![0.0, 0.5],
            train_loss: vec![2.0, 1.0],
            train_acc: vec![0.25, 0.5],
            clean_acc: vec![0.25, 0.75],
            corrupted_train_acc: vec![None, Some(0.25)],
            corrupted_true_acc: vec![None, Some(0.5)],
            test_loss: vec![2.0, 1.5],
            test_acc: vec![0.125, 0.5],
        };
        // As another tool may write it: int32 epochs, float32 accuracies, an extra column.
        let written = m.to_batch().unwrap();
        let mut fields: Vec<Field> = written
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = written.columns().to_vec();
        fields[0] = fields[0].clone().with_data_type(DataType::Int32);
        columns[0] = Arc::new(Int32Array::from(vec![0, 1]));
        fields[8] = fields[8].clone().with_data_type(DataType::Float32);
        columns[8] = Arc::new(Float32Array::from(vec![0.125, 0.5]));
        fields.push(Field::new("note", DataType::Utf8, true));
        columns.push(Arc::new(arrow::array::StringArray::from(vec!["a", "b"])));
        let other = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let label = |n: NodeIndex| format!("train[seed={}]", n.index());
        let node = NodeIndex::new(2);
        let read = read_tables::<Metrics>(&[(node, other.clone())], "metrics", label).unwrap();
        assert_eq!(read, [(node, m)]);

        let without_lr = other.project(&[0, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let e = read_tables::<Metrics>(&[(node, without_lr)], "metrics", label).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "table `metrics` of train[seed=2]: no column `lr`"
        );
    }
}
