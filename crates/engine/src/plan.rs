//! Sweep expansion: a [`Spec`] becomes a DAG of instances, each with its key.
//!
//! A stage has one instance per distinct combination of the sweep variables it depends
//! on (those its parameters reference, plus those of its inputs). Keys are computed here,
//! before anything runs, from resolved parameters, input keys and declared files alone.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::error::{Error, Loc};
pub use crate::key::{KEY_SCHEMA, canonical_json, compute_key};
use crate::spec::{Spec, template};
use crate::stage::{CheckEnv, InputInfo, Params, Presence};
use crate::store::index::{IndexEntry, entry_id};

/// One stage at one sweep point: the unit that runs and is cached.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Index of the stage in [`Spec::stages`].
    pub stage: usize,
    /// The values of the sweep variables the instance depends on (a JSON object).
    pub point: Json,
    /// All resolved parameters.
    pub params: Params,
    /// The parameters that go into the key.
    pub key_params: serde_json::Map<String, Json>,
    /// Input slot -> upstream instance.
    pub inputs: Vec<(String, NodeIndex)>,
    /// Declared file name -> blake3 of its content.
    pub files: Vec<(String, String)>,
    /// The content address of the instance's artifact (64 hex digits).
    pub key: String,
    /// Threads the stage kind asks for.
    pub threads: usize,
}

/// The expanded pipeline: instances and their dependencies.
pub struct Plan {
    /// The pipeline it came from.
    pub spec: Spec,
    /// Instances; an edge goes from an input to the instance that uses it.
    pub graph: DiGraph<Instance, ()>,
    /// Every instance, inputs before users.
    pub order: Vec<NodeIndex>,
}

/// Hashes declared files, remembering results by path, size and modification time.
#[derive(Default)]
pub struct FileHasher {
    memo: HashMap<PathBuf, (u64, Option<SystemTime>, String)>,
}

impl FileHasher {
    /// blake3 of a file's content, as hex.
    pub fn hash(&mut self, path: &std::path::Path) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            return Err(std::io::Error::other("is a directory, not a file"));
        }
        let mtime = meta.modified().ok();
        if let Some((len, t, h)) = self.memo.get(path)
            && *len == meta.len()
            && *t == mtime
        {
            return Ok(h.clone());
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        let h = hasher.finalize().to_hex().to_string();
        self.memo
            .insert(path.to_path_buf(), (meta.len(), mtime, h.clone()));
        Ok(h)
    }
}

/// The index entry that a successful run of `inst` leaves.
pub fn index_entry(plan: &Plan, inst: &Instance) -> (String, IndexEntry) {
    let stage = &plan.spec.stages[inst.stage];
    (
        entry_id(&stage.name, &inst.point),
        IndexEntry {
            key: inst.key.clone(),
            kind: stage.kind.name().to_string(),
            version: stage.kind.version(),
            params: inst.key_params.clone(),
            inputs: inst
                .inputs
                .iter()
                .map(|(slot, up)| (slot.clone(), plan.graph[*up].key.clone()))
                .collect(),
            files: inst.files.iter().cloned().collect(),
        },
    )
}

