//! The `train` stage's work: load data, resume from the latest usable checkpoint, train,
//! store kept epochs as parts, write metrics, the checkpoint list and the layer map.
//!
//! This file is the one translation of [`TrainParams`] into the plain settings of the
//! models, optimizers and training loop ([`arch`], [`config`]).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pipe_engine::stage::{BadData, KeyInputs, RunContext};
use pipe_engine::store::Parts;
use pipe_kinds::stages::train::{
    CHECKPOINT_KIND, CheckpointRef, Init, LayerInfo, Loss, MODULE_FILE, Model, ModelInfo,
    ModuleFile, Optimizer, Schedule, TrainParams,
};

use crate::checkpoint;
use crate::data::{self, TrainData};
use crate::device;
use crate::models::{Arch, WeightInit};
use crate::optim::{self, OptimizerConfig};
use crate::records::TrainRecords;
use crate::stop;
use crate::trainer::{self, EpochScores, TrainConfig, Trainer};
use pipe_kinds::stages::slots;
use pipe_kinds::worker::{Interrupted, Kept};

/// The architecture the parameters describe (the analyses rebuild trained networks by it);
/// `module` is the `module` input's folder, which `model = "script"` trains.
pub fn arch(p: &TrainParams, module: Option<&Path>) -> Arch {
    let mult = p.width.unwrap_or(1.0);
    match p.model {
        Model::Script => Arch::Script {
            file: module.map_or_else(PathBuf::new, |m| m.join(MODULE_FILE)),
        },
        Model::Mlp => Arch::Mlp {
            hidden: p.hidden.clone(),
        },
        Model::Cnn => Arch::Cnn { mult },
        Model::Vgg11 | Model::Vgg16 => Arch::Vgg {
            depth: if p.model == Model::Vgg11 { 11 } else { 16 },
            batch_norm: p.batch_norm,
            mult,
        },
        Model::Resnet18 => Arch::Resnet18 {
            k: p.width.map_or(64, |k| k as i64),
        },
        Model::Alexnet => Arch::Alexnet { mult },
    }
}

/// The training loop's settings from the parameters (`module`: the `module` input's
/// folder, if any), or why the device cannot be used.
pub fn config(p: &TrainParams, module: Option<&Path>) -> Result<TrainConfig, String> {
    let optimizer = match p.optimizer {
        Optimizer::Adam => OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: p.weight_decay,
        },
        Optimizer::Sgd => OptimizerConfig::Sgd {
            momentum: p.momentum,
            nesterov: p.nesterov,
            weight_decay: p.weight_decay,
        },
    };
    let schedule = match p.schedule {
        Schedule::Step => optim::Schedule::Step {
            milestones: p.milestones.clone(),
            gamma: p.gamma,
        },
        Schedule::Cosine => optim::Schedule::Cosine,
        Schedule::Constant => optim::Schedule::Constant,
    };
    let loss = match p.loss {
        Loss::CrossEntropy => trainer::Loss::CrossEntropy,
        Loss::Mse => trainer::Loss::Mse,
    };
    let init = match p.init {
        Init::Kaiming => WeightInit::Kaiming,
        Init::Torch => WeightInit::Torch,
        Init::Module => WeightInit::Module,
    };
    Ok(TrainConfig {
        arch: arch(p, module),
        epochs: p.epochs,
        batch_size: p.batch_size,
        optimizer,
        lr: p.lr,
        schedule,
        augment: p.augment,
        seed: p.seed as u64,
        loss,
        init,
        freeze: p.freeze.clone(),
        device: device::resolve(&p.worker.device)?,
        record_examples: p.record_examples,
    })
}

/// The kept checkpoints of a running train instance: one part per kept epoch, keyed by
/// [`TrainParams::checkpoint_key`].
struct Checkpoints<'a> {
    /// The instance's parameters.
    params: &'a TrainParams,
    /// What the checkpoint keys take from the instance.
    keys: KeyInputs<'a>,
    /// Where parts are stored.
    parts: &'a Parts,
    /// The train instance's key, recorded in each checkpoint's manifest.
    train_key: &'a str,
    /// The epochs kept.
    keep: BTreeSet<i64>,
}

