//! The `train` stage's work: load data, resume from the latest usable checkpoint, train,
//! store kept epochs as parts, write metrics, the checkpoint list and the layer map.

use std::io::Write;

use anyhow::{Context, Result};
use pipe_engine::table::Table;
use pipe_engine::stage::{BadData, KeyInputs, RunContext};
use pipe_kinds::stages::train::{
    CHECKPOINT_KIND, CheckpointRef, LayerInfo, ModelInfo, Optimizer, Schedule, TrainParams,
    write_metrics,
};

use crate::checkpoint;
use crate::models::{Arch, WeightInit};
use crate::optim::{self, OptimizerConfig};
use crate::trainer::{TrainConfig, Trainer};
use crate::{data, device};

/// The training loop's configuration from the train parameters.
pub fn config(p: &TrainParams) -> Result<TrainConfig, String> {
    let arch = Arch::from_params(p);
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
    let device = device::resolve(&p.worker.device)?;
    Ok(TrainConfig {
        arch,
        epochs: p.epochs,
        batch_size: p.batch_size,
        optimizer,
        lr: p.lr,
        schedule,
        augment: p.augment,
        seed: p.seed as u64,
        loss: p.loss,
        init: WeightInit::from_params(p),
        freeze: p.freeze.clone(),
        device,
        record_examples: p.record_examples,
    })
}

/// Trains one instance (see `pipe_kinds::stages::train` for the parameters and outputs).
pub fn run(p: &TrainParams, ctx: &mut RunContext<'_>) -> Result<()> {
    let cfg = config(p).map_err(anyhow::Error::msg)?;
    tch::set_num_threads(ctx.threads as i32);
    let model = p.model.as_str().to_string();
    let data = data::load(ctx.input("dataset")?, ctx.input("labels")?, cfg.device)?;
    let info = &data.info;
    cfg.arch
        .check_input(info.channels as i64, info.height as i64, info.width as i64)
        .map_err(|m| anyhow::Error::new(BadData(m)))?;
    let input_keys: Vec<(String, String)> = ctx
        .inputs
        .iter()
        .map(|i| (i.slot.clone(), i.id.clone()))
        .collect();
    let keep = p.kept();
    let epochs = cfg.epochs;
    let keys = KeyInputs {
        values: ctx.params,
        input_keys: &input_keys,
        input_parts: &[],
    };
    let key_of = |e: i64| p.checkpoint_key(&keys, e);
    let mut trainer = Trainer::new(cfg.clone(), &data);

    // Resume from the latest stored checkpoint at or before the first kept epoch that
    // is missing (if none is missing, from the final one: nothing to train).
    let first_missing = keep
        .iter()
        .copied()
        .find(|&e| ctx.parts.get(&key_of(e)).is_none())
        .unwrap_or(epochs);
    let resume = (1..=first_missing)
        .rev()
        .find_map(|e| ctx.parts.get(&key_of(e)).map(|d| (e, d)));
    match resume {
        Some((e, dir)) => {
            checkpoint::restore(&dir, &mut trainer)
                .with_context(|| format!("resuming from epoch {e}"))?;
            writeln!(
                ctx.log,
                "resumed from the checkpoint of epoch {e} ({})",
                dir.display()
            )?;
        }
        None => trainer.evaluate_initial(),
    }
    let ck_params = |e: i64| serde_json::json!({"epoch": e, "train": ctx.key});
    let save = |t: &Trainer<'_>| -> Result<()> {
        let e = t.epoch();
        if keep.contains(&e) {
            ctx.parts
                .put(&key_of(e), CHECKPOINT_KIND, &ck_params(e), &mut |dir| {
                    checkpoint::save(dir, t, &model)
                })?;
        }
        Ok(())
    };
    if trainer.epoch() == 0 {
        save(&trainer)?;
    }
    while trainer.epoch() < epochs {
        let m = trainer.train_epoch().clone();
        writeln!(
            ctx.log,
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
        )?;
        save(&trainer)?;
    }

    write_metrics(
        &ctx.out.join("metrics.parquet"),
        &trainer.metrics[..=epochs as usize],
    )?;
    let refs: Vec<CheckpointRef> = keep
        .iter()
        .map(|&e| CheckpointRef {
            epoch: e,
            key: key_of(e),
        })
        .collect();
    if p.record_examples {
        trainer
            .examples
            .write(&ctx.out.join("examples.parquet"))?;
    }
    std::fs::write(
        ctx.out.join("checkpoints.json"),
        serde_json::to_vec_pretty(&refs)?,
    )?;
    let vars = trainer.net.variables();
    let layers = trainer
        .net
        .layer_names()
        .into_iter()
        .map(|name| LayerInfo {
            variables: vars
                .iter()
                .filter(|(v, _)| trainer.net.layer_of(v) == Some(name.as_str()))
                .map(|(v, _)| v.clone())
                .collect(),
            name,
        })
        .collect();
    let count = |list: &[(String, tch::Tensor)]| -> i64 {
        list.iter().map(|(_, t)| t.numel() as i64).sum()
    };
    let info = ModelInfo {
        model,
        input: [info.channels as i64, info.height as i64, info.width as i64],
        classes: info.classes as i64,
        width: p.width,
        loss: p.loss.as_str().to_string(),
        init: p.init.as_str().to_string(),
        frozen: p.freeze.clone(),
        parameters: count(&trainer.params) + count(&trainer.frozen),
        frozen_parameters: count(&trainer.frozen),
        layers,
    };
    std::fs::write(
        ctx.out.join("model.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    Ok(())
}
