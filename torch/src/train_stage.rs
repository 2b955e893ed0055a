//! The `train` stage's work: load data, resume from the latest usable checkpoint, train,
//! store kept epochs as parts, write metrics, the checkpoint list and the layer map.

use std::io::Write;

use anyhow::{Context, Result};
use pipe::stage::{BadData, Params, RunContext};
use pipe::stages::train::{
    CHECKPOINT_KIND, CheckpointRef, LayerInfo, ModelInfo, checkpoint_key, kept, write_metrics,
};
use serde_json::Value as Json;

use crate::checkpoint;
use crate::models::Arch;
use crate::optim::{OptimizerConfig, Schedule};
use crate::train::{TrainConfig, Trainer};
use crate::{data, device};

pub fn config(params: &Params) -> Result<TrainConfig, String> {
    let model = params.str("model").unwrap_or_default();
    let hidden: Vec<i64> = match params.get("hidden") {
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_i64).collect(),
        _ => Vec::new(),
    };
    let arch = Arch::from_name(model, hidden, params.bool("batch_norm").unwrap_or(false))
        .ok_or_else(|| format!("unknown model {model}"))?;
    let optimizer = match params.str("optimizer") {
        Some("adam") => OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: params.float("weight_decay").unwrap_or(0.0),
        },
        _ => OptimizerConfig::Sgd {
            momentum: params.float("momentum").unwrap_or(0.0),
            nesterov: params.bool("nesterov").unwrap_or(false),
            weight_decay: params.float("weight_decay").unwrap_or(0.0),
        },
    };
    let schedule = match params.str("schedule") {
        Some("step") => Schedule::Step {
            milestones: match params.get("milestones") {
                Some(Json::Array(a)) => a.iter().filter_map(Json::as_i64).collect(),
                _ => Vec::new(),
            },
            gamma: params.float("gamma").unwrap_or(0.1),
        },
        Some("cosine") => Schedule::Cosine,
        _ => Schedule::Constant,
    };
    let device = device::resolve(params.str("device").unwrap_or("auto"))?;
    Ok(TrainConfig {
        arch,
        epochs: params.int("epochs").unwrap_or(0),
        batch_size: params.int("batch_size").unwrap_or(128),
        optimizer,
        lr: params.float("lr").unwrap_or(0.0),
        schedule,
        augment: params.bool("augment").unwrap_or(false),
        seed: params.int("seed").unwrap_or(0) as u64,
        device,
    })
}

/// Trains one instance (see `pipe::stages::train` for the parameters and outputs).
pub fn run(ctx: &mut RunContext<'_>) -> Result<()> {
    let cfg = config(ctx.params).map_err(anyhow::Error::msg)?;
    tch::set_num_threads(ctx.threads as i32);
    let model = ctx.params.str("model").unwrap_or_default().to_string();
    let data = data::load(ctx.input("dataset")?, ctx.input("labels")?, cfg.device)?;
    let info = &data.info;
    cfg.arch
        .check_input(info.channels as i64, info.height as i64, info.width as i64)
        .map_err(|m| anyhow::Error::new(BadData(m)))?;
    let input_keys: Vec<(String, String)> = ctx
        .inputs
        .iter()
        .map(|i| (i.slot.clone(), i.key.clone()))
        .collect();
    let keep = kept(ctx.params);
    let epochs = cfg.epochs;
    let key_of = |e: i64| checkpoint_key(ctx.params, &input_keys, e);
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
            "epoch {:>4}  lr {:.5}  train loss {:.4} acc {:.4}  clean {:.4}  corrupted(train) {}  corrupted(true) {}  test loss {:.4} acc {:.4}  {:.2}s",
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
    let info = ModelInfo {
        model,
        input: [info.channels as i64, info.height as i64, info.width as i64],
        classes: info.classes as i64,
        layers,
    };
    std::fs::write(
        ctx.out.join("model.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    Ok(())
}
