//! Text renderings of a plan's DAG: plain text, Graphviz dot, Mermaid.

use std::fmt::Write;

use petgraph::Direction;

use pipe_engine::plan::Plan;

/// Output formats of `pipe dag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DagFormat {
    /// One line per instance with its inputs.
    Text,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Renders the instance DAG.
pub fn dag(plan: &Plan, format: DagFormat) -> String {
    let mut out = String::new();
    let key = |n: petgraph::graph::NodeIndex| plan.short_key(n).trim_end().to_string();
    match format {
        DagFormat::Text => {
            for &n in &plan.order {
                let inputs: Vec<String> = plan
                    .graph
                    .neighbors_directed(n, Direction::Incoming)
                    .map(|u| plan.label(u))
                    .collect();
                let _ = write!(out, "{} {}", key(n), plan.label(n));
                if !inputs.is_empty() {
                    let mut inputs = inputs;
                    inputs.sort();
                    let _ = write!(out, " <- {}", inputs.join(", "));
                }
                out.push('\n');
            }
        }
        DagFormat::Dot => {
            let _ = writeln!(
                out,
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];",
                plan.spec.name
            );
            for &n in &plan.order {
                let _ = writeln!(
                    out,
                    "  \"{}\" [label=\"{}\"];",
                    key(n),
                    plan.label(n).replace('"', "\\\"")
                );
            }
            for e in plan.graph.edge_indices() {
                if let Some((a, b)) = plan.graph.edge_endpoints(e) {
                    let _ = writeln!(out, "  \"{}\" -> \"{}\";", key(a), key(b));
                }
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for &n in &plan.order {
                let _ = writeln!(
                    out,
                    "  k{}[\"{}\"]",
                    key(n),
                    plan.label(n).replace('"', "#quot;")
                );
            }
            for e in plan.graph.edge_indices() {
                if let Some((a, b)) = plan.graph.edge_endpoints(e) {
                    let _ = writeln!(out, "  k{} --> k{}", key(a), key(b));
                }
            }
        }
    }
    out
}
