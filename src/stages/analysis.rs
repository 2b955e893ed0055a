//! Definitions of the analysis stage kinds that run on trained networks: `activations`,
//! `gradnorm` and `rollback`. Their work needs libtorch and runs in the `pipe-torch`
//! worker; here are their parameters, inputs and checks (see science.md for what each
//! measures, and README.md for their outputs).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::stage::{
    CheckEnv, InputInfo, Inputs, ParamError, ParamSpec, ParamType, Params, RunContext, Slot,
    StageKind,
};
use crate::stages::train::{
    DEVICE_PARAM, THREADS_PARAM, check_epoch, check_worker_params, layer_names, worker_resources,
    worker_threads,
};

/// What `activations.json` records.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActivationsInfo {
    /// The epochs stored, in the order requested (`"final"` resolved).
    pub epochs: Vec<i64>,
    /// Layers stored, with widths.
    pub layers: Vec<LayerFeatures>,
    /// Number of classes P.
    pub classes: usize,
    /// Examples per class and group, M.
    pub per_class: usize,
    /// Clean examples in the probe set.
    pub clean: usize,
    /// Corrupted examples in the probe set.
    pub corrupted: usize,
}

/// One stored layer.
#[derive(Debug, Serialize, Deserialize)]
pub struct LayerFeatures {
    /// Layer name.
    pub name: String,
    /// Stored features per example.
    pub features: usize,
    /// Features before projection.
    pub original_features: usize,
}

const TRAIN_INPUT: &[Slot] = &[Slot {
    name: "train",
    kinds: &["train"],
}];

fn train_input<'a>(env: &'a CheckEnv<'_>) -> Result<&'a InputInfo<'a>, ParamError> {
    env.input("train")
        .ok_or_else(|| ParamError::stage("needs a `train` input"))
}

fn check_epochs(params: &Params, name: &'static str, train: &Params) -> Result<(), ParamError> {
    let list = match params.get(name) {
        Some(Json::Array(a)) => a.clone(),
        Some(v) => vec![v.clone()],
        None => return Ok(()),
    };
    if list.is_empty() {
        return Err(ParamError::param(name, "list at least one epoch"));
    }
    for e in &list {
        check_epoch(e, train).map_err(|m| ParamError::param(name, m))?;
    }
    Ok(())
}

/// Checks a `layers`/`cutoffs`-style value: `all_word` or a list of this model's layer names.
fn check_layers(
    params: &Params,
    name: &'static str,
    all_word: &str,
    train: &Params,
    allow_input: bool,
) -> Result<(), ParamError> {
    let names = layer_names(train);
    match params.get(name) {
        Some(Json::String(s)) if s == all_word => Ok(()),
        Some(Json::Array(a)) if !a.is_empty() => {
            for l in a {
                let Some(l) = l.as_str() else {
                    return Err(ParamError::param(
                        name,
                        format!("expected layer names, found {l}"),
                    ));
                };
                if !names.iter().any(|n| n == l) || (!allow_input && l == "input") {
                    return Err(ParamError::param(
                        name,
                        format!(
                            "unknown layer \"{l}\"{}; this model's layers: {}",
                            crate::error::suggest(l, names.iter().map(String::as_str)),
                            names.join(", ")
                        ),
                    ));
                }
            }
            Ok(())
        }
        Some(other) => Err(ParamError::param(
            name,
            format!("expected \"{all_word}\" or a list of layer names, found {other}"),
        )),
        None => Ok(()),
    }
}

fn positive(params: &Params, name: &'static str, min: i64) -> Result<(), ParamError> {
    match params.int(name) {
        Some(v) if v < min => Err(ParamError::param(
            name,
            format!("must be at least {min}, got {v}"),
        )),
        _ => Ok(()),
    }
}

/// `activations`: each layer's representation of a fixed probe set at chosen checkpoints.
pub struct Activations;

const ACTIVATIONS_PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "epochs",
        ParamType::List(&ParamType::Scalar),
        "checkpoints to analyse: epochs or \"final\"",
    ),
    ParamSpec::optional(
        "classes",
        ParamType::Int,
        "P: how many classes (the first P; default all)",
    ),
    ParamSpec::default(
        "per_class",
        ParamType::Int,
        "50",
        "M: clean examples per class, and as many corrupted ones per training label",
    ),
    ParamSpec::default(
        "max_features",
        ParamType::Int,
        "5000",
        "wider layers are projected to this many features (seeded Gaussian projection)",
    ),
    ParamSpec::default(
        "layers",
        ParamType::Any,
        "\"all\"",
        "\"all\" or a list of layer names",
    ),
    ParamSpec::default(
        "seed",
        ParamType::Int,
        "0",
        "seeds the probe set and the projections",
    ),
    DEVICE_PARAM,
    THREADS_PARAM,
];

