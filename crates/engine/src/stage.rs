//! The one trait through which stage kinds plug into the engine, and its parameter schema.
//!
//! The engine (spec, plan, store, executor) only ever sees `&'static dyn StageKind`:
//! it validates parameters against [`StageKind::params`], hashes what the kind declares
//! into the key, and calls [`StageKind::run`] with a [`RunContext`]. What a kind does
//! inside `run` (load images, train a network) is invisible to it.

use std::any::Any;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::Value as Json;

use crate::resources::Resources;

/// The type a parameter's resolved value must have.
#[derive(Clone, Copy, Debug)]
pub enum ParamType {
    /// An integer.
    Int,
    /// A number; integers are converted to floats.
    Float,
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// A string, number or boolean.
    Scalar,
    /// An array whose elements have the given type.
    List(&'static ParamType),
    /// A table whose values have the given type.
    Map(&'static ParamType),
    /// Anything; the kind's [`StageKind::check`] validates it.
    Any,
}

impl ParamType {
    /// Describes the type for error messages and docs.
    pub fn describe(&self) -> String {
        match self {
            ParamType::Int => "an integer".into(),
            ParamType::Float => "a number".into(),
            ParamType::Str => "a string".into(),
            ParamType::Bool => "a boolean".into(),
            ParamType::Enum(opts) => format!(
                "one of {}",
                opts.iter()
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ParamType::Scalar => "a string, number or boolean".into(),
            ParamType::List(t) => format!("an array of {}", t.describe_plural()),
            ParamType::Map(t) => format!("a table of {}", t.describe_plural()),
            ParamType::Any => "any value".into(),
        }
    }

    fn describe_plural(&self) -> String {
        match self {
            ParamType::Int => "integers".into(),
            ParamType::Float => "numbers".into(),
            ParamType::Str => "strings".into(),
            ParamType::Bool => "booleans".into(),
            _ => format!("values ({})", self.describe()),
        }
    }

    /// Checks `v` against the type, converting integers to floats where a float is expected.
    pub fn coerce(&self, v: Json) -> Result<Json, String> {
        let bad = |v: &Json| {
            Err(format!(
                "expected {}, found {}",
                self.describe(),
                json_type(v)
            ))
        };
        match (self, v) {
            (ParamType::Any, v) => Ok(v),
            (ParamType::Int, Json::Number(n)) if n.is_i64() => Ok(Json::Number(n)),
            (ParamType::Float, Json::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                crate::key::float(x).ok_or_else(|| "expected a finite number".to_string())
            }
            (ParamType::Str, Json::String(s)) => Ok(Json::String(s)),
            (ParamType::Bool, Json::Bool(b)) => Ok(Json::Bool(b)),
            (ParamType::Enum(opts), Json::String(s)) => {
                if opts.contains(&s.as_str()) {
                    Ok(Json::String(s))
                } else {
                    Err(format!(
                        "expected {}, found \"{s}\"{}",
                        self.describe(),
                        crate::error::suggest(&s, opts.iter().copied())
                    ))
                }
            }
            (ParamType::Scalar, v @ (Json::String(_) | Json::Number(_) | Json::Bool(_))) => Ok(v),
            (ParamType::List(t), Json::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, x)| t.coerce(x).map_err(|e| format!("element {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            (ParamType::Map(t), Json::Object(m)) => m
                .into_iter()
                .map(|(k, x)| {
                    t.coerce(x)
                        .map(|x| (k.clone(), x))
                        .map_err(|e| format!("`{k}`: {e}"))
                })
                .collect::<Result<serde_json::Map<_, _>, _>>()
                .map(Json::Object),
            (_, v) => bad(&v),
        }
    }
}

/// The JSON type of a value, in words.
pub fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "nothing",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a float",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "a table",
    }
}

/// Whether a parameter must be given, may be left out, or has a default.
#[derive(Clone, Copy, Debug)]
pub enum Presence {
    /// The pipeline must give it.
    Required,
    /// It may be left out (and is then absent from the resolved parameters).
    Optional,
    /// Left out, it takes this value, written as a TOML literal.
    Default(&'static str),
}

/// One parameter a stage kind accepts.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// The key in the `[stage.NAME]` table.
    pub name: &'static str,
    /// The type its resolved value must have.
    pub ty: ParamType,
    /// Required, optional or defaulted.
    pub presence: Presence,
    /// Whether the value can change the output; `false` keeps it out of the key.
    pub in_key: bool,
    /// In the key only when it differs from its default, so that adding an option to a
    /// kind keeps the keys of every instance that does not use it.
    pub key_omits_default: bool,
    /// One line for the docs and `--help`.
    pub doc: &'static str,
}

impl ParamSpec {
    /// Whether `value` is this parameter's declared default.
    pub fn is_default(&self, value: &Json) -> bool {
        match self.presence {
            Presence::Default(lit) => default_literal(lit)
                .and_then(|d| self.ty.coerce(d))
                .is_ok_and(|d| &d == value),
            _ => false,
        }
    }
}

/// An input slot a stage kind takes.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The slot's name (`dataset`, `labels`, ...).
    pub name: &'static str,
    /// The stage kinds that may fill it.
    pub kinds: &'static [&'static str],
}

/// The inputs a stage kind takes.
#[derive(Clone, Copy, Debug)]
pub enum Inputs {
    /// Exactly these slots, each filled once.
    Slots(&'static [Slot]),
    /// Any number of inputs of any kind, each slot named freely.
    Any,
}

/// Resolved parameters of one instance: every declared parameter that has a value
/// (defaults filled in), and the kind's typed view of them, parsed once on first use.
///
/// The values are a flat list, names borrowed from the kind's declarations where they come
/// from a plan: a large sweep holds one `Params` per instance, and a map costs several times
/// more.
#[derive(Clone, Default)]
pub struct Params {
    values: Box<[(std::borrow::Cow<'static, str>, Json)]>,
    typed: Arc<OnceLock<Arc<dyn Any + Send + Sync>>>,
}

impl Params {
    /// Parameters with these resolved values.
    pub fn new(values: serde_json::Map<String, Json>) -> Params {
        Params {
            values: values
                .into_iter()
                .map(|(k, v)| (std::borrow::Cow::Owned(k), v))
                .collect(),
            typed: Arc::default(),
        }
    }
    /// Parameters with these resolved values, named as the kind declares them.
    pub fn declared(values: Vec<(&'static str, Json)>) -> Params {
        Params {
            values: values
                .into_iter()
                .map(|(k, v)| (std::borrow::Cow::Borrowed(k), v))
                .collect(),
            typed: Arc::default(),
        }
    }
    /// The resolved values, by name (for keys, the index and the worker's job file).
    pub fn values(&self) -> serde_json::Map<String, Json> {
        self.values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
    /// The value of one parameter, if it has one.
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.values.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    /// The typed view of the parameters, parsed on the first call and shared afterwards.
    /// Fails only when `T` does not describe these values (a kind's declaration and its
    /// struct disagree, which the kinds' tests rule out).
    pub fn typed<T: KindParams>(&self) -> Result<Arc<T>, String> {
        if let Some(cached) = self.typed.get() {
            if let Ok(t) = Arc::clone(cached).downcast::<T>() {
                return Ok(t);
            }
            return T::parse(&self.values()).map(Arc::new);
        }
        let parsed = Arc::new(T::parse(&self.values())?);
        let _ = self.typed.set(parsed.clone());
        Ok(parsed)
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.values == other.values
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.values.fmt(f)
    }
}

/// A kind's parameters as one typed struct, declared with [`stage_params!`] so that the
/// struct, the schema the spec checks, the defaults and the key marks are one declaration.
pub trait KindParams: serde::de::DeserializeOwned + Send + Sync + 'static {
    /// Every parameter: name, type, presence or default, key mark and doc, in order.
    fn specs() -> &'static [ParamSpec];
    /// Parses resolved values (already checked against [`KindParams::specs`]); a
    /// defaulted parameter that is absent (a manifest keeps only those in the key) takes
    /// its declared default.
    fn parse(values: &serde_json::Map<String, Json>) -> Result<Self, String> {
        let missing: Vec<(&str, Json)> = Self::specs()
            .iter()
            .filter(|s| !values.contains_key(s.name))
            .filter_map(|s| match s.presence {
                Presence::Default(lit) => Some(
                    default_literal(lit)
                        .and_then(|v| s.ty.coerce(v))
                        .map(|v| (s.name, v))
                        .map_err(|e| format!("the default of `{}`: {e}", s.name)),
                ),
                _ => None,
            })
            .collect::<Result<_, _>>()?;
        let entries = values
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(missing.iter().map(|(k, v)| (*k, v)));
        Self::deserialize(serde::de::value::MapDeserializer::new(entries))
            .map_err(|e: serde_json::Error| format!("parameters do not fit their declaration: {e}"))
    }
}

/// A declared default, a TOML literal (`"[512, 512]"`, `"\"auto\""`), as its JSON value
/// before the parameter's type is applied. The plan fills absent parameters with it, and
/// [`KindParams::parse`] fills what a manifest leaves out.
pub fn default_literal(literal: &str) -> Result<Json, String> {
    let doc: toml::Table = toml::from_str(&format!("v = {literal}"))
        .map_err(|e| format!("the default {literal} is not a TOML value: {e}"))?;
    serde_json::to_value(&doc["v"]).map_err(|e| e.to_string())
}

/// A Rust type a parameter can have, and the [`ParamType`] the spec checks values against.
pub trait ParamValue {
    /// The schema type of values of this Rust type.
    const TYPE: ParamType;
    /// Whether the parameter may be left out (`Option<T>`).
    const OPTIONAL: bool = false;
}

impl ParamValue for i64 {
    const TYPE: ParamType = ParamType::Int;
}
impl ParamValue for f64 {
    const TYPE: ParamType = ParamType::Float;
}
impl ParamValue for String {
    const TYPE: ParamType = ParamType::Str;
}
impl ParamValue for bool {
    const TYPE: ParamType = ParamType::Bool;
}
impl ParamValue for Json {
    const TYPE: ParamType = ParamType::Any;
}
/// A string, number or boolean, kept as written ([`ParamType::Scalar`]).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct Scalar(pub Json);

impl ParamValue for Scalar {
    const TYPE: ParamType = ParamType::Scalar;
}

impl<T: ParamValue> ParamValue for Vec<T> {
    const TYPE: ParamType = ParamType::List(&T::TYPE);
}
impl<T: ParamValue> ParamValue for std::collections::BTreeMap<String, T> {
    const TYPE: ParamType = ParamType::Map(&T::TYPE);
}
impl<T: ParamValue> ParamValue for Option<T> {
    const TYPE: ParamType = T::TYPE;
    const OPTIONAL: bool = true;
}

/// Declares an enum parameter type: a Rust enum whose variants are written as the given
/// strings in pipelines, with [`ParamType::Enum`] listing them (so `pipe kinds` and "did you
/// mean" see the same names).
#[macro_export]
macro_rules! param_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[doc = $d:literal])* $variant:ident = $text:literal),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
        pub enum $name {
            $($(#[doc = $d])* #[serde(rename = $text)] $variant,)*
        }
        impl $name {
            /// Every value, as written in pipelines.
            pub const NAMES: &'static [&'static str] = &[$($text),*];
            /// The value as written in pipelines.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }
        impl $crate::stage::ParamValue for $name {
            const TYPE: $crate::stage::ParamType = $crate::stage::ParamType::Enum(Self::NAMES);
        }
    };
}

/// Declares a kind's parameters once: a `#[derive(Deserialize)]` struct with one field per
/// parameter, and its [`KindParams::specs`] (the schema `pipe kinds` prints and the spec
/// checks) from the same lines. Each line is `name: Type, PRESENCE, "doc";` where
/// PRESENCE is `required`, `optional` (the type is then `Option<_>`) or `default "TOML"`,
/// optionally followed by `not_in_key` or `key_unless_default` (in the key only when it
/// differs from its default: an option added to a kind keeps older keys); `name as "key": ...` names a parameter whose key is
/// not a Rust identifier (`final`). The [`ParamType`] comes from the Rust type
/// ([`ParamValue`]). `..field: Type;` at the end includes another declared struct's
/// parameters (shared groups such as a worker's `device` and `threads`).
#[macro_export]
macro_rules! stage_params {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $field:ident $(as $rename:literal)? : $ty:ty, $presence:ident $($default:literal)? $(, $nik:ident)?, $doc:literal;
            )*
            $(..$group_field:ident : $group:ty;)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, serde::Deserialize)]
        pub struct $name {
            $(
                #[doc = $doc]
                $(#[serde(rename = $rename)])?
                pub $field: $ty,
            )*
            $(
                /// Parameters shared with other kinds.
                #[serde(flatten)]
                pub $group_field: $group,
            )?
        }

