//! A finished train instance as the analysis stages see it: its data, its checkpoints, and
//! networks rebuilt at any kept epoch. Pipeline-facing, like the stage files: it reads the
//! train artifact's manifest and parameters, and builds the network through the `train`
//! stage's translation of those parameters ([`super::train::arch`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pipe_engine::stage::{BadData, KeyInputs, KindParams, RunContext};
use pipe_engine::store::{Manifest, Parts};
use pipe_kinds::stages::import::{self, ImportParams};
use pipe_kinds::stages::train::{MODULE_FILE, TrainParams};
use pipe_kinds::stages::trained::{EpochRef, find_checkpoint};
use tch::{Device, Kind, Tensor};

use super::train;
use crate::checkpoint::load_weights;
use crate::data::{self, TrainData};
use crate::models::{Arch, Net};
use pipe_kinds::stages::slots;

/// A trained run as the analyses see it, whoever trained it: its data and labels, its
/// network, and the epochs it keeps with their weights files.
pub struct TrainedRun {
    /// Its architecture (a scripted module's file is in the cache).
    pub arch: Arch,
    /// Its training and test data.
    pub data: TrainData,
    /// The run's artifact folder.
    pub dir: PathBuf,
    /// Whether the model's layer names were checked when the pipeline was planned
    /// (built-in models), else they are known once the module loads.
    layers_planned: bool,
    /// Where its kept epochs are.
    kept: Kept,
    /// The device to analyse on.
    pub device: Device,
}

/// Where a run's kept epochs are.
enum Kept {
    /// `train`: each checkpoint is a part of its own, listed in `checkpoints.json`.
    Parts(Box<Parts>),
    /// `import`: `weights/E.safetensors` in the run's own folder, for these epochs.
    Files(Vec<i64>),
}

/// One kept epoch of a trained run.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The epoch (0 = initialization).
    pub epoch: i64,
    /// The checkpoint part's key (`train`); `None` for an imported run, read whole.
    pub key: Option<String>,
    /// Its weights, named by the module's variables.
    pub weights: PathBuf,
}

