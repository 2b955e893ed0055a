//! The kind traits: [`Kind`] (what a kind implements, with typed parameters) and
//! [`StageKind`] (the object-safe view the engine holds), what checks may see, and the
//! [`Registry`] of kinds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::resources::Resources;

use super::{InputParts, KeyInputs, KindParams, ParamError, ParamSpec, Params, Part, RunContext};

/// An input slot a stage kind takes.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The slot's name (`dataset`, `labels`, ...).
    pub name: &'static str,
    /// The stage kinds that may fill it.
    pub kinds: &'static [&'static str],
    /// Whether a stage may leave it empty (the kind's check then says when it must not).
    pub optional: bool,
    /// Kinds it does not take that a user may well give it, each with why: planning says
    /// so when a pipeline gives one (`(kind, why)`).
    pub refuses: &'static [(&'static str, &'static str)],
}

impl Slot {
    /// Why the slot does not take `kind`, if it says.
    pub fn refusal(&self, kind: &str) -> Option<&'static str> {
        self.refuses
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|&(_, why)| why)
    }
}

/// The inputs a stage kind takes.
#[derive(Clone, Copy, Debug)]
pub enum Inputs {
    /// Exactly these slots, each filled once.
    Slots(&'static [Slot]),
    /// Any number of inputs of any kind, each slot named freely.
    Any,
}

/// What [`StageKind::check`] and [`StageKind::files`] may look at besides the parameters.
pub struct CheckEnv<'a> {
    /// The directory relative paths in the pipeline file are resolved against.
    pub base_dir: &'a Path,
    /// Each input: its slot, and the kind and resolved parameters of the instance filling it.
    pub inputs: &'a [InputInfo<'a>],
}

/// What a stage kind's checks may know about one input instance.
pub struct InputInfo<'a> {
    /// The slot it fills.
    pub slot: String,
    /// The upstream stage's kind.
    pub kind: &'static str,
    /// The upstream instance's resolved parameters.
    pub params: &'a Params,
}

impl CheckEnv<'_> {
    /// The input filling `slot`.
    pub fn input(&self, slot: &str) -> Option<&InputInfo<'_>> {
        self.inputs.iter().find(|i| i.slot == slot)
    }
}

/// A file whose content is hashed into an instance's key.
#[derive(Clone, Debug)]
pub struct DeclaredFile {
    /// The name used in the key and in messages (as written in the pipeline).
    pub name: String,
    /// Where to read it.
    pub path: PathBuf,
    /// Whether it is a data set's file, which may be missing at planning (the plan then
    /// says so and `run` refuses); any other declared file must be there.
    pub data: bool,
    /// The file's metadata (following links), when the kind already took it while listing
    /// its files: the planner then checks the remembered hash against it instead of
    /// asking the file system again (one `stat` per declared file, not two).
    pub meta: Option<std::fs::Metadata>,
}

