//! Stages in dependency order: inputs before the stages that use them, declaration order
//! wherever the inputs leave a choice; a cycle among the stages is an error that names it.

use std::collections::BTreeSet;

use super::StageSpec;
use crate::error::Error;

/// Orders `stages` (in declaration order, inputs resolved) so that inputs come first,
/// keeping declaration order where free, and renumbers their inputs to match.
pub(super) fn dependency_order(stages: Vec<StageSpec>) -> Result<Vec<StageSpec>, Error> {
    let edges: Vec<Vec<usize>> = stages
        .iter()
        .map(|s| s.inputs.iter().map(|r| r.index).collect())
        .collect();
    let order = topological_order(&edges);
    if order.len() < stages.len() {
        return Err(cycle_error(&stages, &edges, &order));
    }
    Ok(reorder(stages, &order))
}

/// Kahn's algorithm over `edges` (each stage's inputs), always taking the lowest ready
/// index next. Stages on or behind a cycle are left out.
fn topological_order(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut indegree: Vec<usize> = edges.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ins) in edges.iter().enumerate() {
        for &j in ins {
            users[j].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.insert(u);
            }
        }
    }
    order
}

/// A cycle among the stages `order` left out: starting at the first of them, follows
/// inputs among them until one repeats. Returns the cycle's stages, the first again last.
fn find_cycle(edges: &[Vec<usize>], order: &[usize]) -> Vec<usize> {
    let n = edges.len();
    let left: Vec<bool> = (0..n).map(|i| !order.contains(&i)).collect();
    let mut path = vec![(0..n).find(|&i| left[i]).unwrap_or(0)];
    loop {
        let cur = *path.last().unwrap_or(&0);
        let next = edges[cur].iter().copied().find(|&j| left[j]).unwrap_or(cur);
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle = path.split_off(pos);
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

/// The error for the cycle that kept the stages `order` left out from being ordered,
/// pointing at where the cycle's first stage takes the next one as input.
fn cycle_error(stages: &[StageSpec], edges: &[Vec<usize>], order: &[usize]) -> Error {
    let cycle = find_cycle(edges, order);
    let names: Vec<&str> = cycle.iter().map(|&i| stages[i].name.as_str()).collect();
    let first = cycle[0];
    let loc = stages[first]
        .inputs
        .iter()
        .find(|r| r.index == cycle[1])
        .map(|r| r.loc.clone())
        .unwrap_or_else(|| stages[first].loc.clone());
    Error::at(
        &loc,
        &format!("stage.{}.inputs", stages[first].name),
        format!(
            "the stages form a cycle: {} (each takes the next as input)",
            names.join(" <- ")
        ),
    )
}

/// The stages in `order` (a permutation of their indexes), with every input's index
/// renumbered to the new positions.
fn reorder(stages: Vec<StageSpec>, order: &[usize]) -> Vec<StageSpec> {
    let mut new_index = vec![0; stages.len()];
    for (pos, &i) in order.iter().enumerate() {
        new_index[i] = pos;
    }
    let mut slots: Vec<Option<StageSpec>> = stages.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(order.len());
    for &i in order {
        if let Some(mut s) = slots[i].take() {
            for r in &mut s.inputs {
                r.index = new_index[r.index];
            }
            ordered.push(s);
        }
    }
    ordered
}
