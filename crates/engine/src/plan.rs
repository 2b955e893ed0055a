//! Sweep expansion: a [`Spec`] becomes a DAG of instances, each with its key.
//!
//! A stage has one instance per distinct combination of the sweep variables it depends
//! on (those its parameters reference, plus those of its inputs).
//!
//! Keys are content addresses of what an instance reads: its kind, code version, the
//! parameters in the key, declared files, and for each input either the input artifact's
//! content digest or the keys of the input's parts it reads ([`StageKind::reads`]). So an
//! instance whose input reran with identical bytes keeps its key (early cutoff), and an
//! analysis of some checkpoints keeps its key when training goes on. A key that needs an
//! input's content is known only once that input is in the cache: [`Plan::resolve`]
//! fills keys in as inputs appear; until then an instance "may run". Every instance also
//! has a `recipe`, known at plan time (the same hash over its inputs' recipes), that names
//! it in job files before its key is known.
//!
//! [`StageKind::reads`]: crate::stage::StageKind::reads

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::error::{Error, Loc};
pub use crate::key::{KEY_SCHEMA, canonical_json, compute_key};
use crate::spec::{Spec, StageSpec, template};
use crate::stage::{CheckEnv, InputInfo, Params, Presence};
use crate::store::Store;
use crate::store::index::{EntryBrief, IndexEntry, entry_id};

/// A value filled in once known (and forgotten again when what it came from changes),
/// shared by the threads of a run.
#[derive(Debug)]
pub struct Late<T>(RwLock<Option<T>>);

impl<T> Default for Late<T> {
    fn default() -> Self {
        Late(RwLock::new(None))
    }
}

impl<T: Clone> Late<T> {
    /// The value, if known.
    pub fn get(&self) -> Option<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Sets the value.
    pub fn set(&self, v: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }
    /// Applies `f` to the value (if known) without cloning it.
    pub fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.0.read().unwrap_or_else(|e| e.into_inner()).as_ref())
    }
    /// Forgets the value.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl<T: Clone> Clone for Late<T> {
    fn clone(&self) -> Self {
        Late(RwLock::new(self.get()))
    }
}

/// An instance's key and what it was made from, once every input is known.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The content address of the instance's artifact (64 hex digits).
    pub key: String,
    /// Slot -> what the key took from that input (its content digest or parts identity).
    pub input_ids: Vec<(String, String)>,
    /// Slot -> the upstream parts the instance sees: those it reads, or all of an input
    /// read whole.
    pub input_parts: Vec<crate::stage::InputParts>,
}

/// One stage at one sweep point: the unit that runs and is cached.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Index of the stage in [`Spec::stages`].
    pub stage: usize,
    /// The sweep variables the instance depends on, as (variable, value) indices into the
    /// spec's sweep; [`Plan::point`] gives them as a JSON object. (Compact: a large sweep
    /// holds one per instance.)
    pub point: Box<[(u32, u32)]>,
    /// All resolved parameters.
    pub params: Params,
    /// Input slot -> upstream instance.
    pub inputs: Vec<(String, NodeIndex)>,
    /// For each input (in `inputs` order): the upstream parts it reads, or `None` for the
    /// whole artifact.
    pub reads: Vec<Option<Vec<String>>>,
    /// Declared file name -> blake3 of its content.
    pub files: Vec<(String, String)>,
    /// Where each of `files` is (in the same order): rehashed before the instance runs.
    pub file_paths: Vec<PathBuf>,
    /// A declared file that does not exist (the data not downloaded yet): the instance's
    /// key stays unknown, `status` says `data missing: PATH` and `run` refuses.
    pub missing: Option<PathBuf>,
    /// The key over the inputs' recipes instead of what is read of them: known before
    /// anything runs, it names the instance until its key is known.
    pub recipe: String,
    /// The key, once known (see [`Plan::resolve`]).
    pub resolved: Late<Resolved>,
    /// The content digest of its artifact, once read from the cache.
    pub digest: Late<String>,
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

/// Declared files: (name, blake3) pairs sorted by name, and where each is.
/// The first that does not exist, if any.
type HashedFiles = (Vec<(String, String)>, Vec<PathBuf>, Option<PathBuf>);

