//! `train`: trains a network on the corrupted training labels, keeping checkpoints.
//!
//! Output: `metrics.parquet` (one row per epoch, 0 = initialization), `checkpoints.json`
//! (epoch -> checkpoint key), `model.json` (layers and the variables of each) and, with
//! `record_examples`, `examples.parquet` (one row per training example and epoch).
//! Each kept epoch is its own artifact (a part, see `StageKind::parts`) whose key leaves
//! out `epochs` and `checkpoints`, so a longer run resumes from a shorter one's last epoch.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::stages::slots;
use crate::worker::WorkerParams;
use pipe_engine::plan::compute_key;
use pipe_engine::stage::{CheckEnv, Inputs, KeyInputs, Kind, KindParams, ParamError, Part};
use pipe_engine::table::StoredTable;

/// The kind's name, as written `kind = "train"`.
pub const NAME: &str = slots::names::TRAIN;

/// Code version of `train` and of its checkpoints.
pub const VERSION: u32 = 4;

/// The kind recorded in checkpoint manifests (and hashed into their keys).
pub const CHECKPOINT_KIND: &str = "train.checkpoint";

pipe_engine::param_enum! {
    /// The network architectures.
    pub enum Model {
        Mlp = "mlp",
        Cnn = "cnn",
        Vgg11 = "vgg11",
        Vgg16 = "vgg16",
        Resnet18 = "resnet18",
        Alexnet = "alexnet",
        /// A TorchScript module from the `module` input (see README, "Your own model").
        Script = "script",
    }
}

pipe_engine::param_enum! {
    /// The optimizers.
    pub enum Optimizer {
        Sgd = "sgd",
        Adam = "adam",
    }
}

pipe_engine::param_enum! {
    /// The learning-rate schedules.
    pub enum Schedule {
        Constant = "constant",
        Step = "step",
        Cosine = "cosine",
    }
}

pipe_engine::param_enum! {
    /// The training losses.
    pub enum Loss {
        /// Softmax cross-entropy on the labels.
        CrossEntropy = "cross_entropy",
        /// Squared error between the logits and one-hot targets (mean over all entries).
        Mse = "mse",
    }
}

pipe_engine::param_enum! {
    /// How weights are initialized.
    pub enum Init {
        /// He et al.'s uniform for ReLU networks, U(+-sqrt(6 / fan_in)).
        Kaiming = "kaiming",
        /// PyTorch's nn.Linear / nn.Conv2d default, U(+-1/sqrt(fan_in)), biases alike.
        Torch = "torch",
        /// `model = "script"` only: the module's own weights, as saved.
        Module = "module",
    }
}

pipe_engine::stage_params! {
    /// The parameters of `train`.
    pub struct TrainParams {
        model: Model, required, "mlp, cnn (28x28), vgg11, vgg16, resnet18, alexnet (CIFAR), or script (a TorchScript module from the `module` input)";
        hidden: Vec<i64>, default "[512, 512]", "mlp: hidden layer widths";
        width: Option<f64>, optional, "cnn, vgg, alexnet: channel multiplier (1 = standard widths); resnet18: k, stage widths k, 2k, 4k, 8k (64 = standard)";
        loss: Loss, default "\"cross_entropy\"", "cross_entropy, or mse (squared error to one-hot targets)";
        freeze: Vec<String>, default "[]", "layers kept at their initial weights (trained as given, kept in checkpoints)";
        init: Init, default "\"kaiming\"", "weights: kaiming (U(+-sqrt(6/fan_in))) or torch (PyTorch's default, U(+-1/sqrt(fan_in))), drawn from `seed`; script: also module (the module's own weights)";
        batch_norm: bool, default "false", "vgg: BatchNorm after each conv";
        epochs: i64, required, "training epochs";
        batch_size: i64, default "128", "examples per step";
        optimizer: Optimizer, default "\"sgd\"", "sgd or adam";
        lr: f64, required, "base learning rate";
        momentum: f64, default "0.9", "sgd momentum";
        nesterov: bool, default "false", "sgd: Nesterov momentum";
        weight_decay: f64, default "0.0", "L2 penalty";
        schedule: Schedule, default "\"constant\"", "learning-rate schedule";
        milestones: Vec<i64>, default "[]", "step: epochs after which lr is multiplied by gamma";
        gamma: f64, default "0.1", "step: the factor";
        augment: bool, default "false", "random crop (pad 4) and horizontal flip";
        seed: i64, default "0", "seeds initialization, data order and augmentation";
        checkpoints: Vec<i64>, default "[0]", "epochs whose weights are kept (0 = initialization); the final epoch always is";
        record_examples: bool, default "false", key_unless_default, "record every training example's loss, margin, prediction and last-layer gradient after each epoch (examples.parquet, which `detect` reads)";
        resume_every: Option<String>, optional, not_in_key, "keep a resume point at the first epoch boundary after each such span of training (\"10m\", \"1h\"), so that a crash loses at most about that much (not in the key)";
        finish_within: String, default "\"2s\"", not_in_key, "on Ctrl-C or SIGTERM, finish the epoch under way (and keep its end) when it would end within this long, else keep the last epoch boundary reached (\"0s\": always the boundary; not in the key)";
        ..worker: WorkerParams;
    }
}

