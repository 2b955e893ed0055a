//! What the kinds that analyse a trained network share: their `train` input (a run of
//! pipe's `train` or one trained elsewhere, `import`, both seen as a [`TrainedInput`]),
//! epoch references (`5` or `"final"`), layer selections, and the checks of both against
//! what the run keeps.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

use crate::stages::import::ImportParams;
use crate::stages::slots;
use crate::stages::train::{self, CheckpointRef, TrainParams};
use pipe_engine::stage::{CheckEnv, InputInfo, ParamError, ParamType, ParamValue, Slot};

/// The input slot of every analysis: one trained run (`train` or `import`).
pub const TRAIN_INPUT: &[Slot] = &[slots::TRAINED];

/// What an analysis knows, when the pipeline is planned, of the trained run in its `train`
/// slot: the one view of `train` and `import` instances that checks and keys use.
#[derive(Clone, Debug)]
pub struct TrainedInput {
    /// The epochs whose weights the run keeps (its last one is `"final"`).
    pub kept: std::collections::BTreeSet<i64>,
    /// Its layer names (`input` first), or `None` when known only once the module loads.
    pub layers: Option<Vec<String>>,
    /// `train`: its checkpoints are parts of their own (an analysis reads those it needs);
    /// `import`: the run is one artifact, read whole.
    pub checkpoint_parts: bool,
    /// Whether the run's artifact holds `examples.parquet` (`record_examples`).
    pub records_examples: bool,
}

impl TrainedInput {
    /// The view of the upstream instance `up` (a `train` or an `import`).
    pub fn of(up: &InputInfo<'_>) -> Result<TrainedInput, String> {
        if up.kind == slots::names::IMPORT {
            let p = up.params.typed::<ImportParams>()?;
            return Ok(TrainedInput {
                kept: p.epochs.iter().copied().collect(),
                layers: None,
                checkpoint_parts: false,
                records_examples: p.record_examples,
            });
        }
        let p = up.params.typed::<TrainParams>()?;
        Ok(TrainedInput {
            kept: p.kept(),
            layers: p.layer_names(),
            checkpoint_parts: true,
            records_examples: p.record_examples,
        })
    }

    /// The view of the run in `env`'s `train` slot.
    pub fn from_env(env: &CheckEnv<'_>) -> Result<TrainedInput, ParamError> {
        let up = env
            .input(slots::TRAINED.name)
            .ok_or_else(|| ParamError::stage("needs a `train` input"))?;
        TrainedInput::of(up).map_err(ParamError::stage)
    }

    /// The last epoch kept.
    pub fn final_epoch(&self) -> i64 {
        self.kept.iter().next_back().copied().unwrap_or(0)
    }
}

/// A checkpoint as a pipeline names it: an epoch, or `"final"`. Any other value is kept
/// as written, so that the check can say what was wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochRef {
    /// This epoch (0 = initialization).
    Epoch(i64),
    /// The train instance's last epoch.
    Final,
    /// Not an epoch; refused by [`check_epochs`].
    Invalid(Json),
}

impl<'de> Deserialize<'de> for EpochRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EpochRef, D::Error> {
        Ok(match Json::deserialize(d)? {
            Json::String(s) if s == "final" => EpochRef::Final,
            v => v.as_i64().map_or(EpochRef::Invalid(v), EpochRef::Epoch),
        })
    }
}

impl ParamValue for EpochRef {
    const TYPE: ParamType = ParamType::Scalar;
}

impl fmt::Display for EpochRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EpochRef::Epoch(e) => write!(f, "{e}"),
            EpochRef::Final => f.write_str("\"final\""),
            EpochRef::Invalid(v) => write!(f, "{v}"),
        }
    }
}

