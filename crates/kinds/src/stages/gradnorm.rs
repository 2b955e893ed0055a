//! `gradnorm`: per layer and epoch, the cross-entropy gradient of clean and of corrupted
//! examples split into a label-dependent and a label-independent part (the paper's
//! appendix, Eq. 25). The work needs libtorch and runs in the worker
//! (`torch/src/stages/gradnorm.rs`), which documents the measurement.

use crate::stages::slots;
use crate::stages::trained::{
    EpochRef, TRAIN_INPUT, TrainedInput, at_least, check_epochs, checkpoint_parts,
};
use crate::tables::{GradNormExamples, GradNormPerExample};
use crate::worker::WorkerParams;
use pipe_engine::stage::{
    CheckEnv, InputInfo, Inputs, KeyInputs, Kind, KindParams, ParamError, Part,
};
use pipe_engine::table::StoredTable;

/// The kind's name, as written `kind = "gradnorm"`.
pub const NAME: &str = slots::names::GRADNORM;

pipe_engine::stage_params! {
    /// The parameters of `gradnorm`.
    pub struct GradNormParams {
        epochs: Vec<EpochRef>, required, "checkpoints to analyse: epochs or \"final\"";
        max_examples: Option<i64>, optional, "examples per group (default: all of the smaller of clean and corrupted; both groups get the same number)";
        per_example: bool, default "false", "also write every example's gradient norms (gradnorm_per_example.parquet)";
        seed: i64, default "0", "seeds the choice of examples";
        ..worker: WorkerParams;
    }
}

/// The code version of `gradnorm` and its per-epoch parts.
pub const VERSION: u32 = 2;

/// The kind recorded in the manifests of the per-epoch parts.
pub const EPOCH_PART_KIND: &str = "gradnorm-epoch";

impl GradNormParams {
    /// The key of the part holding one checkpoint's rows of `gradnorm.parquet`: the
    /// parameters but `epochs`, and that checkpoint's key.
    pub fn epoch_part_key(&self, keys: &KeyInputs<'_>, checkpoint_key: &str) -> String {
        let specs = GradNormParams::specs();
        keys.derived_part_key(
            EPOCH_PART_KIND,
            VERSION,
            specs,
            &[GradNormParams::epochs],
            checkpoint_key,
        )
    }
}

/// The `gradnorm` stage kind.
pub struct GradNorm;

impl Kind for GradNorm {
    type Params = GradNormParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const ABOUT: &'static str = "per layer and epoch: label-dependent and label-independent gradient norms of clean and corrupted examples";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(TRAIN_INPUT)
    }
    fn check(&self, p: &GradNormParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let train = TrainedInput::from_env(env)?;
        check_epochs(&p.epochs, "epochs", &train)?;
        at_least(p.max_examples, "max_examples", 1)?;
        p.worker.check()
    }
    fn reads(&self, p: &GradNormParams, _slot: &str, up: &InputInfo<'_>) -> Option<Vec<String>> {
        checkpoint_parts(&p.epochs, up)
    }
    /// One part per checkpoint read, named like it (`epoch 5`).
    fn parts(&self, _p: &GradNormParams, keys: &KeyInputs<'_>) -> Vec<Part> {
        let specs = GradNormParams::specs();
        keys.parts_per_input_part(
            "train",
            EPOCH_PART_KIND,
            VERSION,
            specs,
            &[GradNormParams::epochs],
        )
    }
    fn tables(&self, p: &GradNormParams) -> Vec<String> {
        let mut t = vec![GradNorm::NAME.into(), GradNormExamples::NAME.into()];
        if p.per_example {
            t.push(GradNormPerExample::NAME.into());
        }
        t
    }
    crate::worker::worker_kind_methods!(GradNormParams);
}