/// A point projected on some sweep variables, as a map key: one number (the value indices
/// in mixed radix) unless that could overflow, then the indices themselves.
#[derive(Debug, PartialEq, Eq, Hash)]
enum ProjKey {
    /// The value indices in mixed radix.
    Radix(u128),
    /// The value indices.
    Long(Vec<usize>),
}

impl ProjKey {
    /// The key of `point` projected on the variables `vars`.
    fn of(vars: &[usize], point: &[usize], sweep: &crate::spec::Sweep) -> ProjKey {
        let mut k: u128 = 0;
        for &v in vars {
            let size = sweep.vars[v].values.len() as u128;
            match k
                .checked_mul(size)
                .and_then(|x| x.checked_add(point[v] as u128))
            {
                Some(x) => k = x,
                None => return ProjKey::Long(vars.iter().map(|&v| point[v]).collect()),
            }
        }
        ProjKey::Radix(k)
    }
}

/// The parameters of `kind` marked in the key, with their values in `params`.
fn key_params_of(
    kind: &dyn crate::stage::StageKind,
    params: &Params,
) -> serde_json::Map<String, Json> {
    let keys = crate::stage::KeyInputs {
        values: params,
        input_keys: &[],
        input_parts: &[],
    };
    keys.key_params(kind.params(), &[])
}

/// The index entry that a successful run of `inst` leaves.
pub fn index_entry(plan: &Plan, inst: &Instance) -> (String, IndexEntry) {
    let stage = &plan.spec.stages[inst.stage];
    (
        entry_id(&stage.name, &plan.point_of(inst)),
        IndexEntry {
            key: inst.key().unwrap_or_default(),
            kind: stage.kind.name().to_string(),
            version: stage.kind.version(),
            params: plan.key_params(inst),
            inputs: inst
                .inputs
                .iter()
                .map(|(slot, up)| (slot.clone(), plan.graph[*up].key().unwrap_or_default()))
                .collect(),
            files: inst.files.iter().cloned().collect(),
        },
    )
}