        /// Each parameter's name as written in pipelines, one constant per field (named as
        /// the field), for checks and key lists: `ParamError::param(TrainParams::epochs, ..)`.
        #[allow(non_upper_case_globals, dead_code)]
        impl $name {
            $(
                #[doc = concat!("The name of the parameter `", $crate::stage_params!(@name $field $($rename)?), "`.")]
                pub const $field: &'static str = $crate::stage_params!(@name $field $($rename)?);
            )*
        }

        impl $crate::stage::KindParams for $name {
            fn specs() -> &'static [$crate::stage::ParamSpec] {
                static SPECS: std::sync::LazyLock<Vec<$crate::stage::ParamSpec>> =
                    std::sync::LazyLock::new(|| {
                        #[allow(unused_mut)]
                        let mut specs = vec![$(
                            $crate::stage::ParamSpec {
                                name: $crate::stage_params!(@name $field $($rename)?),
                                ty: <$ty as $crate::stage::ParamValue>::TYPE,
                                presence: $crate::stage_params!(@presence $ty, $presence $($default)?),
                                in_key: $crate::stage_params!(@in_key $($nik)?),
                                key_omits_default: $crate::stage_params!(@omits_default $($nik)?),
                                doc: $doc,
                            },
                        )*];
                        $(specs.extend_from_slice(<$group as $crate::stage::KindParams>::specs());)?
                        specs
                    });
                &SPECS
            }
        }
    };
    (@presence $ty:ty, required) => { $crate::stage::Presence::Required };
    (@presence $ty:ty, optional) => {{
        const _: () = assert!(<$ty as $crate::stage::ParamValue>::OPTIONAL, "an optional parameter's type must be Option<_>");
        $crate::stage::Presence::Optional
    }};
    (@presence $ty:ty, default $d:literal) => { $crate::stage::Presence::Default($d) };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $rename:literal) => { $rename };
    (@in_key) => { true };
    (@in_key not_in_key) => { false };
    (@in_key key_unless_default) => { true };
    (@omits_default) => { false };
    (@omits_default not_in_key) => { false };
    (@omits_default key_unless_default) => { true };
}

