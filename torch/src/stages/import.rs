//! The `import` stage's check, run when its command has exited: the output must be a
//! training run in the layout `pipe_kinds::stages::import` documents. Every failure is
//! `BadData` naming the file and what is missing or malformed (the instance fails and
//! nothing is stored). A run that passes gets `model.json`, as a `train` run has.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use pipe_engine::stage::{BadData, RunContext};
use pipe_engine::table::StoredTable;
use pipe_kinds::stages::import::{self, ImportParams};
use pipe_kinds::stages::slots;
use pipe_kinds::stages::train::Loss;
use pipe_kinds::stages::train::{LayerInfo, MODULE_FILE, ModelInfo, ModuleFile};
use pipe_kinds::tables::{Examples, Metrics};
use tch::{Device, Tensor};

use crate::data::{self, TrainData};
use crate::models::{Arch, Net, WeightInit};
use crate::optim::{OptimizerConfig, Schedule};
use crate::records::TrainRecords;
use crate::trainer::{self, TrainConfig, Trainer};

/// A failure of the layout, for the user.
fn bad(message: String) -> anyhow::Error {
    anyhow::Error::new(BadData(format!("the imported run: {message}")))
}

/// Checks one epoch's weights file against the module's variables: the same names, shapes
/// and element types, nothing more and nothing less.
fn check_weights(file: &Path, rel: &str, vars: &[(String, Tensor)]) -> Result<()> {
    if !file.is_file() {
        return Err(bad(format!(
            "{rel} is missing: the command must write one weights file per epoch listed in `epochs`"
        )));
    }
    let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(file)
        .map_err(|e| bad(format!("{rel} is not a safetensors file: {e}")))?
        .into_iter()
        .collect();
    let missing: Vec<&str> = vars
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !saved.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "{rel} lacks the module's {} {}",
            if missing.len() == 1 {
                "variable"
            } else {
                "variables"
            },
            missing.join(", ")
        )));
    }
    let extra: Vec<&str> = saved
        .keys()
        .map(String::as_str)
        .filter(|n| !vars.iter().any(|(v, _)| v == n))
        .collect();
    if !extra.is_empty() {
        return Err(bad(format!(
            "{rel} holds {}, which the module does not have (its variables: {})",
            extra.join(", "),
            vars.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for (name, var) in vars {
        let t = &saved[name];
        if t.size() != var.size() || t.kind() != var.kind() {
            return Err(bad(format!(
                "{rel}: {name} is {:?} {:?}, the module's is {:?} {:?}",
                t.kind(),
                t.size(),
                var.kind(),
                var.size()
            )));
        }
    }
    Ok(())
}

/// `model.json` of an imported run: the module's layers with their variables.
fn model_info(net: &Net, input: [i64; 3], classes: i64, module: &Path) -> Result<ModelInfo> {
    let vars = net.variables();
    let script = net.script();
    let params: &[(String, Tensor)] = script.map_or(&[], |s| s.parameters());
    let layers = net
        .layer_names()
        .into_iter()
        .map(|name| {
            let own = |(v, _): &&(String, Tensor)| net.layer_of(v) == Some(name.as_str());
            LayerInfo {
                variables: vars.iter().filter(own).map(|(v, _)| v.clone()).collect(),
                parameters: Some(
                    params
                        .iter()
                        .filter(own)
                        .map(|(_, t)| t.numel() as i64)
                        .sum(),
                ),
                name,
            }
        })
        .collect();
    Ok(ModelInfo {
        model: import::NAME.to_string(),
        input,
        classes,
        width: None,
        loss: String::new(),
        init: String::new(),
        frozen: Vec::new(),
        parameters: params.iter().map(|(_, t)| t.numel() as i64).sum(),
        frozen_parameters: 0,
        layers,
        module: Some(ModuleFile {
            file: MODULE_FILE.to_string(),
            blake3: pipe_engine::stamp::hash_file(module)
                .with_context(|| format!("hashing {}", module.display()))?
                .0,
            buffers: script
                .map(|s| s.buffers().iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default(),
        }),
    })
}

/// With `record_examples`: evaluates the weights of every epoch 0..=final on the training
/// set, as `train` does after each epoch, and writes `examples.parquet` from them.
fn record_examples(
    p: &ImportParams,
    data: &TrainData,
    module: &Path,
    ctx: &mut RunContext<'_>,
) -> Result<()> {
    let file = Examples::path_in(ctx.out);
    if file.exists() {
        return Err(bad(format!(
            "{} is written by pipe with record_examples; the command wrote one too",
            Examples::FILE
        )));
    }
    let cfg = TrainConfig {
        arch: Arch::Script {
            file: module.to_path_buf(),
        },
        epochs: p.final_epoch(),
        batch_size: 1,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        lr: 0.0,
        schedule: Schedule::Constant,
        augment: false,
        seed: 0,
        loss: match p.loss {
            Loss::CrossEntropy => trainer::Loss::CrossEntropy,
            Loss::Mse => trainer::Loss::Mse,
        },
        init: WeightInit::Module,
        freeze: Vec::new(),
        device: Device::Cpu,
        record_examples: true,
    };
    let mut trainer = Trainer::new(cfg, data).map_err(|m| bad(format!("{MODULE_FILE}: {m}")))?;
    let mut records = TrainRecords::new(true);
    for e in 0..=p.final_epoch() {
        let evaluation = trainer
            .evaluate_saved(e, &ctx.out.join(import::weights_file(e)))
            .with_context(|| format!("evaluating the weights of epoch {e}"))?;
        records.push(&evaluation, data)?;
    }
    if let Some(examples) = &records.examples {
        examples.write_in(ctx.out)?;
        writeln!(
            ctx.log,
            "recorded {} examples at epochs 0..={} from the weights",
            data.indices.len(),
            p.final_epoch()
        )?;
    }
    Ok(())
}

/// Checks the output of an `import` instance's command and writes its `model.json`.
pub fn run(p: &ImportParams, ctx: &mut RunContext<'_>) -> Result<()> {
    tch::set_num_threads(ctx.threads as i32);
    let device = Device::Cpu;
    let data = data::load(
        ctx.input(slots::DATASET.name)?,
        ctx.input(slots::LABELS.name)?,
        device,
    )?;
    let module = ctx.out.join(MODULE_FILE);
    if !module.is_file() {
        return Err(bad(format!(
            "{MODULE_FILE} is missing: the command must save its TorchScript module as $PIPE_OUT/{MODULE_FILE}"
        )));
    }
    let net = Net::new(
        &Arch::Script {
            file: module.clone(),
        },
        data.input_shape(),
        data.classes(),
        device,
    )
    .map_err(|m| bad(format!("{MODULE_FILE}: {m}")))?;
    let vars = net.variables();
    let mut epochs = p.epochs.clone();
    epochs.sort_unstable();
    for &e in &epochs {
        let rel = import::weights_file(e);
        check_weights(&ctx.out.join(&rel), &rel, &vars)?;
    }
    let metrics = Metrics::read_in(ctx.out).map_err(|e| {
        bad(if Metrics::path_in(ctx.out).is_file() {
            format!(
                "{} does not have the train schema (epoch, lr, train_loss, train_acc, clean_acc, corrupted_train_acc, corrupted_true_acc, test_loss, test_acc): {e:#}",
                Metrics::FILE
            )
        } else {
            format!(
                "{} is missing: the command must write its per-epoch metrics in the train schema",
                Metrics::FILE
            )
        })
    })?;
    if metrics.epoch.is_empty() {
        return Err(bad(format!("{} has no rows", Metrics::FILE)));
    }
    if p.record_examples {
        record_examples(p, &data, &module, ctx)?;
    }
    let info = model_info(&net, data.input_shape(), data.classes(), &module)?;
    std::fs::write(
        ctx.out.join("model.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    writeln!(
        ctx.log,
        "imported run checked: {MODULE_FILE} ({} layers), weights of epochs {epochs:?}, {} ({} rows)",
        info.layers.len(),
        Metrics::FILE,
        metrics.epoch.len()
    )?;
    Ok(())
}