impl TrainedRun {
    /// Loads the `train` input of a running analysis instance: a `train` or `import` run.
    pub fn load(ctx: &RunContext<'_>, device: Device) -> Result<TrainedRun> {
        let dir = ctx.input(slots::TRAINED.name)?.to_path_buf();
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)
            .context("reading the train artifact's manifest")?;
        let values = manifest.params.as_object().cloned().unwrap_or_default();
        let input = |slot: &str| -> Result<PathBuf> {
            let key = manifest
                .inputs
                .get(slot)
                .with_context(|| format!("the train artifact has no `{slot}` input"))?;
            ctx.parts.get(key).with_context(|| {
                format!(
                    "the train run's `{slot}` input ({}) is not in the cache",
                    &key[..12]
                )
            })
        };
        let data = data::load(
            &input(slots::DATASET.name)?,
            &input(slots::LABELS.name)?,
            device,
        )?;
        let (arch, layers_planned, kept) = if manifest.kind == import::NAME {
            let params = ImportParams::parse(&values)
                .map_err(anyhow::Error::msg)
                .context("the imported run's parameters")?;
            let file = dir.join(MODULE_FILE);
            (Arch::Script { file }, false, Kept::Files(params.epochs))
        } else {
            let params = TrainParams::parse(&values)
                .map_err(anyhow::Error::msg)
                .context("the train artifact's parameters")?;
            let module = match manifest.inputs.contains_key(slots::MODULE.name) {
                true => Some(input(slots::MODULE.name)?),
                false => None,
            };
            let arch = train::arch(&params, module.as_deref());
            let planned = params.layer_names().is_some();
            (arch, planned, Kept::Parts(Box::new(ctx.parts.clone())))
        };
        Ok(TrainedRun {
            arch,
            data,
            dir,
            layers_planned,
            kept,
            device,
        })
    }

    /// A network of this run's architecture, with its initial weights.
    pub fn net(&self) -> Result<Net> {
        Net::new(
            &self.arch,
            self.data.input_shape(),
            self.data.classes(),
            self.device,
        )
        .map_err(|m| anyhow::Error::new(BadData(m)))
    }

    /// Checks the layers an analysis names in its parameter `param` against the model's: a
    /// scripted module's are known only once it loads (built-in models' were checked when
    /// the pipeline was planned).
    pub fn check_layers(&self, param: &str, names: Option<&[String]>) -> Result<()> {
        let Some(names) = names else {
            return Ok(());
        };
        if self.layers_planned {
            return Ok(());
        }
        let all = self.net()?.layer_names();
        if let Some(l) = names.iter().find(|l| !all.contains(l)) {
            return Err(anyhow::Error::new(BadData(format!(
                "{param}: unknown layer \"{l}\"; this module's layers: {}",
                all.join(", ")
            ))));
        }
        Ok(())
    }

    /// The checkpoint for an epoch or `"final"`.
    pub fn checkpoint(&self, which: &EpochRef) -> Result<Checkpoint> {
        match &self.kept {
            Kept::Parts(parts) => {
                let c = find_checkpoint(&self.dir, which)?;
                let dir = parts.get(&c.key).with_context(|| {
                    format!(
                        "the checkpoint of epoch {} ({}) is not in the cache; rerun the train stage",
                        c.epoch,
                        &c.key[..12]
                    )
                })?;
                Ok(Checkpoint {
                    epoch: c.epoch,
                    weights: dir.join("weights.safetensors"),
                    key: Some(c.key),
                })
            }
            Kept::Files(epochs) => {
                let epoch = match which {
                    EpochRef::Final => epochs.iter().copied().max(),
                    EpochRef::Epoch(e) => epochs.contains(e).then_some(*e),
                    EpochRef::Invalid(_) => None,
                }
                .with_context(|| {
                    format!("no epoch {which} in this imported run; it keeps {epochs:?}")
                })?;
                Ok(Checkpoint {
                    epoch,
                    key: None,
                    weights: self.dir.join(import::weights_file(epoch)),
                })
            }
        }
    }

    /// A network with the weights of a checkpoint.
    pub fn net_at(&self, c: &Checkpoint) -> Result<Net> {
        let net = self.net()?;
        load_weights(&net.variables(), &c.weights)?;
        Ok(net)
    }

    /// An analysis's part for each distinct checkpoint `refs` name, in order: the part keyed
    /// `key_of(the instance's key inputs, checkpoint key)` when cached, else the one `write`
    /// makes (given the network at that checkpoint, loaded only then) among `ctx`'s parts.
    /// Each comes with whether it was made now.
    pub fn epoch_parts(
        &self,
        refs: &[EpochRef],
        ctx: &RunContext<'_>,
        part_kind: &str,
        key_of: impl Fn(&KeyInputs<'_>, &str) -> String,
        mut write: impl FnMut(&Checkpoint, &Net, &Path) -> Result<()>,
    ) -> Result<Vec<EpochPart>> {
        let identities = ctx.input_identities();
        let keys = identities.keys(ctx.params);
        let parts = ctx.parts;
        let mut out: Vec<EpochPart> = Vec::new();
        for which in refs {
            let checkpoint = self.checkpoint(which)?;
            if out.iter().any(|p| p.checkpoint.epoch == checkpoint.epoch) {
                continue;
            }
            let Some(checkpoint_key) = checkpoint.key.clone() else {
                // An imported run is read whole: its epochs' work is no part of its own.
                let scratch = ctx.out.join(format!(".epoch-{}", checkpoint.epoch));
                std::fs::create_dir_all(&scratch)?;
                write(&checkpoint, &self.net_at(&checkpoint)?, &scratch)?;
                out.push(EpochPart {
                    checkpoint,
                    key: None,
                    dir: scratch,
                    computed: true,
                });
                continue;
            };
            let key = key_of(&keys, &checkpoint_key);
            let params =
                serde_json::json!({"epoch": checkpoint.epoch, "checkpoint": checkpoint_key});
            let (dir, computed) = parts.get_or_put(&key, part_kind, &params, &mut |tmp| {
                write(&checkpoint, &self.net_at(&checkpoint)?, tmp)
            })?;
            out.push(EpochPart {
                checkpoint,
                key: Some(key),
                dir,
                computed,
            });
        }
        Ok(out)
    }

    /// The weights of a checkpoint as named tensors on the device.
    pub fn weights(&self, c: &Checkpoint) -> Result<Vec<(String, Tensor)>> {
        let file = &c.weights;
        Ok(Tensor::read_safetensors(file)
            .with_context(|| format!("reading {}", file.display()))?
            .into_iter()
            .map(|(n, t)| (n, t.to_device(self.device)))
            .collect())
    }
}

/// One checkpoint's part of an analysis ([`TrainedRun::epoch_parts`]).
pub struct EpochPart {
    /// The checkpoint analysed.
    pub checkpoint: Checkpoint,
    /// The part's key; `None` for an epoch of an imported run, worked out in a scratch
    /// folder of the output that goes when this does.
    pub key: Option<String>,
    /// The part's folder.
    pub dir: PathBuf,
    /// Whether it was made now (else it was cached).
    pub computed: bool,
}

impl EpochPart {
    /// `computed` or `reused`, for the log.
    pub fn how(&self) -> &'static str {
        if self.computed { "computed" } else { "reused" }
    }

    /// Where it is, for the log: `part 0123456789ab`, or `imported run` (no part).
    pub fn label(&self) -> String {
        match &self.key {
            Some(k) => format!("part {}", &k[..12]),
            None => "imported run, no part".into(),
        }
    }
}

impl Drop for EpochPart {
    fn drop(&mut self) {
        if self.key.is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Predicted classes of a network for `x`, in evaluation mode, in batches.
pub fn predict(net: &Net, x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let n = x.size()[0];
        let mut preds = Vec::new();
        let mut start = 0;
        while start < n {
            let len = 1000.min(n - start);
            preds.push(
                net.forward_t(&x.narrow(0, start, len), false)
                    .argmax(1, false),
            );
            start += len;
        }
        if preds.is_empty() {
            Tensor::zeros([0], (Kind::Int64, x.device()))
        } else {
            Tensor::cat(&preds, 0)
        }
    })
}
