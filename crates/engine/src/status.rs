//! `pipe status`: is each instance cached, missing or stale, and why.

use std::collections::HashSet;

use petgraph::graph::NodeIndex;
use serde::Serialize;
use serde_json::Value as Json;

use crate::plan::{Instance, Plan};
use crate::spec::template;
use crate::stage::Part;
use crate::store::Store;
use crate::store::index::{Index, IndexEntry, entry_id};

/// The state of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its artifact is in the cache.
    Cached,
    /// Never computed, or its artifact is gone.
    Missing,
    /// Computed before, but something it depends on has changed since.
    Stale,
    /// It was computed before, and its key is not known yet: an input it reads whole must
    /// be computed first, and it runs only if that input's content turns out different
    /// from what it last read. (Never computed with an unknown key is `Missing`.)
    #[serde(rename = "may-run")]
    MayRun,
    /// A live process is computing it now (its key's lock is held).
    Running,
    /// Its last attempt failed (its log ends with the failure), and it is not cached.
    Failed,
}

impl State {
    /// The state in words, as `pipe status` prints it.
    pub fn word(self) -> &'static str {
        match self {
            State::Cached => "cached",
            State::Missing => "missing",
            State::Stale => "stale",
            State::MayRun => "may run",
            State::Running => "running",
            State::Failed => "failed",
        }
    }
}

/// State and reason of one instance.
#[derive(Clone, Debug)]
pub struct InstanceStatus {
    /// The instance.
    pub node: NodeIndex,
    /// Cached, missing or stale.
    pub state: State,
    /// Why it is missing or stale, in words (empty when cached).
    pub reason: String,
    /// The instance's parts (checkpoints) and whether each is in the store.
    pub parts: Vec<(Part, bool)>,
}

/// The parts of an instance and whether each is cached (none while its key is unknown).
pub fn parts(plan: &Plan, store: &Store, node: NodeIndex) -> Vec<(Part, bool)> {
    parts_with(plan, node, |k| store.is_complete(k))
}

/// The parts of an instance, each with what `is_complete` says of its key.
fn parts_with(
    plan: &Plan,
    node: NodeIndex,
    is_complete: impl Fn(&str) -> bool,
) -> Vec<(Part, bool)> {
    plan.parts(node)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let cached = is_complete(&p.key);
            (p, cached)
        })
        .collect()
}

/// Whether instance `node`'s key is unknown while it was computed before (see
/// [`State::MayRun`]).
pub fn may_run(plan: &Plan, index: &Index, node: NodeIndex) -> bool {
    let inst = &plan.graph[node];
    inst.key().is_none()
        && index
            .entries
            .contains_key(&entry_id(plan.stage_name(node), &plan.point_of(inst)))
}

/// Why an instance's key is not known: `depends on corrupt[seed=1]'s output` for each
/// input whose output is not known yet.
pub fn may_run_reason(plan: &Plan, store: &Store, node: NodeIndex) -> String {
    let inst = &plan.graph[node];
    let waiting: Vec<String> = inst
        .inputs
        .iter()
        .zip(&inst.reads)
        .filter(|((_, up), reads)| match reads {
            Some(_) => plan.key(*up).is_none(),
            None => plan.digest(*up, store).is_none(),
        })
        .map(|((_, up), _)| format!("{}'s output", plan.label(*up)))
        .collect();
    format!("depends on {}", waiting.join(" and "))
}

pub use crate::plan::index_entry;

fn show(v: Option<&Json>) -> String {
    match v {
        None => "(unset)".to_string(),
        Some(Json::String(s)) => format!("{s:?}"),
        Some(v) => template::display(v),
    }
}

