//! A finished train instance as the analysis stages see it: its data, its checkpoints, and
//! networks rebuilt at any kept epoch. Pipeline-facing, like the stage files: it reads the
//! train artifact's manifest and parameters, and builds the network through the `train`
//! stage's translation of those parameters ([`super::train::arch`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use pipe_engine::stage::{BadData, KeyInputs, KindParams, RunContext};
use pipe_engine::store::Manifest;
use pipe_kinds::stages::train::{CheckpointRef, TrainParams};
use pipe_kinds::stages::trained::{EpochRef, find_checkpoint};
use tch::{Device, Kind, Tensor};

use super::train;
use crate::checkpoint::load_weights;
use crate::data::{self, TrainData};
use crate::models::{Arch, Net};
use pipe_kinds::stages::slots;

/// A train artifact, its inputs loaded.
pub struct TrainedRun {
    /// The train instance's parameters (those in its key; the others take their defaults).
    pub params: TrainParams,
    /// Its architecture (a scripted module's file is in the cache).
    pub arch: Arch,
    /// Its training and test data.
    pub data: TrainData,
    /// The train artifact's folder.
    pub dir: PathBuf,
    /// Where checkpoints and inputs are found.
    parts: pipe_engine::store::Parts,
    /// The device to analyse on.
    pub device: Device,
}

impl TrainedRun {
    /// Loads the `train` input of a running analysis instance.
    pub fn load(ctx: &RunContext<'_>, device: Device) -> Result<TrainedRun> {
        let dir = ctx.input(slots::TRAIN.name)?.to_path_buf();
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)
            .context("reading the train artifact's manifest")?;
        let params = TrainParams::parse(&manifest.params.as_object().cloned().unwrap_or_default())
            .map_err(anyhow::Error::msg)
            .context("the train artifact's parameters")?;
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
        let module = match manifest.inputs.contains_key(slots::MODULE.name) {
            true => Some(input(slots::MODULE.name)?),
            false => None,
        };
        let arch = train::arch(&params, module.as_deref());
        Ok(TrainedRun {
            params,
            arch,
            data,
            dir,
            parts: ctx.parts.clone(),
            device,
        })
    }

    /// Checks the layers an analysis names in its parameter `param` against the model's: a
    /// scripted module's are known only once it loads (built-in models' were checked when
    /// the pipeline was planned).
    pub fn check_layers(&self, param: &str, names: Option<&[String]>) -> Result<()> {
        let Some(names) = names else {
            return Ok(());
        };
        if self.params.layer_names().is_some() {
            return Ok(());
        }
        let net = Net::new(
            &self.arch,
            self.data.input_shape(),
            self.data.classes(),
            self.device,
        )
        .map_err(|m| anyhow::Error::new(BadData(m)))?;
        let all = net.layer_names();
        if let Some(l) = names.iter().find(|l| !all.contains(l)) {
            return Err(anyhow::Error::new(BadData(format!(
                "{param}: unknown layer \"{l}\"; this module's layers: {}",
                all.join(", ")
            ))));
        }
        Ok(())
    }

    /// The checkpoint for an epoch or `"final"`.
    pub fn checkpoint(&self, which: &EpochRef) -> Result<CheckpointRef> {
        find_checkpoint(&self.dir, which)
    }

    /// The folder of a checkpoint artifact.
    pub fn checkpoint_dir(&self, c: &CheckpointRef) -> Result<PathBuf> {
        self.parts.get(&c.key).with_context(|| {
            format!(
                "the checkpoint of epoch {} ({}) is not in the cache; rerun the train stage",
                c.epoch,
                &c.key[..12]
            )
        })
    }

    /// A network with the weights of a checkpoint.
    pub fn net_at(&self, c: &CheckpointRef) -> Result<Net> {
        let net = Net::new(
            &self.arch,
            self.data.input_shape(),
            self.data.classes(),
            self.device,
        )
        .map_err(|m| anyhow::Error::new(BadData(m)))?;
        load_weights(
            &net.variables(),
            &self.checkpoint_dir(c)?.join("weights.safetensors"),
        )?;
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
        mut write: impl FnMut(&CheckpointRef, &Net, &std::path::Path) -> Result<()>,
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
            let key = key_of(&keys, &checkpoint.key);
            let params =
                serde_json::json!({"epoch": checkpoint.epoch, "checkpoint": checkpoint.key});
            let (dir, computed) = parts.get_or_put(&key, part_kind, &params, &mut |tmp| {
                write(&checkpoint, &self.net_at(&checkpoint)?, tmp)
            })?;
            out.push(EpochPart {
                checkpoint,
                key,
                dir,
                computed,
            });
        }
        Ok(out)
    }

    /// The weights of a checkpoint as named tensors on the device.
    pub fn weights(&self, c: &CheckpointRef) -> Result<Vec<(String, Tensor)>> {
        let file = self.checkpoint_dir(c)?.join("weights.safetensors");
        Ok(Tensor::read_safetensors(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .into_iter()
            .map(|(n, t)| (n, t.to_device(self.device)))
            .collect())
    }
}

/// One checkpoint's part of an analysis ([`TrainedRun::epoch_parts`]).
pub struct EpochPart {
    /// The checkpoint analysed.
    pub checkpoint: CheckpointRef,
    /// The part's key.
    pub key: String,
    /// The part's folder in the cache.
    pub dir: PathBuf,
    /// Whether it was made now (else it was cached).
    pub computed: bool,
}

impl EpochPart {
    /// `computed` or `reused`, for the log.
    pub fn how(&self) -> &'static str {
        if self.computed { "computed" } else { "reused" }
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
