//! `rollback`: the final weights with layers k..L rolled back to an earlier epoch's, and
//! the accuracies that gives. The work needs libtorch and runs in the worker
//! (`torch/src/stages/rollback.rs`); see science.md.

use crate::stages::slots;
use crate::stages::trained::{
    EpochRef, Layers, TRAIN_INPUT, TrainedInput, check_epochs, checkpoint_parts,
};
use crate::worker::WorkerParams;
use pipe_engine::stage::{CheckEnv, InputInfo, Inputs, Kind, ParamError};
use pipe_engine::table::StoredTable;

/// The kind's name, as written `kind = "rollback"`.
pub const NAME: &str = slots::names::ROLLBACK;

pipe_engine::stage_params! {
    /// The parameters of `rollback`.
    pub struct RollbackParams {
        final_epoch as "final": EpochRef, default "\"final\"", "the weights to start from: an epoch or \"final\"";
        from_epochs: Vec<EpochRef>, required, "epochs whose weights are rolled back to";
        cutoffs: Layers, default "\"each-layer\"", "\"each-layer\" or a list of layer names k (layers k..L are rolled back)";
        ..worker: WorkerParams;
    }
}

/// The `rollback` stage kind.
pub struct Rollback;

impl Kind for Rollback {
    type Params = RollbackParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "accuracy of the final weights with the last layers rolled back to an earlier epoch's";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(TRAIN_INPUT)
    }
    fn check(&self, p: &RollbackParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let train = TrainedInput::from_env(env)?;
        check_epochs(std::slice::from_ref(&p.final_epoch), "final", &train)?;
        check_epochs(&p.from_epochs, "from_epochs", &train)?;
        p.cutoffs
            .check(RollbackParams::cutoffs, "each-layer", &train, false)?;
        p.worker.check()
    }
    fn reads(&self, p: &RollbackParams, _slot: &str, up: &InputInfo<'_>) -> Option<Vec<String>> {
        checkpoint_parts(std::iter::once(&p.final_epoch).chain(&p.from_epochs), up)
    }
    fn tables(&self, _p: &RollbackParams) -> Vec<String> {
        vec![crate::tables::Rollback::NAME.into()]
    }
    crate::worker::worker_kind_methods!(RollbackParams);
}