/// Explains how `now` differs from what was last computed.
pub fn explain(plan: &Plan, inst: &Instance, last: &IndexEntry) -> String {
    let stage = &plan.spec.stages[inst.stage];
    let mut why = Vec::new();
    if last.kind != stage.kind.name() {
        why.push(format!(
            "kind changed {} -> {}",
            last.kind,
            stage.kind.name()
        ));
    } else if last.version != stage.kind.version() {
        why.push(format!(
            "code version of {} changed {} -> {}",
            stage.kind.name(),
            last.version,
            stage.kind.version()
        ));
    }
    let key_params = plan.key_params(inst);
    let mut names: Vec<&String> = key_params.keys().chain(last.params.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        let (old, new) = (last.params.get(n), key_params.get(n));
        if old != new {
            why.push(format!("param {n} changed {} -> {}", show(old), show(new)));
        }
    }
    for (name, hash) in &inst.files {
        match last.files.get(name) {
            Some(h) if h == hash => {}
            Some(_) => why.push(format!("file {name} changed")),
            None => why.push(format!("file {name} added")),
        }
    }
    for name in last.files.keys() {
        if !inst.files.iter().any(|(n, _)| n == name) {
            why.push(format!("file {name} removed"));
        }
    }
    for (slot, up) in &inst.inputs {
        let upstream = plan.stage_name(*up);
        match last.inputs.get(slot) {
            Some(k) if Some(k) == plan.key(*up).as_ref() => {}
            Some(_) => why.push(format!("input {upstream} changed")),
            None => why.push(format!("input {upstream} added")),
        }
    }
    for slot in last.inputs.keys() {
        if !inst.inputs.iter().any(|(s, _)| s == slot) {
            why.push(format!("input {slot} removed"));
        }
    }
    if why.is_empty() {
        why.push("key changed".to_string());
    }
    why.join("; ")
}

/// What the cache's folders held when a status began: the names in `artifacts/`, `locks/`
/// and `logs/`, read once, so that a key none of them lists costs no system call (a
/// 100,000-instance sweep with little cached would otherwise pay three failed opens or
/// stats per instance). A folder that cannot be listed is `None`: every key is looked up.
struct Present<'a> {
    /// `artifacts/`, open for the status's completeness checks.
    scan: crate::store::Scan<'a>,
    artifacts: Option<HashSet<String>>,
    locks: Option<HashSet<String>>,
    logs: Option<HashSet<String>>,
}

impl Present<'_> {
    /// Lists the three folders of `store` (a missing one holds nothing).
    fn read(store: &Store) -> Present<'_> {
        let list = |sub: &str, suffix: &str| -> Option<HashSet<String>> {
            let entries = match std::fs::read_dir(store.root().join(sub)) {
                Ok(entries) => entries,
                // No folder: nothing of that kind yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(HashSet::new()),
                Err(_) => return None,
            };
            let mut names = HashSet::new();
            for e in entries {
                let name = e.ok()?.file_name();
                let name = name.to_str()?;
                names.insert(name.strip_suffix(suffix).unwrap_or(name).to_string());
            }
            Some(names)
        };
        Present {
            scan: store.scan(),
            artifacts: list("artifacts", ""),
            locks: list("locks", ".lock"),
            logs: list("logs", ".log"),
        }
    }

    /// Whether `set` (a listing) may hold `key`: yes when the folder was not listed.
    fn may_hold(set: &Option<HashSet<String>>, key: &str) -> bool {
        set.as_ref().is_none_or(|s| s.contains(key))
    }

    /// [`Store::is_complete`], without a system call for a key `artifacts/` did not list.
    fn is_complete(&self, key: &str) -> bool {
        Present::may_hold(&self.artifacts, key) && self.scan.is_complete(key)
    }

    /// [`running`], without a system call for a key `locks/` did not list.
    fn running(&self, store: &Store, key: &str) -> Option<String> {
        Present::may_hold(&self.locks, key)
            .then(|| running(store, key))
            .flatten()
    }

    /// [`failure`], without a system call for a key `logs/` did not list.
    fn failure(&self, store: &Store, key: &str) -> Option<String> {
        Present::may_hold(&self.logs, key)
            .then(|| failure(store, key))
            .flatten()
    }
}

/// The index a status compares with: given, or read from the store on first use (a
/// status whose instances are all cached never reads it).
pub enum IndexSource<'a> {
    /// Read already.
    Read(&'a Index),
    /// Read from `store` for `pipeline` when first needed.
    Lazy {
        /// The store that holds it.
        store: &'a Store,
        /// The pipeline's name.
        pipeline: &'a str,
        /// It, once read.
        cell: std::sync::OnceLock<Index>,
    },
}

