//! `corrupt`: gives a seeded fraction of the training examples random labels.
//!
//! Exactly `round(fraction * n)` examples are chosen. `permute` (the paper's choice)
//! shuffles the labels among the chosen examples, so a few may keep their own label by
//! chance; `uniform` draws each chosen example's label uniformly from the other classes,
//! so it always differs. Output `labels.parquet`: `index, true_label, train_label, chosen,
//! changed`. Only `changed` examples are corrupted: every analysis groups examples as clean
//! (not chosen), corrupted (changed) and, where a table has groups, unchanged (chosen but
//! kept their own label).

use std::io::Write;

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::stages::dataset::DatasetInfo;
use crate::stages::slots;
use crate::tables::{Images, Labels};
use pipe_engine::stage::{CheckEnv, Inputs, Kind, ParamError, RunContext};
use pipe_engine::table::StoredTable;
use pipe_engine::table::Table;

/// The kind's name, as written `kind = "corrupt"`.
pub const NAME: &str = slots::names::CORRUPT;

pipe_engine::param_enum! {
    /// How the chosen examples get their new labels.
    pub enum Mode {
        /// Shuffle the labels among the chosen examples (the paper's choice).
        Permute = "permute",
        /// Draw each label uniformly from the other classes.
        Uniform = "uniform",
    }
}

pipe_engine::stage_params! {
    /// The parameters of `corrupt`.
    pub struct CorruptParams {
        fraction: f64, required, "fraction of training examples to corrupt, 0 to 1";
        seed: i64, default "0", "seed of the choice and of the new labels";
        mode: Mode, default "\"permute\"", "permute labels among the chosen examples, or draw uniformly from the other classes";
    }
}

/// The `corrupt` stage kind.
pub struct Corrupt;

/// The corrupted labels of a training set.
#[derive(Clone, Debug, PartialEq)]
pub struct Corruption {
    /// The label each example is trained on.
    pub train_labels: Vec<i64>,
    /// Whether each example was chosen for corruption.
    pub chosen: Vec<bool>,
}

impl Corruption {
    /// Whether each example's label changed, given the true labels.
    pub fn changed(&self, true_labels: &[i64]) -> Vec<bool> {
        self.train_labels
            .iter()
            .zip(true_labels)
            .map(|(a, b)| a != b)
            .collect()
    }
}

/// The group a training example belongs to in every analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExampleGroup {
    /// Not chosen for corruption: trained on its true label.
    Clean,
    /// Chosen, and its label changed.
    Corrupted,
    /// Chosen, but the permutation gave it back its own label.
    Unchanged,
}

impl ExampleGroup {
    /// The group of an example from its `chosen` and `changed` flags.
    pub fn of(chosen: bool, changed: bool) -> ExampleGroup {
        match (chosen, changed) {
            (_, true) => ExampleGroup::Corrupted,
            (true, false) => ExampleGroup::Unchanged,
            (false, false) => ExampleGroup::Clean,
        }
    }
    /// Every example's group, from the `chosen` and `changed` columns.
    pub fn all(chosen: &[bool], changed: &[bool]) -> Vec<ExampleGroup> {
        chosen
            .iter()
            .zip(changed)
            .map(|(&h, &c)| ExampleGroup::of(h, c))
            .collect()
    }
    /// The name written in tables' `group` columns: `clean`, `corrupted`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExampleGroup::Clean => "clean",
            ExampleGroup::Corrupted => "corrupted",
            ExampleGroup::Unchanged => "unchanged",
        }
    }
}

/// Number of examples `fraction` of `n` corrupts: `round(fraction * n)`.
pub fn corrupted_count(fraction: f64, n: usize) -> usize {
    ((fraction * n as f64).round() as usize).min(n)
}

