//! Pipeline files: TOML text -> a typed, validated [`Spec`].
//!
//! Everything a user can get wrong in a pipeline file is caught here or in the plan,
//! with the file, line and column of the offending key or value.

mod inputs;
pub mod node;
mod order;
mod overrides;
pub mod resources;
mod stage_table;
pub mod sweep;
pub mod template;
pub mod top_level;

pub use crate::resources::Resources;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use crate::error::{Error, Loc, Source, suggest};
use crate::stage::{ParamSpec, Registry, StageKind};
use node::{KeyNode, Node};
pub use sweep::Sweep;

/// Keys of a `[stage.NAME]` table that belong to the engine, not to the stage kind.
pub const STAGE_KEYS: &[&str] = &["kind", "inputs", "resources", "timeout", "retries"];

/// A validated pipeline.
pub struct Spec {
    /// The pipeline file.
    pub path: PathBuf,
    /// Directory that relative paths in the pipeline resolve against (the file's directory).
    pub base_dir: PathBuf,
    /// `pipeline.name`.
    pub name: String,
    /// `pipeline.description`, if given.
    pub description: Option<String>,
    /// The expanded sweep.
    pub sweep: Sweep,
    /// The stages, inputs before the stages that use them (declaration order otherwise).
    pub stages: Vec<StageSpec>,
    /// `[cache] remote = "s3://bucket/prefix"`: the remote cache, if any.
    pub remote: Option<String>,
    /// `[cache] dir = "PATH"`: the local cache folder, resolved against `base_dir`.
    pub cache_dir: Option<PathBuf>,
    /// `[[report.plot]]`: figures of the stages' tables for `pipe report`.
    pub plots: Vec<top_level::PlotSpec>,
    /// Sweep variables no stage references (they only repeat instances under more names),
    /// each as a located message for a warning.
    pub unused_vars: Vec<String>,
}

/// The `[cache] dir` of the pipeline file at `path`, resolved against the file's folder,
/// read without validating the rest of the file (which loading does, with located errors).
pub fn cache_dir_of(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: toml::Table = toml::from_str(&text).ok()?;
    let dir = doc.get("cache")?.get("dir")?.as_str()?;
    Some(path.parent().unwrap_or(Path::new(".")).join(dir))
}

/// One `[stage.NAME]` table.
pub struct StageSpec {
    /// The stage's name.
    pub name: String,
    /// Where the stage's table starts.
    pub loc: Loc,
    /// Its kind.
    pub kind: &'static dyn StageKind,
    /// Its inputs, by slot.
    pub inputs: Vec<InputRef>,
    /// Each declared parameter of the kind with the node the pipeline gave for it, if any.
    pub params: Vec<(ParamSpec, Option<Node>)>,
    /// Sweep variables referenced directly in the stage's parameters (indexes into the sweep).
    pub vars: BTreeSet<usize>,
    /// Those of `vars` referenced by parameters in the key: the sweep point a command is
    /// shown (`PIPE_POINT`), which two instances sharing a key always agree on.
    pub key_vars: BTreeSet<usize>,
    /// What the stage's `resources` table asks for (cluster executors only).
    pub resources: Resources,
    /// `timeout = "2h"`: an instance running longer is stopped and fails.
    pub timeout: Option<std::time::Duration>,
    /// `retries = 1`: a failed instance is run again up to this many times (not for bad data).
    pub retries: u32,
}

/// One input connection.
pub struct InputRef {
    /// The slot it fills.
    pub slot: String,
    /// The upstream stage's name.
    pub stage: String,
    /// Index of the upstream stage in [`Spec::stages`].
    pub index: usize,
    /// Where the connection was written.
    pub loc: Loc,
}

impl Spec {
    /// Reads and validates a pipeline file, applying `--set KEY=VALUE` overrides.
    pub fn load(path: &Path, sets: &[String], registry: &Registry) -> Result<Spec, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!("cannot read pipeline file {}: {e}", path.display()))
        })?;
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Spec::parse(
            &path.display().to_string(),
            &text,
            &base_dir,
            sets,
            registry,
        )
        .map(|mut s| {
            s.path = path.to_path_buf();
            s
        })
    }

    /// Validates pipeline text named `name`, whose relative paths resolve against `base_dir`.
    pub fn parse(
        name: &str,
        text: &str,
        base_dir: &Path,
        sets: &[String],
        registry: &Registry,
    ) -> Result<Spec, Error> {
        let source = Source::new(name, text);
        let mut doc = node::parse_document(&source)?;
        for set in sets {
            overrides::apply_set(&mut doc, set)?;
        }
        build(doc, &source, base_dir, registry)
    }

    /// The stage with this name.
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// The error for a key that is not allowed where it was written (`allowed` are the keys that
/// are), with a suggestion if one is close.
fn unknown_key(key: &KeyNode, path: &str, allowed: &[&str]) -> Error {
    Error::at(
        &key.loc,
        path,
        format!(
            "unknown key{}; allowed here: {}",
            suggest(&key.name, allowed.iter().copied()),
            allowed.join(", ")
        ),
    )
}

/// Whether `s` is a valid pipeline or stage name: letters, digits, `_` and `-`, not empty.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A table's entries by key, with the key's and the value's locations.
type Table = IndexMap<String, (KeyNode, Node)>;

/// Checks a parsed pipeline document (overrides applied) and builds the [`Spec`]: the
/// top-level tables, the sweep, every stage table, the stages' inputs, and the stages in
/// dependency order. Problems are found in that order, each stage's before the next's.
fn build(
    doc: Node,
    source: &Arc<Source>,
    base_dir: &Path,
    registry: &Registry,
) -> Result<Spec, Error> {
    let top = doc.as_table("")?;
    top_level::check_keys(top)?;
    let start = Loc::new(source, 0..0);
    let (name, description) = top_level::pipeline(top, &start)?;
    let cache = top_level::cache(top)?;
    let plots = top_level::report(top)?;
    let sweep = Sweep::parse(top.get("sweep").map(|(_, n)| n))?;
    top_level::check_plot_vars(&plots, &sweep.var_names())?;
    let raws = top_level::stages(top, &start)?
        .iter()
        .map(|(sname, (skey, snode))| stage_table::parse(sname, skey, snode, registry, &sweep))
        .collect::<Result<Vec<_>, _>>()?;
    let stages = order::dependency_order(inputs::connect(raws)?)?;
    // A variable no stage references only repeats instances under more names: worth a
    // warning (a `--set` may have replaced its only use on purpose), not an error.
    let unused_vars = sweep
        .vars
        .iter()
        .enumerate()
        .filter(|(i, _)| !stages.iter().any(|s| s.vars.contains(i)))
        .map(|(_, var)| {
            Error::at(
                &var.loc,
                &format!("sweep.{}", var.name),
                format!("no stage uses `${{{}}}`", var.name),
            )
            .to_string()
        })
        .collect();
    Ok(Spec {
        path: PathBuf::from(&source.name),
        base_dir: base_dir.to_path_buf(),
        name,
        description,
        remote: cache.remote,
        cache_dir: cache.dir.map(|d| base_dir.join(d)),
        plots,
        sweep,
        stages,
        unused_vars,
    })
}