/// Checks epoch references against the epochs a train instance keeps.
pub fn check_epochs(
    refs: &[EpochRef],
    name: &'static str,
    train: &TrainedInput,
) -> Result<(), ParamError> {
    if refs.is_empty() {
        return Err(ParamError::param(name, "list at least one epoch"));
    }
    let keep = &train.kept;
    for r in refs {
        match r {
            EpochRef::Final => {}
            EpochRef::Epoch(e) if keep.contains(e) => {}
            other => {
                return Err(ParamError::param(
                    name,
                    format!(
                        "the train stage keeps no checkpoint {other}; it keeps epochs {} (and \"final\"); add the epoch to its `{}`",
                        keep.iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if train.checkpoint_parts {
                            "checkpoints"
                        } else {
                            "epochs"
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The train instance's parts (checkpoints) that these epoch references read, each once:
/// what an analysis is keyed on instead of the whole train artifact, so that training
/// longer reruns no analysis of unchanged checkpoints. `None` if a reference is invalid,
/// and for an imported run, which is read whole.
pub fn checkpoint_parts<'a>(
    refs: impl IntoIterator<Item = &'a EpochRef>,
    upstream: &InputInfo<'_>,
) -> Option<Vec<String>> {
    let train = TrainedInput::of(upstream).ok()?;
    if !train.checkpoint_parts {
        return None;
    }
    let mut names = Vec::new();
    for r in refs {
        let epoch = match r {
            EpochRef::Final => train.final_epoch(),
            EpochRef::Epoch(e) => *e,
            EpochRef::Invalid(_) => return None,
        };
        let name = train::checkpoint_part(epoch);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Some(names)
}

/// Finds a checkpoint of a train artifact (its folder) by reference.
pub fn find_checkpoint(train_dir: &Path, which: &EpochRef) -> Result<CheckpointRef> {
    let list: Vec<CheckpointRef> =
        serde_json::from_slice(&std::fs::read(train_dir.join("checkpoints.json"))?)?;
    let found = match which {
        EpochRef::Final => list.iter().max_by_key(|c| c.epoch),
        EpochRef::Epoch(e) => list.iter().find(|c| c.epoch == *e),
        EpochRef::Invalid(_) => None,
    };
    let epochs: Vec<String> = list.iter().map(|c| c.epoch.to_string()).collect();
    found.cloned().with_context(|| {
        format!(
            "no checkpoint {which}; this run kept epochs {}",
            epochs.join(", ")
        )
    })
}

/// A choice of layers: a word meaning "every layer" (`"all"`, `"each-layer"`) or a list
/// of layer names. Anything else is kept as written, for the check to describe.
#[derive(Clone, Debug, PartialEq)]
pub enum Layers {
    /// A word; the kind says which word means every layer.
    Word(String),
    /// These layers.
    Names(Vec<String>),
    /// Neither; refused by [`Layers::check`].
    Invalid(Json),
}

impl<'de> Deserialize<'de> for Layers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Layers, D::Error> {
        Ok(match Json::deserialize(d)? {
            Json::String(s) => Layers::Word(s),
            Json::Array(a) if !a.is_empty() && a.iter().all(Json::is_string) => Layers::Names(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            v => Layers::Invalid(v),
        })
    }
}

impl ParamValue for Layers {
    const TYPE: ParamType = ParamType::Any;
}

impl Layers {
    /// The listed names, or `None` for "every layer".
    pub fn names(&self) -> Option<&[String]> {
        match self {
            Layers::Names(n) => Some(n),
            _ => None,
        }
    }

    /// Checks the choice: `all_word` or a list of this model's layer names (`input` only
    /// where `allow_input`).
    pub fn check(
        &self,
        name: &'static str,
        all_word: &str,
        train: &TrainedInput,
        allow_input: bool,
    ) -> Result<(), ParamError> {
        // A scripted module's layers are known when it loads: the worker checks them.
        let known = train.layers.clone();
        match self {
            Layers::Word(w) if w == all_word => Ok(()),
            Layers::Names(list) => {
                for l in list {
                    let unknown = known.as_ref().is_some_and(|n| !n.contains(l));
                    if unknown || (!allow_input && l == "input") {
                        let names = known.clone().unwrap_or_default();
                        let listed = if known.is_some() {
                            names.join(", ")
                        } else {
                            "those the module's `layers` method names".to_string()
                        };
                        return Err(ParamError::param(
                            name,
                            format!(
                                "unknown layer \"{l}\"{}; this model's layers: {listed}",
                                pipe_engine::error::suggest(l, names.iter().map(String::as_str)),
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Layers::Invalid(Json::Array(a)) if !a.is_empty() => {
                let l = a.iter().find(|v| !v.is_string()).unwrap_or(&Json::Null);
                Err(ParamError::param(
                    name,
                    format!("expected layer names, found {l}"),
                ))
            }
            other => {
                let found = match other {
                    Layers::Word(w) => Json::String(w.clone()),
                    Layers::Invalid(v) => v.clone(),
                    Layers::Names(_) => Json::Null,
                };
                Err(ParamError::param(
                    name,
                    format!("expected \"{all_word}\" or a list of layer names, found {found}"),
                ))
            }
        }
    }
}

/// `Err` when an optional count is below `min`.
pub fn at_least(value: Option<i64>, name: &'static str, min: i64) -> Result<(), ParamError> {
    match value {
        Some(v) if v < min => Err(ParamError::param(
            name,
            format!("must be at least {min}, got {v}"),
        )),
        _ => Ok(()),
    }
}