/// Corrupts `labels` (classes `0..classes`) as described in the module docs.
pub fn corrupt(
    labels: &[i64],
    classes: usize,
    fraction: f64,
    seed: u64,
    uniform: bool,
) -> Corruption {
    let n = labels.len();
    let k = corrupted_count(fraction, n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut chosen = order[..k].to_vec();
    chosen.sort_unstable();
    let mut train_labels = labels.to_vec();
    let mut chosen_mask = vec![false; n];
    for &i in &chosen {
        chosen_mask[i] = true;
    }
    if uniform {
        for &i in &chosen {
            // Draw from the other classes: skip over the true label.
            let r = rng.random_range(0..classes as i64 - 1);
            train_labels[i] = if r >= labels[i] { r + 1 } else { r };
        }
    } else {
        let mut moved: Vec<i64> = chosen.iter().map(|&i| labels[i]).collect();
        moved.shuffle(&mut rng);
        for (&i, l) in chosen.iter().zip(moved) {
            train_labels[i] = l;
        }
    }
    Corruption {
        train_labels,
        chosen: chosen_mask,
    }
}

impl Kind for Corrupt {
    type Params = CorruptParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "gives a seeded fraction of the training examples random labels (permuted or uniform)";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[slots::DATASET])
    }
    fn check(&self, p: &CorruptParams, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        if !(0.0..=1.0).contains(&p.fraction) {
            return Err(ParamError::param(
                CorruptParams::fraction,
                format!("must be between 0 and 1, got {}", p.fraction),
            ));
        }
        if p.seed < 0 {
            return Err(ParamError::param(
                CorruptParams::seed,
                "must not be negative",
            ));
        }
        Ok(())
    }
    fn tables(&self, _p: &CorruptParams) -> Vec<String> {
        vec![Labels::NAME.into()]
    }
    fn run(&self, p: &CorruptParams, ctx: &mut RunContext<'_>) -> Result<()> {
        let dir = ctx.input(slots::DATASET.name)?;
        let info: DatasetInfo = serde_json::from_slice(&std::fs::read(dir.join("dataset.json"))?)
            .context("reading dataset.json")?;
        let labels = Images::read(&dir.join(Images::TRAIN_FILE))?.label;
        let uniform = p.mode == Mode::Uniform;
        if uniform && info.classes < 2 {
            bail!("uniform corruption needs at least 2 classes");
        }
        let c = corrupt(&labels, info.classes, p.fraction, p.seed as u64, uniform);
        let changed = c.changed(&labels);
        let n_changed = changed.iter().filter(|&&x| x).count();
        let n_chosen = c.chosen.iter().filter(|&&x| x).count();
        writeln!(
            ctx.log,
            "{n_chosen} of {} examples chosen, {n_changed} of them corrupted (label changed), {} kept their own label",
            labels.len(),
            n_chosen - n_changed
        )?;
        Labels {
            index: (0..labels.len() as i64).collect(),
            true_label: labels,
            train_label: c.train_labels,
            chosen: c.chosen,
            changed,
        }
        .write_in(ctx.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_count_and_uniform_always_differs() {
        let labels: Vec<i64> = (0..1000).map(|i| i % 10).collect();
        for (fraction, want) in [
            (0.0, 0),
            (0.2, 200),
            (0.4, 400),
            (0.0005, 1),
            (0.00049, 0),
            (1.0, 1000),
        ] {
            for uniform in [false, true] {
                let c = corrupt(&labels, 10, fraction, 3, uniform);
                assert_eq!(
                    c.chosen.iter().filter(|&&x| x).count(),
                    want,
                    "fraction {fraction}"
                );
                for ((&was, &now), &hit) in labels.iter().zip(&c.train_labels).zip(&c.chosen) {
                    if !hit {
                        assert_eq!(now, was);
                    } else if uniform {
                        assert_ne!(now, was);
                        assert!((0..10).contains(&now));
                    }
                }
            }
        }
    }

    #[test]
    fn permute_keeps_the_label_multiset_of_chosen_examples() {
        let labels: Vec<i64> = (0..500).map(|i| (i * 7) % 10).collect();
        let c = corrupt(&labels, 10, 0.4, 11, false);
        let mut before: Vec<i64> = (0..500)
            .filter(|&i| c.chosen[i])
            .map(|i| labels[i])
            .collect();
        let mut after: Vec<i64> = (0..500)
            .filter(|&i| c.chosen[i])
            .map(|i| c.train_labels[i])
            .collect();
        before.sort();
        after.sort();
        assert_eq!(before, after);
        // A random permutation of 200 labels, 20 per class, leaves 200 * 20/200 = 20 in
        // place on average (sd about 4): `changed` counts the other 180.
        let changed = c.changed(&labels);
        let moved = (0..500).filter(|&i| c.train_labels[i] != labels[i]).count();
        assert_eq!(changed.iter().filter(|&&x| x).count(), moved);
        assert!((165..=195).contains(&moved), "{moved}");
        for (&changed, &chosen) in changed.iter().zip(&c.chosen) {
            assert!(!changed || chosen, "only chosen examples change");
        }
    }

    #[test]
    fn uniform_labels_cover_the_other_classes_evenly() {
        let labels = vec![3i64; 9000];
        let c = corrupt(&labels, 10, 1.0, 5, true);
        let mut counts = [0usize; 10];
        for l in &c.train_labels {
            counts[*l as usize] += 1;
        }
        assert_eq!(counts[3], 0);
        // 9000 draws over 9 classes: 1000 each, sd ~ 31.
        for (cl, n) in counts.iter().enumerate() {
            if cl != 3 {
                assert!((850..1150).contains(n), "class {cl}: {n}");
            }
        }
    }
}
