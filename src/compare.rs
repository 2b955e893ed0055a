//! Runs side by side: the plans of several recorded runs (or `--set` variants of one file),
//! each with the instances it covered, and the parameters that tell their rows apart.
//! `pipe table` and `pipe export` put one row per (run, instance), with a `run` column and
//! one column per differing parameter (`train.lr`).

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use pipe_engine::plan::Plan;
use pipe_engine::runs::RunRecord;

/// One plan among several shown side by side: a run's plan and the instances it covered.
pub struct Side<'a> {
    /// The plan (the run's file with its overrides).
    pub plan: &'a Plan,
    /// The run it stands for.
    pub run: &'a RunRecord,
    /// The instances the run covered (all of the plan, or what `--only`/`--point` kept).
    pub nodes: Vec<NodeIndex>,
}

impl<'a> Side<'a> {
    /// A run's plan and the instances it covered: the closure of its `--only`/`--point`
    /// selectors (selectors that no longer parse or match keep the whole plan).
    pub fn of(plan: &'a Plan, run: &'a RunRecord) -> Side<'a> {
        use pipe_engine::select::{Selector, closure};
        let selectors: Option<Vec<Selector>> =
            run.only.iter().map(|o| Selector::parse(o).ok()).collect();
        let nodes = match selectors {
            Some(s) if s.iter().all(|s| s.check(plan).is_ok()) => closure(plan, &s),
            _ => plan.order.clone(),
        };
        Side { plan, run, nodes }
    }
}

/// The key parameters of instance `n` and of every instance it needs, as
/// `stage.param` -> value (`train.lr`, `data.train_size`).
pub fn settings(plan: &Plan, n: NodeIndex) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    for a in plan.ancestors_and_self(n) {
        let stage = plan.stage_name(a);
        for (p, v) in plan.key_params(&plan.graph[a]) {
            out.insert(format!("{stage}.{p}"), v);
        }
    }
    out
}

/// The settings that tell rows of different sides apart: each takes more than one value
/// over `rows` (side index, settings), and one value within each side. A setting that
/// varies within a side follows the sweep, whose variables are columns already.
pub fn differing(rows: &[(usize, &BTreeMap<String, Json>)]) -> Vec<String> {
    let names: BTreeSet<&String> = rows.iter().flat_map(|(_, s)| s.keys()).collect();
    names
        .into_iter()
        .filter(|name| {
            let mut all: Vec<&Json> = Vec::new();
            let mut per_side: BTreeMap<usize, &Json> = BTreeMap::new();
            for (side, s) in rows {
                let Some(v) = s.get(*name) else { continue };
                if per_side.insert(*side, v).is_some_and(|old| old != v) {
                    return false;
                }
                if !all.contains(&v) {
                    all.push(v);
                }
            }
            all.len() > 1
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(pairs: &[(&str, Json)]) -> BTreeMap<String, Json> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn differing_keeps_what_changes_between_sides_not_what_the_sweep_moves() {
        let a1 = s(&[
            ("train.lr", json!(0.1)),
            ("corrupt.fraction", json!(0.0)),
            ("train.epochs", json!(2)),
        ]);
        let a2 = s(&[
            ("train.lr", json!(0.1)),
            ("corrupt.fraction", json!(0.5)),
            ("train.epochs", json!(2)),
        ]);
        let b1 = s(&[
            ("train.lr", json!(0.05)),
            ("corrupt.fraction", json!(0.0)),
            ("train.epochs", json!(2)),
        ]);
        let rows = [(0, &a1), (0, &a2), (1, &b1)];
        assert_eq!(differing(&rows), ["train.lr"]);
        // One side alone: nothing differs.
        assert!(differing(&rows[..2]).is_empty());
    }
}
