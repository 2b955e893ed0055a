//! `clean`: the training labels with the examples a `detect` method flagged dropped or
//! relabeled, written in the `corrupt` schema so that a `train` stage takes them as its
//! `labels` input: detect -> clean -> retrain is one pipeline.
//!
//! `drop` keeps only the unflagged rows (their `index` still names the data set's examples);
//! `relabel` gives each flagged example the class the trained model predicts. With
//! `oracle = true` the truly corrupted examples are the flagged ones (relabeled to their
//! true labels): the clean-data baseline. Output: `labels.parquet` and `clean.json`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::stages::detect::DetectParams;
use crate::stages::slots;
use crate::tables::{Labels, Scores};
use pipe_engine::stage::{BadData, CheckEnv, Inputs, Kind, ParamError, RunContext};
use pipe_engine::table::StoredTable;
use pipe_engine::table::Table;

/// The kind's name, as written `kind = "clean"`.
pub const NAME: &str = slots::names::CLEAN;

pipe_engine::param_enum! {
    /// What becomes of a flagged example.
    pub enum Action {
        /// Left out of the training set.
        Drop = "drop",
        /// Trained on the class the model predicts (its true label with `oracle`).
        Relabel = "relabel",
    }
}

pipe_engine::stage_params! {
    /// The parameters of `clean`.
    pub struct CleanParams {
        action: Action, default "\"drop\"", "drop the flagged examples, or relabel them to the model's prediction";
        method: Option<String>, optional, "the detect method whose flags are used (default: detect's first)";
        oracle: bool, default "false", "flag exactly the truly corrupted examples instead (the clean-data baseline)";
    }
}

/// What `clean.json` says.
#[derive(Debug, Serialize, Deserialize)]
pub struct CleanSummary {
    /// The method whose flags were used (`oracle` for the truth).
    pub method: String,
    /// `drop` or `relabel`.
    pub action: String,
    /// Examples in the labels input.
    pub examples: usize,
    /// Examples flagged.
    pub flagged: usize,
    /// Of the flagged, the truly corrupted.
    pub flagged_corrupted: usize,
    /// Truly corrupted examples left in the output with a wrong label.
    pub corrupted_left: usize,
    /// Rows of the output.
    pub kept: usize,
}

/// The `clean` stage kind.
pub struct Clean;

/// The labels with the `flagged` rows dropped or given `relabel`'s labels. `chosen` keeps
/// marking the examples whose label differs from the truth (a relabel can make a clean one
/// wrong), so the output passes the same checks as a `corrupt` stage's.
pub fn apply(labels: &Labels, flagged: &[bool], relabel: Option<&[i64]>) -> Labels {
    let mut out = Labels::default();
    for i in 0..labels.index.len() {
        let (mut label, mut chosen) = (labels.train_label[i], labels.chosen[i]);
        if flagged[i] {
            match relabel {
                None => continue,
                Some(to) => label = to[i],
            }
        }
        let changed = label != labels.true_label[i];
        chosen |= changed;
        out.index.push(labels.index[i]);
        out.true_label.push(labels.true_label[i]);
        out.train_label.push(label);
        out.chosen.push(chosen);
        out.changed.push(changed);
    }
    out
}

