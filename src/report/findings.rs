//! The findings of science.md as figures: which table rows go into which line,
//! averaged over the seed-like sweep variables. Tables are read as their types in
//! [`pipe_kinds::tables`], so no column is named here but as a label.

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
use pipe_engine::plan::{Plan, point_label};
use pipe_engine::table::Table;
use pipe_kinds::tables::{Embedding, GradNorm, Metrics, Probe, Rollback};

/// What a figure's numbers say about its finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Whether the data show the finding.
    pub shown: bool,
    /// The measured result, with its numbers (e.g. "rolling back fc2 and logits to
    /// epoch 2: test accuracy 0.645 -> 0.730").
    pub text: String,
}

impl Claim {
    /// A claim, as an `Option` for the builders' convenience.
    pub(super) fn new(shown: bool, text: String) -> Option<Claim> {
        Some(Claim { shown, text })
    }
}

/// One figure of the report, with the numbers behind it.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Which finding (1 to 7; 0 for a `[[report.plot]]`) it shows.
    pub finding: usize,
    /// What its numbers say about the finding, when they can say something.
    pub claim: Option<Claim>,
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
pub(super) type Acc = IndexMap<String, BTreeMap<i64, Vec<f64>>>;

/// What the figures are built from: a plan, its gathered tables, the variables averaged over.
pub struct FigureData<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Its instances' tables.
    pub gathered: &'a Gathered,
    /// Sweep variables averaged over (the seeds).
    pub over: &'a [String],
    /// The layer the embedding figure shows (default: the last layer embedded).
    pub embed_layer: Option<&'a str>,
}