impl TrainParams {
    /// The span of training after which a resume point is kept (`resume_every`), if any.
    pub fn resume_span(&self) -> Option<std::time::Duration> {
        self.resume_every
            .as_deref()
            .and_then(pipe_engine::spec::resources::parse_duration)
    }

    /// How long the epoch under way may still take, on a stop, to be finished and kept
    /// (`finish_within`); `None` if it is not a duration.
    pub fn finish_span(&self) -> Option<std::time::Duration> {
        match self.finish_within.trim() {
            "0" | "0s" => Some(std::time::Duration::ZERO),
            s => pipe_engine::spec::resources::parse_duration(s),
        }
    }

    /// The epochs kept: the `checkpoints` list and the final epoch.
    pub fn kept(&self) -> BTreeSet<i64> {
        let mut k: BTreeSet<i64> = self.checkpoints.iter().copied().collect();
        k.insert(self.epochs);
        k
    }

    /// The key of the checkpoint at `epoch`: the training parameters minus `epochs` (unless
    /// the schedule depends on it) and `checkpoints`, plus the epoch.
    pub fn checkpoint_key(&self, keys: &KeyInputs<'_>, epoch: i64) -> String {
        let leave_out: &[&str] = if self.schedule == Schedule::Cosine {
            &[TrainParams::checkpoints]
        } else {
            &[TrainParams::checkpoints, TrainParams::epochs]
        };
        let mut p = keys.key_params(TrainParams::specs(), leave_out);
        p.insert("epoch".into(), serde_json::Value::from(epoch));
        compute_key(CHECKPOINT_KIND, VERSION, &p, keys.input_keys, &[])
    }

    /// Checks `width` against the model: a positive multiplier, or resnet18's whole k.
    fn check_width(&self, w: f64) -> Result<(), ParamError> {
        match self.model {
            Model::Mlp => Err(ParamError::param(
                TrainParams::width,
                "mlp takes its widths from `hidden`",
            )),
            Model::Resnet18 if w < 1.0 || w.fract() != 0.0 => Err(ParamError::param(
                TrainParams::width,
                format!("resnet18: k must be a whole number of channels, at least 1, got {w}"),
            )),
            _ if !(w > 0.0 && w.is_finite()) => Err(ParamError::param(
                TrainParams::width,
                format!("must be a positive multiplier, got {w}"),
            )),
            _ => Ok(()),
        }
    }