impl Kind for Clean {
    type Params = CleanParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "drops or relabels the examples a detect method flags; labels in the corrupt schema for retraining";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[slots::SCORES, slots::LABELS])
    }
    fn check(&self, p: &CleanParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let detect = env
            .input(slots::SCORES.name)
            .ok_or_else(|| ParamError::stage("needs a `scores` input"))?
            .params
            .typed::<DetectParams>()
            .map_err(ParamError::stage)?;
        if let Some(m) = &p.method
            && !detect.methods.contains(m)
        {
            return Err(ParamError::param(
                CleanParams::method,
                format!(
                    "the detect input computes {}, not \"{m}\"{}",
                    detect.methods.join(", "),
                    pipe_engine::error::suggest(m, detect.methods.iter().map(String::as_str))
                ),
            ));
        }
        if p.oracle && p.method.is_some() {
            return Err(ParamError::param(
                CleanParams::method,
                "an oracle flags the truly corrupted examples: leave `method` out",
            ));
        }
        Ok(())
    }
    fn tables(&self, _p: &CleanParams) -> Vec<String> {
        vec![Labels::NAME.into()]
    }
    fn run(&self, p: &CleanParams, ctx: &mut RunContext<'_>) -> Result<()> {
        let scores_file = Scores::path_in(ctx.input(slots::SCORES.name)?);
        let labels_file = Labels::path_in(ctx.input(slots::LABELS.name)?);
        let scores = Scores::read(&scores_file)
            .with_context(|| format!("reading {}", scores_file.display()))?;
        let labels = Labels::read(&labels_file)
            .with_context(|| format!("reading {}", labels_file.display()))?;
        let method = match (&p.method, scores.method.first()) {
            (Some(m), _) => m.clone(),
            (None, Some(first)) => first.clone(),
            (None, None) => {
                return Err(BadData(format!("{}: no scores", scores_file.display())).into());
            }
        };
        // The method's rows by example index.
        let rows: HashMap<i64, usize> = (0..scores.rows())
            .filter(|&r| scores.method[r] == method)
            .map(|r| (scores.index[r], r))
            .collect();
        let mut flagged = Vec::with_capacity(labels.index.len());
        let mut predicted = Vec::with_capacity(labels.index.len());
        for i in 0..labels.index.len() {
            let r = rows.get(&labels.index[i]).copied().filter(|&r| {
                scores.label[r] == labels.train_label[i] && rows.len() == labels.index.len()
            });
            let Some(r) = r else {
                return Err(BadData(format!(
                    "{} was not computed on the labels of {}: example {} is missing or has another training label (give `clean` the labels its detect input's train stage used)",
                    scores_file.display(),
                    labels_file.display(),
                    labels.index[i]
                ))
                .into());
            };
            flagged.push(if p.oracle {
                labels.changed[i]
            } else {
                scores.flagged[r]
            });
            predicted.push(if p.oracle {
                labels.true_label[i]
            } else {
                scores.predicted[r]
            });
        }
        let out = apply(
            &labels,
            &flagged,
            (p.action == Action::Relabel).then_some(&predicted[..]),
        );
        let count = |v: &mut dyn Iterator<Item = bool>| v.filter(|b| *b).count();
        let summary = CleanSummary {
            method: if p.oracle { "oracle".into() } else { method },
            action: p.action.as_str().into(),
            examples: labels.index.len(),
            flagged: count(&mut flagged.iter().copied()),
            flagged_corrupted: count(
                &mut flagged.iter().zip(&labels.changed).map(|(f, c)| *f && *c),
            ),
            corrupted_left: count(&mut out.changed.iter().copied()),
            kept: out.index.len(),
        };
        writeln!(
            ctx.log,
            "{} flagged by {} ({} of them truly corrupted), {}: {} examples left, {} of them with a wrong label",
            summary.flagged,
            summary.method,
            summary.flagged_corrupted,
            summary.action,
            summary.kept,
            summary.corrupted_left
        )?;
        if out.index.is_empty() {
            return Err(BadData(format!(
                "{} flags every example: nothing would be left to train on",
                summary.method
            ))
            .into());
        }
        out.write_in(ctx.out)?;
        std::fs::write(
            ctx.out.join("clean.json"),
            serde_json::to_vec_pretty(&summary)?,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        // Four examples; 1 and 3 corrupted.
        Labels {
            index: vec![0, 1, 2, 3],
            true_label: vec![0, 1, 2, 3],
            train_label: vec![0, 2, 2, 0],
            chosen: vec![false, true, true, true],
            changed: vec![false, true, false, true],
        }
    }

    #[test]
    fn drop_keeps_the_unflagged_rows() {
        let out = apply(&labels(), &[false, true, true, false], None);
        assert_eq!(out.index, [0, 3]);
        assert_eq!(out.train_label, [0, 0]);
        assert_eq!(out.changed, [false, true]);
        assert_eq!(out.chosen, [false, true]);
    }

    #[test]
    fn relabel_marks_what_it_makes_wrong() {
        // Example 1 is fixed (to 1), example 0 is made wrong (to 5), 3 stays wrong.
        let out = apply(&labels(), &[true, true, false, false], Some(&[5, 1, 9, 9]));
        assert_eq!(out.index, [0, 1, 2, 3]);
        assert_eq!(out.train_label, [5, 1, 2, 0]);
        assert_eq!(out.changed, [true, false, false, true]);
        assert_eq!(out.chosen, [true, true, true, true]);
    }
}