impl<'a> IndexSource<'a> {
    /// The index of `pipeline` in `store`, read when first needed.
    pub fn lazy(store: &'a Store, pipeline: &'a str) -> IndexSource<'a> {
        IndexSource::Lazy {
            store,
            pipeline,
            cell: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> &Index {
        match self {
            IndexSource::Read(index) => index,
            IndexSource::Lazy {
                store,
                pipeline,
                cell,
            } => cell.get_or_init(|| store.read_index(pipeline)),
        }
    }
}

/// The state of every instance of a plan, in plan order (resolving every key that the
/// cache allows).
pub fn status(plan: &Plan, store: &Store, index: &Index) -> Vec<InstanceStatus> {
    status_from(plan, store, &IndexSource::Read(index))
}

/// [`status`], with the index read only if some instance is not cached.
pub fn status_from(plan: &Plan, store: &Store, index: &IndexSource<'_>) -> Vec<InstanceStatus> {
    use rayon::prelude::*;
    let present = Present::read(store);
    // Keys first, in plan order (an instance's key needs its inputs' digests); then each
    // instance's checks (manifests read, files stat'ed), spread over the cores.
    plan.resolve_all(store);
    plan.order
        .par_iter()
        .map(|&node| {
            let inst = &plan.graph[node];
            let mut st = state(plan, store, &present, index, node, inst);
            st.parts = parts_with(plan, node, |k| present.is_complete(k));
            st
        })
        .collect()
}

fn state(
    plan: &Plan,
    store: &Store,
    present: &Present,
    index: &IndexSource<'_>,
    node: NodeIndex,
    inst: &Instance,
) -> InstanceStatus {
    let key = plan.resolve(node, store);
    if let Some(k) = &key
        && present.is_complete(k)
    {
        return InstanceStatus {
            node,
            state: State::Cached,
            reason: String::new(),
            parts: Vec::new(),
        };
    }
    let index = index.get();
    let stage = &plan.spec.stages[inst.stage];
    let id = entry_id(&stage.name, &plan.point_of(inst));
    let last = index.entries.get(&id);
    let (state, reason) = match &key {
        None if inst.missing.is_some() => (
            State::Missing,
            format!(
                "data missing: {}",
                inst.missing
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            ),
        ),
        None => match last {
            None => (State::Missing, "never run".to_string()),
            Some(_) => (State::MayRun, may_run_reason(plan, store, node)),
        },
        Some(k) => {
            if let Some(what) = present.running(store, k) {
                (State::Running, what)
            } else if let Some(error) = present.failure(store, k) {
                (State::Failed, error)
            } else if index.all(&id).any(|e| &e.key == k) {
                (
                    State::Missing,
                    "deleted from the cache (it was computed before)".to_string(),
                )
            } else {
                // Against the closest of what is cached for this stage and point (fewest
                // differences, newest first), else against what ran last.
                let closest = index
                    .all(&id)
                    .filter(|e| present.is_complete(&e.key))
                    .map(|e| explain(plan, inst, e))
                    .min_by_key(|why| why.matches("; ").count());
                match (closest, last) {
                    (Some(why), _) => (State::Stale, why),
                    (None, Some(e)) => (State::Stale, explain(plan, inst, e)),
                    (None, None) => (State::Missing, "never run".to_string()),
                }
            }
        }
    };
    InstanceStatus {
        node,
        state,
        reason,
        parts: Vec::new(),
    }
}

/// The last line of a log that is not pipe's own (`# ...`), trimmed to 100 characters.
pub fn last_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("# "))?;
    Some(match line.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    })
}

/// The text of a log, if it is a regular file (a FIFO at its place is refused, never
/// opened); bytes that are not UTF-8 are replaced.
pub fn read_log(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    crate::store::open_regular(path)?.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Who is computing key `k` now (`pid 12 on host: epoch 3/10 ...`), if a live process
/// holds its lock.
pub fn running(store: &Store, k: &str) -> Option<String> {
    let lock = store.root().join("locks").join(format!("{k}.lock"));
    if !crate::store::lock::is_held(&lock, store.host()) {
        return None;
    }
    let holder = crate::store::lock::read_holder(&lock)?;
    let log = read_log(&store.log_path(k)).unwrap_or_default();
    Some(match last_line(&log) {
        Some(l) => format!("{holder}: {l}"),
        None => holder.to_string(),
    })
}

/// Why key `k` failed last, if its log ends with a failure: the footer's message and the
/// log's last line before it (a traceback's last line, say).
pub fn failure(store: &Store, k: &str) -> Option<String> {
    let log = read_log(&store.log_path(k)).ok()?;
    let footer = log.lines().rev().find(|l| l.starts_with("# "))?;
    let message = footer.strip_prefix("# failed after ")?;
    let message = message.split_once(": ").map_or(message, |(_, m)| m);
    let before = &log[..log.rfind(footer).unwrap_or(0)];
    Some(match last_line(before) {
        Some(l) if !message.contains(&l) => format!("last run failed: {message}: {l}"),
        _ => format!("last run failed: {message}"),
    })
}
