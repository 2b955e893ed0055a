//! Memorization lives in the deeper layers: manifold geometry per layer for the three
//! labelings of the probe set.

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use indexmap::IndexMap;
use pipe_kinds::tables::Probe;

use super::{
    Acc, CSV_HEADER, Claim, Figure, FigureData, Finding, at_group, csv_rows, lines, mean_at, push,
    slug,
};
use crate::report::chart::{self, Panel, XScale};

/// The finding, for the registry.
pub(super) const FINDING: Finding = Finding {
    title: "Memorization lives in the deeper layers",
    text: "Manifold capacity, radius and dimension per layer for the three labelings of the probe \
     set (unpermuted: clean examples by label; permuted: corrupted examples by training label; \
     restored: the same examples by true label), early in training and at the end.",
    shown_for: super::always,
    figures,
};

/// The finding's measures, as panel labels, in the order of [`geometry_values`].
pub(super) const GEOMETRY: [&str; 3] = ["capacity", "radius", "dimension"];

/// One row's values of the [`GEOMETRY`] measures.
pub(super) fn geometry_values(p: &Probe, row: usize) -> [f64; 3] {
    [p.capacity[row], p.radius[row], p.dimension[row]]
}

/// The finding's values of one (stage, group).
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
    for (node, p) in data.tables::<Probe>()? {
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

/// The figures: capacity, radius and dimension against layer for the three labelings, a
/// row per measure on one y scale, a column per probed epoch (at most [`MOST_EPOCHS`], the
/// caption says which); the claim compares the earliest epoch after initialization with
/// the final one.
fn figures(data: &FigureData<'_>, n: usize) -> Result<Vec<Figure>> {
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
        let probed: Vec<i64> = rows.epochs.iter().copied().collect();
        let shown = shown_epochs(&probed);
        let caption = if shown.len() == probed.len() {
            format!("Every probed epoch: {}", join(&shown))
        } else {
            format!(
                "Epochs {} of the {} probed ({})",
                join(&shown),
                probed.len(),
                join(&probed)
            )
        };
        let mut csv = CSV_HEADER.to_string();
        let mut panels = Vec::new();
        for (m, measure) in GEOMETRY.iter().enumerate() {
            let empty = Acc::new();
            let of = |e: i64| rows.acc.get(&(m, e)).unwrap_or(&empty);
            // One y scale for the row, so the epochs compare at a glance.
            let row_range = shown
                .iter()
                .flat_map(|&e| lines(of(e)))
                .flat_map(|l| l.points.into_iter().flat_map(|(_, s)| [s.low(), s.high()]))
                .fold(None, |r: Option<(f64, f64)>, v| {
                    Some(r.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
                });
            for &e in &shown {
                let acc = of(e);
                let name = format!("{measure} at epoch {e}");
                csv_rows(&mut csv, &name, acc, |x| {
                    rows.layers.get(x as usize).cloned().unwrap_or_default()
                });
                panels.push(Panel {
                    title: name,
                    x_label: "layer".into(),
                    y_label: measure.to_string(),
                    x_names: Some(rows.layers.clone()),
                    x_scale: XScale::Linear,
                    markers_only: false,
                    y_floor: None,
                    y_range: row_range,
                    lines: lines(acc),
                });
            }
        }
        let title = format!("Manifold geometry per layer: stage {stage}, {group}");
        figures.push(Figure {
            finding: n,
            claim: deep_memorization(&rows, early, last, &group),
            caption,
            stem: format!("{n}-geometry-{}-{}", slug(&stage), slug(&group)),
            svg: chart::panels_svg(&title, &panels, shown.len())?,
            title,
            csv,
        });
    }
    Ok(figures)
}

/// Most epochs a geometry figure shows side by side.
const MOST_EPOCHS: usize = 6;

/// The epochs the figure shows: every probed epoch, or when there are more than
/// [`MOST_EPOCHS`], that many spread evenly from the first to the last.
fn shown_epochs(probed: &[i64]) -> Vec<i64> {
    if probed.len() <= MOST_EPOCHS {
        return probed.to_vec();
    }
    let step = (probed.len() - 1) as f64 / (MOST_EPOCHS - 1) as f64;
    let mut out: Vec<i64> = (0..MOST_EPOCHS)
        .map(|i| probed[((i as f64 * step).round() as usize).min(probed.len() - 1)])
        .collect();
    out.dedup();
    out
}

/// "0, 1, 4".
fn join(epochs: &[i64]) -> String {
    epochs
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The claim, from one (stage, group)'s geometry: how the permuted labeling's capacity grows
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probed_epoch_is_shown_or_six_spread_from_first_to_last() {
        assert_eq!(shown_epochs(&[0, 1, 4]), [0, 1, 4]);
        let probed: Vec<i64> = (0..=20).collect();
        assert_eq!(shown_epochs(&probed), [0, 4, 8, 12, 16, 20]);
        assert_eq!(join(&[0, 1, 4]), "0, 1, 4");
    }
}
