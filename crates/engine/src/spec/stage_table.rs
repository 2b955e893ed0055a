//! One `[stage.NAME]` table: its name and kind, its inputs as written, the engine's keys
//! (`resources`, `timeout`, `retries`) and the parameters, checked against the kind's schema
//! and for the sweep variables they reference. Inputs are resolved to stages later
//! ([`super::inputs`]), once every stage is known.

use std::collections::BTreeSet;
use std::time::Duration;

use super::node::{KeyNode, Node, Value};
use super::resources::parse_duration;
use super::sweep::Sweep;
use super::{Resources, STAGE_KEYS, StageSpec, Table, template, valid_name};
use crate::error::{Error, Loc, suggest};
use crate::stage::{ParamSpec, Presence, Registry, StageKind};

/// An input as written: the slot it names (if the inputs are a table), the upstream
/// stage's name, and where the name was written.
pub(super) type WrittenInput = (Option<String>, String, Loc);

/// Each parameter of a kind with the value a stage table gives for it, if any.
type GivenParams = Vec<(ParamSpec, Option<Node>)>;

/// A stage table read and checked, its inputs not yet resolved to stages and slots.
pub(super) struct RawStage {
    /// The stage, with no inputs yet.
    pub spec: StageSpec,
    /// Its inputs as written, in order.
    pub inputs: Vec<WrittenInput>,
    /// Where the `inputs` value was written, if the table has one.
    pub inputs_loc: Option<Loc>,
}

/// Reads the table `[stage.NAME]` (`name`, written at `key`).
pub(super) fn parse(
    name: &str,
    key: &KeyNode,
    node: &Node,
    registry: &Registry,
    sweep: &Sweep,
) -> Result<RawStage, Error> {
    let path = format!("stage.{name}");
    if !valid_name(name) {
        return Err(Error::at(
            &key.loc,
            &path,
            "a stage name may hold only letters, digits, `_` and `-`",
        ));
    }
    let t = node.as_table(&path)?;
    let kind = kind(t, key, &path, registry)?;
    let (inputs, inputs_loc) = written_inputs(t, &path)?;
    check_keys(t, kind, &path)?;
    let resources = match t.get("resources") {
        Some((_, n)) => Resources::parse(n, &format!("{path}.resources"))?,
        None => Resources::default(),
    };
    let timeout = timeout(t, &path)?;
    let retries = retries(t, &path)?;
    let (params, vars, key_vars) = params(t, kind, key, &path, sweep)?;
    Ok(RawStage {
        spec: StageSpec {
            name: name.to_string(),
            loc: key.loc.clone(),
            kind,
            inputs: Vec::new(),
            params,
            vars,
            key_vars,
            resources,
            timeout,
            retries,
        },
        inputs,
        inputs_loc,
    })
}

/// The stage's `kind`, which must be given and be one of the registry's kinds.
fn kind(
    t: &Table,
    key: &KeyNode,
    path: &str,
    registry: &Registry,
) -> Result<&'static dyn StageKind, Error> {
    let Some((_, kind_node)) = t.get("kind") else {
        return Err(Error::at(&key.loc, path, "missing `kind`"));
    };
    let kind_name = kind_node.as_str(&format!("{path}.kind"))?;
    registry.get(kind_name).ok_or_else(|| {
        let names: Vec<&str> = registry.all().iter().map(|k| k.name()).collect();
        Error::at(
            &kind_node.loc,
            &format!("{path}.kind"),
            format!(
                "unknown stage kind \"{kind_name}\"{}; known kinds: {}",
                suggest(kind_name, names.iter().copied()),
                names.join(", ")
            ),
        )
    })
}

/// The stage's `inputs` as written (an array of stage names, or a table of slot = stage)
/// and where the value was written; none if the table has no `inputs`.
fn written_inputs(t: &Table, path: &str) -> Result<(Vec<WrittenInput>, Option<Loc>), Error> {
    let mut inputs = Vec::new();
    let Some((_, inode)) = t.get("inputs") else {
        return Ok((inputs, None));
    };
    let ipath = format!("{path}.inputs");
    match &inode.value {
        Value::Array(items) => {
            for item in items {
                inputs.push((None, item.as_str(&ipath)?.to_string(), item.loc.clone()));
            }
        }
        Value::Table(slots) => {
            for (slot, (_, v)) in slots {
                inputs.push((
                    Some(slot.clone()),
                    v.as_str(&format!("{ipath}.{slot}"))?.to_string(),
                    v.loc.clone(),
                ));
            }
        }
        other => {
            return Err(Error::at(
                &inode.loc,
                &ipath,
                format!(
                    "expected an array of stage names or a table of slot = stage, found {}",
                    other.type_name()
                ),
            ));
        }
    }
    Ok((inputs, Some(inode.loc.clone())))
}

