//! It can be undone: test accuracy after rolling the last layers back to an earlier epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Result;
use indexmap::IndexMap;
use pipe_kinds::tables::Rollback;

use super::{Claim, Figure, FigureData, Finding, at_group, field, slug};
use crate::report::chart::{self, Heat};
use crate::report::stats::Stat;

/// The finding, for the registry.
pub(super) const FINDING: Finding = Finding {
    title: "It can be undone",
    text: "Test accuracy of the final weights with the layers from a cut-off on rolled back to an \
     earlier epoch's weights. The outlined column is the final accuracy without rollback.",
    shown_for: super::always,
    figures,
};

/// The finding's test accuracies of one (stage, group).
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
    for (node, r) in data.tables::<Rollback>()? {
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

/// The figures: test accuracy after rolling layers back, as a heat map of the epoch rolled
/// back to against the first layer rolled back, beside the accuracy without rollback
/// (the stage's row with a negative `cutoff_index`).
fn figures(data: &FigureData<'_>, n: usize) -> Result<Vec<Figure>> {
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
            finding: n,
            claim,
            caption: String::new(),
            stem: format!("{n}-rollback-{}-{}", slug(&stage), slug(&group)),
            svg: chart::heat_svg(&heat)?,
            title,
            csv,
        });
    }
    Ok(figures)
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

/// The claim, from one (stage, group)'s rollback cells: the best rollback that keeps the
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
}
