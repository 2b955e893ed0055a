//! Beyond the paper, the mislabeled examples found: how well each `detect` method finds
//! the mislabeled examples (ROC curves, averaged over the seed-like variables on a common false-positive grid) and
//! what retraining on the cleaned labels gives next to the noisy and the oracle-clean runs.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::Result;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;

use super::{
    Acc, CSV_HEADER, Claim, Figure, FigureData, Finding, at_group, csv_rows, lines, push, slug,
};
use crate::report::chart::{self, Line, Panel, XScale};
use crate::report::stats::Stat;
use pipe_engine::plan::Plan;
use pipe_kinds::stages::{clean, corrupt, detect, train};
use pipe_kinds::tables::{Detection, Metrics, Roc};

/// Steps of the common false-positive-rate grid the ROC curves are averaged on.
const GRID: i64 = 100;

/// The finding, for the registry.
pub(super) const FINDING: Finding = Finding {
    title: "Beyond the paper: the mislabeled examples can be found from one training run",
    text: "For pipelines with a `detect` stage: each method's ROC curve for finding the corrupted \
     examples from one run's recorded training dynamics (true-positive rate against \
     false-positive rate, averaged on a common grid), and the final test accuracy of the \
     same network trained on the noisy labels, on the labels cleaned by each method's flags \
     (`clean`), and on the truly clean examples only (the oracle). Cleaning recovers the \
     whole gap when the cleaned run reaches the oracle's accuracy.",
    shown_for: detects,
    figures,
};

/// Whether the pipeline has a `detect` stage (the section is for those alone).
fn detects(plan: &Plan) -> bool {
    plan.spec
        .stages
        .iter()
        .any(|s| s.kind.name() == detect::NAME)
}

/// The x categories of the accuracy panel: the noisy run, each method's cleaned labels,
/// the oracle.
const NOISY: &str = "noisy";
const ORACLE: &str = "oracle";

/// The name of the stage kind of `n`.
fn kind_of(plan: &Plan, n: NodeIndex) -> &'static str {
    plan.spec.stages[plan.graph[n].stage].kind.name()
}

/// The instance filling `slot` of `n`.
fn input(plan: &Plan, n: NodeIndex, slot: &str) -> Option<NodeIndex> {
    plan.graph[n]
        .inputs
        .iter()
        .find(|(s, _)| s == slot)
        .map(|(_, i)| *i)
}

/// What a train instance is to this finding: its category (`noisy`, a method, `oracle`) and
/// the detect instance it belongs to; `None` for a run that is neither detected nor cleaned.
/// `baselines` maps noisy baselines to their detect (see [`noisy_baselines`]).
fn role(
    plan: &Plan,
    n: NodeIndex,
    baselines: &HashMap<NodeIndex, NodeIndex>,
) -> Option<(String, NodeIndex)> {
    let labels = input(plan, n, pipe_kinds::stages::slots::LABELS.name)?;
    match kind_of(plan, labels) {
        k if k == clean::NAME => {
            let scores = input(plan, labels, pipe_kinds::stages::slots::SCORES.name)?;
            let c = plan.graph[labels]
                .params
                .typed::<clean::CleanParams>()
                .ok()?;
            let d = plan.graph[scores]
                .params
                .typed::<detect::DetectParams>()
                .ok()?;
            let name = match (&c.oracle, &c.method) {
                (true, _) => ORACLE.to_string(),
                (false, Some(m)) => m.clone(),
                (false, None) => d.methods.first()?.clone(),
            };
            Some((name, scores))
        }
        k if k == corrupt::NAME => baselines.get(&n).map(|&d| (NOISY.to_string(), d)),
        _ => None,
    }
}

/// Each detect instance's noisy baselines, as train instance -> detect instance: the trains
/// on the same labels as the detect's own train, except that one when others exist (a short
/// run that only records the dynamics is not the baseline when an ordinary run on the same
/// labels exists). One pass over the plan.
fn noisy_baselines(plan: &Plan, detects: &[NodeIndex]) -> HashMap<NodeIndex, NodeIndex> {
    let mut trains_on: HashMap<NodeIndex, Vec<NodeIndex>> = HashMap::new();
    for &o in &plan.order {
        if kind_of(plan, o) == train::NAME
            && let Some(l) = input(plan, o, pipe_kinds::stages::slots::LABELS.name)
        {
            trains_on.entry(l).or_default().push(o);
        }
    }
    let mut baselines = HashMap::new();
    for &d in detects {
        let Some(t) = input(plan, d, "train") else {
            continue;
        };
        let Some(on) =
            input(plan, t, pipe_kinds::stages::slots::LABELS.name).and_then(|l| trains_on.get(&l))
        else {
            continue;
        };
        let others: Vec<NodeIndex> = on.iter().copied().filter(|&o| o != t).collect();
        for b in if others.is_empty() { vec![t] } else { others } {
            baselines.entry(b).or_insert(d);
        }
    }
    baselines
}