impl Checkpoints<'_> {
    /// The key of the checkpoint of `epoch`.
    fn key(&self, epoch: i64) -> String {
        self.params.checkpoint_key(&self.keys, epoch)
    }

    /// The folder of the checkpoint of `epoch`, if it is stored.
    fn stored(&self, epoch: i64) -> Option<PathBuf> {
        self.parts.get(&self.key(epoch))
    }

    /// The latest stored checkpoint at or before the first kept epoch that is missing (if
    /// none is missing, the final one: nothing to train), with its epoch.
    fn latest_usable(&self) -> Option<(i64, PathBuf)> {
        let first_missing = self
            .keep
            .iter()
            .copied()
            .find(|&e| self.stored(e).is_none())
            .unwrap_or(self.params.epochs);
        (1..=first_missing)
            .rev()
            .find_map(|e| self.stored(e).map(|d| (e, d)))
    }

    /// Removes every stored resume point (a checkpoint part of an epoch that is not kept)
    /// and returns their epochs.
    fn remove_resume_points(&self) -> Result<Vec<i64>> {
        let mut removed = Vec::new();
        for e in (1..self.params.epochs).filter(|e| !self.keep.contains(e)) {
            if self.stored(e).is_some() {
                self.parts.remove(&self.key(e))?;
                removed.push(e);
            }
        }
        Ok(removed)
    }

    /// Stores the trainer's state as the checkpoint of its epoch, if that epoch is kept.
    fn save(&self, t: &Trainer<'_>, records: &TrainRecords) -> Result<()> {
        let e = t.epoch();
        if self.keep.contains(&e) {
            let manifest_params = serde_json::json!({"epoch": e, "train": self.train_key});
            let model = self.params.model.as_str();
            self.parts.put(
                &self.key(e),
                CHECKPOINT_KIND,
                &manifest_params,
                &mut |dir| checkpoint::save(dir, t, records, model),
            )?;
        }
        Ok(())
    }

    /// Stores `state` (an epoch boundary, with the records up to it) as a resume point: a
    /// checkpoint part keyed like a kept one of that epoch, so that the next run's
    /// [`Checkpoints::latest_usable`] finds it, though neither the instance's key nor
    /// `checkpoints.json` mention it. Returns whether it was stored now (`false`: that
    /// epoch's checkpoint was there already).
    fn keep(&self, state: &checkpoint::State, records: &TrainRecords) -> Result<bool> {
        let e = state.epoch;
        let manifest_params = serde_json::json!({"epoch": e, "train": self.train_key});
        let model = self.params.model.as_str();
        let (_, made) = self.parts.get_or_put(
            &self.key(e),
            CHECKPOINT_KIND,
            &manifest_params,
            &mut |dir| checkpoint::save_state(dir, state, records, model),
        )?;
        Ok(made)
    }

    /// `checkpoints.json`: every kept epoch with its checkpoint's key.
    fn refs(&self) -> Vec<CheckpointRef> {
        self.keep
            .iter()
            .map(|&e| CheckpointRef {
                epoch: e,
                key: self.key(e),
            })
            .collect()
    }
}

/// Writes the metrics so far beside the log, for readers while the instance trains; a
/// failure to do so is said in the log and does not stop training.
fn live(records: &TrainRecords, log: &mut std::fs::File, log_path: &Path) {
    if let Err(e) = records.write_live(log_path) {
        let _ = writeln!(
            log,
            "warning: metrics so far not written beside the log: {e:#}"
        );
    }
}

