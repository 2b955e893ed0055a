//! Checkpoints: the state of a training run after an epoch, as files.
//!
//! A checkpoint folder holds `weights.safetensors` (every variable of the model, named as
//! in the var store: `fc1.weight`, `conv1.bn.running_mean`), `optimizer.safetensors` (the
//! optimizer's buffers), `metrics.parquet` (epochs 0..=epoch) and `checkpoint.json`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::train::{EpochMetrics, Trainer};
use crate::table::{read_parquet, write_parquet};

/// What `checkpoint.json` says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The epoch whose end state this is (0 = initialization).
    pub epoch: i64,
    /// Optimizer steps taken.
    pub steps: i64,
    /// The `model` parameter.
    pub model: String,
}

/// One checkpoint of a train instance, as listed in its `checkpoints.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointRef {
    /// The epoch.
    pub epoch: i64,
    /// The checkpoint artifact's key.
    pub key: String,
}

/// Writes `metrics` as a Parquet table.
pub fn write_metrics(path: &Path, metrics: &[EpochMetrics]) -> Result<()> {
    let f = |g: fn(&EpochMetrics) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(metrics.iter().map(g)))
    };
    let o = |g: fn(&EpochMetrics) -> Option<f64>| -> ArrayRef {
        Arc::new(metrics.iter().map(g).collect::<Float64Array>())
    };
    let schema = Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("lr", DataType::Float64, false),
        Field::new("train_loss", DataType::Float64, false),
        Field::new("train_acc", DataType::Float64, false),
        Field::new("clean_acc", DataType::Float64, false),
        Field::new("corrupted_train_acc", DataType::Float64, true),
        Field::new("corrupted_true_acc", DataType::Float64, true),
        Field::new("test_loss", DataType::Float64, false),
        Field::new("test_acc", DataType::Float64, false),
        Field::new("seconds", DataType::Float64, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            metrics.iter().map(|m| m.epoch),
        )),
        f(|m| m.lr),
        f(|m| m.train_loss),
        f(|m| m.train_acc),
        f(|m| m.clean_acc),
        o(|m| m.corrupted_train_acc),
        o(|m| m.corrupted_true_acc),
        f(|m| m.test_loss),
        f(|m| m.test_acc),
        f(|m| m.seconds),
    ];
    write_parquet(path, &RecordBatch::try_new(Arc::new(schema), cols)?)
}

/// Reads a table written by [`write_metrics`].
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let b = read_parquet(path)?;
    let col = |name: &str| -> Result<&Float64Array> {
        b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .with_context(|| format!("{}: no float column {name}", path.display()))
    };
    let epoch = b
        .column_by_name("epoch")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .with_context(|| format!("{}: no epoch column", path.display()))?;
    let opt = |a: &Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
    let (lr, tl, ta, ca, cta, ctr, xl, xa, s) = (
        col("lr")?,
        col("train_loss")?,
        col("train_acc")?,
        col("clean_acc")?,
        col("corrupted_train_acc")?,
        col("corrupted_true_acc")?,
        col("test_loss")?,
        col("test_acc")?,
        col("seconds")?,
    );
    Ok((0..b.num_rows())
        .map(|i| EpochMetrics {
            epoch: epoch.value(i),
            lr: lr.value(i),
            train_loss: tl.value(i),
            train_acc: ta.value(i),
            clean_acc: ca.value(i),
            corrupted_train_acc: opt(cta, i),
            corrupted_true_acc: opt(ctr, i),
            test_loss: xl.value(i),
            test_acc: xa.value(i),
            seconds: s.value(i),
        })
        .collect())
}

/// Writes the trainer's current state into `dir`.
pub fn save(dir: &Path, t: &Trainer<'_>, model: &str) -> Result<()> {
    let cpu = |v: Vec<(String, Tensor)>| -> Vec<(String, Tensor)> {
        v.into_iter()
            .map(|(n, t)| (n, t.to_device(tch::Device::Cpu).contiguous()))
            .collect()
    };
    Tensor::write_safetensors(&cpu(t.net.variables()), dir.join("weights.safetensors"))?;
    Tensor::write_safetensors(
        &cpu(t.opt.state(&t.params)),
        dir.join("optimizer.safetensors"),
    )?;
    write_metrics(&dir.join("metrics.parquet"), &t.metrics)?;
    let info = CheckpointInfo {
        epoch: t.epoch(),
        steps: t.opt.steps,
        model: model.to_string(),
    };
    std::fs::write(
        dir.join("checkpoint.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    Ok(())
}

/// Copies saved weights into a model's variables (names and shapes must match).
pub fn load_weights(vars: &[(String, Tensor)], file: &Path) -> Result<()> {
    let saved =
        Tensor::read_safetensors(file).with_context(|| format!("reading {}", file.display()))?;
    if saved.len() != vars.len() {
        bail!(
            "{} holds {} tensors, the model has {}",
            file.display(),
            saved.len(),
            vars.len()
        );
    }
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vars {
            let (_, t) = saved
                .iter()
                .find(|(n, _)| n == name)
                .with_context(|| format!("{} lacks {name}", file.display()))?;
            if t.size() != var.size() {
                bail!(
                    "{name}: saved shape {:?}, model shape {:?}",
                    t.size(),
                    var.size()
                );
            }
            var.shallow_clone().copy_(t);
        }
        Ok(())
    })
}

/// Restores a trainer to the state saved in `dir`.
pub fn restore(dir: &Path, t: &mut Trainer<'_>) -> Result<()> {
    let info: CheckpointInfo =
        serde_json::from_slice(&std::fs::read(dir.join("checkpoint.json"))?)?;
    load_weights(&t.net.variables(), &dir.join("weights.safetensors"))?;
    let state = Tensor::read_safetensors(dir.join("optimizer.safetensors"))?;
    let state: Vec<(String, Tensor)> = state
        .into_iter()
        .map(|(n, s)| (n, s.to_device(t.cfg.device)))
        .collect();
    t.opt.load_state(&t.params, &state, info.steps)?;
    t.metrics = read_metrics(&dir.join("metrics.parquet"))?;
    if t.epoch() != info.epoch {
        bail!(
            "{}: metrics end at epoch {}, checkpoint says {}",
            dir.display(),
            t.epoch(),
            info.epoch
        );
    }
    Ok(())
}

/// Finds a checkpoint of a train artifact by epoch or `"final"`.
pub fn find(train_dir: &Path, which: &serde_json::Value) -> Result<CheckpointRef> {
    let list: Vec<CheckpointRef> =
        serde_json::from_slice(&std::fs::read(train_dir.join("checkpoints.json"))?)?;
    let found = match which {
        serde_json::Value::String(s) if s == "final" => list.iter().max_by_key(|c| c.epoch),
        v => v.as_i64().and_then(|e| list.iter().find(|c| c.epoch == e)),
    };
    let epochs: Vec<String> = list.iter().map(|c| c.epoch.to_string()).collect();
    found.cloned().with_context(|| {
        format!(
            "no checkpoint {which}; this run kept epochs {}",
            epochs.join(", ")
        )
    })
}
