//! A train run's tables so far, grown one evaluation at a time: `metrics.parquet` (one
//! row per epoch, 0 = initialization) and, when the run records examples,
//! `examples.parquet` (one row per training example and epoch). The pipeline-facing side
//! of the trainer's results: its [`Evaluation`]s become rows of the `train` kind's tables
//! here and nowhere else, and a checkpoint stores and restores these tables as they are.

use std::path::Path;

use anyhow::Result;
use pipe_engine::table::Table;
use pipe_kinds::tables::{Examples, Metrics};

use crate::data::TrainData;
use crate::tensors::{to_bool, to_i64};
use crate::trainer::{EpochScores, Evaluation, ExampleScores};
use pipe_engine::table::StoredTable;

/// The metrics of every epoch so far and, when recorded, every example's scores.
pub struct TrainRecords {
    /// One row per epoch, starting at epoch 0.
    pub metrics: Metrics,
    /// With `record_examples`: one row per training example and epoch.
    pub examples: Option<Examples>,
}

impl TrainRecords {
    /// No rows yet; `record_examples` says whether examples are kept.
    pub fn new(record_examples: bool) -> TrainRecords {
        TrainRecords {
            metrics: Metrics::default(),
            examples: record_examples.then(Examples::default),
        }
    }

    /// The last epoch recorded, if any.
    pub fn last_epoch(&self) -> Option<i64> {
        self.metrics.epoch.last().copied()
    }

    /// Appends an evaluation's rows (its examples only when this run records them).
    pub fn push(&mut self, evaluation: &Evaluation, data: &TrainData) -> Result<()> {
        self.metrics.append(metrics_row(&evaluation.scores));
        if let (Some(examples), Some(scores)) = (&mut self.examples, &evaluation.examples) {
            examples.append(example_rows(evaluation.scores.epoch, scores, data)?);
        }
        Ok(())
    }

    /// Writes the tables into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.metrics.write_in(dir)?;
        if let Some(examples) = &self.examples {
            examples.write_in(dir)?;
        }
        Ok(())
    }

    /// Writes the metrics so far beside the instance's log `log` (`logs/KEY.metrics.parquet`),
    /// replacing the last epoch's atomically, so they can be read while the instance runs.
    pub fn write_live(&self, log: &Path) -> Result<()> {
        let path = pipe_engine::store::live_table_path(log, Metrics::NAME);
        let tmp = path.with_extension("parquet.tmp");
        self.metrics.write(&tmp)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Removes what [`TrainRecords::write_live`] wrote (the artifact has the tables now).
    pub fn remove_live(log: &Path) {
        let _ = std::fs::remove_file(pipe_engine::store::live_table_path(log, Metrics::NAME));
    }

    /// Reads the tables [`TrainRecords::write`] wrote into `dir`.
    pub fn read(dir: &Path, record_examples: bool) -> Result<TrainRecords> {
        let metrics = Metrics::read_in(dir)?;
        let examples = if record_examples {
            Some(Examples::read_in(dir)?)
        } else {
            None
        };
        Ok(TrainRecords { metrics, examples })
    }
}

/// The [`Metrics`] row of an epoch (`seconds` stays out: it is not deterministic).
fn metrics_row(s: &EpochScores) -> Metrics {
    Metrics {
        epoch: vec![s.epoch],
        lr: vec![s.lr],
        train_loss: vec![s.train_loss],
        train_acc: vec![s.train_acc],
        clean_acc: vec![s.clean_acc],
        corrupted_train_acc: vec![s.corrupted_train_acc],
        corrupted_true_acc: vec![s.corrupted_true_acc],
        test_loss: vec![s.test_loss],
        test_acc: vec![s.test_acc],
    }
}

/// The [`Examples`] rows of `epoch`: each training example's scores with its index in the
/// data set, its training label and whether that label was changed.
fn example_rows(epoch: i64, s: &ExampleScores, data: &TrainData) -> Result<Examples> {
    Ok(Examples {
        epoch: vec![epoch; s.loss.len()],
        index: data.indices.clone(),
        label: to_i64(&data.train.y)?,
        changed: to_bool(&data.changed)?,
        loss: s.loss.clone(),
        margin: s.margin.clone(),
        predicted: s.predicted.clone(),
        correct: s.correct.clone(),
        grad_norm: s.grad_norm.clone(),
        grad_agreement: s.grad_agreement.clone(),
        dep_agreement: s.dep_agreement.clone(),
    })
}
