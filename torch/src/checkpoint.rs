//! Checkpoints: the state of a training run after an epoch, as files.
//!
//! A checkpoint folder holds `weights.safetensors` (every variable of the model, named as
//! in the var store: `fc1.weight`, `conv1.bn.running_mean`), `optimizer.safetensors` (the
//! optimizer's buffers), `metrics.parquet` (epochs 0..=epoch), `checkpoint.json` and, when
//! the run records examples, `examples.parquet` (epochs 0..=epoch; see [`TrainRecords`]).

use std::path::Path;

use anyhow::{Context, Result, bail};
use pipe_kinds::stages::train::CheckpointInfo;
use tch::Tensor;

use crate::records::TrainRecords;
use crate::trainer::Trainer;

/// A trainer's state at an epoch boundary, on the CPU: what a checkpoint holds besides the
/// records.
pub struct State {
    /// The epoch reached.
    pub epoch: i64,
    /// Optimizer steps taken.
    pub steps: i64,
    /// Every variable of the model, by name.
    pub weights: Vec<(String, Tensor)>,
    /// The optimizer's buffers, by name.
    pub optimizer: Vec<(String, Tensor)>,
}

impl State {
    /// The trainer's state now, sharing the trainer's tensors where they are on the CPU
    /// (to be written at once).
    pub fn view(t: &Trainer<'_>) -> State {
        let cpu = |v: Vec<(String, Tensor)>| -> Vec<(String, Tensor)> {
            v.into_iter()
                .map(|(n, t)| (n, t.to_device(tch::Device::Cpu).contiguous()))
                .collect()
        };
        State {
            epoch: t.epoch(),
            steps: t.opt.steps,
            weights: cpu(t.net.variables()),
            optimizer: cpu(t.opt.state(&t.params)),
        }
    }

    /// A copy of the trainer's state now that training on does not change: the snapshot
    /// of an epoch boundary, kept in memory while the next epoch trains.
    pub fn snapshot(t: &Trainer<'_>) -> State {
        let mut s = State::view(t);
        if t.cfg.device == tch::Device::Cpu {
            for (_, v) in s.weights.iter_mut().chain(s.optimizer.iter_mut()) {
                *v = v.copy();
            }
        }
        s
    }
}

/// Writes the trainer's current state and the run's records so far into `dir`.
pub fn save(dir: &Path, t: &Trainer<'_>, records: &TrainRecords, model: &str) -> Result<()> {
    save_state(dir, &State::view(t), records, model)
}

/// Writes a saved state and the run's records up to its epoch into `dir` (the same files,
/// byte for byte, as [`save`] of the trainer in that state).
pub fn save_state(dir: &Path, s: &State, records: &TrainRecords, model: &str) -> Result<()> {
    Tensor::write_safetensors(&s.weights, dir.join("weights.safetensors"))?;
    Tensor::write_safetensors(&s.optimizer, dir.join("optimizer.safetensors"))?;
    records.write(dir)?;
    let info = CheckpointInfo {
        epoch: s.epoch,
        steps: s.steps,
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

/// Restores a trainer to the state saved in `dir`, and returns the run's records up to it.
pub fn restore(dir: &Path, t: &mut Trainer<'_>) -> Result<TrainRecords> {
    let info: CheckpointInfo =
        serde_json::from_slice(&std::fs::read(dir.join("checkpoint.json"))?)?;
    load_weights(&t.net.variables(), &dir.join("weights.safetensors"))?;
    let state = Tensor::read_safetensors(dir.join("optimizer.safetensors"))?;
    let state: Vec<(String, Tensor)> = state
        .into_iter()
        .map(|(n, s)| (n, s.to_device(t.cfg.device)))
        .collect();
    t.opt.load_state(&t.params, &state, info.steps)?;
    let records = TrainRecords::read(dir, t.cfg.record_examples)?;
    if let Some(examples) = &records.examples {
        let last = examples.epoch.last().copied();
        if last != Some(info.epoch) {
            bail!(
                "{}: the example records end at epoch {last:?}, the checkpoint is of epoch {}",
                dir.display(),
                info.epoch
            );
        }
    }
    let metrics_end = records.last_epoch().unwrap_or(0);
    if metrics_end != info.epoch {
        bail!(
            "{}: metrics end at epoch {metrics_end}, checkpoint says {}",
            dir.display(),
            info.epoch
        );
    }
    t.resume_at(info.epoch);
    Ok(records)
}
