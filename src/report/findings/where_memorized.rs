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
use crate::report::chart::{self, Panel};

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

/// The figures: capacity, radius and dimension against layer for the three labelings,
/// at the earliest epoch after initialization and at the final epoch.
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
                    y_floor: None,
                    lines: lines(acc),
                });
            }
        }
        let title = format!("Manifold geometry per layer: stage {stage}, {group}");
        figures.push(Figure {
            finding: n,
            claim: deep_memorization(&rows, early, last, &group),
            stem: format!("{n}-geometry-{}-{}", slug(&stage), slug(&group)),
            svg: chart::panels_svg(&title, &panels, shown.len())?,
            title,
            csv,
        });
    }
    Ok(figures)
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
