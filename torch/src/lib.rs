//! The libtorch side of `pipe`: models with named layers, data loading, optimizers, the
//! training loop, checkpoints, and the stage implementations the `pipe-torch` worker runs.
//!
//! The engine never links this crate: `pipe` hands instances of libtorch stage kinds to the
//! `pipe-torch` binary (see `pipe::worker`), which calls [`run_job`].

pub mod activations_stage;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod gradnorm_stage;
pub mod models;
pub mod optim;
pub mod rollback_stage;
pub mod train;
pub mod train_stage;
pub mod trained;

use anyhow::{Result, bail};
use pipe::stage::{Params, RunContext};
use pipe::worker::Job;

/// Held while seeding libtorch's global generator and drawing from it, so that threads
/// that build models at the same time each get the weights their seed promises.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one job: the stage kind's implementation with a context rebuilt from the job.
pub fn run_job(job: Job) -> Result<()> {
    let params = Params(job.params);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&job.log)?;
    let mut ctx = RunContext {
        params: &params,
        inputs: &job.inputs,
        parts: &job.parts,
        out: &job.out,
        log: &mut log,
        log_path: &job.log,
        threads: job.threads,
        base_dir: &job.base_dir,
        key: &job.key,
        point: &job.point,
        deadline: None,
    };
    match job.kind.as_str() {
        "train" => train_stage::run(&mut ctx),
        "activations" => activations_stage::run(&mut ctx),
        "gradnorm" => gradnorm_stage::run(&mut ctx),
        "rollback" => rollback_stage::run(&mut ctx),
        other => bail!("the worker has no stage kind `{other}`"),
    }
}