/// A short label for a point: `noise=0.4,seed=1`, or `-` for none.
pub fn point_label(point: &Json) -> String {
    match point {
        Json::Object(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", template::display(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".to_string(),
    }
}

impl Plan {
    /// Expands a spec into instances, resolving and checking every parameter.
    pub fn build(spec: Spec, hasher: &mut FileHasher) -> Result<Plan, Error> {
        let sweep = &spec.sweep;
        let mut graph: DiGraph<Instance, ()> = DiGraph::new();
        let mut order = Vec::new();
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(spec.stages.len());
        let mut by_point: Vec<HashMap<Vec<usize>, NodeIndex>> =
            Vec::with_capacity(spec.stages.len());
        let mut defaults: HashMap<&'static str, Json> = HashMap::new();

        for (si, stage) in spec.stages.iter().enumerate() {
            let mut d: BTreeSet<usize> = stage.vars.clone();
            for r in &stage.inputs {
                d.extend(deps[r.index].iter().copied());
            }
            let d: Vec<usize> = d.into_iter().collect();
            let mut map: HashMap<Vec<usize>, NodeIndex> = HashMap::new();
            for point in &sweep.points {
                let proj: Vec<usize> = d.iter().map(|&v| point[v]).collect();
                if map.contains_key(&proj) {
                    continue;
                }
                let lookup = |name: &str| -> Option<Json> {
                    let v = sweep.var_index(name)?;
                    Some(sweep.vars[v].values[point[v]].clone())
                };
                let mut point_json = serde_json::Map::new();
                for &v in &d {
                    point_json.insert(
                        sweep.vars[v].name.clone(),
                        sweep.vars[v].values[point[v]].clone(),
                    );
                }
                let mut params = serde_json::Map::new();
                let mut key_params = serde_json::Map::new();
                for (p, given) in &stage.params {
                    let path = format!("stage.{}.{}", stage.name, p.name);
                    let (raw, loc) = match (given, p.presence) {
                        (Some(n), _) => (template::resolve(n, &lookup, &path)?, n.loc.clone()),
                        (None, Presence::Default(lit)) => {
                            let v = match defaults.get(lit) {
                                Some(v) => v.clone(),
                                None => {
                                    let v = crate::stage::default_literal(lit)
                                        .map_err(|m| Error::at(&stage.loc, &path, m))?;
                                    defaults.insert(lit, v.clone());
                                    v
                                }
                            };
                            (v, stage.loc.clone())
                        }
                        (None, _) => continue,
                    };
                    let v = p.ty.coerce(raw).map_err(|m| Error::at(&loc, &path, m))?;
                    if p.in_key {
                        key_params.insert(p.name.to_string(), v.clone());
                    }
                    params.insert(p.name.to_string(), v);
                }
                let mut inputs = Vec::with_capacity(stage.inputs.len());
                let mut input_keys = Vec::with_capacity(stage.inputs.len());
                for r in &stage.inputs {
                    let up_proj: Vec<usize> = deps[r.index].iter().map(|&v| point[v]).collect();
                    let up = by_point[r.index][&up_proj];
                    input_keys.push((r.slot.clone(), graph[up].key.clone()));
                    inputs.push((r.slot.clone(), up));
                }
                let params = Params::new(params);
                let upstream: Vec<InputInfo<'_>> = stage
                    .inputs
                    .iter()
                    .zip(&inputs)
                    .map(|(r, (slot, up))| InputInfo {
                        slot: slot.clone(),
                        kind: spec.stages[r.index].kind.name(),
                        params: &graph[*up].params,
                    })
                    .collect();
                let env = CheckEnv {
                    base_dir: &spec.base_dir,
                    inputs: &upstream,
                };
                stage.kind.check(&params, &env).map_err(|e| {
                    let (loc, path) = param_loc(stage, e.param);
                    let at_point = if point_json.is_empty() {
                        String::new()
                    } else {
                        format!(" (at {})", point_label(&Json::Object(point_json.clone())))
                    };
                    Error::at(&loc, &path, format!("{}{at_point}", e.message))
                })?;
                let mut files = Vec::new();
                for f in stage.kind.files(&params, &env) {
                    let h = hasher.hash(&f.path).map_err(|e| {
                        let (loc, path) = param_loc(stage, Some("files"));
                        Error::at(
                            &loc,
                            &path,
                            format!(
                                "cannot read declared file {} ({}): {e}",
                                f.name,
                                f.path.display()
                            ),
                        )
                    })?;
                    files.push((f.name, h));
                }
                files.sort();
                drop(upstream);
                let key = compute_key(
                    stage.kind.name(),
                    stage.kind.version(),
                    &key_params,
                    &input_keys,
                    &files,
                );
                let threads = stage.kind.threads(&params).max(1);
                let idx = graph.add_node(Instance {
                    stage: si,
                    point: Json::Object(point_json),
                    params,
                    key_params,
                    inputs: inputs.clone(),
                    files,
                    key,
                    threads,
                });
                for (_, up) in &inputs {
                    graph.add_edge(*up, idx, ());
                }
                order.push(idx);
                map.insert(proj, idx);
            }
            deps.push(d);
            by_point.push(map);
        }
        Ok(Plan { spec, graph, order })
    }

    /// The stage name of an instance.
    pub fn stage_name(&self, i: NodeIndex) -> &str {
        &self.spec.stages[self.graph[i].stage].name
    }

    /// `stage[noise=0.4,seed=1]`: how an instance is named in messages.
    pub fn label(&self, i: NodeIndex) -> String {
        let inst = &self.graph[i];
        match &inst.point {
            Json::Object(m) if !m.is_empty() => {
                format!("{}[{}]", self.stage_name(i), point_label(&inst.point))
            }
            _ => self.stage_name(i).to_string(),
        }
    }

    /// Every instance that (transitively) uses `i`.
    pub fn descendants(&self, i: NodeIndex) -> Vec<NodeIndex> {
        let mut out = Vec::new();
        let mut dfs = petgraph::visit::Dfs::new(&self.graph, i);
        while let Some(n) = dfs.next(&self.graph) {
            if n != i {
                out.push(n);
            }
        }
        out
    }

    /// Every instance `i` (transitively) needs, and `i` itself.
    pub fn ancestors_and_self(&self, i: NodeIndex) -> Vec<NodeIndex> {
        let reversed = petgraph::visit::Reversed(&self.graph);
        let mut out = Vec::new();
        let mut dfs = petgraph::visit::Dfs::new(reversed, i);
        while let Some(n) = dfs.next(reversed) {
            out.push(n);
        }
        out
    }
}

fn param_loc(stage: &crate::spec::StageSpec, param: Option<&str>) -> (Loc, String) {
    if let Some(p) = param
        && let Some((_, Some(n))) = stage.params.iter().find(|(s, _)| s.name == p)
    {
        return (n.loc.clone(), format!("stage.{}.{p}", stage.name));
    }
    let path = match param {
        Some(p) => format!("stage.{}.{p}", stage.name),
        None => format!("stage.{}", stage.name),
    };
    (stage.loc.clone(), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_changes_with_each_ingredient_and_only_then() {
        let p = |x: f64| {
            let mut m = serde_json::Map::new();
            m.insert("fraction".into(), json!(x));
            m
        };
        let base = compute_key(
            "corrupt",
            1,
            &p(0.4),
            &[("dataset".into(), "aa".into())],
            &[],
        );
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            compute_key(
                "corrupt",
                1,
                &p(0.4),
                &[("dataset".into(), "aa".into())],
                &[]
            )
        );
        assert_ne!(
            base,
            compute_key(
                "corrupt",
                2,
                &p(0.4),
                &[("dataset".into(), "aa".into())],
                &[]
            )
        );
        assert_ne!(
            base,
            compute_key(
                "corrupt",
                1,
                &p(0.2),
                &[("dataset".into(), "aa".into())],
                &[]
            )
        );
        assert_ne!(
            base,
            compute_key(
                "corrupt",
                1,
                &p(0.4),
                &[("dataset".into(), "ab".into())],
                &[]
            )
        );
        assert_ne!(
            base,
            compute_key(
                "corrupt",
                1,
                &p(0.4),
                &[("dataset".into(), "aa".into())],
                &[("f".into(), "00".into())]
            )
        );
        assert_ne!(
            base,
            compute_key("exec", 1, &p(0.4), &[("dataset".into(), "aa".into())], &[])
        );
    }
}
