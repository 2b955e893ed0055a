//! `import`: a training run made by the user's own command (their own loop, Lightning,
//! mixup), taken by every analysis as its `train` input.
//!
//! The command runs as an `exec` command does (the same parameters: `cmd`, `files`, `env`,
//! `tables`, `threads`), with the `dataset` and `labels` inputs as `PIPE_INPUT_DATASET` and
//! `PIPE_INPUT_LABELS`, and must write the layout below into `$PIPE_OUT`. When it exits,
//! the worker checks the layout (`torch/src/stages/import.rs`): a missing or malformed
//! file fails the instance with a message naming it, and nothing is stored. The check
//! then writes `model.json`, as `train` does.
//!
//! - `model.pt`: the TorchScript module, meeting `model = "script"`'s contract;
//! - `weights/E.safetensors` for every epoch E of `epochs`: exactly the module's
//!   parameters and buffers, by their state-dict names, with the module's shapes;
//! - `metrics.parquet` in the `train` schema ([`crate::tables::Metrics`]).
//!
//! With `record_examples`, the check also evaluates every epoch's weights on the training
//! set and writes `examples.parquet` as `train` records it, which `detect` reads.
//!
//! Unlike `train`'s checkpoints, the weights are not parts of their own: an analysis of an
//! imported run reads (and is keyed on) the whole artifact.

use crate::stages::exec::{ExecParams, run_command};
use crate::stages::slots;
use crate::stages::train::Loss;
use pipe_engine::stage::{CheckEnv, DeclaredFile, Inputs, Kind, ParamError, RunContext};
use pipe_engine::table::StoredTable;

/// The kind's name, as written `kind = "import"`.
pub const NAME: &str = slots::names::IMPORT;

/// The module file in an imported run.
pub const MODULE_FILE: &str = crate::stages::train::MODULE_FILE;

/// The folder of the weights files in an imported run.
pub const WEIGHTS_DIR: &str = "weights";

/// The weights file of `epoch`, relative to the run's folder: `weights/5.safetensors`.
pub fn weights_file(epoch: i64) -> String {
    format!("{WEIGHTS_DIR}/{epoch}.safetensors")
}

pipe_engine::stage_params! {
    /// The parameters of `import`.
    pub struct ImportParams {
        epochs: Vec<i64>, required, "the epochs the command keeps weights of (weights/E.safetensors each; 0 = initialization); the largest is \"final\"";
        record_examples: bool, default "false", key_unless_default, "pipe computes examples.parquet (what `detect` reads) by evaluating the weights of every epoch 0..=final on the training set, as `train` records it; `epochs` must then list every such epoch";
        loss: Loss, default "\"cross_entropy\"", key_unless_default, "the loss the command trains with (cross_entropy or mse): what record_examples scores each example's loss and gradient by";
        ..command: ExecParams;
    }
}

impl ImportParams {
    /// The last epoch kept: what analyses call `"final"`.
    pub fn final_epoch(&self) -> i64 {
        self.epochs.iter().copied().max().unwrap_or(0)
    }
}

/// The `import` stage kind.
pub struct Import;

impl Kind for Import {
    type Params = ImportParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "a run trained by your own command (module, weights per epoch, metrics), checked and analysed like a train run";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[slots::DATASET, slots::LABELS])
    }
    fn check(&self, p: &ImportParams, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        if p.epochs.is_empty() {
            return Err(ParamError::param(
                ImportParams::epochs,
                "list at least one epoch whose weights the command writes",
            ));
        }
        if let Some(e) = p.epochs.iter().find(|&&e| e < 0) {
            return Err(ParamError::param(
                ImportParams::epochs,
                format!("epoch {e} is negative"),
            ));
        }
        for (i, e) in p.epochs.iter().enumerate() {
            if p.epochs[..i].contains(e) {
                return Err(ParamError::param(
                    ImportParams::epochs,
                    format!("epoch {e} is listed twice"),
                ));
            }
        }
        if p.record_examples {
            let last = p.final_epoch();
            let missing: Vec<String> = (0..=last)
                .filter(|e| !p.epochs.contains(e))
                .map(|e| e.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(ParamError::param(
                    ImportParams::epochs,
                    format!(
                        "record_examples needs the weights of every epoch from 0 to {last}; add {}",
                        missing.join(", ")
                    ),
                ));
            }
        }
        p.command.check()
    }
    fn files(&self, p: &ImportParams, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        p.command.declared_files(env)
    }
    fn tables(&self, p: &ImportParams) -> Vec<String> {
        let mut t = vec![crate::tables::Metrics::NAME.to_string()];
        if p.record_examples {
            t.push(crate::tables::Examples::NAME.to_string());
        }
        t.extend(p.command.tables.iter().cloned());
        t
    }
    fn threads(&self, p: &ImportParams) -> usize {
        p.command.threads.max(1) as usize
    }
    /// The command, then the check of what it wrote, in the worker (which loads the module).
    fn run(&self, p: &ImportParams, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        run_command(&p.command, ctx)?;
        crate::worker::run_in_worker(NAME, ctx)
    }
}
