//! `train`: trains a network on the corrupted training labels, keeping checkpoints.
//!
//! Output: `metrics.parquet` (one row per epoch, 0 = initialization), `checkpoints.json`
//! (epoch -> checkpoint key) and `model.json` (layers and the variables of each).
//! Each kept epoch is its own artifact (a part, see `StageKind::parts`) whose key leaves
//! out `epochs` and `checkpoints`, so a longer run resumes from a shorter one's last epoch.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::plan::compute_key;
use crate::stage::{
    CheckEnv, Inputs, ParamError, ParamSpec, ParamType, Params, Part, RunContext, Slot, StageKind,
};
use crate::table::{read_parquet, write_parquet};

/// The `device` parameter of every stage kind that runs in the libtorch worker.
pub const DEVICE_PARAM: ParamSpec = ParamSpec::default(
    "device",
    ParamType::Str,
    "\"auto\"",
    "auto, cpu, cuda or cuda:N (not in the key)",
)
.not_in_key();

/// The `threads` parameter of every stage kind that runs in the libtorch worker.
pub const THREADS_PARAM: ParamSpec = ParamSpec::default(
    "threads",
    ParamType::Int,
    "1",
    "libtorch threads (not in the key)",
)
.not_in_key();

/// Checks [`DEVICE_PARAM`] and [`THREADS_PARAM`] of a worker stage kind.
pub fn check_worker_params(params: &Params) -> Result<(), ParamError> {
    if params.int("threads").unwrap_or(1) < 1 {
        return Err(ParamError::param("threads", "must be at least 1"));
    }
    check_device(params.str("device").unwrap_or("auto")).map_err(|m| ParamError::param("device", m))
}

/// Threads a worker stage kind asks for ([`THREADS_PARAM`]).
pub fn worker_threads(params: &Params) -> usize {
    params.int("threads").unwrap_or(1).max(1) as usize
}

/// Cluster resources of a worker stage kind: its threads as CPUs, and one GPU when its
/// `device` names a CUDA device (`auto` asks for none).
pub fn worker_resources(params: &Params) -> crate::spec::Resources {
    crate::spec::Resources {
        cpus: Some(worker_threads(params) as u32),
        gpus: Some(u32::from(
            params.str("device").is_some_and(|d| d.starts_with("cuda")),
        )),
        ..Default::default()
    }
}

/// Model names accepted by the `model` parameter.
pub const MODELS: &[&str] = &["mlp", "cnn", "vgg11", "vgg16", "resnet18", "alexnet"];

/// The `train` stage kind.
pub struct Train;

/// Code version of `train` and of its checkpoints.
pub const VERSION: u32 = 2;

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
    DEVICE_PARAM,
    THREADS_PARAM,
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

/// One row of `metrics.parquet`: the state after an epoch (epoch 0 = initialization).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    /// Epoch (0 = before training).
    pub epoch: i64,
    /// Learning rate used during the epoch (0 for epoch 0).
    pub lr: f64,
    /// Mean loss on the whole training set against the training labels.
    pub train_loss: f64,
    /// Accuracy on the whole training set against the training labels.
    pub train_acc: f64,
    /// Accuracy on the clean training examples.
    pub clean_acc: f64,
    /// Accuracy on the corrupted examples against their training labels (memorization).
    pub corrupted_train_acc: Option<f64>,
    /// Accuracy on the corrupted examples against their true labels (generalization).
    pub corrupted_true_acc: Option<f64>,
    /// Mean loss on the test set.
    pub test_loss: f64,
    /// Accuracy on the test set.
    pub test_acc: f64,
    /// Wall-clock seconds of the epoch (training and evaluation). Not deterministic, so it
    /// goes to the log only, never into `metrics.parquet` (read back as 0).
    pub seconds: f64,
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
    let (lr, tl, ta, ca, cta, ctr, xl, xa) = (
        col("lr")?,
        col("train_loss")?,
        col("train_acc")?,
        col("clean_acc")?,
        col("corrupted_train_acc")?,
        col("corrupted_true_acc")?,
        col("test_loss")?,
        col("test_acc")?,
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
            seconds: 0.0,
        })
        .collect())
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

/// The epochs kept: the `checkpoints` list and the final epoch.
pub fn kept(params: &Params) -> BTreeSet<i64> {
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

/// Checks a `device` value: its form, and for CUDA devices that this machine has them.
pub fn check_device(name: &str) -> Result<(), String> {
    let index = match name {
        "auto" | "cpu" => return Ok(()),
        "cuda" => Some(0),
        _ => name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    let Some(n) = index else {
        return Err(format!(
            "device \"{name}\" is not one of auto, cpu, cuda, cuda:N"
        ));
    };
    let count = crate::worker::cuda_devices()?;
    if n >= count {
        return Err(format!(
            "device \"{name}\" is not available: this machine has {count} CUDA device{}; use device = \"cpu\" or \"auto\"",
            if count == 1 { "" } else { "s" }
        ));
    }
    Ok(())
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
        check_worker_params(params)
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
    fn tables(&self, _params: &Params) -> Vec<String> {
        vec!["metrics".into()]
    }
    fn threads(&self, params: &Params) -> usize {
        worker_threads(params)
    }
    fn resources(&self, params: &Params) -> crate::spec::Resources {
        worker_resources(params)
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        crate::worker::run_in_worker("train", ctx)
    }
}

/// The layer names of the model the train parameters describe (`input` first), as the
/// models in `pipe-torch` name them (a test there checks the two agree).
pub fn layer_names(params: &Params) -> Vec<String> {
    let mut names = vec!["input".to_string()];
    fn numbered(prefix: &'static str, n: usize) -> impl Iterator<Item = String> {
        (1..=n).map(move |i| format!("{prefix}{i}"))
    }
    match params.str("model").unwrap_or_default() {
        "mlp" => {
            let hidden = params
                .get("hidden")
                .and_then(Json::as_array)
                .map_or(0, Vec::len);
            names.extend(numbered("fc", hidden));
        }
        "cnn" => names.extend(["conv1", "conv2", "fc1"].map(String::from)),
        "vgg11" => names.extend(numbered("conv", 8)),
        "vgg16" => names.extend(numbered("conv", 13)),
        "resnet18" => {
            names.push("conv1".into());
            for stage in 1..=4 {
                names.extend((0..2).map(|b| format!("layer{stage}.{b}")));
            }
        }
        "alexnet" => names.extend(["conv1", "conv2", "fc1", "fc2"].map(String::from)),
        _ => {}
    }
    names.push("logits".into());
    names
}

/// Checks a downstream `epochs`-style value (an epoch or `"final"`) against the epochs a
/// train instance keeps.
pub fn check_epoch(which: &Json, train: &Params) -> Result<(), String> {
    match which {
        Json::String(s) if s == "final" => Ok(()),
        v => {
            let keep = kept(train);
            match v.as_i64() {
                Some(e) if keep.contains(&e) => Ok(()),
                _ => Err(format!(
                    "the train stage keeps no checkpoint {v}; it keeps epochs {} (and \"final\"); add the epoch to its `checkpoints`",
                    keep.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}