/// `tpr` at `fpr = x` on the curve through `points` (increasing fpr), interpolated linearly;
/// on a vertical stretch, the highest tpr reached at that fpr.
fn tpr_at(fpr: &[f64], tpr: &[f64], x: f64) -> Option<f64> {
    let last = (0..fpr.len()).rev().find(|&i| fpr[i] <= x)?;
    match fpr.get(last + 1) {
        Some(&next) if next > fpr[last] && fpr[last] < x => {
            let t = (x - fpr[last]) / (next - fpr[last]);
            Some(tpr[last] + t * (tpr[last + 1] - tpr[last]))
        }
        _ => Some(tpr[last]),
    }
}

/// One detect stage's numbers: group -> method -> grid step -> tpr values; the categories'
/// final test accuracies per group; the default method's AUROCs.
#[derive(Default)]
struct StageRows {
    roc: IndexMap<String, Acc>,
    accuracy: Acc,
    default_method: Option<String>,
    aurocs: Vec<f64>,
}

/// The figures: per detect stage, a ROC panel per group and the retraining accuracies.
fn figures(data: &FigureData<'_>, n: usize) -> Result<Vec<Figure>> {
    let mut stages: IndexMap<String, StageRows> = IndexMap::new();
    add_roc_curves(data, &mut stages)?;
    add_aurocs(data, &mut stages)?;
    add_final_accuracies(data, &mut stages)?;
    let mut figures = Vec::new();
    for (stage, rows) in stages {
        if rows.roc.is_empty() {
            continue;
        }
        figures.push(stage_figure(n, &stage, &rows)?);
    }
    Ok(figures)
}

/// Adds each detect instance's ROC curves, per method, sampled on the common grid, to its
/// stage's rows under its group.
fn add_roc_curves(data: &FigureData<'_>, stages: &mut IndexMap<String, StageRows>) -> Result<()> {
    let plan = data.plan;
    for (node, r) in data.tables::<Roc>()? {
        if kind_of(plan, node) != detect::NAME {
            continue;
        }
        let rows = stages.entry(plan.stage_name(node).to_string()).or_default();
        let acc = rows.roc.entry(data.group(node)).or_default();
        let mut methods: Vec<&String> = r.method.iter().collect();
        methods.dedup();
        for m in methods {
            let at: Vec<usize> = (0..r.method.len()).filter(|&i| &r.method[i] == m).collect();
            let fpr: Vec<f64> = at.iter().map(|&i| r.fpr[i]).collect();
            let tpr: Vec<f64> = at.iter().map(|&i| r.tpr[i]).collect();
            for step in 0..=GRID {
                push(acc, m, step, tpr_at(&fpr, &tpr, step as f64 / GRID as f64));
            }
        }
    }
    Ok(())
}

/// Adds each detect instance's default method (the first one's) and its AUROC to its
/// stage's rows.
fn add_aurocs(data: &FigureData<'_>, stages: &mut IndexMap<String, StageRows>) -> Result<()> {
    for (node, d) in data.tables::<Detection>()? {
        let rows = stages
            .entry(data.plan.stage_name(node).to_string())
            .or_default();
        if let (Some(m), Some(a)) = (d.method.first(), d.auroc.first().copied().flatten()) {
            rows.default_method.get_or_insert_with(|| m.clone());
            rows.aurocs.push(a);
        }
    }
    Ok(())
}

/// Adds the final test accuracy of each train instance this finding knows (a noisy
/// baseline, a run on cleaned labels, the oracle) to its detect stage's rows, at its
/// category's x, under the detect instance's group.
fn add_final_accuracies(
    data: &FigureData<'_>,
    stages: &mut IndexMap<String, StageRows>,
) -> Result<()> {
    let plan = data.plan;
    let detects: Vec<NodeIndex> = plan
        .order
        .iter()
        .copied()
        .filter(|&n| kind_of(plan, n) == detect::NAME)
        .collect();
    let baselines = noisy_baselines(plan, &detects);
    for (node, m) in data.tables::<Metrics>()? {
        if kind_of(plan, node) != train::NAME {
            continue;
        }
        let Some((category, det)) = role(plan, node, &baselines) else {
            continue;
        };
        let Some(last) = (0..m.epoch.len()).max_by_key(|&i| m.epoch[i]) else {
            continue;
        };
        let rows = stages.entry(plan.stage_name(det).to_string()).or_default();
        let x = category_x(&category);
        push(
            &mut rows.accuracy,
            &data.group(det),
            x,
            Some(m.test_acc[last]),
        );
    }
    Ok(())
}

