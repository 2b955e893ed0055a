//! The findings of science.md as figures: which table rows go into which line,
//! averaged over the seed-like sweep variables. Tables are read as their types in
//! [`pipe_kinds::tables`], so no column is named here but as a label.
//!
//! One file per finding, each with its `FINDING` (title, text, when the page has its
//! section, its figures); [`FINDINGS`] lists them in page order, and a finding's number is
//! its place there. This file holds what the findings share.

mod detection;
mod double_descent;
mod labelings_seen;
mod memorized_late;
mod not_vanishing_gradients;
mod undone_by_rollback;
mod where_memorized;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use super::chart::Line;
use super::stats::Stat;
use crate::export::Gathered;
use pipe_engine::plan::{Plan, point_label};
use pipe_engine::table::StoredTable;
use pipe_engine::table::Table;

/// One finding of the report: its section on the page and the figures it draws.
pub struct Finding {
    /// The study's claim, the section's heading.
    pub title: &'static str,
    /// What its figures show, under the heading.
    pub text: &'static str,
    /// Whether a pipeline's page has the section.
    pub shown_for: fn(&Plan) -> bool,
    /// Its figures, given the finding's number (for [`Figure::finding`] and the stem).
    pub figures: fn(&FigureData<'_>, usize) -> Result<Vec<Figure>>,
}

/// Every finding, in page order; a finding's number is its place here, from 1.
pub static FINDINGS: &[Finding] = &[
    memorized_late::FINDING,
    where_memorized::FINDING,
    not_vanishing_gradients::FINDING,
    undone_by_rollback::FINDING,
    labelings_seen::FINDING,
    double_descent::FINDING,
    detection::FINDING,
];

/// Each finding with its number.
pub fn numbered() -> impl Iterator<Item = (usize, &'static Finding)> {
    FINDINGS.iter().enumerate().map(|(i, f)| (i + 1, f))
}

/// Every finding's figures, in page order.
pub fn figures(data: &FigureData<'_>) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (n, finding) in numbered() {
        figures.extend((finding.figures)(data, n)?);
    }
    Ok(figures)
}

/// The numbers of the findings whose sections a pipeline's page has.
pub fn sections(plan: &Plan) -> Vec<usize> {
    numbered()
        .filter(|(_, f)| (f.shown_for)(plan))
        .map(|(n, _)| n)
        .collect()
}

/// For findings every pipeline's page has.
fn always(_: &Plan) -> bool {
    true
}

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
    /// The number of the finding it shows (its place in [`FINDINGS`]; 0 for a
    /// `[[report.plot]]`).
    pub finding: usize,
    /// What its numbers say about the finding, when they can say something.
    pub claim: Option<Claim>,
    /// What the figure's points are, under it on the page (what each point averages over,
    /// which epochs it shows); empty for none.
    pub caption: String,
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
    /// The cache the tables came from (for the data sets' class names).
    pub store: &'a pipe_engine::store::Store,
}

impl FigureData<'_> {
    /// Every instance's table `T` (e.g. `Metrics`), in plan order.
    pub(super) fn tables<T: StoredTable>(&self) -> Result<Vec<(NodeIndex, T)>> {
        let parts = self
            .gathered
            .tables
            .get(T::NAME)
            .map_or(&[][..], Vec::as_slice);
        read_tables(parts, T::NAME, |node| self.plan.label(node))
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

#[cfg(test)]
/// An accumulator with one value per (series, x).
pub(super) fn acc(lines: &[(&str, &[(i64, f64)])]) -> Acc {
    let mut a = Acc::new();
    for (name, points) in lines {
        for &(x, v) in *points {
            push(&mut a, name, x, Some(v));
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipe_kinds::tables::Metrics;

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
