//! Pipeline files: TOML text -> a typed, validated [`Spec`].
//!
//! Everything a user can get wrong in a pipeline file is caught here or in the plan,
//! with the file, line and column of the offending key or value.

pub mod node;
pub mod resources;
pub mod sweep;
pub mod template;

pub use crate::resources::Resources;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use crate::error::{Error, Loc, Source, suggest};
use crate::stage::{Inputs, ParamSpec, Presence, Registry, StageKind};
use node::{KeyNode, Node, Value};
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
            apply_set(&mut doc, set)?;
        }
        build(doc, &source, base_dir, registry)
    }

    /// The stage with this name.
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// Applies one `--set key.path=VALUE` (VALUE parsed as TOML, or taken as a string if it is not TOML).
fn apply_set(doc: &mut Node, arg: &str) -> Result<(), Error> {
    let Some(eq) = arg.find('=') else {
        return Err(Error::usage(format!(
            "--set {arg}: expected KEY=VALUE, e.g. --set stage.train.epochs=40"
        )));
    };
    let source = Source::new(format!("--set {arg}"), arg);
    let key = arg[..eq].trim();
    if key.is_empty() || key.split('.').any(|s| s.trim().is_empty()) {
        return Err(Error::usage(format!(
            "--set {arg}: the key must be a dotted path such as stage.train.epochs"
        )));
    }
    let overlay = match node::parse_document(&source) {
        Ok(n) => n,
        Err(_) => {
            // Not TOML: take VALUE as a plain string, so `--set stage.train.model=mlp` works.
            let mut n = Node {
                value: Value::Str(arg[eq + 1..].to_string()),
                loc: Loc::new(&source, eq + 1..arg.len()),
            };
            for seg in key.rsplit('.') {
                let seg = seg.trim().to_string();
                let k = KeyNode {
                    name: seg.clone(),
                    loc: Loc::new(&source, 0..eq),
                };
                let mut t = IndexMap::new();
                t.insert(seg, (k, n));
                n = Node {
                    value: Value::Table(t),
                    loc: Loc::new(&source, 0..arg.len()),
                };
            }
            n
        }
    };
    merge(doc, overlay);
    Ok(())
}