/// A parameter problem found by [`StageKind::check`].
#[derive(Debug)]
pub struct ParamError {
    /// The parameter at fault, if one is (the error then points at its value).
    pub param: Option<&'static str>,
    /// What is wrong and what to do.
    pub message: String,
}

impl ParamError {
    /// An error about one parameter.
    pub fn param(param: &'static str, message: impl Into<String>) -> ParamError {
        ParamError {
            param: Some(param),
            message: message.into(),
        }
    }
    /// An error about the stage as a whole.
    pub fn stage(message: impl Into<String>) -> ParamError {
        ParamError {
            param: None,
            message: message.into(),
        }
    }
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
}

/// An input artifact of a running instance.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct InputArtifact {
    /// The slot it fills.
    pub slot: String,
    /// Its key.
    pub key: String,
    /// What the instance's key took from it: the input's content digest, or the identity
    /// of the parts it reads ([`StageKind::reads`]). Parts are keyed on these.
    pub id: String,
    /// The upstream parts the instance sees through this slot (name -> key).
    #[serde(default)]
    pub parts: Vec<(String, String)>,
    /// Its (complete, read-only) directory.
    pub dir: PathBuf,
}

/// A further artifact an instance produces besides its own (a training checkpoint), with
/// its own key so that other instances can reuse it.
#[derive(Clone, Debug)]
pub struct Part {
    /// What it is, for people: `epoch 5`.
    pub name: String,
    /// Its key, computed from the instance's parameters and input keys alone.
    pub key: String,
}