impl FigureData<'_> {
    /// Every instance's table `name` (e.g. `metrics`), read as `T`, in plan order.
    pub(super) fn tables<T: Table>(&self, name: &str) -> Result<Vec<(NodeIndex, T)>> {
        let parts = self
            .gathered
            .tables
            .get(name)
            .map_or(&[][..], Vec::as_slice);
        read_tables(parts, name, |node| self.plan.label(node))
    }

    /// The instance's sweep point without the averaged variables, e.g. `noise=0.4`.
    pub(super) fn group(&self, node: NodeIndex) -> String {
        self.group_without(node, None)
    }

    /// [`group`](Self::group) without the variable `also` as well (e.g. the size variable
    /// a figure puts on its x axis).
    fn group_without(&self, node: NodeIndex, also: Option<&str>) -> String {
        let point = match self.plan.point(node) {
            Json::Object(m) => Json::Object(
                m.iter()
                    .filter(|(k, _)| !self.over.contains(k) && Some(k.as_str()) != also)
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

pub(super) fn push(acc: &mut Acc, series: &str, x: i64, value: Option<f64>) {
    if let Some(v) = value.filter(|v| v.is_finite()) {
        acc.entry(series.to_string())
            .or_default()
            .entry(x)
            .or_default()
            .push(v);
    }
}

pub(super) fn lines(acc: &Acc) -> Vec<Line> {
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

pub(super) fn csv_rows(csv: &mut String, panel: &str, acc: &Acc, x_name: impl Fn(i64) -> String) {
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
pub(super) fn field(s: &str) -> String {
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

pub(super) const CSV_HEADER: &str = "panel,series,x,mean,sd,n\n";

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
                    log_x: false,
                    lines: lines(acc),
                }
            })
            .collect();
        let title = format!("Accuracy during training: stage {stage}");
        figures.push(Figure {
            finding: 1,
            claim: late_memorization(&accs[0], &accs[1]),
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
                    log_x: false,
                    lines: lines(acc),
                });
            }
        }
        let title = format!("Manifold geometry per layer: stage {stage}, {group}");
        figures.push(Figure {
            finding: 2,
            claim: deep_memorization(&rows, early, last, &group),
            stem: format!("2-geometry-{}-{}", slug(&stage), slug(&group)),
            svg: chart::panels_svg(&title, &panels, shown.len())?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// Finding 3's values of one (stage, group).
#[derive(Default)]
struct GradientRows {
    /// Layers in the order first seen.
    layers: Vec<String>,
    /// Per layer: "GROUP label-dependent" / "GROUP label-independent" -> epoch -> values.
    norms: Vec<Acc>,
    /// corrupted/clean ratio of the label-dependent norm: layer -> epoch -> values
    /// (one per instance, so seeds average ratios).
    dep_ratio: Acc,
    /// The same for the label-independent norm.
    ind_ratio: Acc,
}

/// Collects the `gradnorm` tables by (stage, group).
fn gradient_rows(data: &FigureData<'_>) -> Result<IndexMap<(String, String), GradientRows>> {
    let mut by: IndexMap<(String, String), GradientRows> = IndexMap::new();
    for (node, g) in data.tables::<GradNorm>("gradnorm")? {
        let rows = by.entry(data.stage_and_group(node)).or_default();
        let mut by_key: HashMap<(i64, &str, &str), (f64, f64)> = HashMap::new();
        for i in 0..g.epoch.len() {
            let layer = &g.layer[i];
            let l = match rows.layers.iter().position(|x| x == layer) {
                Some(l) => l,
                None => {
                    rows.layers.push(layer.clone());
                    rows.norms.push(Acc::new());
                    rows.layers.len() - 1
                }
            };
            let group = g.group[i].as_str();
            if group == "unchanged" {
                continue;
            }
            let acc = &mut rows.norms[l];
            let (e, dep, ind) = (g.epoch[i], g.label_dependent[i], g.label_independent[i]);
            push(acc, &format!("{group} label-dependent"), e, Some(dep));
            push(acc, &format!("{group} label-independent"), e, Some(ind));
            by_key.insert((e, layer.as_str(), group), (dep, ind));
        }
        for (&(e, layer, group), &(dep_k, ind_k)) in &by_key {
            if group != "corrupted" {
                continue;
            }
            if let Some(&(dep_c, ind_c)) = by_key.get(&(e, layer, "clean")) {
                push(&mut rows.dep_ratio, layer, e, Some(dep_k / dep_c));
                push(&mut rows.ind_ratio, layer, e, Some(ind_k / ind_c));
            }
        }
    }
    for rows in by.values_mut() {
        // Layers in network order, whatever order the hash map gave the ratios in.
        for acc in [&mut rows.dep_ratio, &mut rows.ind_ratio] {
            let layers = &rows.layers;
            acc.sort_by_cached_key(|name, _| layers.iter().position(|l| l == name));
        }
    }
    Ok(by)
}

/// The smallest and largest mean of the ratio lines at `epoch`.
fn ratio_span(acc: &Acc, epoch: i64) -> Option<(f64, f64)> {
    let means: Vec<f64> = acc
        .values()
        .filter_map(|xs| xs.get(&epoch).and_then(|v| Stat::of(v)).map(|s| s.mean))
        .collect();
    let lo = means.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (!means.is_empty()).then_some((lo, hi))
}

/// "0.29" or "0.29-0.32".
fn span_text((lo, hi): (f64, f64)) -> String {
    if (hi - lo).abs() < 0.005 {
        format!("{lo:.2}")
    } else {
        format!("{lo:.2}-{hi:.2}")
    }
}

/// The ratio below which a group's label-dependent gradient counts as small.
const SMALL_GRADIENT_RATIO: f64 = 0.5;

/// Finding 3 (the paper's Fig. A.1): the label-dependent and label-independent gradient
/// norms of clean and corrupted examples against epoch, one panel per layer, and the
/// corrupted/clean ratios.
pub fn gradients(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for ((stage, group), rows) in gradient_rows(data)? {
        if rows.dep_ratio.is_empty() {
            continue;
        }
        let mut csv = CSV_HEADER.to_string();
        let mut panels = Vec::new();
        for (layer, acc) in rows.layers.iter().zip(&rows.norms) {
            csv_rows(&mut csv, layer, acc, |x| x.to_string());
            panels.push(Panel {
                title: format!("{layer}: gradient norms"),
                x_label: "epoch".into(),
                y_label: "norm of the mean gradient".into(),
                x_names: None,
                log_x: false,
                lines: lines(acc),
            });
        }
        for (name, acc, title) in [
            (
                "label-dependent ratio",
                &rows.dep_ratio,
                "corrupted / clean, label-dependent",
            ),
            (
                "label-independent ratio",
                &rows.ind_ratio,
                "corrupted / clean, label-independent",
            ),
        ] {
            csv_rows(&mut csv, name, acc, |x| x.to_string());
            panels.push(Panel {
                title: title.into(),
                x_label: "epoch".into(),
                y_label: "ratio".into(),
                x_names: None,
                log_x: false,
                lines: lines(acc),
            });
        }
        let first = rows
            .dep_ratio
            .values()
            .flat_map(|xs| xs.keys().copied())
            .min();
        let claim = first.and_then(|e| {
            let dep = ratio_span(&rows.dep_ratio, e)?;
            let ind = ratio_span(&rows.ind_ratio, e)?;
            let text = format!(
                "{group}, epoch {e}: the corrupted examples' label-dependent gradient is {} of the clean examples' across layers ({}); label-independent ratio {}",
                span_text(dep),
                rows.layers.join(", "),
                span_text(ind)
            );
            Claim::new(dep.1 < SMALL_GRADIENT_RATIO, text)
        });
        let title = format!("Gradient decomposition (Fig. A.1): stage {stage}, {group}");
        let columns = panels.len().min(4);
        figures.push(Figure {
            finding: 3,
            claim,
            stem: format!("3-gradients-{}-{}", slug(&stage), slug(&group)),
            svg: chart::panels_svg(&title, &panels, columns)?,
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
        let claim = rollback_claim(&rows, &group);
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
            claim,
            stem: format!("4-rollback-{}-{}", slug(&stage), slug(&group)),
            svg: chart::heat_svg(&heat)?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// The sweep variable that model size is swept over, for the double-descent figure.
pub const SIZE_VAR: &str = "width";

/// Widths are kept as thousandths, so that a multiplier (0.25) and a unit count (4000)
/// both key an [`Acc`].
fn size_key(w: f64) -> i64 {
    (w * 1000.0).round() as i64
}

/// An accumulator's lines with x in the units [`size_key`] scaled.
fn size_lines(acc: &Acc) -> Vec<Line> {
    let mut l = lines(acc);
    for line in &mut l {
        for (x, _) in &mut line.points {
            *x /= 1000.0;
        }
    }
    l
}

/// The instance's value of the size variable, if its point has one.
fn size_of(data: &FigureData<'_>, node: NodeIndex) -> Option<f64> {
    data.plan.point(node).get(SIZE_VAR)?.as_f64()
}

/// The smallest rise of the test-error peak above both ends that counts as double descent.
const MIN_PEAK: f64 = 0.02;

/// Finding 6 from one stage's final test and train errors by group and width: the group
/// whose interior peak stands highest above both ends.
fn double_descent_claim(test: &Acc, train: &Acc) -> Option<Claim> {
    let mut best: Option<(f64, String)> = None;
    let mut fallback = None;
    for (group, xs) in test {
        let means: Vec<(i64, f64)> = xs
            .iter()
            .filter_map(|(x, v)| Stat::of(v).map(|s| (*x, s.mean)))
            .collect();
        if means.len() < 3 {
            continue;
        }
        let (first, last) = (means[0], means[means.len() - 1]);
        let &(peak_x, peak) = means[1..means.len() - 1]
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let rise = peak - first.1.max(last.1);
        let w = |k: i64| format!("{}", k as f64 / 1000.0);
        let fit = mean_at(train, group, peak_x)
            .map_or(String::new(), |t| format!(" (train error {t:.3} there)"));
        let text = format!(
            "test error{} {:.3} at width {}, {peak:.3} at width {}{fit}, {:.3} at width {}",
            at_group(group),
            first.1,
            w(first.0),
            w(peak_x),
            last.1,
            w(last.0)
        );
        fallback.get_or_insert_with(|| text.clone());
        if best.as_ref().is_none_or(|b| rise > b.0) {
            best = Some((rise, text));
        }
    }
    match best {
        Some((rise, text)) => Claim::new(rise >= MIN_PEAK, text),
        None => fallback.map(|t| Claim {
            shown: false,
            text: t,
        }),
    }
}

/// Finding 6 (model-wise double descent): for a sweep over a variable named `width`, the
/// final epoch's test and train error against width (log axis), a line per group, and the
/// last probed layer's capacity, radius and dimension at its last epoch against width.
pub fn double_descent(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    // stage -> [test error, train error].
    let mut errors: IndexMap<String, [Acc; 2]> = IndexMap::new();
    for (node, m) in data.tables::<Metrics>("metrics")? {
        let Some(w) = size_of(data, node) else {
            continue;
        };
        let Some(last) = (0..m.epoch.len()).max_by_key(|&i| m.epoch[i]) else {
            continue;
        };
        let group = data.group_without(node, Some(SIZE_VAR));
        let accs = errors
            .entry(data.plan.stage_name(node).to_string())
            .or_default();
        push(
            &mut accs[0],
            &group,
            size_key(w),
            Some(1.0 - m.test_acc[last]),
        );
        push(
            &mut accs[1],
            &group,
            size_key(w),
            Some(1.0 - m.train_acc[last]),
        );
    }
    if errors.is_empty() {
        return Ok(Vec::new());
    }
    // The last layer of each probe table at its last epoch: measure -> "group labeling" -> width.
    let mut geometry: [Acc; 3] = Default::default();
    for (node, p) in data.tables::<Probe>("probe")? {
        let Some(w) = size_of(data, node) else {
            continue;
        };
        let (Some(&last_epoch), Some(last_layer)) = (p.epoch.iter().max(), p.layer.last()) else {
            continue;
        };
        let group = data.group_without(node, Some(SIZE_VAR));
        for i in 0..p.epoch.len() {
            if p.epoch[i] != last_epoch || &p.layer[i] != last_layer {
                continue;
            }
            let series = format!("{group}, {}", p.labeling[i]);
            for (acc, v) in geometry.iter_mut().zip(geometry_values(&p, i)) {
                push(acc, &series, size_key(w), Some(v));
            }
        }
    }
    let mut figures = Vec::new();
    let width_name = |x: i64| format!("{}", x as f64 / 1000.0);
    for (stage, [test, train]) in errors {
        let mut csv = CSV_HEADER.to_string();
        let mut panels = Vec::new();
        for (name, acc, title) in [
            ("test_error", &test, "test error at the final epoch"),
            ("train_error", &train, "train error at the final epoch"),
        ] {
            csv_rows(&mut csv, name, acc, width_name);
            panels.push(Panel {
                title: title.into(),
                x_label: format!("{SIZE_VAR} (log scale)"),
                y_label: "error".into(),
                x_names: None,
                log_x: true,
                lines: size_lines(acc),
            });
        }
        for (measure, acc) in GEOMETRY.iter().zip(&geometry) {
            if acc.is_empty() {
                continue;
            }
            csv_rows(&mut csv, measure, acc, width_name);
            panels.push(Panel {
                title: format!("{measure}, last probed layer"),
                x_label: format!("{SIZE_VAR} (log scale)"),
                y_label: measure.to_string(),
                x_names: None,
                log_x: true,
                lines: size_lines(acc),
            });
        }
        let title = format!("Double descent: error against {SIZE_VAR}, stage {stage}");
        figures.push(Figure {
            finding: 6,
            claim: double_descent_claim(&test, &train),
            stem: format!("6-double-descent-{}", slug(&stage)),
            svg: chart::panels_svg(&title, &panels, panels.len().min(3))?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// The three labelings of the embedding figure: which group's examples, colored by which label.
const VIEWS: [(&str, &str, bool); 3] = [
    ("unpermuted", "clean", true),
    ("permuted", "corrupted", false),
    ("restored", "corrupted", true),
];

/// The share of neighbours (training label, among corrupted examples) above which the
/// permuted clusters count as formed.
const CLUSTERED: f64 = 0.5;

/// Finding 5 (the study's Figure 1): for one layer, rows = epochs, columns = the three
/// labelings, each dot a probe-set example colored by class; t-SNE where computed, else
/// PCA. Dots are one instance's (the first of the averaged group); the agreement numbers
/// are means over the group.
pub fn embeddings(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    let tables = data.tables::<Embedding>("embedding")?;
    let mut layers: Vec<String> = Vec::new();
    for (_, t) in &tables {
        for l in &t.layer {
            if !layers.contains(l) {
                layers.push(l.clone());
            }
        }
    }
    let layer = match data.embed_layer {
        Some(l) if layers.iter().any(|x| x == l) => l.to_string(),
        Some(l) if !layers.is_empty() => anyhow::bail!(
            "--embed-layer {l}: no embedding of layer `{l}`; embedded layers: {}",
            layers.join(", ")
        ),
        _ => match layers.last() {
            Some(l) => l.clone(),
            None => return Ok(Vec::new()),
        },
    };
    // (stage, group) -> (the first instance's table, agreement: series -> epoch -> values).
    let mut by: IndexMap<(String, String), (Embedding, Acc, String)> = IndexMap::new();
    for (node, t) in tables {
        let method = if t.method.iter().any(|m| m == "tsne") {
            "tsne"
        } else {
            "pca"
        };
        let entry = by
            .entry(data.stage_and_group(node))
            .or_insert_with(|| (t.clone(), Acc::new(), method.to_string()));
        let mut sums: BTreeMap<(i64, &str), (f64, usize)> = BTreeMap::new();
        for i in 0..t.epoch.len() {
            if t.layer[i] != layer || t.method[i] != entry.2 {
                continue;
            }
            let e = t.epoch[i];
            let mut add = |series: &'static str, v: f64| {
                let s = sums.entry((e, series)).or_default();
                s.0 += v;
                s.1 += 1;
            };
            if t.group[i] == "clean" {
                add("unpermuted", t.true_label_agreement[i]);
            } else {
                add("permuted", t.train_label_agreement[i]);
                add("restored", t.true_label_agreement[i]);
            }
        }
        for ((e, series), (sum, n)) in sums {
            push(&mut entry.1, series, e, Some(sum / n as f64));
        }
    }
    let mut figures = Vec::new();
    for ((stage, group), (t, agreement, method)) in by {
        let epochs: BTreeSet<i64> = (0..t.epoch.len())
            .filter(|&i| t.layer[i] == layer && t.method[i] == method)
            .map(|i| t.epoch[i])
            .collect();
        if epochs.is_empty() {
            continue;
        }
        let classes = t
            .true_label
            .iter()
            .chain(&t.train_label)
            .copied()
            .max()
            .unwrap_or(0);
        // Without corrupted examples only the unpermuted view has points.
        let has_corrupted = t.group.iter().any(|g| g == "corrupted");
        let views: Vec<_> = VIEWS
            .iter()
            .filter(|v| has_corrupted || v.1 == "clean")
            .collect();
        let mut cells = Vec::new();
        for &e in &epochs {
            let mut row = Vec::new();
            for &&(_, wanted, by_true) in &views {
                let points: Vec<(f64, f64, usize)> = (0..t.epoch.len())
                    .filter(|&i| {
                        t.epoch[i] == e
                            && t.layer[i] == layer
                            && t.method[i] == method
                            && t.group[i] == wanted
                    })
                    .map(|i| {
                        let label = if by_true {
                            t.true_label[i]
                        } else {
                            t.train_label[i]
                        };
                        (t.x[i], t.y[i], label.max(0) as usize)
                    })
                    .collect();
                row.push(points);
            }
            cells.push(row);
        }
        let method_name = if method == "tsne" { "t-SNE" } else { "PCA" };
        let mut csv = CSV_HEADER.to_string();
        csv_rows(&mut csv, "neighbour agreement", &agreement, |x| {
            x.to_string()
        });
        let claim = has_corrupted
            .then(|| permuted_clusters(&agreement, &layer, method_name, &group))
            .flatten();
        let title = format!("{method_name} of layer {layer}: stage {stage}, {group}");
        let grid = chart::ScatterGrid {
            title: title.clone(),
            rows: epochs.iter().map(|e| format!("epoch {e}")).collect(),
            cols: views.iter().map(|v| v.0.to_string()).collect(),
            cells,
            classes: (0..=classes).map(|c| format!("class {c}")).collect(),
        };
        figures.push(Figure {
            finding: 5,
            claim,
            stem: format!("5-embedding-{}-{}", slug(&stage), slug(&group)),
            svg: chart::scatter_svg(&grid)?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// Finding 5 from the neighbour agreement of one (stage, group): the first epoch at which
/// corrupted examples' neighbours mostly share their training label.
fn permuted_clusters(agreement: &Acc, layer: &str, method: &str, group: &str) -> Option<Claim> {
    let permuted = agreement.get("permuted")?;
    let means: Vec<(i64, f64)> = permuted
        .iter()
        .filter_map(|(e, v)| Stat::of(v).map(|s| (*e, s.mean)))
        .collect();
    let (&(first_e, first), &(last_e, last)) = (means.first()?, means.last()?);
    let restored = |e: i64| mean_at(agreement, "restored", e).unwrap_or(f64::NAN);
    let numbers = format!(
        "in {layer} ({method}){}, corrupted examples' neighbours sharing their training label {first:.2} (epoch {first_e}) -> {last:.2} (epoch {last_e}), their true label {:.2} -> {:.2}",
        at_group(group),
        restored(first_e),
        restored(last_e)
    );
    match means.iter().find(|(_, m)| *m >= CLUSTERED) {
        Some(&(e, m)) if e > first_e => Claim::new(
            true,
            format!("permuted clusters appear at epoch {e} (agreement {m:.2}): {numbers}"),
        ),
        Some(_) => Claim::new(
            false,
            format!(
                "the corrupted examples cluster by training label from the first epoch shown: {numbers}"
            ),
        ),
        None => Claim::new(
            false,
            format!("no permuted clusters (agreement stays below {CLUSTERED}): {numbers}"),
        ),
    }
}

/// The mean of `acc`'s line `series` at `x`.
fn mean_at(acc: &Acc, series: &str, x: i64) -> Option<f64> {
    acc.get(series)
        .and_then(|xs| xs.get(&x))
        .and_then(|v| Stat::of(v))
        .map(|s| s.mean)
}

/// " at noise=0.4" for a group, nothing for the whole run.
pub(super) fn at_group(group: &str) -> String {
    if group == "all" {
        String::new()
    } else {
        format!(" at {group}")
    }
}

/// The drop in test accuracy from its peak that counts as memorization.
const MIN_DROP: f64 = 0.01;

/// Finding 1 from the test-accuracy and corrupted-vs-training-label lines of one stage: the
/// group whose test accuracy falls most after its peak, and how far the corrupted examples
/// were fitted meanwhile.
fn late_memorization(test: &Acc, memorized: &Acc) -> Option<Claim> {
    let mut best: Option<(String, i64, f64, i64, f64)> = None;
    for (group, xs) in test {
        let means: Vec<(i64, f64)> = xs
            .iter()
            .filter_map(|(x, v)| Stat::of(v).map(|s| (*x, s.mean)))
            .collect();
        let (&(peak_e, peak), &(last_e, last)) = (
            means.iter().max_by(|a, b| a.1.total_cmp(&b.1))?,
            means.last()?,
        );
        if memorized.get(group).is_none_or(|m| m.is_empty()) {
            continue;
        }
        if best.as_ref().is_none_or(|b| peak - last > b.2 - b.4) {
            best = Some((group.clone(), peak_e, peak, last_e, last));
        }
    }
    let (group, peak_e, peak, last_e, last) = best?;
    let fitted = match (
        mean_at(memorized, &group, peak_e),
        mean_at(memorized, &group, last_e),
    ) {
        (Some(a), Some(b)) => {
            format!("; the corrupted examples' accuracy on their training labels {a:.3} -> {b:.3}")
        }
        _ => String::new(),
    };
    let shown = peak - last >= MIN_DROP && peak_e < last_e;
    let text = if shown {
        format!(
            "test accuracy{} peaks at {peak:.3} (epoch {peak_e}) and falls to {last:.3} by epoch {last_e}{fitted}",
            at_group(&group)
        )
    } else {
        format!(
            "test accuracy{} does not fall after its peak ({peak:.3} at epoch {peak_e}, {last:.3} at epoch {last_e}){fitted}",
            at_group(&group)
        )
    };
    Claim::new(shown, text)
}

/// Finding 2 from one (stage, group)'s geometry: how the permuted labeling's capacity grows
/// from the early epoch to the last in the last layer, next to the first layer.
fn deep_memorization(rows: &GeometryRows, early: i64, last: i64, group: &str) -> Option<Claim> {
    if early == last || rows.layers.len() < 2 {
        return None;
    }
    let capacity = |e: i64, layer: usize| mean_at(rows.acc.get(&(0, e))?, "permuted", layer as i64);
    // The first layer with weights: the input's geometry does not change with training.
    let first = rows.layers.iter().position(|l| l != "input").unwrap_or(0);
    let deep = rows.layers.len() - 1;
    if first >= deep {
        return None;
    }
    let (f0, f1) = (capacity(early, first)?, capacity(last, first)?);
    let (d0, d1) = (capacity(early, deep)?, capacity(last, deep)?);
    let (growth_first, growth_deep) = (f1 / f0, d1 / d0);
    let shown = growth_deep > 1.1 && growth_deep > growth_first * 1.1;
    let text = format!(
        "permuted-label capacity{} from epoch {early} to {last}: {} {d0:.3} -> {d1:.3} (x{growth_deep:.2}), {} {f0:.3} -> {f1:.3} (x{growth_first:.2})",
        at_group(group),
        rows.layers[deep],
        rows.layers[first],
    );
    Claim::new(shown, text)
}

/// "fc2", "fc2 and logits", "conv3, fc1 and logits".
fn and_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The gain in test accuracy that counts as restoring.
const MIN_GAIN: f64 = 0.01;

/// Finding 4 from one (stage, group)'s rollback cells: the best rollback that keeps the
/// first layer (the study rolls back the last layers only) against no rollback, with the
/// whole network's best for comparison.
fn rollback_claim(rows: &RollbackRows, group: &str) -> Option<Claim> {
    let base = Stat::of(&rows.baseline)?.mean;
    let first = rows.cutoffs.values().copied().min()?;
    let best_of = |partial: bool| {
        rows.cells
            .iter()
            .filter(|((_, c), _)| !partial || rows.cutoffs.get(c).is_some_and(|&k| k > first))
            .filter_map(|(k, v)| Stat::of(v).map(|s| (k, s.mean)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let whole = best_of(false)?;
    let ((epoch, cutoff), best) = best_of(true).unwrap_or(whole);
    let mut cols: Vec<(&String, &i64)> = rows.cutoffs.iter().collect();
    cols.sort_by_key(|(name, k)| (**k, (*name).clone()));
    let from = rows.cutoffs.get(cutoff).copied().unwrap_or(0);
    let rolled: Vec<String> = cols
        .iter()
        .filter(|(_, k)| **k >= from)
        .map(|(n, _)| (*n).clone())
        .collect();
    let all = if rolled.len() < cols.len() {
        format!(" (every layer, to epoch {}: {:.3})", whole.0.0, whole.1)
    } else {
        String::new()
    };
    let shown = best - base >= MIN_GAIN;
    let text = if shown {
        format!(
            "rolling back {} to epoch {epoch}{}: test accuracy {base:.3} -> {best:.3}{all}",
            and_list(&rolled),
            at_group(group)
        )
    } else {
        format!(
            "no rollback of the last layers raises test accuracy{} by {MIN_GAIN} or more (final {base:.3}; best {best:.3}, {} to epoch {epoch}){all}",
            at_group(group),
            and_list(&rolled)
        )
    };
    Claim::new(shown, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accumulator with one value per (series, x).
    fn acc(lines: &[(&str, &[(i64, f64)])]) -> Acc {
        let mut a = Acc::new();
        for (name, points) in lines {
            for &(x, v) in *points {
                push(&mut a, name, x, Some(v));
            }
        }
        a
    }

    #[test]
    fn late_memorization_states_peak_and_fall_or_says_it_is_absent() {
        let test = acc(&[
            ("noise=0.0", &[(0, 0.1), (5, 0.80), (10, 0.81)]),
            ("noise=0.4", &[(0, 0.1), (5, 0.75), (10, 0.65)]),
        ]);
        let mem = acc(&[
            ("noise=0.0", &[]),
            ("noise=0.4", &[(0, 0.1), (5, 0.2), (10, 0.95)]),
        ]);
        let c = late_memorization(&test, &mem).unwrap();
        assert!(c.shown);
        assert_eq!(
            c.text,
            "test accuracy at noise=0.4 peaks at 0.750 (epoch 5) and falls to 0.650 by epoch 10; \
             the corrupted examples' accuracy on their training labels 0.200 -> 0.950"
        );
        let flat = acc(&[("noise=0.4", &[(0, 0.1), (5, 0.75), (10, 0.745)])]);
        let c = late_memorization(&flat, &mem).unwrap();
        assert!(!c.shown);
        assert!(c.text.starts_with("test accuracy at noise=0.4 does not fall after its peak (0.750 at epoch 5, 0.745 at epoch 10)"), "{}", c.text);
    }

    #[test]
    fn rollback_claim_names_the_layers_rolled_back() {
        let mut rows = RollbackRows::default();
        for (name, k) in [("fc1", 0), ("fc2", 1), ("logits", 2)] {
            rows.cutoffs.insert(name.to_string(), k);
        }
        rows.baseline = vec![0.64, 0.65];
        for (e, c, v) in [
            (2, "fc1", 0.75),
            (2, "fc2", 0.73),
            (2, "logits", 0.70),
            (5, "fc2", 0.70),
        ] {
            rows.cells.insert((e, c.to_string()), vec![v]);
        }
        let c = rollback_claim(&rows, "noise=0.4").unwrap();
        assert!(c.shown);
        assert_eq!(
            c.text,
            "rolling back fc2 and logits to epoch 2 at noise=0.4: test accuracy 0.645 -> 0.730 (every layer, to epoch 2: 0.750)"
        );
        rows.cells.retain(|(_, c), _| c == "fc1");
        rows.cells.insert((2, "logits".into()), vec![0.646]);
        let c = rollback_claim(&rows, "all").unwrap();
        assert!(!c.shown);
        assert!(c.text.starts_with("no rollback of the last layers raises test accuracy by 0.01 or more (final 0.645; best 0.646, logits to epoch 2)"), "{}", c.text);
    }

    #[test]
    fn permuted_clusters_appear_at_the_first_epoch_past_half() {
        let a = acc(&[
            ("permuted", &[(0, 0.1), (10, 0.35), (40, 0.62), (80, 0.9)]),
            ("restored", &[(0, 0.4), (80, 0.2)]),
        ]);
        let c = permuted_clusters(&a, "logits", "t-SNE", "noise=0.4").unwrap();
        assert!(c.shown);
        assert_eq!(
            c.text,
            "permuted clusters appear at epoch 40 (agreement 0.62): in logits (t-SNE) at noise=0.4, \
             corrupted examples' neighbours sharing their training label 0.10 (epoch 0) -> 0.90 (epoch 80), \
             their true label 0.40 -> 0.20"
        );
        let never = acc(&[("permuted", &[(0, 0.1), (80, 0.3)])]);
        let c = permuted_clusters(&never, "fc1", "PCA", "all").unwrap();
        assert!(
            !c.shown
                && c.text
                    .starts_with("no permuted clusters (agreement stays below 0.5)")
        );
    }

    #[test]
    fn gradient_ratio_span_and_text() {
        let a = acc(&[("fc1", &[(0, 0.29), (5, 0.2)]), ("logits", &[(0, 0.32)])]);
        assert_eq!(ratio_span(&a, 0), Some((0.29, 0.32)));
        assert_eq!(span_text((0.29, 0.32)), "0.29-0.32");
        assert_eq!(span_text((0.991, 0.993)), "0.99");
        assert_eq!(ratio_span(&a, 7), None);
    }

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