/// [`index_entry`] in brief ([`EntryBrief`]): the entry's id, key and input keys.
pub fn index_brief(plan: &Plan, inst: &Instance) -> (String, EntryBrief) {
    let stage = &plan.spec.stages[inst.stage];
    (
        entry_id(&stage.name, &plan.point_of(inst)),
        EntryBrief {
            key: inst.key().unwrap_or_default(),
            inputs: inst
                .inputs
                .iter()
                .map(|(slot, up)| (slot.clone(), plan.graph[*up].key().unwrap_or_default()))
                .collect(),
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

impl Instance {
    /// Its key, if known.
    pub fn key(&self) -> Option<String> {
        self.resolved.with(|r| r.map(|r| r.key.clone()))
    }
}

/// The most instances of a plan whose instances keep their parameters' typed views (see
/// [`crate::stage::keep_typed_views`]).
const KEEP_TYPED_UP_TO: usize = 10_000;

/// Points whose instances are made together: in parallel, then put into the graph (a
/// bound on the instances held outside it).
const BUILD_CHUNK: usize = 1024;

/// The fewest new instances of a chunk that are made on every core.
const PARALLEL_FROM: usize = 64;

impl Plan {
    /// Expands a spec into instances, resolving and checking every parameter.
    pub fn build(spec: Spec) -> Result<Plan, Error> {
        let deps = stage_deps(&spec);
        let (counts, bound, edges) = capacity(&spec, &deps);
        if bound > MAX_INSTANCES {
            let message = format!(
                "the plan would have {bound} instances, more than the bound of {MAX_INSTANCES}"
            );
            return Err(match &spec.sweep.loc {
                Some(loc) => Error::at(loc, "sweep", message),
                None => Error::usage(message),
            });
        }
        crate::stage::keep_typed_views(bound <= KEEP_TYPED_UP_TO);
        let mut graph: DiGraph<Instance, ()> = DiGraph::with_capacity(bound, edges);
        let mut order = Vec::with_capacity(bound);
        let mut by_point: Vec<HashMap<ProjKey, NodeIndex>> = Vec::with_capacity(spec.stages.len());
        let mut defaults = Defaults::default();
        let cwd = std::env::current_dir().ok();
        for (si, &count) in counts.iter().enumerate() {
            // The instances by point, to find a user's inputs and to skip the points that
            // give an instance already made. A stage that every sweep variable reaches has
            // one instance per point, and one that no stage reads needs no lookup: without
            // either, no map is kept (a large sweep's last stage would hold one entry per
            // instance).
            let read_later = spec
                .stages
                .iter()
                .any(|s| s.inputs.iter().any(|r| r.index == si));
            let keep = read_later || deps[si].len() < spec.sweep.vars.len();
            let mut map: HashMap<ProjKey, NodeIndex> =
                HashMap::with_capacity(if keep { count } else { 0 });
            let mut chosen: Vec<&[usize]> = Vec::with_capacity(BUILD_CHUNK);
            for chunk in spec.sweep.points.chunks(BUILD_CHUNK) {
                // The points that give this stage a new instance, in sweep order; each one's
                // node index is the next one the graph gives.
                chosen.clear();
                for point in chunk {
                    if keep {
                        let proj = ProjKey::of(&deps[si], point, &spec.sweep);
                        if map.contains_key(&proj) {
                            continue;
                        }
                        map.insert(proj, NodeIndex::new(graph.node_count() + chosen.len()));
                    }
                    chosen.push(point);
                }
                // The instances are independent of one another (they read only earlier
                // stages' instances): a large stage makes them on every core. They go into
                // the graph in the same order, and the first error in that order is the
                // one reported, so the plan is the same either way.
                let make = |defaults: &mut Defaults, point: &&[usize]| {
                    InstanceAt {
                        spec: &spec,
                        stage_index: si,
                        deps: &deps,
                        point,
                        cwd: cwd.as_deref(),
                    }
                    .instance(&graph, &by_point, defaults)
                };
                let made: Vec<Result<Instance, Error>> = if chosen.len() >= PARALLEL_FROM {
                    use rayon::prelude::*;
                    chosen
                        .par_iter()
                        .map_init(Defaults::default, make)
                        .collect()
                } else {
                    chosen.iter().map(|p| make(&mut defaults, p)).collect()
                };
                for inst in made {
                    let inst = inst?;
                    let inputs: Vec<NodeIndex> = inst.inputs.iter().map(|(_, up)| *up).collect();
                    let idx = graph.add_node(inst);
                    for up in inputs {
                        graph.add_edge(up, idx, ());
                    }
                    order.push(idx);
                }
            }
            by_point.push(map);
        }
        Ok(Plan { spec, graph, order })
    }

    /// The parameters of `inst` that go into its key (computed from its parameters and its
    /// kind's declarations, not stored: a large sweep would hold them twice).
    pub fn key_params(&self, inst: &Instance) -> serde_json::Map<String, Json> {
        key_params_of(self.spec.stages[inst.stage].kind, &inst.params)
    }

    /// Instance `n`'s key, if known.
    pub fn key(&self, n: NodeIndex) -> Option<String> {
        self.graph[n].key()
    }

    /// The first 12 digits of `n`'s key, or `?` padded to 12 while it is not known.
    pub fn short_key(&self, n: NodeIndex) -> String {
        self.graph[n]
            .resolved
            .with(|r| r.map(|r| crate::key::short(&r.key, 12).to_string()))
            .unwrap_or_else(|| format!("{:<12}", "?"))
    }

    /// Fills in `n`'s key if every input's share of it is known: an input read whole
    /// must be in the cache (its content digest is read from its manifest), an input
    /// read by parts must have a known key (its parts are keyed from what it read).
    /// Returns the key, or `None` while an input's output is not known yet.
    pub fn resolve(&self, n: NodeIndex, store: &Store) -> Option<String> {
        if self.resolved(n, store) {
            self.graph[n].key()
        } else {
            None
        }
    }

    /// [`Plan::resolve`] without a copy of the key: whether it is known.
    fn resolved(&self, n: NodeIndex, store: &Store) -> bool {
        let inst = &self.graph[n];
        if inst.resolved.with(|r| r.is_some()) {
            return true;
        }
        if inst.missing.is_some() {
            return false;
        }
        let mut ids = Vec::with_capacity(inst.inputs.len());
        let mut input_parts = Vec::with_capacity(inst.inputs.len());
        for ((slot, up), reads) in inst.inputs.iter().zip(&inst.reads) {
            let known = match reads {
                Some(names) => self
                    .named_parts(*up, names)
                    .map(|seen| (crate::key::parts_id(&seen), seen)),
                None => self.digest(*up, store).and_then(|digest| {
                    let all: Vec<(String, String)> = self
                        .parts(*up)?
                        .into_iter()
                        .map(|p| (p.name, p.key))
                        .collect();
                    Some((digest, all))
                }),
            };
            let Some((id, seen)) = known else {
                return false;
            };
            ids.push((slot.clone(), id));
            input_parts.push((slot.clone(), seen));
        }
        let stage = &self.spec.stages[inst.stage];
        let key = compute_key(
            stage.kind.name(),
            stage.kind.version(),
            &self.key_params(inst),
            &ids,
            &inst.files,
        );
        inst.resolved.set(Resolved {
            key,
            input_ids: ids,
            input_parts,
        });
        true
    }

    /// Resolves every key that can be, in plan order (inputs first).
    pub fn resolve_all(&self, store: &Store) {
        for &n in &self.order {
            self.resolved(n, store);
        }
    }

    /// Forgets `n`'s key (an input changed under it) and its content digest.
    pub fn unresolve(&self, n: NodeIndex) {
        let inst = &self.graph[n];
        if !inst.inputs.is_empty() {
            inst.resolved.clear();
        }
        inst.digest.clear();
    }

    /// Forgets the content digest of `n`'s artifact (it was just computed again).
    pub fn forget_digest(&self, n: NodeIndex) {
        self.graph[n].digest.clear();
    }

    /// The content digest of `n`'s artifact, if its key is known and it is in the cache.
    pub fn digest(&self, n: NodeIndex, store: &Store) -> Option<String> {
        let inst = &self.graph[n];
        if let Some(d) = inst.digest.get() {
            return Some(d);
        }
        let d = store.digest(&inst.key()?)?;
        inst.digest.set(d.clone());
        Some(d)
    }

    /// The parts of `n` (name -> key), if its key is known.
    pub fn parts(&self, n: NodeIndex) -> Option<Vec<crate::stage::Part>> {
        let inst = &self.graph[n];
        let kind = self.spec.stages[inst.stage].kind;
        inst.resolved
            .with(|r| r.map(|r| kind.parts(&inst.params, &r.input_ids, &r.input_parts)))
    }

    /// The parts `names` of `n` (name -> key; an unknown name gets an empty key), if its
    /// key is known.
    fn named_parts(&self, n: NodeIndex, names: &[String]) -> Option<Vec<(String, String)>> {
        let parts = self.parts(n)?;
        let chosen: Vec<(String, String)> = names
            .iter()
            .map(|name| {
                let key = parts
                    .iter()
                    .find(|p| &p.name == name)
                    .map_or_else(String::new, |p| p.key.clone());
                (name.clone(), key)
            })
            .collect();
        Some(chosen)
    }

    /// The stage name of an instance.
    pub fn stage_name(&self, i: NodeIndex) -> &str {
        &self.spec.stages[self.graph[i].stage].name
    }

    /// `stage[noise=0.4,seed=1]`: how an instance is named in messages.
    pub fn label(&self, i: NodeIndex) -> String {
        let inst = &self.graph[i];
        if inst.point.is_empty() {
            return self.stage_name(i).to_string();
        }
        format!(
            "{}[{}]",
            self.stage_name(i),
            point_label(&self.point_of(inst))
        )
    }

    /// The sweep values instance `n` depends on, as a JSON object (`{"noise": 0.4}`).
    pub fn point(&self, n: NodeIndex) -> Json {
        self.point_of(&self.graph[n])
    }

    /// The sweep values `inst` depends on, as a JSON object.
    pub fn point_of(&self, inst: &Instance) -> Json {
        self.spec.sweep.point_json(&inst.point)
    }

    /// The sweep values `inst`'s own key parameters reference (see
    /// [`crate::spec::StageSpec::key_vars`]), as a JSON object: unlike [`Plan::point_of`], the
    /// same for every instance with its key, so it is what a running stage may be told.
    pub fn key_point_of(&self, inst: &Instance) -> Json {
        let vars = &self.spec.stages[inst.stage].key_vars;
        let own: Vec<(u32, u32)> = inst
            .point
            .iter()
            .filter(|(v, _)| vars.contains(&(*v as usize)))
            .copied()
            .collect();
        self.spec.sweep.point_json(&own)
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

/// The sweep variables each stage depends on: its own and its inputs', by stage index.
fn stage_deps(spec: &Spec) -> Vec<Vec<usize>> {
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(spec.stages.len());
    for stage in &spec.stages {
        let mut d: BTreeSet<usize> = stage.vars.clone();
        for r in &stage.inputs {
            d.extend(deps[r.index].iter().copied());
        }
        deps.push(d.into_iter().collect());
    }
    deps
}

/// Largest number of instances a plan may have (summed over stages): a larger one is
/// refused before any instance is built.
pub const MAX_INSTANCES: usize = 2_000_000;

/// At most how many instances each stage has, and bounds on all nodes and edges: the graph
/// is sized once, so a large sweep's nodes are not copied (and doubled) as they grow.
fn capacity(spec: &Spec, deps: &[Vec<usize>]) -> (Vec<usize>, usize, usize) {
    let sweep = &spec.sweep;
    let counts: Vec<usize> = deps
        .iter()
        .map(|d| {
            d.iter()
                .map(|&v| sweep.vars[v].values.len())
                .try_fold(1usize, usize::checked_mul)
                .unwrap_or(usize::MAX)
                .min(sweep.points.len())
        })
        .collect();
    let bound = counts.iter().fold(0usize, |a, &c| a.saturating_add(c));
    let edges = spec.stages.iter().zip(&counts).fold(0usize, |a, (s, &c)| {
        a.saturating_add(s.inputs.len().saturating_mul(c))
    });
    (counts, bound, edges)
}

/// Parsed default literals, by literal: a large sweep parses each once.
#[derive(Default)]
struct Defaults(HashMap<&'static str, Json>);

impl Defaults {
    /// The value of the default literal `lit`, or a located error.
    fn get(&mut self, lit: &'static str, stage: &StageSpec, path: &str) -> Result<Json, Error> {
        if let Some(v) = self.0.get(lit) {
            return Ok(v.clone());
        }
        let v = crate::stage::default_literal(lit).map_err(|m| Error::at(&stage.loc, path, m))?;
        self.0.insert(lit, v.clone());
        Ok(v)
    }
}

/// One stage at one sweep point, while the plan is built: what its instance is made from.
struct InstanceAt<'s> {
    spec: &'s Spec,
    stage_index: usize,
    deps: &'s [Vec<usize>],
    point: &'s [usize],
    /// The working directory, asked for once per plan (declared files are remembered by
    /// absolute path).
    cwd: Option<&'s Path>,
}

impl InstanceAt<'_> {
    fn stage(&self) -> &StageSpec {
        &self.spec.stages[self.stage_index]
    }

    /// The instance: parameters resolved, checked against its inputs, declared files
    /// hashed, its recipe (and, with no input, its key).
    fn instance(
        &self,
        graph: &DiGraph<Instance, ()>,
        by_point: &[HashMap<ProjKey, NodeIndex>],
        defaults: &mut Defaults,
    ) -> Result<Instance, Error> {
        let (stage, sweep) = (self.stage(), &self.spec.sweep);
        let point_ids: Box<[(u32, u32)]> = self.deps[self.stage_index]
            .iter()
            .map(|&v| (v as u32, self.point[v] as u32))
            .collect();
        let params = self.params(defaults)?;
        let mut inputs = Vec::with_capacity(stage.inputs.len());
        let mut input_recipes = Vec::with_capacity(stage.inputs.len());
        for r in &stage.inputs {
            let up = by_point[r.index][&ProjKey::of(&self.deps[r.index], self.point, sweep)];
            input_recipes.push((r.slot.clone(), graph[up].recipe.clone()));
            inputs.push((r.slot.clone(), up));
        }
        let upstream: Vec<InputInfo<'_>> = stage
            .inputs
            .iter()
            .zip(&inputs)
            .map(|(r, (slot, up))| InputInfo {
                slot: slot.clone(),
                kind: self.spec.stages[r.index].kind.name(),
                params: &graph[*up].params,
            })
            .collect();
        let env = CheckEnv {
            base_dir: &self.spec.base_dir,
            inputs: &upstream,
        };
        self.check(&params, &env, &point_ids)?;
        let (files, file_paths, missing) = self.hash_files(&params, &env)?;
        let reads: Vec<Option<Vec<String>>> = upstream
            .iter()
            .map(|u| stage.kind.reads(&params, &u.slot, u))
            .collect();
        drop(upstream);
        let recipe = compute_key(
            stage.kind.name(),
            stage.kind.version(),
            &key_params_of(stage.kind, &params),
            &input_recipes,
            &files,
        );
        let resolved = Late::default();
        if inputs.is_empty() && missing.is_none() {
            // With no input the recipe is the key.
            resolved.set(Resolved {
                key: recipe.clone(),
                input_ids: Vec::new(),
                input_parts: Vec::new(),
            });
        }
        let threads = stage.kind.threads(&params).max(1);
        Ok(Instance {
            stage: self.stage_index,
            point: point_ids,
            params,
            inputs,
            reads,
            files,
            file_paths,
            missing,
            recipe,
            resolved,
            digest: Late::default(),
            threads,
        })
    }

    /// The stage's parameters at this point: `${var}` references resolved, defaults filled
    /// in, each coerced to its declared type (errors located at the value).
    fn params(&self, defaults: &mut Defaults) -> Result<Params, Error> {
        let (stage, sweep) = (self.stage(), &self.spec.sweep);
        let lookup = |name: &str| -> Option<Json> {
            let v = sweep.var_index(name)?;
            Some(sweep.vars[v].values[self.point[v]].clone())
        };
        let mut params: Vec<(&'static str, Json)> = Vec::with_capacity(stage.params.len());
        for (p, given) in &stage.params {
            let path = format!("stage.{}.{}", stage.name, p.name);
            let (raw, loc) = match (given, p.presence) {
                (Some(n), _) => (template::resolve(n, &lookup, &path)?, n.loc.clone()),
                (None, Presence::Default(lit)) => {
                    (defaults.get(lit, stage, &path)?, stage.loc.clone())
                }
                (None, _) => continue,
            };
            let v = p.ty.coerce(raw).map_err(|m| Error::at(&loc, &path, m))?;
            params.push((p.name, v));
        }
        Ok(Params::declared(params))
    }

    /// The kind's own checks, the error located at the parameter it names and the point.
    fn check(
        &self,
        params: &Params,
        env: &CheckEnv<'_>,
        point_ids: &[(u32, u32)],
    ) -> Result<(), Error> {
        let stage = self.stage();
        stage.kind.check(params, env).map_err(|e| {
            let (loc, path) = param_loc(stage, e.param);
            let at_point = if point_ids.is_empty() {
                String::new()
            } else {
                format!(
                    " (at {})",
                    point_label(&self.spec.sweep.point_json(point_ids))
                )
            };
            Error::at(&loc, &path, format!("{}{at_point}", e.message))
        })
    }

    /// The declared files' content hashes, sorted by name.
    fn hash_files(&self, params: &Params, env: &CheckEnv<'_>) -> Result<HashedFiles, Error> {
        let stage = self.stage();
        let mut files = Vec::new();
        let mut missing = None;
        for f in stage.kind.files(params, env) {
            if missing.is_none()
                && f.data
                && std::fs::symlink_metadata(&f.path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                // Planned all the same (its key unknown): the data may not be there yet.
                missing = Some(f.path.clone());
            }
            if missing.is_some() {
                files.push(((f.name, String::new()), f.path));
                continue;
            }
            let (h, _) = crate::stamp::hash_file_in(&f.path, self.cwd, f.meta).map_err(|e| {
                let (loc, path) = param_loc(stage, Some("files"));
                let what = format!(
                    "cannot read declared file {} ({}): {e}",
                    f.name,
                    f.path.display()
                );
                Error::at(&loc, &path, what)
            })?;
            files.push(((f.name, h), f.path));
        }
        files.sort();
        let (files, paths) = files.into_iter().unzip();
        Ok((files, paths, missing))
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