/// Everything an instance's [`StageKind::run`] may use.
pub struct RunContext<'a> {
    /// The instance's resolved parameters.
    pub params: &'a Params,
    /// Each input slot with the key and directory of the artifact that fills it.
    pub inputs: &'a [InputArtifact],
    /// Reads and writes the instance's parts (see [`StageKind::parts`]).
    pub parts: &'a crate::store::Parts,
    /// The (temporary) directory to write the output into.
    pub out: &'a Path,
    /// The instance's log; stages write progress and diagnostics here.
    pub log: &'a mut File,
    /// Where the log is (for stages that hand their work to another process).
    pub log_path: &'a Path,
    /// How many threads the instance may use.
    pub threads: usize,
    /// The directory relative paths in the pipeline file are resolved against.
    pub base_dir: &'a Path,
    /// The instance's key.
    pub key: &'a str,
    /// The sweep variables the instance depends on.
    pub point: &'a Json,
    /// When the stage must have ended (its `timeout`), if ever: kinds that run a process
    /// wait for it with [`wait_until`], which kills it then.
    pub deadline: Option<std::time::Instant>,
    /// When the executor places instances on GPUs (`--gpus`), the `CUDA_VISIBLE_DEVICES`
    /// that processes the kind starts must get: the instance's GPU, or `""` (none) for a CPU
    /// instance. `None`: leave the environment as it is.
    pub visible_gpus: Option<&'a str>,
}

