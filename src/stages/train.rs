//! `train`: trains a network on the corrupted training labels, keeping checkpoints.
//!
//! Output: `metrics.parquet` (one row per epoch, 0 = initialization), `checkpoints.json`
//! (epoch -> checkpoint key) and `model.json` (layers and the variables of each).
//! Each kept epoch is its own artifact (a part, see `StageKind::parts`) whose key leaves
//! out `epochs` and `checkpoints`, so a longer run resumes from a shorter one's last epoch.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::ml::checkpoint::{self, CheckpointRef};
use crate::ml::models::{Arch, MODELS};
use crate::ml::optim::{OptimizerConfig, Schedule};
use crate::ml::train::{TrainConfig, Trainer};
use crate::ml::{data, device};
use crate::plan::compute_key;
use crate::stage::{
    CheckEnv, Inputs, ParamError, ParamSpec, ParamType, Params, Part, RunContext, Slot, StageKind,
};

/// The `train` stage kind.
pub struct Train;

/// Code version of `train` and of its checkpoints.
pub const VERSION: u32 = 1;

/// The kind recorded in checkpoint manifests (and hashed into their keys).
pub const CHECKPOINT_KIND: &str = "train.checkpoint";

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "model",
        ParamType::Enum(MODELS),
        "mlp, cnn (28x28), vgg11, vgg16, resnet18, alexnet (CIFAR)",
    ),
    ParamSpec::default(
        "hidden",
        ParamType::List(&ParamType::Int),
        "[512, 512]",
        "mlp: hidden layer widths",
    ),
    ParamSpec::default(
        "batch_norm",
        ParamType::Bool,
        "false",
        "vgg: BatchNorm after each conv",
    ),
    ParamSpec::required("epochs", ParamType::Int, "training epochs"),
    ParamSpec::default("batch_size", ParamType::Int, "128", "examples per step"),
    ParamSpec::default(
        "optimizer",
        ParamType::Enum(&["sgd", "adam"]),
        "\"sgd\"",
        "sgd or adam",
    ),
    ParamSpec::required("lr", ParamType::Float, "base learning rate"),
    ParamSpec::default("momentum", ParamType::Float, "0.9", "sgd momentum"),
    ParamSpec::default(
        "nesterov",
        ParamType::Bool,
        "false",
        "sgd: Nesterov momentum",
    ),
    ParamSpec::default("weight_decay", ParamType::Float, "0.0", "L2 penalty"),
    ParamSpec::default(
        "schedule",
        ParamType::Enum(&["constant", "step", "cosine"]),
        "\"constant\"",
        "learning-rate schedule",
    ),
    ParamSpec::default(
        "milestones",
        ParamType::List(&ParamType::Int),
        "[]",
        "step: epochs after which lr is multiplied by gamma",
    ),
    ParamSpec::default("gamma", ParamType::Float, "0.1", "step: the factor"),
    ParamSpec::default(
        "augment",
        ParamType::Bool,
        "false",
        "random crop (pad 4) and horizontal flip",
    ),
    ParamSpec::default(
        "seed",
        ParamType::Int,
        "0",
        "seeds initialization, data order and augmentation",
    ),
    ParamSpec::default(
        "checkpoints",
        ParamType::List(&ParamType::Int),
        "[0]",
        "epochs whose weights are kept (0 = initialization); the final epoch always is",
    ),
    ParamSpec::default(
        "device",
        ParamType::Str,
        "\"auto\"",
        "auto, cpu, cuda or cuda:N (not in the key)",
    )
    .not_in_key(),
    ParamSpec::default(
        "threads",
        ParamType::Int,
        "1",
        "libtorch threads (not in the key)",
    )
    .not_in_key(),
];

/// Layers and their variables, as `model.json` lists them.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The `model` parameter.
    pub model: String,
    /// Input shape `[channels, height, width]`.
    pub input: [i64; 3],
    /// Number of classes.
    pub classes: i64,
    /// Layers in order (`input` first) with the variables each owns.
    pub layers: Vec<LayerInfo>,
}

/// One layer in `model.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Layer name.
    pub name: String,
    /// Names of its variables in the checkpoints' `weights.safetensors`.
    pub variables: Vec<String>,
}

/// The epochs kept: the `checkpoints` list and the final epoch.
fn kept(params: &Params) -> BTreeSet<i64> {
    let mut k: BTreeSet<i64> = match params.get("checkpoints") {
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_i64).collect(),
        _ => BTreeSet::new(),
    };
    k.insert(params.int("epochs").unwrap_or(0));
    k
}