/// Rejects the first key that is neither one of the engine's [`STAGE_KEYS`] nor a
/// parameter of the kind.
fn check_keys(t: &Table, kind: &dyn StageKind, path: &str) -> Result<(), Error> {
    let allowed: Vec<&str> = STAGE_KEYS
        .iter()
        .copied()
        .chain(kind.params().iter().map(|p| p.name))
        .collect();
    for (k, (key, _)) in t {
        if !allowed.contains(&k.as_str()) {
            return Err(Error::at(
                &key.loc,
                &format!("{path}.{k}"),
                format!(
                    "unknown key for {} `{}` stage{}; allowed: {}",
                    crate::error::article(kind.name()),
                    kind.name(),
                    suggest(k, allowed.iter().copied()),
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// `timeout = "2h"` (or a number of seconds): how long an instance may run, if limited.
fn timeout(t: &Table, path: &str) -> Result<Option<Duration>, Error> {
    let Some((_, n)) = t.get("timeout") else {
        return Ok(None);
    };
    let at = format!("{path}.timeout");
    let text = match &n.value {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        _ => n.as_str(&at)?.to_string(),
    };
    let duration = parse_duration(&text).ok_or_else(|| {
        Error::at(
            &n.loc,
            &at,
            format!(
                "\"{text}\" is not a duration; write e.g. \"2h\", \"90m\", \"1h30m\", \"45s\" or seconds"
            ),
        )
    })?;
    Ok(Some(duration))
}

/// `retries = N` (0 to 100, 0 if not given): how often a failed instance is run again.
fn retries(t: &Table, path: &str) -> Result<u32, Error> {
    let Some((_, n)) = t.get("retries") else {
        return Ok(0);
    };
    match &n.value {
        Value::Int(i) if (0..=100).contains(i) => Ok(*i as u32),
        other => Err(Error::at(
            &n.loc,
            &format!("{path}.retries"),
            format!(
                "expected an integer from 0 to 100, found {}",
                match other {
                    Value::Int(i) => i.to_string(),
                    o => o.type_name().to_string(),
                }
            ),
        )),
    }
}

/// Each parameter of the kind with the value the table gives for it, if any (a required
/// one must be given), the sweep variables those values reference, and those referenced
/// by parameters in the key.
fn params(
    t: &Table,
    kind: &dyn StageKind,
    key: &KeyNode,
    path: &str,
    sweep: &Sweep,
) -> Result<(GivenParams, BTreeSet<usize>, BTreeSet<usize>), Error> {
    let mut params = Vec::new();
    let mut vars = BTreeSet::new();
    let mut key_vars = BTreeSet::new();
    for p in kind.params() {
        let given = t.get(p.name).map(|(_, n)| n.clone());
        if given.is_none() && matches!(p.presence, Presence::Required) {
            return Err(Error::at(
                &key.loc,
                path,
                format!("missing required parameter `{}` ({})", p.name, p.doc),
            ));
        }
        if let Some(n) = &given {
            let mut these = BTreeSet::new();
            sweep_references(n, &format!("{path}.{}", p.name), sweep, &mut these)?;
            if p.in_key {
                key_vars.extend(these.iter().copied());
            }
            vars.extend(these);
        }
        params.push((*p, given));
    }
    Ok((params, vars, key_vars))
}

/// Adds the index of every sweep variable that `${var}` references in `n` (the value of
/// parameter `ppath`) to `vars`; a variable the sweep does not have is an error.
fn sweep_references(
    n: &Node,
    ppath: &str,
    sweep: &Sweep,
    vars: &mut BTreeSet<usize>,
) -> Result<(), Error> {
    template::for_each_reference(n, &mut |var, at| {
        let i = sweep.var_index(var).ok_or_else(|| {
            let names: Vec<&str> = sweep.vars.iter().map(|v| v.name.as_str()).collect();
            Error::at(
                &at.loc,
                ppath,
                format!(
                    "unknown sweep variable `{var}`{}; the sweep has: {}",
                    suggest(var, names.iter().copied()),
                    if names.is_empty() {
                        "no variables".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })?;
        vars.insert(i);
        Ok(())
    })
}
