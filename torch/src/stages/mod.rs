//! The libtorch side of the stage kinds that run in the worker, one file each, named like
//! the kind's file in `pipe` (`src/stages/NAME.rs`) and dispatched by its name constant.
//! The build script registers every file here (see `torch/build.rs`): the modules and
//! [`run`] come from it.

use anyhow::Result;
use pipe_engine::stage::{KindParams, RunContext};

/// Parses the instance's parameters as `P` and runs `work` with them.
fn with_params<P: KindParams>(
    ctx: &mut RunContext<'_>,
    work: fn(&P, &mut RunContext<'_>) -> Result<()>,
) -> Result<()> {
    let params = ctx.params.typed::<P>().map_err(anyhow::Error::msg)?;
    work(&params, ctx)
}

include!(concat!(env!("OUT_DIR"), "/worker_kinds.rs"));
