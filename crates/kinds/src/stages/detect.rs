//! `detect`: scores every training example of a train instance by how likely its label is
//! wrong, from the training dynamics the instance recorded (`record_examples = true`; an
//! `import` with it has pipe compute them from its weights).
//!
//! Methods (higher score = more likely mislabeled), each over the epochs of `window`:
//! - `aum`: area under the margin (Pleiss et al. 2020), minus the mean margin;
//! - `loss`: the mean training loss;
//! - `forgetting`: forgetting events over the whole run (Toneva et al. 2019);
//! - `gradient`: minus the mean agreement (cosine) of the example's last-layer gradient with
//!   its training class's mean gradient, which the clean majority sets (the study's question:
//!   do the gradients of random labels differ from those of true labels?), over
//!   `gradient_window`;
//! - `label_gradient`: the same for the gradient's label-dependent part alone (the study's
//!   decomposition), which is the cosine of the example's last-layer input with its class's
//!   mean;
//! - `ensemble`: the mean of the normalized ranks of `aum`, `gradient` and `loss`.
//!
//! Each method flags the examples above its own Otsu threshold (the ensemble: as many as
//! Otsu's threshold on the loss flags), or `flag_fraction` of them when given: the true noise level is never
//! used. The truth (`changed`) only judges the rankings. Output: `scores.parquet`,
//! `detection.parquet` (one row per method, the default method first) and `roc.parquet`.

use std::io::Write;

use anyhow::{Context, Result};

use crate::stages::slots;
use crate::stages::trained::TrainedInput;
use crate::tables::{Detection, Examples, Roc, Scores};
use pipe_engine::stage::{BadData, CheckEnv, Inputs, Kind, ParamError, RunContext};
use pipe_engine::table::StoredTable;
use pipe_engine::table::Table;
use pipe_science::detection;

/// The kind's name, as written `kind = "detect"`.
pub const NAME: &str = slots::names::DETECT;

/// The methods `detect` knows (the default list starts with `ensemble`).
pub const METHODS: [&str; 6] = [
    "aum",
    "gradient",
    "label_gradient",
    "loss",
    "forgetting",
    "ensemble",
];

/// The methods the ensemble averages: forgetting events rank too coarsely to help.
pub const ENSEMBLE: [&str; 3] = ["aum", "gradient", "loss"];

/// The member whose flagged count the ensemble takes: the mean loss over an early window is
/// the most clearly bimodal score (clean examples near 0, mislabeled ones near and above
/// ln C), so Otsu's split of it estimates the count best (measured: within 0-14% of the
/// changed labels at noise 0.2 and 0.4, where the margin's split over-counts by 16-70%).
pub const COUNT_FROM: &str = "loss";

/// Points kept of each method's ROC curve.
const ROC_POINTS: usize = 201;

pipe_engine::stage_params! {
    /// The parameters of `detect`.
    pub struct DetectParams {
        methods: Vec<String>, default "[\"ensemble\", \"aum\", \"gradient\", \"label_gradient\", \"loss\", \"forgetting\"]", "scoring methods; the first is the default (first row of detection.parquet, and what `clean` uses)";
        window: Vec<i64>, default "[1, 3]", "[first, last] epochs averaged by aum and loss, early, before the noise is memorized (clipped to the run's epochs); the model's predictions at `last` are what `clean` relabels to";
        gradient_window: Vec<i64>, default "[1, 5]", "[first, last] epochs averaged by gradient, while the clean majority sets each class's direction";
        flag_fraction: Option<f64>, optional, "flag this fraction of the examples with every method, instead of each method's own estimate";
    }
}

/// The `detect` stage kind.
pub struct Detect;

/// An epoch window `[first, last]` as checked: first <= last, first >= 0.
fn check_window(w: &[i64], name: &'static str) -> Result<(), ParamError> {
    match w {
        [a, b] if 0 <= *a && a <= b => Ok(()),
        _ => Err(ParamError::param(
            name,
            format!("must be [first, last] with 0 <= first <= last, got {w:?}"),
        )),
    }
}

/// The recorded dynamics, one vector per epoch (0..=last), examples in a fixed order.
struct Dynamics {
    index: Vec<i64>,
    label: Vec<i64>,
    changed: Vec<bool>,
    predicted: Vec<Vec<i64>>,
    loss: Vec<Vec<f64>>,
    margin: Vec<Vec<f64>>,
    agreement: Vec<Vec<f64>>,
    dep_agreement: Vec<Vec<f64>>,
    correct: Vec<Vec<bool>>,
}

