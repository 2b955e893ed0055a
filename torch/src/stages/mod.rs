//! The libtorch side of the stage kinds that run in the worker, one file each, named like
//! the kind's file in `pipe` (`src/stages/NAME.rs`) and dispatched by its name constant.

pub mod activations;
pub mod gradnorm;
pub mod rollback;
pub mod train;
pub mod trained;

use anyhow::{Result, bail};
use pipe::stage::{KindParams, RunContext};

/// Parses the instance's parameters as `P` and runs `work` with them.
fn with_params<P: KindParams>(
    ctx: &mut RunContext<'_>,
    work: fn(&P, &mut RunContext<'_>) -> Result<()>,
) -> Result<()> {
    let params = ctx.params.typed::<P>().map_err(anyhow::Error::msg)?;
    work(&params, ctx)
}

/// Runs an instance of the worker kind `kind`.
pub fn run(kind: &str, ctx: &mut RunContext<'_>) -> Result<()> {
    use pipe::stages as kinds;
    match kind {
        kinds::train::NAME => with_params(ctx, train::run),
        kinds::activations::NAME => with_params(ctx, activations::run),
        kinds::gradnorm::NAME => with_params(ctx, gradnorm::run),
        kinds::rollback::NAME => with_params(ctx, rollback::run),
        other => bail!("the worker has no stage kind `{other}`"),
    }
}