impl RunContext<'_> {
    /// Each input's identity in the key and the upstream parts it shows: what a kind keys
    /// its parts on while it runs (`ctx.input_identities().keys(ctx.params)`).
    pub fn input_identities(&self) -> InputIdentities {
        let (ids, parts) = self
            .inputs
            .iter()
            .map(|i| {
                (
                    (i.slot.clone(), i.id.clone()),
                    (i.slot.clone(), i.parts.clone()),
                )
            })
            .unzip();
        InputIdentities { ids, parts }
    }

    /// The artifact directory filling an input slot.
    pub fn input(&self, slot: &str) -> anyhow::Result<&Path> {
        self.inputs
            .iter()
            .find(|i| i.slot == slot)
            .map(|i| i.dir.as_path())
            .ok_or_else(|| anyhow::anyhow!("input slot `{slot}` is not connected"))
    }
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

/// What a kind keys its parts on: the instance's resolved parameter values and what its
/// key took from each input (slot -> the input's content digest or parts identity).
pub struct KeyInputs<'a> {
    /// The resolved parameter values.
    pub values: &'a Params,
    /// Each input slot's identity in the key.
    pub input_keys: &'a [(String, String)],
    /// Each input slot's upstream parts the instance sees (see [`StageKind::parts`]).
    pub input_parts: &'a [InputParts],
}

/// One input slot's upstream parts, name -> key.
pub type InputParts = (String, Vec<(String, String)>);

impl KeyInputs<'_> {
    /// The key of the upstream part `name` seen through `slot`.
    pub fn input_part(&self, slot: &str, name: &str) -> Option<&str> {
        self.input_parts
            .iter()
            .find(|(s, _)| s == slot)?
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_str())
    }

    /// The upstream parts seen through `slot` (name -> key), in order.
    pub fn parts_of(&self, slot: &str) -> &[(String, String)] {
        self.input_parts
            .iter()
            .find(|(s, _)| s == slot)
            .map_or(&[], |(_, p)| p.as_slice())
    }

    /// The key of a part made from one upstream part (an analysis of one checkpoint): the
    /// kind's parameters in the key but `leave_out` (the list of epochs, say), `part_kind`,
    /// its `version`, and the upstream part's key. It depends on nothing else, so the same
    /// work on the same upstream part has the same key in any instance.
    pub fn derived_part_key(
        &self,
        part_kind: &str,
        version: u32,
        specs: &[ParamSpec],
        leave_out: &[&str],
        upstream_part: &str,
    ) -> String {
        let mut p = self.key_params(specs, leave_out);
        p.insert("input_part".into(), upstream_part.into());
        crate::key::compute_key(part_kind, version, &p, &[], &[])
    }

    /// One part per upstream part seen through `slot`, named like it and keyed by
    /// [`KeyInputs::derived_part_key`]: per-epoch work stored per epoch.
    pub fn parts_per_input_part(
        &self,
        slot: &str,
        part_kind: &str,
        version: u32,
        specs: &[ParamSpec],
        leave_out: &[&str],
    ) -> Vec<Part> {
        self.parts_of(slot)
            .iter()
            .map(|(name, upstream)| Part {
                name: name.clone(),
                key: self.derived_part_key(part_kind, version, specs, leave_out, upstream),
            })
            .collect()
    }
}

