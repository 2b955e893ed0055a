//! The sweep a report shows: per sweep variable, the values of the instances whose tables
//! are in the report (not the file's declared sweep, when only part of it was run).

use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use crate::export::Gathered;
use pipe_engine::plan::Plan;
use pipe_engine::spec::template;

/// "noise {0.0, 0.4} x seed {1, 2, 3}": each sweep variable (in declaration order) with
/// the values (in declaration order) some instance with a table in `gathered` has;
/// "no sweep" when no such instance depends on a variable.
pub fn describe(plan: &Plan, gathered: &Gathered) -> String {
    let nodes: Vec<NodeIndex> = gathered
        .tables
        .values()
        .flat_map(|parts| parts.iter().map(|(n, _)| *n))
        .collect();
    let points: Vec<Json> = nodes.iter().map(|&n| plan.point(n)).collect();
    let parts: Vec<String> = plan
        .spec
        .sweep
        .vars
        .iter()
        .filter_map(|var| {
            let values: Vec<String> = var
                .values
                .iter()
                .filter(|v| points.iter().any(|p| p.get(&var.name) == Some(*v)))
                .map(template::display)
                .collect();
            (!values.is_empty()).then(|| format!("{} {{{}}}", var.name, values.join(", ")))
        })
        .collect();
    if parts.is_empty() {
        "no sweep".to_string()
    } else {
        parts.join(" x ")
    }
}
