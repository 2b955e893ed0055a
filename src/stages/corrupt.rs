//! `corrupt`: gives a seeded fraction of the training examples random labels.
//!
//! Exactly `round(fraction * n)` examples are chosen. `permute` (the paper's choice)
//! shuffles the labels among the chosen examples, so a few may keep their own label by
//! chance; `uniform` draws each chosen example's label uniformly from the other classes,
//! so it always differs. Output `labels.parquet`: `index, true_label, train_label, corrupted`.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::stage::{
    CheckEnv, Inputs, ParamError, ParamSpec, ParamType, Params, RunContext, Slot, StageKind,
};
use crate::stages::dataset::DatasetInfo;
use crate::table::{read_parquet, write_parquet};

/// The `corrupt` stage kind.
pub struct Corrupt;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "fraction",
        ParamType::Float,
        "fraction of training examples to corrupt, 0 to 1",
    ),
    ParamSpec::default(
        "seed",
        ParamType::Int,
        "0",
        "seed of the choice and of the new labels",
    ),
    ParamSpec::default(
        "mode",
        ParamType::Enum(&["permute", "uniform"]),
        "\"permute\"",
        "permute labels among the chosen examples, or draw uniformly from the other classes",
    ),
];

/// The corrupted labels of a training set.
#[derive(Clone, Debug, PartialEq)]
pub struct Corruption {
    /// The label each example is trained on.
    pub train_labels: Vec<i64>,
    /// Whether each example was chosen for corruption.
    pub corrupted: Vec<bool>,
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
    let mut corrupted = vec![false; n];
    for &i in &chosen {
        corrupted[i] = true;
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
        corrupted,
    }
}

impl StageKind for Corrupt {
    fn name(&self) -> &'static str {
        "corrupt"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "gives a seeded fraction of the training examples random labels (permuted or uniform)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[Slot {
            name: "dataset",
            kinds: &["dataset"],
        }])
    }
    fn check(&self, params: &Params, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let f = params.float("fraction").unwrap_or(f64::NAN);
        if !(0.0..=1.0).contains(&f) {
            return Err(ParamError::param(
                "fraction",
                format!("must be between 0 and 1, got {f}"),
            ));
        }
        if params.int("seed").is_some_and(|s| s < 0) {
            return Err(ParamError::param("seed", "must not be negative"));
        }
        Ok(())
    }
    fn tables(&self, _params: &Params) -> Vec<String> {
        vec!["labels".into()]
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let dir = ctx.input("dataset")?;
        let info: DatasetInfo = serde_json::from_slice(&std::fs::read(dir.join("dataset.json"))?)
            .context("reading dataset.json")?;
        let train = read_parquet(&dir.join("train.parquet"))?;
        let labels = train
            .column_by_name("label")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .context("train.parquet has no int64 `label` column")?;
        let labels: Vec<i64> = labels.values().to_vec();
        let uniform = ctx.params.str("mode") == Some("uniform");
        if uniform && info.classes < 2 {
            bail!("uniform corruption needs at least 2 classes");
        }
        let fraction = ctx.params.float("fraction").unwrap_or(0.0);
        let c = corrupt(
            &labels,
            info.classes,
            fraction,
            ctx.params.int("seed").unwrap_or(0) as u64,
            uniform,
        );
        let changed = c
            .train_labels
            .iter()
            .zip(&labels)
            .filter(|(a, b)| a != b)
            .count();
        let chosen = c.corrupted.iter().filter(|&&x| x).count();
        writeln!(
            ctx.log,
            "{chosen} of {} examples corrupted, {changed} of them now carry a wrong label",
            labels.len()
        )?;
        let schema = Schema::new(vec![
            Field::new("index", DataType::Int64, false),
            Field::new("true_label", DataType::Int64, false),
            Field::new("train_label", DataType::Int64, false),
            Field::new("corrupted", DataType::Boolean, false),
        ]);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..labels.len() as i64)),
            Arc::new(Int64Array::from(labels)),
            Arc::new(Int64Array::from(c.train_labels)),
            Arc::new(BooleanArray::from(c.corrupted)),
        ];
        let batch = RecordBatch::try_new(Arc::new(schema), cols)?;
        write_parquet(&ctx.out.join("labels.parquet"), &batch)
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
                    c.corrupted.iter().filter(|&&x| x).count(),
                    want,
                    "fraction {fraction}"
                );
                for ((&was, &now), &hit) in labels.iter().zip(&c.train_labels).zip(&c.corrupted) {
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
            .filter(|&i| c.corrupted[i])
            .map(|i| labels[i])
            .collect();
        let mut after: Vec<i64> = (0..500)
            .filter(|&i| c.corrupted[i])
            .map(|i| c.train_labels[i])
            .collect();
        before.sort();
        after.sort();
        assert_eq!(before, after);
        // A random permutation leaves about 1/10 in place; most labels must move.
        let moved = (0..500).filter(|&i| c.train_labels[i] != labels[i]).count();
        assert!(moved > 150, "{moved}");
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