    /// The layer names of the model (`input` first), as the models in `pipe-torch` name
    /// them (a test there checks the two agree); `None` for a scripted module, whose layers
    /// are known only when it loads (the worker checks names against them).
    pub fn layer_names(&self) -> Option<Vec<String>> {
        let mut names = vec!["input".to_string()];
        fn numbered(prefix: &'static str, n: usize) -> impl Iterator<Item = String> {
            (1..=n).map(move |i| format!("{prefix}{i}"))
        }
        match self.model {
            Model::Mlp => names.extend(numbered("fc", self.hidden.len())),
            Model::Cnn => names.extend(["conv1", "conv2", "fc1"].map(String::from)),
            Model::Vgg11 => names.extend(numbered("conv", 8)),
            Model::Vgg16 => names.extend(numbered("conv", 13)),
            Model::Resnet18 => {
                names.push("conv1".into());
                for stage in 1..=4 {
                    names.extend((0..2).map(|b| format!("layer{stage}.{b}")));
                }
            }
            Model::Alexnet => names.extend(["conv1", "conv2", "fc1", "fc2"].map(String::from)),
            Model::Script => return None,
        }
        names.push("logits".into());
        Some(names)
    }

    /// Checks what a scripted module needs and built-in models refuse: the `module` input
    /// exactly when `model = "script"`, `init = "module"` only then, and no parameters of
    /// the built-in architectures with it.
    fn check_script(&self, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let has_module = env.input(slots::MODULE.name).is_some();
        if self.model != Model::Script {
            if has_module {
                return Err(ParamError::param(
                    TrainParams::model,
                    format!(
                        "a `module` input is trained only with model = \"script\", not \"{}\"",
                        self.model.as_str()
                    ),
                ));
            }
            if self.init == Init::Module {
                return Err(ParamError::param(
                    TrainParams::init,
                    "\"module\" keeps a scripted module's own weights: only with model = \"script\"",
                ));
            }
            return Ok(());
        }
        if !has_module {
            return Err(ParamError::param(
                TrainParams::model,
                "\"script\" trains the TorchScript module of a `module` input (an exec stage that writes $PIPE_OUT/model.pt); add it to `inputs`",
            ));
        }
        if self.width.is_some() {
            return Err(ParamError::param(
                TrainParams::width,
                "a scripted module has its own widths",
            ));
        }
        if self.batch_norm {
            return Err(ParamError::param(
                TrainParams::batch_norm,
                "a scripted module has its own layers",
            ));
        }
        Ok(())
    }
}

/// Checks that every kept epoch is within 0..=`epochs`.
fn checkpoints_within(p: &TrainParams) -> Result<(), ParamError> {
    match p.checkpoints.iter().find(|&&e| e < 0 || e > p.epochs) {
        Some(bad) => Err(ParamError::param(
            TrainParams::checkpoints,
            format!("epoch {bad} is outside 0..={}", p.epochs),
        )),
        None => Ok(()),
    }
}

/// The file a `module` input holds: the TorchScript module of `model = "script"`.
pub const MODULE_FILE: &str = "model.pt";

/// The name of the part holding the checkpoint of `epoch` (`epoch 5`).
pub fn checkpoint_part(epoch: i64) -> String {
    format!("epoch {epoch}")
}

/// The `train` stage kind.
pub struct Train;

/// Layers and their variables, as `model.json` lists them.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The `model` parameter.
    pub model: String,
    /// Input shape `[channels, height, width]`.
    pub input: [i64; 3],
    /// Number of classes.
    pub classes: i64,
    /// The `width` parameter, if given.
    #[serde(default)]
    pub width: Option<f64>,
    /// The training loss.
    #[serde(default)]
    pub loss: String,
    /// The weight initialization.
    #[serde(default)]
    pub init: String,
    /// Layers kept at their initial weights.
    #[serde(default)]
    pub frozen: Vec<String>,
    /// Trainable parameters (frozen layers' included), and those of frozen layers.
    #[serde(default)]
    pub parameters: i64,
    /// Parameters of the frozen layers.
    #[serde(default)]
    pub frozen_parameters: i64,
    /// Layers in order (`input` first) with the variables each owns.
    pub layers: Vec<LayerInfo>,
    /// `model = "script"`: the module trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleFile>,
}