/// One detect stage's figure: a ROC panel per group, then the accuracy panel if any
/// accuracy is known; the CSV holds the same rows.
fn stage_figure(n: usize, stage: &str, rows: &StageRows) -> Result<Figure> {
    let mut csv = CSV_HEADER.to_string();
    let mut panels = Vec::new();
    for (group, acc) in &rows.roc {
        csv_rows(&mut csv, &format!("roc {group}"), acc, |x| {
            format!("{}", x as f64 / GRID as f64)
        });
        panels.push(Panel {
            title: format!("ROC, {group}"),
            x_label: "false-positive rate".into(),
            y_label: "true-positive rate".into(),
            x_names: None,
            x_scale: XScale::Linear,
            markers_only: false,
            y_range: None,
            y_floor: None,
            lines: grid_lines(acc),
        });
    }
    let claim = claim(rows);
    if !rows.accuracy.is_empty() {
        panels.push(accuracy_panel(&mut csv, &rows.accuracy));
    }
    let title = format!("Finding the mislabeled examples: stage {stage}");
    Ok(Figure {
        finding: n,
        claim,
        caption: String::new(),
        stem: format!("{n}-detection-{}", slug(stage)),
        svg: chart::panels_svg(&title, &panels, panels.len().min(3))?,
        title,
        csv,
    })
}

/// The accuracy panel: the final test accuracies per group over the categories present,
/// renumbered 0, 1, ... in their order, drawn as dots (the categories have no order that a
/// line could follow); their CSV rows are added to `csv`.
fn accuracy_panel(csv: &mut String, accuracy: &Acc) -> Panel {
    let used = used_categories(accuracy);
    let mut acc = accuracy.clone();
    for xs in acc.values_mut() {
        *xs = std::mem::take(xs)
            .into_iter()
            .map(|(x, v)| (used.iter().position(|&u| u == x).unwrap_or(0) as i64, v))
            .collect();
    }
    let names: Vec<String> = used.iter().map(|&x| category_name(x)).collect();
    csv_rows(csv, "test accuracy", &acc, |x| {
        names.get(x as usize).cloned().unwrap_or_default()
    });
    // Groups side by side within a category, so their dots do not hide each other.
    let mut lines = lines(&acc);
    let k = lines.len() as f64;
    for (i, line) in lines.iter_mut().enumerate() {
        let shift = 0.12 * (i as f64 - (k - 1.0) / 2.0);
        for (x, _) in &mut line.points {
            *x += shift;
        }
    }
    Panel {
        title: "Test accuracy after training on".into(),
        x_label: "labels: noisy, cleaned by each method, truly clean only".into(),
        y_label: "final test accuracy".into(),
        x_names: Some(names.iter().map(|n| tick_name(n)).collect()),
        x_scale: XScale::Linear,
        markers_only: true,
        y_range: None,
        y_floor: None,
        lines,
    }
}

/// The accuracy panel's x of a category: noisy first, the methods in `detect`'s order, the
/// oracle last.
fn category_x(category: &str) -> i64 {
    match category {
        NOISY => 0,
        ORACLE => detect::METHODS.len() as i64 + 1,
        m => detect::METHODS
            .iter()
            .position(|k| *k == m)
            .map_or(detect::METHODS.len() as i64 + 2, |p| p as i64 + 1),
    }
}

/// A category's tick label on the accuracy panel: short enough that eight fit side by side
/// (the CSV keeps the full names).
fn tick_name(category: &str) -> String {
    match category {
        "gradient" => "grad".into(),
        "label_gradient" => "label grad".into(),
        "forgetting" => "forget".into(),
        other => other.into(),
    }
}

/// The name of the category at `x` (see [`category_x`]).
fn category_name(x: i64) -> String {
    match x {
        0 => NOISY.to_string(),
        x if x == detect::METHODS.len() as i64 + 1 => ORACLE.to_string(),
        x => detect::METHODS
            .get(x as usize - 1)
            .map_or("other".to_string(), |m| m.to_string()),
    }
}

/// The categories with a value, in order.
fn used_categories(acc: &Acc) -> Vec<i64> {
    let mut used: Vec<i64> = acc.values().flat_map(|xs| xs.keys().copied()).collect();
    used.sort_unstable();
    used.dedup();
    used
}

/// Lines of an accumulator keyed by grid step, with x as the false-positive rate.
fn grid_lines(acc: &Acc) -> Vec<Line> {
    let mut all = lines(acc);
    for line in &mut all {
        for (x, _) in &mut line.points {
            *x /= GRID as f64;
        }
    }
    all
}

