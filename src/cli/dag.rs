//! `pipe dag`: prints the instance DAG as text, Graphviz dot or Mermaid.

use super::{PipelineArgs, load};
use crate::cli::out;
use crate::render::{self, DagFormat};
use pipe_engine::error::Error;

/// Arguments of `pipe dag`.
#[derive(clap::Args, Debug)]
pub struct DagArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DagFormat,
}

/// Runs `pipe dag`; returns its exit code.
pub fn dag(args: &DagArgs) -> Result<i32, Error> {
    let plan = load(&args.pipeline, false)?.plan;
    out!("{}", render::dag(&plan, args.format));
    Ok(0)
}
