//! Memorization comes late: test accuracy and the corrupted examples' accuracy per epoch.

use anyhow::Result;
use indexmap::IndexMap;
use pipe_kinds::tables::Metrics;

use super::{
    Acc, CSV_HEADER, Claim, Figure, FigureData, Finding, at_group, csv_rows, lines, mean_at, push,
    slug,
};
use crate::report::chart::{self, Panel, XScale};
use crate::report::stats::Stat;

/// The finding, for the registry.
pub(super) const FINDING: Finding = Finding {
    title: "Memorization comes late",
    text: "Test accuracy and the accuracy on corrupted training examples (label changed), scored \
     against their (noisy) training labels and against their true labels, per epoch. With \
     label noise, test accuracy peaks early and falls as the network fits the corrupted labels.",
    shown_for: super::always,
    figures,
};

/// The drop in test accuracy from its peak that counts as memorization.
const MIN_DROP: f64 = 0.01;

/// The claim, from the test-accuracy and corrupted-vs-training-label lines of one stage: the
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

/// The figures: test accuracy and corrupted-example accuracy against epoch, a line per
/// noise level (per group), one figure per training stage.
fn figures(data: &FigureData<'_>, n: usize) -> Result<Vec<Figure>> {
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
    for (node, m) in data.tables::<Metrics>()? {
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
                    x_scale: XScale::Linear,
                    markers_only: false,
                    y_range: None,
                    y_floor: None,
                    lines: lines(acc),
                }
            })
            .collect();
        let title = format!("Accuracy during training: stage {stage}");
        figures.push(Figure {
            finding: n,
            claim: late_memorization(&accs[0], &accs[1]),
            caption: String::new(),
            stem: format!("{n}-accuracy-{}", slug(&stage)),
            svg: chart::panels_svg(&title, &panels, 3)?,
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
}
