//! Output every command shares: one line of JSON, the note on instances left out, and the
//! JSON view of an instance.

use petgraph::graph::NodeIndex;
use serde::Serialize;
use serde_json::Value as Json;

use pipe_engine::error::Error;
use pipe_engine::plan::Plan;

use super::{errln, outln};

/// Prints `value` on stdout as one line of JSON.
pub(super) fn print_json<T: Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string(value)
        .map_err(|e| Error::usage(format!("cannot print JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}

/// Says on stderr which instances `export` or `report` left out because they are not cached.
pub(super) fn note_left_out(plan: &Plan, missing: &[NodeIndex]) {
    if !missing.is_empty() {
        errln!(
            "note: {} instances are not in the cache and were left out (run the pipeline to include them): {}",
            missing.len(),
            missing
                .iter()
                .take(5)
                .map(|&n| plan.label(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// An instance in JSON output: `{"key", "point", "stage"}`.
#[derive(Serialize)]
pub(super) struct Item<'a> {
    /// The instance's key (`null` while an input's output is not known).
    key: Option<String>,
    /// Its sweep point.
    point: Json,
    /// Its stage's name.
    stage: &'a str,
}

impl<'a> Item<'a> {
    /// The item of instance `n` of `plan`.
    pub(super) fn of(plan: &'a Plan, n: NodeIndex) -> Item<'a> {
        let inst = &plan.graph[n];
        Item {
            key: inst.key(),
            point: plan.point_of(inst),
            stage: plan.stage_name(n),
        }
    }

    /// The items of instances `nodes` of `plan`.
    pub(super) fn list(plan: &'a Plan, nodes: &[NodeIndex]) -> Vec<Item<'a>> {
        nodes.iter().map(|&n| Item::of(plan, n)).collect()
    }
}