fn merge(base: &mut Node, overlay: Node) {
    match (&mut base.value, overlay.value) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, (key, v)) in o {
                match b.get_mut(&k) {
                    Some((_, existing))
                        if matches!(existing.value, Value::Table(_))
                            && matches!(v.value, Value::Table(_)) =>
                    {
                        merge(existing, v)
                    }
                    _ => {
                        b.insert(k, (key, v));
                    }
                }
            }
        }
        (_, value) => {
            base.value = value;
            base.loc = overlay.loc;
        }
    }
}

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

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn build(
    doc: Node,
    source: &Arc<Source>,
    base_dir: &Path,
    registry: &Registry,
) -> Result<Spec, Error> {
    let top = doc.as_table("")?;
    for (name, (key, _)) in top {
        if !["pipeline", "sweep", "stage", "cache"].contains(&name.as_str()) {
            return Err(unknown_key(
                key,
                name,
                &["pipeline", "sweep", "stage", "cache"],
            ));
        }
    }
    let start = Loc::new(source, 0..0);
    let Some((_, pipeline)) = top.get("pipeline") else {
        return Err(Error::at(
            &start,
            "pipeline",
            "missing `[pipeline]` table with a `name`",
        ));
    };
    let pt = pipeline.as_table("pipeline")?;
    let mut name = None;
    let mut description = None;
    for (k, (key, v)) in pt {
        match k.as_str() {
            "name" => name = Some(v.as_str("pipeline.name")?.to_string()),
            "description" => description = Some(v.as_str("pipeline.description")?.to_string()),
            _ => {
                return Err(unknown_key(
                    key,
                    &format!("pipeline.{k}"),
                    &["name", "description"],
                ));
            }
        }
    }
    let name = name.ok_or_else(|| {
        Error::at(
            &pipeline.loc,
            "pipeline.name",
            "missing: every pipeline needs a name",
        )
    })?;
    if !valid_name(&name) {
        return Err(Error::at(
            &pt["name"].1.loc,
            "pipeline.name",
            "use only letters, digits, `_` and `-`",
        ));
    }
    let mut remote = None;
    if let Some((_, cache)) = top.get("cache") {
        for (k, (key, v)) in cache.as_table("cache")? {
            match k.as_str() {
                "remote" => {
                    let url = v.as_str("cache.remote")?;
                    if !url.starts_with("s3://") || url.len() <= "s3://".len() {
                        return Err(Error::at(
                            &v.loc,
                            "cache.remote",
                            format!("\"{url}\" is not a remote cache; write s3://BUCKET/PREFIX"),
                        ));
                    }
                    remote = Some(url.to_string());
                }
                _ => return Err(unknown_key(key, &format!("cache.{k}"), &["remote"])),
            }
        }
    }
    let sweep = Sweep::parse(top.get("sweep").map(|(_, n)| n))?;

    let Some((_, stages_node)) = top.get("stage") else {
        return Err(Error::at(
            &start,
            "stage",
            "no stages: add at least one `[stage.NAME]` table",
        ));
    };
    let stage_table = stages_node.as_table("stage")?;
    if stage_table.is_empty() {
        return Err(Error::at(
            &stages_node.loc,
            "stage",
            "no stages: add at least one `[stage.NAME]` table",
        ));
    }

    struct Raw<'a> {
        spec: StageSpec,
        inputs: Vec<(Option<String>, String, Loc)>,
        inputs_loc: Option<&'a Node>,
    }
    let mut raws: Vec<Raw<'_>> = Vec::new();
    for (sname, (skey, snode)) in stage_table {
        let path = format!("stage.{sname}");
        if !valid_name(sname) {
            return Err(Error::at(
                &skey.loc,
                &path,
                "a stage name may hold only letters, digits, `_` and `-`",
            ));
        }
        let t = snode.as_table(&path)?;
        let Some((_, kind_node)) = t.get("kind") else {
            return Err(Error::at(&skey.loc, &path, "missing `kind`"));
        };
        let kind_name = kind_node.as_str(&format!("{path}.kind"))?;
        let kind = registry.get(kind_name).ok_or_else(|| {
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
        })?;
        let mut inputs = Vec::new();
        let mut inputs_loc = None;
        if let Some((_, inode)) = t.get("inputs") {
            inputs_loc = Some(inode);
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
        }
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
                        "unknown key for a `{}` stage{}; allowed: {}",
                        kind.name(),
                        suggest(k, allowed.iter().copied()),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let resources = match t.get("resources") {
            Some((_, n)) => Resources::parse(n, &format!("{path}.resources"))?,
            None => Resources::default(),
        };
        let timeout = match t.get("timeout") {
            Some((_, n)) => {
                let at = format!("{path}.timeout");
                let text = match &n.value {
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                    _ => n.as_str(&at)?.to_string(),
                };
                Some(resources::parse_duration(&text).ok_or_else(|| {
                    Error::at(
                        &n.loc,
                        &at,
                        format!("\"{text}\" is not a duration; write e.g. \"2h\", \"90m\", \"1h30m\", \"45s\" or seconds"),
                    )
                })?)
            }
            None => None,
        };
        let retries = match t.get("retries") {
            Some((_, n)) => match &n.value {
                Value::Int(i) if (0..=100).contains(i) => *i as u32,
                other => {
                    return Err(Error::at(
                        &n.loc,
                        &format!("{path}.retries"),
                        format!(
                            "expected an integer from 0 to 100, found {}",
                            match other {
                                Value::Int(i) => i.to_string(),
                                o => o.type_name().to_string(),
                            }
                        ),
                    ));
                }
            },
            None => 0,
        };
        let mut params = Vec::new();
        let mut vars = BTreeSet::new();
        for p in kind.params() {
            let given = t.get(p.name).map(|(_, n)| n.clone());
            if given.is_none() && matches!(p.presence, Presence::Required) {
                return Err(Error::at(
                    &skey.loc,
                    &path,
                    format!("missing required parameter `{}` ({})", p.name, p.doc),
                ));
            }
            if let Some(n) = &given {
                let ppath = format!("{path}.{}", p.name);
                template::for_each_reference(n, &mut |var, at| {
                    let i = sweep.var_index(var).ok_or_else(|| {
                        let names: Vec<&str> = sweep.vars.iter().map(|v| v.name.as_str()).collect();
                        Error::at(
                            &at.loc,
                            &ppath,
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
                })?;
            }
            params.push((*p, given));
        }
        raws.push(Raw {
            spec: StageSpec {
                name: sname.clone(),
                loc: skey.loc.clone(),
                kind,
                inputs: Vec::new(),
                params,
                vars,
                resources,
                timeout,
                retries,
            },
            inputs,
            inputs_loc,
        });
    }

    // Resolve input names to stages and slots.
    let names: Vec<String> = raws.iter().map(|r| r.spec.name.clone()).collect();
    let kinds: Vec<&'static str> = raws.iter().map(|r| r.spec.kind.name()).collect();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); raws.len()];
    for (i, raw) in raws.iter_mut().enumerate() {
        let path = format!("stage.{}.inputs", raw.spec.name);
        let mut resolved: Vec<InputRef> = Vec::new();
        for (slot, up, loc) in &raw.inputs {
            let Some(j) = names.iter().position(|n| n == up) else {
                return Err(Error::at(
                    loc,
                    &path,
                    format!(
                        "unknown stage \"{up}\"{}",
                        suggest(up, names.iter().map(String::as_str))
                    ),
                ));
            };
            let slot = match (raw.spec.kind.inputs(), slot) {
                (Inputs::Any, Some(s)) => s.clone(),
                (Inputs::Any, None) => up.clone(),
                (Inputs::Slots(slots), Some(s)) => {
                    let Some(decl) = slots.iter().find(|d| d.name == s) else {
                        let ns: Vec<&str> = slots.iter().map(|d| d.name).collect();
                        return Err(Error::at(
                            loc,
                            &path,
                            format!(
                                "a `{}` stage has no input slot `{s}`; its slots: {}",
                                kinds[i],
                                ns.join(", ")
                            ),
                        ));
                    };
                    if !decl.kinds.contains(&kinds[j]) {
                        return Err(Error::at(
                            loc,
                            &path,
                            format!(
                                "slot `{s}` takes a {} stage, but \"{up}\" is a `{}` stage",
                                decl.kinds.join(" or "),
                                kinds[j]
                            ),
                        ));
                    }
                    s.clone()
                }
                (Inputs::Slots(slots), None) => {
                    let free = slots.iter().find(|d| {
                        d.kinds.contains(&kinds[j]) && !resolved.iter().any(|r| r.slot == d.name)
                    });
                    match free {
                        Some(d) => d.name.to_string(),
                        None => {
                            let ns: Vec<String> = slots
                                .iter()
                                .map(|d| format!("{} ({})", d.name, d.kinds.join("/")))
                                .collect();
                            return Err(Error::at(
                                loc,
                                &path,
                                format!(
                                    "\"{up}\" is a `{}` stage, which no free input slot of a `{}` stage takes; its slots: {}",
                                    kinds[j],
                                    kinds[i],
                                    ns.join(", ")
                                ),
                            ));
                        }
                    }
                }
            };
            if resolved.iter().any(|r| r.slot == slot) {
                return Err(Error::at(
                    loc,
                    &path,
                    format!("input slot `{slot}` is filled twice"),
                ));
            }
            edges[i].push(j);
            resolved.push(InputRef {
                slot,
                stage: up.clone(),
                index: j,
                loc: loc.clone(),
            });
        }
        if let Inputs::Slots(slots) = raw.spec.kind.inputs() {
            for d in slots {
                if !resolved.iter().any(|r| r.slot == d.name) {
                    let at = raw
                        .inputs_loc
                        .map(|n| n.loc.clone())
                        .unwrap_or_else(|| raw.spec.loc.clone());
                    return Err(Error::at(
                        &at,
                        &path,
                        format!(
                            "a `{}` stage needs input `{}` (a {} stage)",
                            kinds[i],
                            d.name,
                            d.kinds.join(" or ")
                        ),
                    ));
                }
            }
        }
        raw.spec.inputs = resolved;
    }

    // Order stages so that inputs come first, keeping declaration order where free.
    let n = raws.len();
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
    if order.len() < n {
        // Walk inputs among the leftover stages until one repeats: that is a cycle.
        let left: Vec<bool> = (0..n).map(|i| !order.contains(&i)).collect();
        let mut path = vec![(0..n).find(|&i| left[i]).unwrap_or(0)];
        loop {
            let cur = *path.last().unwrap_or(&0);
            let next = edges[cur].iter().copied().find(|&j| left[j]).unwrap_or(cur);
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let cycle: Vec<&str> = path[pos..]
                    .iter()
                    .chain(std::iter::once(&next))
                    .map(|&i| names[i].as_str())
                    .collect();
                let first = path[pos];
                let loc = raws[first]
                    .spec
                    .inputs
                    .iter()
                    .find(|r| r.index == path.get(pos + 1).copied().unwrap_or(first))
                    .map(|r| r.loc.clone())
                    .unwrap_or_else(|| raws[first].spec.loc.clone());
                return Err(Error::at(
                    &loc,
                    &format!("stage.{}.inputs", names[first]),
                    format!(
                        "the stages form a cycle: {} (each takes the next as input)",
                        cycle.join(" <- ")
                    ),
                ));
            }
            path.push(next);
        }
    }
    let mut new_index = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        new_index[i] = pos;
    }
    let mut slots: Vec<Option<StageSpec>> = raws.into_iter().map(|r| Some(r.spec)).collect();
    let mut stages = Vec::with_capacity(n);
    for &i in &order {
        if let Some(mut s) = slots[i].take() {
            for r in &mut s.inputs {
                r.index = new_index[r.index];
            }
            stages.push(s);
        }
    }
    Ok(Spec {
        path: PathBuf::from(&source.name),
        base_dir: base_dir.to_path_buf(),
        name,
        description,
        remote,
        sweep,
        stages,
    })
}