/// A kind of stage as the engine holds it (`&'static dyn StageKind`): its parameters,
/// inputs, key-relevant files and the work it does. Kinds implement [`Kind`]; the blanket
/// impl below makes each one a `StageKind`, so the defaults live in [`Kind`] alone.
pub trait StageKind: Send + Sync {
    /// The name used as `kind = "..."`.
    fn name(&self) -> &'static str;
    /// Code version; bump it when the output's meaning changes, so old artifacts go stale.
    fn version(&self) -> u32;
    /// One line saying what the kind does.
    fn about(&self) -> &'static str;
    /// The parameters it accepts.
    fn params(&self) -> &'static [ParamSpec];
    /// The inputs it takes.
    fn inputs(&self) -> Inputs;
    /// Checks resolved parameters beyond their types, before any work starts.
    fn check(&self, params: &Params, env: &CheckEnv<'_>) -> Result<(), ParamError>;
    /// Files whose content goes into the key (scripts, data files).
    fn files(&self, params: &Params, env: &CheckEnv<'_>) -> Vec<DeclaredFile>;
    /// Further artifacts an instance produces (checkpoints), keyed from its parameters and
    /// input keys (slot -> key) alone, so that `status` can list them before anything runs.
    ///
    /// `input_parts` gives, for each input slot, the upstream parts the instance sees (name
    /// -> key): those it reads ([`StageKind::reads`]), or all of an input read whole. A
    /// kind that works part by part (one analysis per checkpoint) keys its own parts on
    /// them, so adding a checkpoint computes one new part and reuses the others.
    fn parts(
        &self,
        params: &Params,
        input_keys: &[(String, String)],
        input_parts: &[InputParts],
    ) -> Vec<Part>;
    /// The parts of the input filling `slot` that an instance reads (names as the upstream
    /// kind's [`StageKind::parts`] gives them), or `None` when it reads the whole artifact.
    /// An instance that reads only parts is keyed on those parts' keys, not on the input's
    /// content, so a change of the input that leaves those parts alone does not rerun it.
    fn reads(&self, params: &Params, slot: &str, upstream: &InputInfo<'_>) -> Option<Vec<String>>;
    /// The Parquet tables (file stems in the artifact) that `pipe export` gathers across
    /// sweep points, e.g. `metrics` for `metrics.parquet`.
    fn tables(&self, params: &Params) -> Vec<String>;
    /// How many threads an instance wants; the scheduler may give fewer.
    fn threads(&self, params: &Params) -> usize;
    /// What a cluster job of an instance asks for unless the stage's `resources` table says
    /// otherwise.
    fn resources(&self, params: &Params) -> Resources;
    /// Does the work: reads inputs, writes files under `ctx.out`, nothing else.
    fn run(&self, ctx: &mut RunContext<'_>) -> anyhow::Result<()>;
}

/// A stage kind with typed parameters: what a kind implements. Every `Kind` is a
/// [`StageKind`] (the object-safe view the engine holds), which parses the parameters into
/// `Self::Params` once per instance and hands the struct to each method.
pub trait Kind: Send + Sync + 'static {
    /// The kind's parameters, declared with [`stage_params!`](crate::stage_params).
    type Params: KindParams;
    /// The name used as `kind = "..."` (and by the worker's dispatch).
    const NAME: &'static str;
    /// Code version; bump it when the output's meaning changes, so old artifacts go stale.
    const VERSION: u32;
    /// One line saying what the kind does.
    const ABOUT: &'static str;
    /// The inputs it takes.
    fn inputs(&self) -> Inputs;
    /// Checks the parameters beyond their types, before any work starts.
    fn check(&self, _params: &Self::Params, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        Ok(())
    }
    /// Files whose content goes into the key (scripts, data files).
    fn files(&self, _params: &Self::Params, _env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        Vec::new()
    }
    /// Further artifacts an instance produces (see [`StageKind::parts`]).
    fn parts(&self, _params: &Self::Params, _keys: &KeyInputs<'_>) -> Vec<Part> {
        Vec::new()
    }
    /// The parts of an input it reads, `None` for all of it (see [`StageKind::reads`]).
    fn reads(
        &self,
        _params: &Self::Params,
        _slot: &str,
        _upstream: &InputInfo<'_>,
    ) -> Option<Vec<String>> {
        None
    }
    /// The Parquet tables (file stems) that `pipe export` gathers.
    fn tables(&self, _params: &Self::Params) -> Vec<String> {
        Vec::new()
    }
    /// How many threads an instance wants; the scheduler may give fewer.
    fn threads(&self, _params: &Self::Params) -> usize {
        1
    }
    /// What a cluster job asks for by default: its threads as CPUs.
    fn resources(&self, params: &Self::Params) -> Resources {
        Resources {
            cpus: Some(self.threads(params).max(1) as u32),
            ..Default::default()
        }
    }
    /// Does the work: reads inputs, writes files under `ctx.out`, nothing else.
    fn run(&self, params: &Self::Params, ctx: &mut RunContext<'_>) -> anyhow::Result<()>;
}

/// Parses `params` for kind `K`, or says why not (a declaration bug, not user input).
fn typed_params<K: Kind>(params: &Params) -> Result<Arc<K::Params>, String> {
    params
        .typed::<K::Params>()
        .map_err(|e| format!("stage kind `{}`: {e}", K::NAME))
}

impl<K: Kind> StageKind for K {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn version(&self) -> u32 {
        K::VERSION
    }
    fn about(&self) -> &'static str {
        K::ABOUT
    }
    fn params(&self) -> &'static [ParamSpec] {
        K::Params::specs()
    }
    fn inputs(&self) -> Inputs {
        Kind::inputs(self)
    }
    fn check(&self, params: &Params, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let p = typed_params::<K>(params).map_err(ParamError::stage)?;
        Kind::check(self, &p, env)
    }
    fn files(&self, params: &Params, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        typed_params::<K>(params).map_or_else(|_| Vec::new(), |p| Kind::files(self, &p, env))
    }
    fn parts(
        &self,
        params: &Params,
        input_keys: &[(String, String)],
        input_parts: &[InputParts],
    ) -> Vec<Part> {
        let keys = KeyInputs {
            values: params,
            input_keys,
            input_parts,
        };
        typed_params::<K>(params).map_or_else(|_| Vec::new(), |p| Kind::parts(self, &p, &keys))
    }
    fn reads(&self, params: &Params, slot: &str, upstream: &InputInfo<'_>) -> Option<Vec<String>> {
        typed_params::<K>(params)
            .ok()
            .and_then(|p| Kind::reads(self, &p, slot, upstream))
    }
    fn tables(&self, params: &Params) -> Vec<String> {
        typed_params::<K>(params).map_or_else(|_| Vec::new(), |p| Kind::tables(self, &p))
    }
    fn threads(&self, params: &Params) -> usize {
        typed_params::<K>(params).map_or(1, |p| Kind::threads(self, &p))
    }
    fn resources(&self, params: &Params) -> Resources {
        typed_params::<K>(params)
            .map_or_else(|_| Resources::default(), |p| Kind::resources(self, &p))
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        let p = typed_params::<K>(ctx.params).map_err(anyhow::Error::msg)?;
        Kind::run(self, &p, ctx)
    }
}

/// The set of stage kinds a pipeline may use.
pub struct Registry {
    kinds: Vec<&'static dyn StageKind>,
}

impl Registry {
    /// A registry of the given kinds.
    pub fn new(kinds: Vec<&'static dyn StageKind>) -> Registry {
        Registry { kinds }
    }
    /// The kind with this name.
    pub fn get(&self, name: &str) -> Option<&'static dyn StageKind> {
        self.kinds.iter().copied().find(|k| k.name() == name)
    }
    /// Every kind, in registration order.
    pub fn all(&self) -> &[&'static dyn StageKind] {
        &self.kinds
    }
}