/// The TorchScript module a scripted run trained, in `model.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModuleFile {
    /// Its file name in the `module` input.
    pub file: String,
    /// blake3 of the file, hex.
    pub blake3: String,
    /// Buffers (BatchNorm statistics and the like) among the layers' variables.
    pub buffers: Vec<String>,
}

/// One layer in `model.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Layer name.
    pub name: String,
    /// Names of its variables in the checkpoints' `weights.safetensors`.
    pub variables: Vec<String>,
    /// Scripted modules: the number of trainable parameters of the layer (frozen included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<i64>,
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

impl Kind for Train {
    type Params = TrainParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const ABOUT: &'static str = "trains a network on the corrupted labels; per-epoch metrics and checkpoints (each its own artifact)";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[slots::DATASET, slots::LABELS, slots::MODULE])
    }
    fn check(&self, p: &TrainParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        p.check_script(env)?;
        if p.epochs < 1 {
            return Err(ParamError::param(TrainParams::epochs, "must be at least 1"));
        }
        if p.batch_size < 1 {
            return Err(ParamError::param(
                TrainParams::batch_size,
                "must be at least 1",
            ));
        }
        if p.lr <= 0.0 {
            return Err(ParamError::param(
                TrainParams::lr,
                format!("must be positive, got {}", p.lr),
            ));
        }
        if !(0.0..1.0).contains(&p.momentum) {
            return Err(ParamError::param(
                TrainParams::momentum,
                "must be in [0, 1)",
            ));
        }
        if p.weight_decay < 0.0 {
            return Err(ParamError::param(
                TrainParams::weight_decay,
                "must not be negative",
            ));
        }
        if p.gamma <= 0.0 {
            return Err(ParamError::param(TrainParams::gamma, "must be positive"));
        }
        if p.hidden.iter().any(|&w| w < 1) {
            return Err(ParamError::param(
                TrainParams::hidden,
                "widths must be at least 1",
            ));
        }
        if let Some(w) = p.width {
            p.check_width(w)?;
        }
        if let Some(every) = &p.resume_every
            && p.resume_span().is_none()
        {
            return Err(ParamError::param(
                TrainParams::resume_every,
                format!("\"{every}\" is not a duration like \"10m\", \"1h30m\" or \"90s\""),
            ));
        }
        if p.finish_span().is_none() {
            return Err(ParamError::param(
                TrainParams::finish_within,
                format!(
                    "\"{}\" is not a duration like \"2s\", \"1m\" or \"0s\"",
                    p.finish_within
                ),
            ));
        }
        let Some(names) = p.layer_names() else {
            // A scripted module's layer names are checked when it loads.
            return checkpoints_within(p).and_then(|()| p.worker.check());
        };
        for l in &p.freeze {
            if l == "input" || !names.contains(l) {
                return Err(ParamError::param(
                    TrainParams::freeze,
                    format!(
                        "unknown layer \"{l}\"{}; this model's layers: {}",
                        pipe_engine::error::suggest(l, names.iter().skip(1).map(String::as_str)),
                        names[1..].join(", ")
                    ),
                ));
            }
        }
        if p.freeze.len() == names.len() - 1 {
            return Err(ParamError::param(
                TrainParams::freeze,
                "freezes every layer: nothing would train",
            ));
        }
        checkpoints_within(p)?;
        p.worker.check()
    }
    fn parts(&self, p: &TrainParams, keys: &KeyInputs<'_>) -> Vec<Part> {
        p.kept()
            .into_iter()
            .map(|e| Part {
                name: checkpoint_part(e),
                key: p.checkpoint_key(keys, e),
            })
            .collect()
    }
    fn tables(&self, p: &TrainParams) -> Vec<String> {
        let mut tables = vec![crate::tables::Metrics::NAME.to_string()];
        if p.record_examples {
            tables.push(crate::tables::Examples::NAME.into());
        }
        tables
    }
    crate::worker::worker_kind_methods!(TrainParams);
}
