//! The parameter schema: the types a parameter may have, presence and defaults, the
//! resolved values of an instance and their typed view.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use serde_json::Value as Json;

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
    /// Anything; the kind's [`StageKind::check`](super::StageKind::check) validates it.
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

/// Whether [`Params::typed`] keeps what it parses (see [`keep_typed_views`]).
static KEEP_TYPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Says whether each [`Params`] keeps its typed view once parsed. A plan of many instances
/// turns it off: each view would hold a parsed copy of its instance's parameters (20 MB
/// for 100,000 `exec` instances), and parsing again costs about half a microsecond.
pub fn keep_typed_views(keep: bool) {
    KEEP_TYPED.store(keep, std::sync::atomic::Ordering::Relaxed);
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
    typed: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Params {
    /// Parameters with these resolved values.
    pub fn new(values: serde_json::Map<String, Json>) -> Params {
        Params {
            values: values
                .into_iter()
                .map(|(k, v)| (std::borrow::Cow::Owned(k), v))
                .collect(),
            typed: OnceLock::new(),
        }
    }
    /// Parameters with these resolved values, named as the kind declares them.
    pub fn declared(values: Vec<(&'static str, Json)>) -> Params {
        Params {
            values: values
                .into_iter()
                .map(|(k, v)| (std::borrow::Cow::Borrowed(k), v))
                .collect(),
            typed: OnceLock::new(),
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
    /// The values parsed as `T`, without building a map of them.
    fn parse<T: KindParams>(&self) -> Result<T, String> {
        T::parse_entries(
            |name| self.values.iter().any(|(k, _)| k == name),
            self.values.iter().map(|(k, v)| (k.as_ref(), v)),
        )
    }
    /// The typed view of the parameters, parsed on the first call and shared afterwards.
    /// Fails only when `T` does not describe these values (a kind's declaration and its
    /// struct disagree, which the kinds' tests rule out).
    pub fn typed<T: KindParams>(&self) -> Result<Arc<T>, String> {
        if let Some(cached) = self.typed.get() {
            if let Ok(t) = Arc::clone(cached).downcast::<T>() {
                return Ok(t);
            }
            return self.parse::<T>().map(Arc::new);
        }
        let parsed = Arc::new(self.parse::<T>()?);
        if KEEP_TYPED.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.typed.set(parsed.clone());
        }
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

/// A kind's parameters as one typed struct, declared with [`stage_params!`](crate::stage_params) so that the
/// struct, the schema the spec checks, the defaults and the key marks are one declaration.
pub trait KindParams: serde::de::DeserializeOwned + Send + Sync + 'static {
    /// Every parameter: name, type, presence or default, key mark and doc, in order.
    fn specs() -> &'static [ParamSpec];
    /// Parses resolved values (already checked against [`KindParams::specs`]); a
    /// defaulted parameter that is absent (a manifest keeps only those in the key) takes
    /// its declared default.
    fn parse(values: &serde_json::Map<String, Json>) -> Result<Self, String> {
        Self::parse_entries(
            |name| values.contains_key(name),
            values.iter().map(|(k, v)| (k.as_str(), v)),
        )
    }
    /// [`KindParams::parse`] over `(name, value)` pairs, `has` saying whether a name is
    /// among them (no map is built).
    fn parse_entries<'a>(
        has: impl Fn(&str) -> bool,
        entries: impl Iterator<Item = (&'a str, &'a Json)>,
    ) -> Result<Self, String> {
        let missing: Vec<(&str, Json)> = Self::specs()
            .iter()
            .filter(|s| !has(s.name))
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
        let mut all: Vec<(&str, &Json)> = entries.collect();
        all.extend(missing.iter().map(|(k, v)| (*k, v)));
        Self::deserialize(serde::de::value::MapDeserializer::new(all.into_iter()))
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

/// A parameter problem found by [`StageKind::check`](super::StageKind::check).
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