/// What the numbers say: the default method's AUROC, and whether retraining on its cleaned
/// labels reaches the oracle-clean accuracy (means over the groups that have all three).
fn claim(rows: &StageRows) -> Option<Claim> {
    let method = rows.default_method.as_ref()?;
    let auroc = Stat::of(&rows.aurocs)?.mean;
    let (x_method, mut trio) = (category_x(method), Vec::new());
    for (group, xs) in &rows.accuracy {
        let mean = |x: i64| xs.get(&x).and_then(|v| Stat::of(v)).map(|s| s.mean);
        if let (Some(n), Some(c), Some(o)) = (mean(0), mean(x_method), mean(category_x(ORACLE))) {
            trio.push((group.clone(), n, c, o));
        }
    }
    let auroc_text = match rows.aurocs.len() {
        1 => format!("{method} ranks the corrupted examples with AUROC {auroc:.3} (one run)"),
        n => format!(
            "{method} ranks the corrupted examples with AUROC {auroc:.3} (mean of {n} runs)"
        ),
    };
    if trio.is_empty() {
        return Claim::new(true, auroc_text);
    }
    let k = trio.len() as f64;
    let (n, c, o) = trio.iter().fold((0.0, 0.0, 0.0), |a, t| {
        (a.0 + t.1 / k, a.1 + t.2 / k, a.2 + t.3 / k)
    });
    let shown = c >= o;
    let where_ = if trio.len() == 1 {
        at_group(&trio[0].0)
    } else {
        format!(" (mean over {} groups)", trio.len())
    };
    let mut text = format!(
        "{auroc_text}; retraining on its cleaned labels: test accuracy {n:.3} (noisy) -> {c:.3}, oracle-clean {o:.3}{where_}"
    );
    // The criterion is reaching the oracle; short of it, by how much, in its terms.
    if shown {
        text.push_str("; reaches the oracle");
    } else if o > n {
        let _ = write!(
            text,
            "; reaches the oracle: {:.2} of the gap (needs 1.00)",
            (c - n) / (o - n)
        );
    } else {
        let _ = write!(text, "; reaches the oracle: {:.3} short", o - c);
    }
    Claim::new(shown, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpr_is_interpolated_on_the_curve() {
        // The reference example's curve: (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
        let fpr = [0.0, 0.0, 0.5, 0.5, 1.0];
        let tpr = [0.0, 0.5, 0.5, 1.0, 1.0];
        assert_eq!(
            tpr_at(&fpr, &tpr, 0.0),
            Some(0.5),
            "the top of a vertical step"
        );
        assert_eq!(tpr_at(&fpr, &tpr, 0.25), Some(0.5));
        assert_eq!(tpr_at(&fpr, &tpr, 0.5), Some(1.0));
        assert_eq!(tpr_at(&fpr, &tpr, 1.0), Some(1.0));
        // A diagonal stretch is interpolated.
        assert_eq!(tpr_at(&[0.0, 1.0], &[0.0, 1.0], 0.3), Some(0.3));
    }

    #[test]
    fn categories_order_noisy_methods_oracle() {
        assert_eq!(category_x(NOISY), 0);
        assert_eq!(category_name(category_x("aum")), "aum");
        assert_eq!(category_name(category_x(ORACLE)), ORACLE);
        assert!(category_x("ensemble") < category_x(ORACLE));
    }

    #[test]
    fn the_claim_says_how_much_of_the_gap_is_recovered() {
        let mut rows = StageRows {
            default_method: Some("aum".into()),
            aurocs: vec![0.97, 0.98],
            ..Default::default()
        };
        for (x, v) in [
            (0, 0.66),
            (category_x("aum"), 0.80),
            (category_x(ORACLE), 0.82),
        ] {
            push(&mut rows.accuracy, "noise=0.4", x, Some(v));
        }
        let c = claim(&rows).unwrap();
        assert!(!c.shown);
        assert_eq!(
            c.text,
            "aum ranks the corrupted examples with AUROC 0.975 (mean of 2 runs); retraining on its cleaned labels: test accuracy 0.660 (noisy) -> 0.800, oracle-clean 0.820 at noise=0.4; reaches the oracle: 0.88 of the gap (needs 1.00)"
        );
        // One run is "one run", not "mean of 1 runs".
        rows.aurocs = vec![0.97];
        let c = claim(&rows).unwrap();
        assert!(
            c.text
                .starts_with("aum ranks the corrupted examples with AUROC 0.970 (one run);"),
            "{}",
            c.text
        );
    }
}