/// Trains one instance (see `pipe_kinds::stages::train` for the parameters and outputs).
pub fn run(p: &TrainParams, ctx: &mut RunContext<'_>) -> Result<()> {
    let module = ctx.input(slots::MODULE.name).ok().map(Path::to_path_buf);
    let cfg = config(p, module.as_deref()).map_err(anyhow::Error::msg)?;
    tch::set_num_threads(ctx.threads as i32);
    let data = data::load(
        ctx.input(slots::DATASET.name)?,
        ctx.input(slots::LABELS.name)?,
        cfg.device,
    )?;
    let [channels, height, width] = data.input_shape();
    cfg.arch
        .check_input(channels, height, width)
        .map_err(|m| anyhow::Error::new(BadData(m)))?;
    let identities = ctx.input_identities();
    let checkpoints = Checkpoints {
        params: p,
        keys: identities.keys(ctx.params),
        parts: ctx.parts,
        train_key: ctx.key,
        keep: p.kept(),
    };
    let mut trainer = Trainer::new(cfg, &data).map_err(|m| anyhow::Error::new(BadData(m)))?;
    let mut resumed = None;
    let mut records = match checkpoints.latest_usable() {
        Some((e, dir)) => {
            resumed = Some(e);
            let records = checkpoint::restore(&dir, &mut trainer)
                .with_context(|| format!("resuming from epoch {e}"))?;
            writeln!(
                ctx.log,
                "resumed from the checkpoint of epoch {e} ({})",
                dir.display()
            )?;
            records
        }
        None => {
            let mut records = TrainRecords::new(p.record_examples);
            records.push(&trainer.evaluate_initial(), &data)?;
            checkpoints.save(&trainer, &records)?;
            records
        }
    };
    live(&records, ctx.log, ctx.log_path);
    // A resume point this run started from (not a kept epoch) is superseded like its own.
    let point = resumed.filter(|e| !checkpoints.keep.contains(e));
    train_epochs(
        p,
        ctx.log,
        ctx.log_path,
        &checkpoints,
        &mut trainer,
        &mut records,
        &data,
        point,
    )?;
    records.write(ctx.out)?;
    TrainRecords::remove_live(ctx.log_path);
    std::fs::write(
        ctx.out.join("checkpoints.json"),
        serde_json::to_vec_pretty(&checkpoints.refs())?,
    )?;
    let info = model_info(p, &trainer, &data)?;
    std::fs::write(
        ctx.out.join("model.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    Ok(())
}

/// Trains from the trainer's epoch to the last, keeping checkpoints. On SIGINT or SIGTERM
/// ([`crate::stop`]) keeps a resume point and fails with [`Interrupted`]: the epoch under way
/// if it ends within `finish_within` (2 s by default), else the last boundary reached (a copy of the
/// state there is held in memory while each epoch trains). With `resume_every`, also keeps
/// one after each such span of training, removing the one it kept before (unless that
/// epoch is a kept checkpoint), and the last one (or `point`, the resume point the run
/// started from) once the final epoch is stored.
#[allow(clippy::too_many_arguments)]
fn train_epochs(
    p: &TrainParams,
    log: &mut std::fs::File,
    log_path: &Path,
    checkpoints: &Checkpoints<'_>,
    trainer: &mut Trainer<'_>,
    records: &mut TrainRecords,
    data: &TrainData,
    point: Option<i64>,
) -> Result<()> {
    let every = p.resume_span();
    // Checked when the pipeline was planned.
    let finish_within = p.finish_span().unwrap_or(Duration::from_secs(2));
    let mut last_point = Instant::now();
    // The resume point this run stored last or started from (its epoch), to remove when a
    // later one supersedes it.
    let mut periodic: Option<i64> = point;
    let mut boundary = checkpoint::State::snapshot(trainer);
    while trainer.epoch() < p.epochs {
        if stop::requested() {
            return Err(stopped_at(
                log,
                checkpoints,
                &boundary,
                records,
                &mut periodic,
                p.epochs,
            ));
        }
        let clock = Instant::now();
        let abandon = |done: f64| {
            stop::requested() && {
                let spent = clock.elapsed().as_secs_f64();
                // What the epoch still needs at its pace so far (unknown before a step).
                done <= 0.0 || spent * (1.0 - done) / done > finish_within.as_secs_f64()
            }
        };
        let Some(evaluation) = trainer.train_epoch_unless(&abandon) else {
            writeln!(
                log,
                "stopped during epoch {}: keeping the end of epoch {}",
                boundary.epoch + 1,
                boundary.epoch
            )?;
            // The stop is requested (it stays so): the check above keeps the boundary.
            continue;
        };
        log_epoch(log, &evaluation.scores, p.epochs)?;
        records.push(&evaluation, data)?;
        checkpoints.save(trainer, records)?;
        // The metrics so far, readable while it trains.
        live(records, log, log_path);
        if trainer.epoch() == p.epochs {
            break;
        }
        boundary = checkpoint::State::snapshot(trainer);
        // A stop requested meanwhile keeps this boundary at the top of the loop.
        if !stop::requested() && every.is_some_and(|d| last_point.elapsed() >= d) {
            keep_point(
                log,
                checkpoints,
                &boundary,
                records,
                &mut periodic,
                "periodic",
            )?;
            last_point = Instant::now();
        }
    }
    // The final checkpoint supersedes every resume point: this run's last, and any an
    // earlier run left (one killed between keeping a point and removing the one before).
    for e in checkpoints.remove_resume_points()? {
        writeln!(
            log,
            "resume point of epoch {e} removed: the final epoch is stored"
        )?;
    }
    Ok(())
}

/// Keeps the last epoch boundary reached as a resume point and returns the error that ends
/// the instance as interrupted, saying which epoch was kept (or why none could be).
fn stopped_at(
    log: &mut std::fs::File,
    checkpoints: &Checkpoints<'_>,
    boundary: &checkpoint::State,
    records: &TrainRecords,
    periodic: &mut Option<i64>,
    epochs: i64,
) -> anyhow::Error {
    match keep_point(log, checkpoints, boundary, records, periodic, "stopped") {
        Ok(epoch) => anyhow::Error::new(Interrupted {
            kept: Some(Kept { epoch, epochs }),
        }),
        Err(e) => e,
    }
}

/// Keeps `state` as a resume point (see [`Checkpoints::keep`]) and removes the one this
/// run kept before, unless it is a kept checkpoint; logs what it did (`why`: stopped,
/// periodic) and returns the epoch kept.
fn keep_point(
    log: &mut std::fs::File,
    checkpoints: &Checkpoints<'_>,
    state: &checkpoint::State,
    records: &TrainRecords,
    periodic: &mut Option<i64>,
    why: &str,
) -> Result<i64> {
    let clock = Instant::now();
    let made = checkpoints.keep(state, records)?;
    writeln!(
        log,
        "resume point ({why}): epoch {} {} in {:.3}s",
        state.epoch,
        if made { "kept" } else { "was kept already" },
        clock.elapsed().as_secs_f64()
    )?;
    if let Some(before) = periodic.take()
        && before != state.epoch
        && !checkpoints.keep.contains(&before)
    {
        checkpoints.parts.remove(&checkpoints.key(before))?;
    }
    if made {
        *periodic = Some(state.epoch);
    }
    Ok(state.epoch)
}

/// The log line of a trained epoch (of `epochs`).
fn log_epoch(log: &mut impl Write, m: &EpochScores, epochs: i64) -> std::io::Result<()> {
    writeln!(
        log,
        "epoch {:>3}/{epochs}  lr {:.5}  train loss {:.4} acc {:.4}  clean {:.4}  corrupted(train) {}  corrupted(true) {}  test loss {:.4} acc {:.4}  {:.2}s",
        m.epoch,
        m.lr,
        m.train_loss,
        m.train_acc,
        m.clean_acc,
        m.corrupted_train_acc
            .map_or("-".into(), |a| format!("{a:.4}")),
        m.corrupted_true_acc
            .map_or("-".into(), |a| format!("{a:.4}")),
        m.test_loss,
        m.test_acc,
        m.seconds
    )
}

/// `model.json`: the model's layers with their variables, and its parameter counts (a
/// scripted module: also per layer, and the module file's digest and buffers).
fn model_info(p: &TrainParams, trainer: &Trainer<'_>, data: &TrainData) -> Result<ModelInfo> {
    let net = &trainer.net;
    let vars = net.variables();
    let script = net.script();
    let layers = net
        .layer_names()
        .into_iter()
        .map(|name| {
            let own = |(v, _): &&(String, tch::Tensor)| net.layer_of(v) == Some(name.as_str());
            LayerInfo {
                variables: vars.iter().filter(own).map(|(v, _)| v.clone()).collect(),
                parameters: script.map(|s| {
                    s.parameters()
                        .iter()
                        .filter(own)
                        .map(|(_, t)| t.numel() as i64)
                        .sum()
                }),
                name,
            }
        })
        .collect();
    let count = |list: &[(String, tch::Tensor)]| -> i64 {
        list.iter().map(|(_, t)| t.numel() as i64).sum()
    };
    let module = match script {
        Some(s) => Some(ModuleFile {
            file: MODULE_FILE.to_string(),
            blake3: pipe_engine::stamp::hash_file(&s.file)
                .with_context(|| format!("hashing {}", s.file.display()))?
                .0,
            buffers: s.buffers().iter().map(|(n, _)| n.clone()).collect(),
        }),
        None => None,
    };
    Ok(ModelInfo {
        model: p.model.as_str().to_string(),
        input: data.input_shape(),
        classes: data.classes(),
        width: p.width,
        loss: p.loss.as_str().to_string(),
        init: p.init.as_str().to_string(),
        frozen: p.freeze.clone(),
        parameters: count(&trainer.params) + count(&trainer.frozen),
        frozen_parameters: count(&trainer.frozen),
        layers,
        module,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Net;
    use pipe_engine::stage::KindParams;
    use tch::Device;

    #[test]
    fn layer_names_agree_with_the_engine_side_list() {
        let cases: [(&str, [i64; 3]); 6] = [
            ("mlp", [1, 28, 28]),
            ("cnn", [1, 28, 28]),
            ("vgg11", [3, 32, 32]),
            ("vgg16", [3, 32, 32]),
            ("resnet18", [3, 32, 32]),
            ("alexnet", [3, 32, 32]),
        ];
        for (model, input) in cases {
            let params = TrainParams::parse(
                serde_json::json!({"model": model, "hidden": [7, 5, 3], "epochs": 1, "lr": 0.1})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
            let net = {
                let _g = crate::rng::TORCH_RNG
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                Net::new(&arch(&params, None), input, 10, Device::Cpu).unwrap()
            };
            assert_eq!(Some(net.layer_names()), params.layer_names(), "{model}");
        }
    }
}
