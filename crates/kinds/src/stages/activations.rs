//! `activations`: each layer's representation of a fixed probe set (clean and corrupted
//! examples) at chosen checkpoints. The work needs libtorch and runs in the worker
//! (`torch/src/stages/activations.rs`); see science.md for the probe set.

use serde::{Deserialize, Serialize};

use crate::stages::slots;
use crate::stages::trained::{
    EpochRef, Layers, TRAIN_INPUT, TrainedInput, at_least, check_epochs, checkpoint_parts,
};
use crate::worker::WorkerParams;
use pipe_engine::stage::{
    CheckEnv, InputInfo, Inputs, KeyInputs, Kind, KindParams, ParamError, Part,
};

/// The kind's name, as written `kind = "activations"`.
pub const NAME: &str = slots::names::ACTIVATIONS;

pipe_engine::stage_params! {
    /// The parameters of `activations`.
    pub struct ActivationsParams {
        epochs: Vec<EpochRef>, required, "checkpoints to analyse: epochs or \"final\"";
        classes: Option<i64>, optional, "P: how many classes (the first P; default all)";
        per_class: i64, default "50", "M: clean examples per class, and as many corrupted ones per training label";
        max_features: i64, default "5000", "wider layers are projected to this many features (seeded Gaussian projection)";
        layers: Layers, default "\"all\"", "\"all\" or a list of layer names";
        seed: i64, default "0", "seeds the probe set and the projections";
        ..worker: WorkerParams;
    }
}

/// The kind recorded in the manifests of the per-epoch parts.
pub const EPOCH_PART_KIND: &str = "activations-epoch";

/// The code version of `activations` (and of its per-epoch parts).
pub const VERSION: u32 = 2;

/// The part of one epoch: its layers' files, and `layers.json` (the stored layers).
pub const LAYERS_FILE: &str = "layers.json";

impl ActivationsParams {
    /// The key of the part holding the features at one checkpoint: the parameters but
    /// `epochs`, and that checkpoint's key (which fixes the network and its data, so the
    /// probe set too). Adding an epoch adds one part; the others are reused.
    pub fn epoch_part_key(&self, keys: &KeyInputs<'_>, checkpoint_key: &str) -> String {
        let specs = ActivationsParams::specs();
        keys.derived_part_key(
            EPOCH_PART_KIND,
            VERSION,
            specs,
            &[ActivationsParams::epochs],
            checkpoint_key,
        )
    }
}

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

impl ActivationsInfo {
    /// Its file in an `activations` artifact.
    pub const FILE: &'static str = "activations.json";

    /// Reads it from the `activations` artifact folder `dir` (what `probe` and `embed`
    /// read first).
    pub fn read_in(dir: &std::path::Path) -> anyhow::Result<ActivationsInfo> {
        use anyhow::Context;
        let file = dir.join(Self::FILE);
        serde_json::from_slice(&std::fs::read(&file)?)
            .with_context(|| format!("reading {}", file.display()))
    }
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

/// The `activations` stage kind.
pub struct Activations;

impl Kind for Activations {
    type Params = ActivationsParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const ABOUT: &'static str = "every layer's features of a fixed probe set (clean and corrupted examples) at chosen checkpoints";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(TRAIN_INPUT)
    }
    fn check(&self, p: &ActivationsParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let train = TrainedInput::from_env(env)?;
        check_epochs(&p.epochs, "epochs", &train)?;
        p.layers
            .check(ActivationsParams::layers, "all", &train, true)?;
        at_least(p.classes, "classes", 2)?;
        at_least(Some(p.per_class), "per_class", 2)?;
        at_least(Some(p.max_features), "max_features", 1)?;
        p.worker.check()
    }
    fn reads(&self, p: &ActivationsParams, _slot: &str, up: &InputInfo<'_>) -> Option<Vec<String>> {
        checkpoint_parts(&p.epochs, up)
    }
    /// One part per checkpoint read, named like it (`epoch 5`).
    fn parts(&self, _p: &ActivationsParams, keys: &KeyInputs<'_>) -> Vec<Part> {
        let specs = ActivationsParams::specs();
        keys.parts_per_input_part(
            "train",
            EPOCH_PART_KIND,
            VERSION,
            specs,
            &[ActivationsParams::epochs],
        )
    }
    crate::worker::worker_kind_methods!(ActivationsParams);
}

/// Runs an analysis of an `activations` artifact (`ctx`'s `activations` input) epoch by
/// epoch, each epoch's output a part of its own: keyed by `key_of` on the activations'
/// part of that epoch, written by `write` (given the epoch, a folder and the log) only when
/// not cached, and handed to `read` (given the epoch and the part's folder) in epoch order.
/// An activations artifact without parts is analysed into a scratch folder in the output.
/// The log says, per epoch, whether it was computed or reused.
pub fn for_each_epoch_part(
    ctx: &mut pipe_engine::stage::RunContext<'_>,
    epochs: &[i64],
    part_kind: &str,
    key_of: impl Fn(&KeyInputs<'_>, &str) -> String,
    mut write: impl FnMut(i64, &std::path::Path, &mut std::fs::File) -> anyhow::Result<()>,
    mut read: impl FnMut(i64, &std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let identities = ctx.input_identities();
    let keys = identities.keys(ctx.params);
    for &epoch in epochs {
        let part = keys.input_part(
            slots::ACTIVATIONS.name,
            &crate::stages::train::checkpoint_part(epoch),
        );
        let Some(key) = part.map(|a| key_of(&keys, a)) else {
            let scratch = ctx.out.join(format!(".epoch-{epoch}"));
            std::fs::create_dir_all(&scratch)?;
            write(epoch, &scratch, ctx.log)?;
            read(epoch, &scratch)?;
            std::fs::remove_dir_all(&scratch)?;
            continue;
        };
        let params = serde_json::json!({"epoch": epoch});
        let log = &mut *ctx.log;
        let (dir, computed) = ctx
            .parts
            .get_or_put(&key, part_kind, &params, &mut |tmp| write(epoch, tmp, log))?;
        let how = if computed { "computed" } else { "reused" };
        writeln!(ctx.log, "epoch {epoch}: {how} (part {})", &key[..12])?;
        read(epoch, &dir)?;
    }
    Ok(())
}