/// What a running instance's key took from its inputs, owned (see
/// [`RunContext::input_identities`]); [`InputIdentities::keys`] views it as [`KeyInputs`].
pub struct InputIdentities {
    /// Each slot's identity in the key.
    pub ids: Vec<(String, String)>,
    /// Each slot's upstream parts.
    pub parts: Vec<InputParts>,
}

impl InputIdentities {
    /// The [`KeyInputs`] of these identities and the instance's parameters.
    pub fn keys<'a>(&'a self, values: &'a Params) -> KeyInputs<'a> {
        KeyInputs {
            values,
            input_keys: &self.ids,
            input_parts: &self.parts,
        }
    }
}

impl KeyInputs<'_> {
    /// The values of the parameters in `specs` that are in the key, minus `leave_out`.
    pub fn key_params(
        &self,
        specs: &[ParamSpec],
        leave_out: &[&str],
    ) -> serde_json::Map<String, Json> {
        specs
            .iter()
            .filter(|s| s.in_key && !leave_out.contains(&s.name))
            .filter_map(|s| {
                let v = self.values.get(s.name)?;
                (!(s.key_omits_default && s.is_default(v))).then(|| (s.name.to_string(), v.clone()))
            })
            .collect()
    }
}

/// A stage kind with typed parameters: what a kind implements. Every `Kind` is a
/// [`StageKind`] (the object-safe view the engine holds), which parses the parameters into
/// `Self::Params` once per instance and hands the struct to each method.
pub trait Kind: Send + Sync + 'static {
    /// The kind's parameters, declared with [`stage_params!`].
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

/// Marks a stage failure as caused by the user's data (a malformed or missing data file),
/// not by the code: the run then exits with code 2 instead of 1.
#[derive(Debug)]
pub struct BadData(pub String);

impl std::fmt::Display for BadData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadData {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_accept_integers_and_lists_check_elements() {
        assert_eq!(
            ParamType::Float.coerce(Json::from(1)).unwrap(),
            serde_json::json!(1.0)
        );
        assert!(ParamType::Int.coerce(serde_json::json!(1.5)).is_err());
        let e = ParamType::List(&ParamType::Int)
            .coerce(serde_json::json!([1, "x"]))
            .unwrap_err();
        assert!(e.contains("element 1"), "{e}");
        let e = ParamType::Enum(&["permute", "uniform"])
            .coerce(serde_json::json!("permut"))
            .unwrap_err();
        assert!(e.contains("did you mean `permute`"), "{e}");
    }
}

/// A stage ran past its `timeout` and was stopped.
#[derive(Debug)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it ran past its timeout and was killed")
    }
}

impl std::error::Error for TimedOut {}

/// Waits for a child process; at the deadline kills it (with its process group when
/// `group`, for commands that start their own children) and fails with [`TimedOut`].
pub fn wait_until(
    child: &mut std::process::Child,
    deadline: Option<std::time::Instant>,
    group: bool,
) -> anyhow::Result<std::process::ExitStatus> {
    let pgid = child.id() as i32;
    if group {
        live_groups().push(pgid);
    }
    let status = wait_for(child, deadline, group);
    if group {
        // What the command left running in its group (`sleep 1000 &`) must not outlive it:
        // it could write into the artifact after it is sealed.
        // SAFETY: kill(2) on our own child's process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        live_groups().retain(|g| *g != pgid);
    }
    status
}