impl Dynamics {
    /// Splits `examples.parquet`'s rows by epoch, checking that every epoch 0..=E lists the
    /// same examples in the same order.
    fn from_table(t: Examples) -> Result<Dynamics, String> {
        let n = t.epoch.iter().take_while(|&&e| e == 0).count();
        if n == 0 || !t.rows().is_multiple_of(n) {
            return Err(format!(
                "{} rows do not hold whole epochs of {n} examples starting at epoch 0",
                t.rows()
            ));
        }
        let epochs = t.rows() / n;
        let mut d = Dynamics {
            index: t.index[..n].to_vec(),
            label: t.label[..n].to_vec(),
            changed: t.changed[..n].to_vec(),
            predicted: Vec::new(),
            loss: Vec::new(),
            margin: Vec::new(),
            agreement: Vec::new(),
            dep_agreement: Vec::new(),
            correct: Vec::new(),
        };
        for e in 0..epochs {
            let rows = e * n..(e + 1) * n;
            if t.epoch[rows.clone()].iter().any(|&x| x != e as i64)
                || t.index[rows.clone()] != d.index[..]
            {
                return Err(format!(
                    "epoch {e}'s rows are not the {n} examples of epoch 0 in order"
                ));
            }
            d.loss.push(t.loss[rows.clone()].to_vec());
            d.margin.push(t.margin[rows.clone()].to_vec());
            d.agreement.push(t.grad_agreement[rows.clone()].to_vec());
            d.dep_agreement.push(t.dep_agreement[rows.clone()].to_vec());
            d.predicted.push(t.predicted[rows.clone()].to_vec());
            d.correct.push(t.correct[rows.clone()].to_vec());
        }
        Ok(d)
    }

    /// The last epoch recorded.
    fn last_epoch(&self) -> usize {
        self.loss.len() - 1
    }
}

/// The vector indices of the epochs `[first, last]`, clipped to those recorded.
fn window_range(w: &[i64], last_epoch: usize) -> std::ops::Range<usize> {
    let end = (w[1] as usize).min(last_epoch) + 1;
    (w[0] as usize).min(end)..end
}

/// One method's scores and the count it flags.
struct Scored {
    method: String,
    scores: Vec<f64>,
    flagged: usize,
}

impl DetectParams {
    /// The count a method flags among `scores`: `flag_fraction` of them, or Otsu's estimate.
    fn flag_count(&self, scores: &[f64]) -> usize {
        match self.flag_fraction {
            Some(f) => (f * scores.len() as f64).round() as usize,
            None => detection::estimate_flagged(scores),
        }
    }

    /// Every method's scores, in the order `methods` lists them.
    fn score(&self, d: &Dynamics) -> Vec<Scored> {
        let last = d.last_epoch();
        let window = window_range(&self.window, last);
        let single = |m: &str| -> Vec<f64> {
            match m {
                "aum" => detection::aum(&d.margin, window.clone()),
                "loss" => detection::mean_loss(&d.loss, window.clone()),
                // Forgetting over the epochs trained (initialization is no event).
                "forgetting" => detection::forgetting(&d.correct[1.min(last)..]),
                "label_gradient" => {
                    detection::aum(&d.dep_agreement, window_range(&self.gradient_window, last))
                }
                _ => detection::aum(&d.agreement, window_range(&self.gradient_window, last)),
            }
        };
        let members = ENSEMBLE;
        self.methods
            .iter()
            .map(|m| {
                if m == "ensemble" {
                    let parts: Vec<(Vec<f64>, usize)> = members
                        .iter()
                        .map(|x| {
                            let s = single(x);
                            let k = self.flag_count(&s);
                            (detection::normalized_ranks(&s), k)
                        })
                        .collect();
                    let n = d.index.len();
                    let scores = (0..n)
                        .map(|i| parts.iter().map(|p| p.0[i]).sum::<f64>() / parts.len() as f64)
                        .collect();
                    // The loss member's count (see COUNT_FROM).
                    let from = members.iter().position(|x| *x == COUNT_FROM).unwrap_or(0);
                    let flagged = parts[from].1;
                    Scored {
                        method: m.clone(),
                        scores,
                        flagged,
                    }
                } else {
                    let scores = single(m);
                    Scored {
                        method: m.clone(),
                        flagged: self.flag_count(&scores),
                        scores,
                    }
                }
            })
            .collect()
    }
}

/// The examples a method flags: its `k` highest scores (ties by position, lower first).
pub fn top(scores: &[f64], k: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut flagged = vec![false; scores.len()];
    for &i in order.iter().take(k) {
        flagged[i] = true;
    }
    flagged
}

