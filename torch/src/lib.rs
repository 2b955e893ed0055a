//! The libtorch side of `pipe`: models with named layers, data loading, optimizers, the
//! training loop, checkpoints, and the stage implementations the `pipe-torch` worker runs.
//!
//! The engine never links this crate: `pipe` hands instances of libtorch stage kinds to the
//! `pipe-torch` binary (see `pipe_kinds::worker`), which calls [`run_worker_job`].

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod models;
pub mod optim;
pub mod records;
pub mod score;
pub mod serve;
pub mod stages;
pub mod tensors;
pub mod trainer;

use anyhow::Result;
use pipe_engine::stage::{Params, RunContext};
use pipe_kinds::worker::WorkerJob;

/// Held while seeding libtorch's global generator and drawing from it, so that threads
/// that build models at the same time each get the weights their seed promises.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one job: the stage kind's implementation with a context rebuilt from the job.
pub fn run_worker_job(job: WorkerJob) -> Result<()> {
    let params = Params::new(job.params);
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
        visible_gpus: None,
    };
    stages::run(&job.kind, &mut ctx)
}