/// The process groups of the commands running now (see [`kill_live_groups`]).
fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    static GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every process group of a command still running (on SIGINT or SIGTERM, before
/// `pipe` exits), so that no command or its background children outlive it.
pub fn kill_live_groups() {
    for g in live_groups().iter() {
        // SAFETY: kill(2) on a process group this process started; no memory is touched.
        unsafe {
            libc::kill(-g, libc::SIGKILL);
        }
    }
}

/// Waits for `child`, killing it (and with `group` its process group) at `deadline`.
fn wait_for(
    child: &mut std::process::Child,
    deadline: Option<std::time::Instant>,
    group: bool,
) -> anyhow::Result<std::process::ExitStatus> {
    let Some(deadline) = deadline else {
        return Ok(child.wait()?);
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            if group {
                // SAFETY: kill(2) on our own child's process group; no memory is touched.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow::Error::new(TimedOut));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod typed_params_tests {
    use super::*;
    use serde_json::json;

    crate::param_enum! {
        /// A test enum.
        pub enum Mode {
            Fast = "fast",
            Careful = "careful",
        }
    }

    crate::stage_params! {
        /// Shared parameters.
        pub struct Shared {
            threads: i64, default "1", not_in_key, "threads";
        }
    }

    crate::stage_params! {
        /// A kind's parameters.
        pub struct Sample {
            lr: f64, required, "a rate";
            size: Option<i64>, optional, "a size";
            mode: Mode, default "\"careful\"", "a mode";
            widths: Vec<i64>, default "[4, 2]", "widths";
            last as "final": Scalar, default "\"final\"", "a keyword name";
            record: bool, default "false", key_unless_default, "an option added later";
            ..shared: Shared;
        }
    }

    #[test]
    fn one_declaration_gives_the_schema_and_the_struct() {
        let specs = Sample::specs();
        let rows: Vec<String> = specs
            .iter()
            .map(|s| {
                let presence = match s.presence {
                    Presence::Required => "required".to_string(),
                    Presence::Optional => "optional".to_string(),
                    Presence::Default(d) => format!("default {d}"),
                };
                format!("{} {} {presence} {}", s.name, s.ty.describe(), s.in_key)
            })
            .collect();
        assert_eq!(
            rows,
            [
                "lr a number required true",
                "size an integer optional true",
                "mode one of \"fast\", \"careful\" default \"careful\" true",
                "widths an array of integers default [4, 2] true",
                "final a string, number or boolean default \"final\" true",
                "record a boolean default false true",
                "threads an integer default 1 false",
            ]
        );
        // Absent defaulted values take their declared defaults; optional ones stay None.
        let values = json!({"lr": 0.5}).as_object().unwrap().clone();
        let p = Params::new(values).typed::<Sample>().unwrap();
        assert_eq!(p.lr, 0.5);
        assert_eq!(p.size, None);
        assert_eq!(p.mode, Mode::Careful);
        assert_eq!(
            (p.mode.as_str(), Mode::NAMES),
            ("careful", &["fast", "careful"][..])
        );
        assert_eq!(p.widths, [4, 2]);
        assert_eq!(p.last, Scalar(json!("final")));
        assert_eq!(p.shared.threads, 1);
        assert!(!p.record);
        let values = json!({"lr": 1.0, "size": 3, "mode": "fast", "final": 7, "threads": 4});
        let p = Sample::parse(values.as_object().unwrap()).unwrap();
        assert_eq!((p.size, p.mode, p.shared.threads), (Some(3), Mode::Fast, 4));
        assert_eq!(p.last, Scalar(json!(7)));
        assert!(
            Sample::parse(&serde_json::Map::new()).is_err(),
            "lr is required"
        );
    }

    #[test]
    fn an_option_at_its_default_stays_out_of_the_key() {
        let key_names = |values: serde_json::Value| -> Vec<String> {
            let params = Params::new(values.as_object().unwrap().clone());
            let keys = KeyInputs {
                values: &params,
                input_keys: &[],
                input_parts: &[],
            };
            keys.key_params(Sample::specs(), &[])
                .keys()
                .cloned()
                .collect()
        };
        // `threads` is never in the key; `record` only when it is not `false`; a defaulted
        // parameter without the mark is in the key at its default too.
        let base = json!({"lr": 1.0, "mode": "careful", "threads": 2});
        assert_eq!(key_names(base.clone()), ["lr", "mode"]);
        let mut off = base.clone();
        off["record"] = json!(false);
        assert_eq!(key_names(off), ["lr", "mode"]);
        let mut on = base;
        on["record"] = json!(true);
        assert_eq!(key_names(on), ["lr", "mode", "record"]);
    }

    #[test]
    fn typed_params_are_parsed_once_and_shared_by_clones() {
        let params = Params::new(json!({"lr": 0.25}).as_object().unwrap().clone());
        let a = params.typed::<Sample>().unwrap();
        let b = params.clone().typed::<Sample>().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