impl Kind for Detect {
    type Params = DetectParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "scores every training example by how likely its label is wrong, from the recorded training dynamics (aum, gradient, label_gradient, loss, forgetting, ensemble)";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[slots::TRAINED])
    }
    fn check(&self, p: &DetectParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        crate::stages::check_methods(DetectParams::methods, &p.methods, &METHODS)?;
        check_window(&p.window, "window")?;
        check_window(&p.gradient_window, "gradient_window")?;
        if let Some(f) = p.flag_fraction
            && !(0.0..=1.0).contains(&f)
        {
            return Err(ParamError::param(
                DetectParams::flag_fraction,
                format!("must be in [0, 1], got {f}"),
            ));
        }
        let train = TrainedInput::from_env(env)?;
        if !train.records_examples {
            return Err(ParamError::stage(if train.checkpoint_parts {
                "its `train` input must record the training dynamics: set `record_examples = true` there"
            } else {
                "its `import` input must record the training dynamics: set `record_examples = true` there (pipe then evaluates the weights of every epoch, which its `epochs` must list)"
            }));
        }
        let epochs = train.final_epoch();
        for (w, name) in [
            (&p.window, "window"),
            (&p.gradient_window, "gradient_window"),
        ] {
            if w.first().is_some_and(|&a| a > epochs) {
                return Err(ParamError::param(
                    name,
                    format!(
                        "starts at epoch {} but the run trains {epochs} epochs",
                        w[0]
                    ),
                ));
            }
        }
        Ok(())
    }
    fn tables(&self, _p: &DetectParams) -> Vec<String> {
        vec![
            Scores::NAME.into(),
            Detection::NAME.into(),
            Roc::NAME.into(),
        ]
    }
    fn run(&self, p: &DetectParams, ctx: &mut RunContext<'_>) -> Result<()> {
        let file = Examples::path_in(ctx.input(slots::TRAINED.name)?);
        let table = Examples::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let d = Dynamics::from_table(table)
            .map_err(|m| anyhow::Error::new(BadData(format!("{}: {m}", file.display()))))?;
        let scored = p.score(&d);
        let n = d.index.len();
        let n_changed = d.changed.iter().filter(|c| **c).count();
        writeln!(
            ctx.log,
            "{n} examples, {n_changed} truly corrupted, epochs 0..={}",
            d.last_epoch()
        )?;
        let (mut scores, mut det, mut roc) =
            (Scores::default(), Detection::default(), Roc::default());
        for s in &scored {
            let q = detection::flagged_quality(&s.scores, &d.changed, s.flagged);
            let finite = |x: f64| x.is_finite().then_some(x);
            let auroc = detection::auroc(&s.scores, &d.changed);
            det.append(Detection {
                method: vec![s.method.clone()],
                auroc: vec![auroc],
                average_precision: vec![detection::average_precision(&s.scores, &d.changed)],
                precision: vec![finite(q.precision)],
                recall: vec![finite(q.recall)],
                f1: vec![finite(q.f1)],
                flagged: vec![s.flagged as i64],
                estimated_noise: vec![s.flagged as f64 / n as f64],
                n: vec![n as i64],
                n_changed: vec![n_changed as i64],
            });
            writeln!(
                ctx.log,
                "{:<10} auroc {}  flags {} (estimated noise {:.3})  precision {}  recall {}",
                s.method,
                auroc.map_or("-".into(), |a| format!("{a:.4}")),
                s.flagged,
                s.flagged as f64 / n as f64,
                finite(q.precision).map_or("-".into(), |a| format!("{a:.3}")),
                finite(q.recall).map_or("-".into(), |a| format!("{a:.3}")),
            )?;
            scores.append(Scores {
                method: vec![s.method.clone(); n],
                index: d.index.clone(),
                score: s.scores.clone(),
                flagged: top(&s.scores, s.flagged),
                label: d.label.clone(),
                predicted: d.predicted[window_range(&p.window, d.last_epoch()).end - 1].clone(),
                changed: d.changed.clone(),
            });
            let curve = detection::roc_curve(&s.scores, &d.changed, ROC_POINTS);
            roc.append(Roc {
                method: vec![s.method.clone(); curve.len()],
                fpr: curve.iter().map(|c| c.0).collect(),
                tpr: curve.iter().map(|c| c.1).collect(),
            });
        }
        scores.write_in(ctx.out)?;
        det.write_in(ctx.out)?;
        roc.write_in(ctx.out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_clip_to_the_epochs_recorded() {
        assert_eq!(window_range(&[1, 10], 4), 1..5);
        assert_eq!(window_range(&[2, 3], 10), 2..4);
        assert_eq!(window_range(&[0, 0], 10), 0..1);
    }

    #[test]
    fn the_top_k_are_flagged() {
        assert_eq!(top(&[0.1, 0.9, 0.5, 0.9], 2), [false, true, false, true]);
        assert_eq!(top(&[0.1, 0.9], 0), [false, false]);
    }
}
