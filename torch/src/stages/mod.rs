//! The libtorch side of the stage kinds that run in the worker, one file each, named like
//! the kind's file in `pipe_kinds` (`stages/NAME.rs`) and dispatched by its name constant
//! in [`run`]. These files are the pipeline-facing side of this crate: each translates its
//! kind's parameters into the plain settings of the models, optimizers and trainer, and
//! their results into the kind's tables. `trained` holds what the analyses share.
//!
//! Adding a libtorch kind: its file here, its `pub mod` line and its arm in [`run`].

pub mod activations;
pub mod gradnorm;
pub mod import;
pub mod rollback;
pub mod train;
pub mod trained;

use anyhow::Result;
use pipe_engine::stage::{KindParams, Params, RunContext};
use pipe_kinds::stages;
use pipe_kinds::worker::WorkerJob;

/// Runs one job: the stage kind's implementation with a context rebuilt from the job.
pub fn run_job(job: WorkerJob) -> Result<()> {
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
        label: &job.label,
        point: &job.point,
        deadline: None,
        visible_gpus: None,
    };
    run(&job.kind, &mut ctx)
}

/// Runs an instance of the worker kind `kind` with its typed parameters.
pub fn run(kind: &str, ctx: &mut RunContext<'_>) -> Result<()> {
    match kind {
        stages::activations::NAME => with_params(ctx, activations::run),
        stages::gradnorm::NAME => with_params(ctx, gradnorm::run),
        stages::rollback::NAME => with_params(ctx, rollback::run),
        stages::import::NAME => with_params(ctx, import::run),
        stages::train::NAME => with_params(ctx, train::run),
        other => anyhow::bail!("the worker has no stage kind `{other}`"),
    }
}

/// Parses the instance's parameters as `P` and runs `work` with them.
fn with_params<P: KindParams>(
    ctx: &mut RunContext<'_>,
    work: fn(&P, &mut RunContext<'_>) -> Result<()>,
) -> Result<()> {
    let params = ctx.params.typed::<P>().map_err(anyhow::Error::msg)?;
    work(&params, ctx)
}
