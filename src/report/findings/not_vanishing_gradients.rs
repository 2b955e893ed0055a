//! It is not vanishing gradients: the label-dependent and label-independent parts of the
//! gradient of clean and corrupted examples (the paper's Fig. A.1).

use std::collections::HashMap;

use anyhow::Result;
use indexmap::IndexMap;
use pipe_kinds::tables::GradNorm;

use super::{Acc, CSV_HEADER, Claim, Figure, FigureData, Finding, csv_rows, lines, push, slug};
use crate::report::chart::{self, Panel, XScale};
use crate::report::stats::Stat;

/// The finding, for the registry.
pub(super) const FINDING: Finding = Finding {
    title: "It is not vanishing gradients",
    text: "The mean cross-entropy gradient of equally many clean and corrupted examples, split into \
     its label-dependent part (1/n) sum J^T (y - 1/C) and label-independent part \
     (1/n) sum J^T (p - 1/C) (the paper's Eq. 25 and Fig. A.1), per layer and epoch. Early \
     in training the corrupted examples' label-dependent part is small next to the clean \
     examples', while the label-independent parts are alike.",
    shown_for: super::always,
    figures,
};

/// The finding's values of one (stage, group).
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
    for (node, g) in data.tables::<GradNorm>()? {
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

/// The figures (the paper's Fig. A.1): the label-dependent and label-independent gradient
/// norms of clean and corrupted examples against epoch, one panel per layer, and the
/// corrupted/clean ratios.
fn figures(data: &FigureData<'_>, n: usize) -> Result<Vec<Figure>> {
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
                x_scale: XScale::Log1p,
                markers_only: false,
                y_range: None,
                y_floor: None,
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
                x_scale: XScale::Log1p,
                markers_only: false,
                y_range: None,
                y_floor: None,
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
            finding: n,
            claim,
            caption: String::new(),
            stem: format!("{n}-gradients-{}-{}", slug(&stage), slug(&group)),
            svg: chart::panels_svg(&title, &panels, columns)?,
            title,
            csv,
        });
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::findings::acc;

    #[test]
    fn gradient_ratio_span_and_text() {
        let a = acc(&[("fc1", &[(0, 0.29), (5, 0.2)]), ("logits", &[(0, 0.32)])]);
        assert_eq!(ratio_span(&a, 0), Some((0.29, 0.32)));
        assert_eq!(span_text((0.29, 0.32)), "0.29-0.32");
        assert_eq!(span_text((0.991, 0.993)), "0.99");
        assert_eq!(ratio_span(&a, 7), None);
    }
}
