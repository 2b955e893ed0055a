//! The class names a figure's legend uses: those the `dataset` stage wrote in its
//! artifact's `dataset.json` (`class_names`, by label), found upstream of an instance.

use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use pipe_engine::plan::Plan;
use pipe_engine::store::Store;
use pipe_kinds::stages::dataset;

/// The class names of the data set `node` descends from, by label: `None` when no cached
/// `dataset` artifact upstream has a readable `class_names` list.
pub fn of_instance(plan: &Plan, store: &Store, node: NodeIndex) -> Option<Vec<String>> {
    let mut todo = vec![node];
    let mut seen = vec![node];
    while let Some(n) = todo.pop() {
        let inst = &plan.graph[n];
        if plan.spec.stages[inst.stage].kind.name() == dataset::NAME {
            let dir = store.artifact_dir(&inst.key()?);
            let text = std::fs::read(dir.join("dataset.json")).ok()?;
            return names_in(&serde_json::from_slice(&text).ok()?);
        }
        for &(_, i) in &inst.inputs {
            if !seen.contains(&i) {
                seen.push(i);
                todo.push(i);
            }
        }
    }
    None
}

/// `class_names` of a `dataset.json`, if it is a list of strings.
fn names_in(info: &Json) -> Option<Vec<String>> {
    info.get("class_names")?
        .as_array()?
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// The legend entry of class `label`: its name when `names` has one that says more than
/// the number, else `class N`.
pub fn legend_name(names: Option<&[String]>, label: usize) -> String {
    match names.and_then(|n| n.get(label)) {
        Some(name) if !name.trim().is_empty() && *name != label.to_string() => name.clone(),
        _ => format!("class {label}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_dataset_json_and_fall_back_to_the_label() {
        let info = serde_json::json!({"class_names": ["T-shirt/top", "Trouser"]});
        let names = names_in(&info).unwrap();
        assert_eq!(legend_name(Some(&names), 1), "Trouser");
        assert_eq!(legend_name(Some(&names), 2), "class 2", "past the list");
        assert_eq!(legend_name(None, 0), "class 0");
        let numbered = vec!["0".to_string()];
        assert_eq!(legend_name(Some(&numbered), 0), "class 0");
        assert_eq!(names_in(&serde_json::json!({"classes": 10})), None);
        assert_eq!(names_in(&serde_json::json!({"class_names": [1, 2]})), None);
    }
}
