//! Double descent with model size, for a sweep over `width`: final test and train error and
//! the last layer's geometry against width.

use anyhow::Result;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use pipe_engine::plan::Plan;
use pipe_kinds::tables::{Metrics, Probe};

use super::where_memorized::{GEOMETRY, geometry_values};
use super::{
    Acc, CSV_HEADER, Claim, Figure, FigureData, Finding, at_group, csv_rows, lines, mean_at, push,
    slug,
};
use crate::report::chart::{self, Line, Panel, XScale};
use crate::report::stats::Stat;

/// The finding, for the registry.
pub(super) const FINDING: Finding = Finding {
    title: "Double descent with model size",
    text: "For a sweep over a variable named `width`: test and train error at the final epoch \
     against width (log axis), a line per group, and the last probed layer's manifold \
     capacity, radius and dimension against width. Test error falls, peaks where the \
     network can just interpolate the training set (train error reaches 0), and falls \
     again as the network grows; label noise raises the peak.",
    shown_for: sweeps_size,
    figures,
};

/// Whether the pipeline sweeps over model size: double descent needs it, and other
/// pipelines' pages have no such section.
fn sweeps_size(plan: &Plan) -> bool {
    plan.spec.sweep.vars.iter().any(|v| v.name == SIZE_VAR)
}

/// The sweep variable that model size is swept over, for the double-descent figure.
const SIZE_VAR: &str = "width";

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

/// The claim, from one stage's final test and train errors by group and width: the group
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

/// The figures (model-wise double descent): for a sweep over a variable named `width`, the
/// final epoch's test and train error against width (log axis), a line per group, and the
/// last probed layer's capacity, radius and dimension at its last epoch against width.
fn figures(data: &FigureData<'_>, n: usize) -> Result<Vec<Figure>> {
    // stage -> [test error, train error].
    let mut errors: IndexMap<String, [Acc; 2]> = IndexMap::new();
    for (node, m) in data.tables::<Metrics>()? {
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
    for (node, p) in data.tables::<Probe>()? {
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
                x_scale: XScale::Log,
                markers_only: false,
                y_range: None,
                // An error rate: its axis and sd band stop at 0.
                y_floor: Some(0.0),
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
                x_scale: XScale::Log,
                markers_only: false,
                y_range: None,
                y_floor: None,
                lines: size_lines(acc),
            });
        }
        let title = format!("Double descent: error against {SIZE_VAR}, stage {stage}");
        figures.push(Figure {
            finding: n,
            claim: double_descent_claim(&test, &train),
            caption: String::new(),
            stem: format!("{n}-double-descent-{}", slug(&stage)),
            svg: chart::panels_svg(&title, &panels, panels.len().min(3))?,
            title,
            csv,
        });
    }
    Ok(figures)
}
