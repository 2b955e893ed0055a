//! `pipe dag`: prints the instance DAG as text, Graphviz dot or Mermaid.

use super::{DagArgs, load};
use crate::cli::out;
use crate::render;
use pipe_engine::error::Error;

/// Runs `pipe dag`; returns its exit code.
pub fn dag(args: &DagArgs) -> Result<i32, Error> {
    let plan = load(&args.pipeline, false)?.plan;
    out!("{}", render::dag(&plan, args.format));
    Ok(0)
}