/// The key of the checkpoint at `epoch`: the training parameters minus `epochs` (unless the
/// schedule depends on it) and `checkpoints`, plus the epoch.
pub fn checkpoint_key(params: &Params, input_keys: &[(String, String)], epoch: i64) -> String {
    let mut p = serde_json::Map::new();
    for spec in PARAMS.iter().filter(|s| s.in_key) {
        if let Some(v) = params.get(spec.name) {
            p.insert(spec.name.to_string(), v.clone());
        }
    }
    p.remove("checkpoints");
    if params.str("schedule") != Some("cosine") {
        p.remove("epochs");
    }
    p.insert("epoch".into(), Json::from(epoch));
    compute_key(CHECKPOINT_KIND, VERSION, &p, input_keys, &[])
}

fn config(params: &Params) -> Result<TrainConfig, ParamError> {
    let model = params.str("model").unwrap_or_default();
    let hidden: Vec<i64> = match params.get("hidden") {
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_i64).collect(),
        _ => Vec::new(),
    };
    let arch = Arch::from_name(model, hidden, params.bool("batch_norm").unwrap_or(false))
        .ok_or_else(|| ParamError::param("model", format!("unknown model {model}")))?;
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
    let device = device::resolve(params.str("device").unwrap_or("auto"))
        .map_err(|m| ParamError::param("device", m))?;
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

impl StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn about(&self) -> &'static str {
        "trains a network on the corrupted labels; per-epoch metrics and checkpoints (each its own artifact)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[
            Slot {
                name: "dataset",
                kinds: &["dataset"],
            },
            Slot {
                name: "labels",
                kinds: &["corrupt"],
            },
        ])
    }
    fn check(&self, params: &Params, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let epochs = params.int("epochs").unwrap_or(0);
        if epochs < 1 {
            return Err(ParamError::param("epochs", "must be at least 1"));
        }
        if params.int("batch_size").unwrap_or(0) < 1 {
            return Err(ParamError::param("batch_size", "must be at least 1"));
        }
        let lr = params.float("lr").unwrap_or(0.0);
        if lr <= 0.0 {
            return Err(ParamError::param(
                "lr",
                format!("must be positive, got {lr}"),
            ));
        }
        if !(0.0..1.0).contains(&params.float("momentum").unwrap_or(0.0)) {
            return Err(ParamError::param("momentum", "must be in [0, 1)"));
        }
        if params.float("weight_decay").unwrap_or(0.0) < 0.0 {
            return Err(ParamError::param("weight_decay", "must not be negative"));
        }
        if params.float("gamma").unwrap_or(1.0) <= 0.0 {
            return Err(ParamError::param("gamma", "must be positive"));
        }
        if params.int("threads").unwrap_or(1) < 1 {
            return Err(ParamError::param("threads", "must be at least 1"));
        }
        if let Some(Json::Array(h)) = params.get("hidden")
            && h.iter().any(|w| w.as_i64().is_none_or(|w| w < 1))
        {
            return Err(ParamError::param("hidden", "widths must be at least 1"));
        }
        if let Some(Json::Array(c)) = params.get("checkpoints")
            && let Some(bad) = c
                .iter()
                .filter_map(Json::as_i64)
                .find(|e| *e < 0 || *e > epochs)
        {
            return Err(ParamError::param(
                "checkpoints",
                format!("epoch {bad} is outside 0..={epochs}"),
            ));
        }
        config(params).map(|_| ())
    }
    fn parts(&self, params: &Params, input_keys: &[(String, String)]) -> Vec<Part> {
        kept(params)
            .into_iter()
            .map(|e| Part {
                name: format!("epoch {e}"),
                key: checkpoint_key(params, input_keys, e),
            })
            .collect()
    }
    fn threads(&self, params: &Params) -> usize {
        params.int("threads").unwrap_or(1).max(1) as usize
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let cfg = config(ctx.params).map_err(|e| anyhow::anyhow!(e.message))?;
        tch::set_num_threads(ctx.threads as i32);
        let model = ctx.params.str("model").unwrap_or_default().to_string();
        let data = data::load(ctx.input("dataset")?, ctx.input("labels")?, cfg.device)?;
        let info = &data.info;
        cfg.arch
            .check_input(info.channels as i64, info.height as i64, info.width as i64)
            .map_err(|m| anyhow::Error::new(crate::stage::BadData(m)))?;
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

        checkpoint::write_metrics(
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
}