impl StageKind for Activations {
    fn name(&self) -> &'static str {
        "activations"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "every layer's features of a fixed probe set (clean and corrupted examples) at chosen checkpoints"
    }
    fn params(&self) -> &'static [ParamSpec] {
        ACTIVATIONS_PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(TRAIN_INPUT)
    }
    fn check(&self, params: &Params, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let train = train_input(env)?.params;
        check_epochs(params, "epochs", train)?;
        check_layers(params, "layers", "all", train, true)?;
        positive(params, "classes", 2)?;
        positive(params, "per_class", 2)?;
        positive(params, "max_features", 1)?;
        check_worker_params(params)
    }
    fn threads(&self, params: &Params) -> usize {
        worker_threads(params)
    }
    fn resources(&self, params: &Params) -> crate::spec::Resources {
        worker_resources(params)
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        crate::worker::run_in_worker("activations", ctx)
    }
}

/// `gradnorm`: per layer and epoch, gradients from clean and from corrupted examples.
pub struct GradNorm;

const GRADNORM_PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "epochs",
        ParamType::List(&ParamType::Scalar),
        "checkpoints to analyse: epochs or \"final\"",
    ),
    ParamSpec::default(
        "subset",
        ParamType::Int,
        "100",
        "how many clean and how many corrupted training examples",
    ),
    ParamSpec::default("seed", ParamType::Int, "0", "seeds the choice of examples"),
    DEVICE_PARAM,
    THREADS_PARAM,
];

impl StageKind for GradNorm {
    fn name(&self) -> &'static str {
        "gradnorm"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per layer and epoch: norms and cosine of the loss gradients from clean and from corrupted examples"
    }
    fn params(&self) -> &'static [ParamSpec] {
        GRADNORM_PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(TRAIN_INPUT)
    }
    fn check(&self, params: &Params, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let train = train_input(env)?.params;
        check_epochs(params, "epochs", train)?;
        positive(params, "subset", 1)?;
        check_worker_params(params)
    }
    fn threads(&self, params: &Params) -> usize {
        worker_threads(params)
    }
    fn resources(&self, params: &Params) -> crate::spec::Resources {
        worker_resources(params)
    }
    fn tables(&self, _params: &Params) -> Vec<String> {
        vec!["gradnorm".into()]
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        crate::worker::run_in_worker("gradnorm", ctx)
    }
}

/// `rollback`: the final weights with layers k..L rolled back to an earlier epoch's.
pub struct Rollback;

const ROLLBACK_PARAMS: &[ParamSpec] = &[
    ParamSpec::default(
        "final",
        ParamType::Scalar,
        "\"final\"",
        "the weights to start from: an epoch or \"final\"",
    ),
    ParamSpec::required(
        "from_epochs",
        ParamType::List(&ParamType::Scalar),
        "epochs whose weights are rolled back to",
    ),
    ParamSpec::default(
        "cutoffs",
        ParamType::Any,
        "\"each-layer\"",
        "\"each-layer\" or a list of layer names k (layers k..L are rolled back)",
    ),
    DEVICE_PARAM,
    THREADS_PARAM,
];

impl StageKind for Rollback {
    fn name(&self) -> &'static str {
        "rollback"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "accuracy of the final weights with the last layers rolled back to an earlier epoch's"
    }
    fn params(&self) -> &'static [ParamSpec] {
        ROLLBACK_PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(TRAIN_INPUT)
    }
    fn check(&self, params: &Params, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let train = train_input(env)?.params;
        check_epochs(params, "final", train)?;
        check_epochs(params, "from_epochs", train)?;
        check_layers(params, "cutoffs", "each-layer", train, false)?;
        check_worker_params(params)
    }
    fn threads(&self, params: &Params) -> usize {
        worker_threads(params)
    }
    fn resources(&self, params: &Params) -> crate::spec::Resources {
        worker_resources(params)
    }
    fn tables(&self, _params: &Params) -> Vec<String> {
        vec!["rollback".into()]
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        crate::worker::run_in_worker("rollback", ctx)
    }
}
