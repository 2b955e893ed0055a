//! What `show`, `log`, `diff` and `rm` are pointed at: a key (or a unique prefix of one), or
//! a selector `stage[var=value,...]` (narrowed by `--point`), resolved through the pipeline
//! (the file, its `--set` overrides or a recorded `--run`, as `status` plans it) when one
//! is given, else through the cache's manifests and status indexes.

use super::args::Loaded;
use super::{PipelineArgs, cache_dir, load};
use pipe_engine::error::Error;
use pipe_engine::plan::point_label;
use pipe_engine::select::Selector;
use pipe_engine::store::Store;

/// One instance a target names.
pub struct Target {
    /// Its key.
    pub key: String,
    /// `stage[point]`, or the key's first digits when the target was a key.
    pub label: String,
    /// Its parts' keys (checkpoints), when known.
    pub parts: Vec<String>,
}

/// Whether `text` reads as a key or key prefix (hex digits only).
fn is_key(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// The store a target is looked up in, and the instances it names. `logs` also admits
/// instances that have a log but no artifact (failed ones). With `exact` (removal), an
/// instance is named only if it has every variable of the selector at its value.
///
/// A word that is a stage's name (in the pipeline file, else among the cache's artifacts)
/// is that stage, never a key prefix; a longer prefix names the key.
pub fn resolve(
    target: &str,
    pipeline: &PipelineArgs,
    point: Option<&str>,
    logs: bool,
    exact: bool,
) -> Result<(Store, Vec<Target>), Error> {
    let selector_like = target.contains('[') || target.contains('=') || point.is_some();
    let planned = pipeline.file.is_some() || !pipeline.run.is_empty();
    if !planned && !pipeline.set.is_empty() {
        return Err(Error::usage(
            "--set overrides a pipeline: name the pipeline file (or --run ID)",
        ));
    }
    // Planned the way `status` plans it: the file with its `--set`s, a recorded run's
    // file and overrides, or the file with its last full run's overrides.
    let loaded = if planned {
        Some(load(pipeline, true)?)
    } else {
        None
    };
    let dir = match &loaded {
        Some(l) => l.store.root().to_path_buf(),
        None => cache_dir(&pipeline.cache)?,
    };
    let ask = Ask {
        dir: &dir,
        logs,
        exact,
    };
    if is_key(target) && !selector_like && !is_stage(target, loaded.as_ref(), &ask) {
        let store = Store::new(&dir);
        match store.resolve_key(target, logs) {
            Ok(key) => {
                let m = store.manifest(&key);
                let label = m.as_ref().map_or_else(
                    || pipe_engine::key::short(&key, 12).to_string(),
                    |m| format!("{}[{}]", m.stage, point_label(&m.point)),
                );
                let parts = m
                    .map(|m| m.parts.into_values().collect())
                    .unwrap_or_default();
                return Ok((store, vec![Target { key, label, parts }]));
            }
            // A short hex word may be a stage's name (`a`, `fade`): try it as one.
            Err(e) => {
                if let Ok(found) = resolve_selector(target, loaded, None, &ask)
                    && !found.1.is_empty()
                {
                    return Ok(found);
                }
                return Err(Error::usage(e));
            }
        }
    }
    resolve_selector(target, loaded, point, &ask)
}

/// How a target is looked up: the cache folder, whether logs count, whether the match
/// must be exact.
struct Ask<'a> {
    dir: &'a std::path::Path,
    logs: bool,
    exact: bool,
}

/// Whether `word` is the name of a stage: of the pipeline file's, else of an artifact's
/// (or, with logs, a logged instance's) in the cache.
fn is_stage(word: &str, loaded: Option<&Loaded>, ask: &Ask) -> bool {
    match loaded {
        Some(l) => l.plan.spec.stage(word).is_some(),
        None => {
            let store = Store::new(ask.dir);
            cached_points(&store, ask.logs)
                .iter()
                .any(|(stage, _)| stage == word)
        }
    }
}

/// [`resolve`] for a selector.
fn resolve_selector(
    target: &str,
    loaded: Option<Loaded>,
    point: Option<&str>,
    ask: &Ask,
) -> Result<(Store, Vec<Target>), Error> {
    let mut sel = Selector::parse(target).map_err(Error::usage)?;
    if let Some(p) = point {
        let p = Selector::parse(p).map_err(|e| Error::usage(format!("--point: {e}")))?;
        sel = sel.with_point(&p);
    }
    match loaded {
        Some(l) => by_plan(&sel, l, ask),
        None => {
            let (logs, store) = (ask.logs, Store::new(ask.dir));
            check_vars(&store, &sel, logs)?;
            let found = by_cache(&store, &sel, ask);
            if found.is_empty() {
                return Err(Error::usage(format!(
                    "no artifact{} of `{sel}` in {} (name the pipeline file to look it up there)",
                    if logs { " or log" } else { "" },
                    store.root().display()
                )));
            }
            Ok((store, found))
        }
    }
}

/// The manifests of the cache's instances: every artifact's but the parts' (a checkpoint
/// is part of its train instance, not an instance of its own), with their keys.
fn instance_manifests(store: &Store) -> Vec<(String, pipe_engine::store::Manifest)> {
    let all: Vec<(String, pipe_engine::store::Manifest)> = store
        .keys()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| store.manifest(&k).map(|m| (k, m)))
        .collect();
    let parts: std::collections::HashSet<&String> =
        all.iter().flat_map(|(_, m)| m.parts.values()).collect();
    let parts: std::collections::HashSet<String> = parts.into_iter().cloned().collect();
    all.into_iter()
        .filter(|(k, _)| !parts.contains(k))
        .collect()
}

/// The stage and point of every instance's artifact in the cache (and, with `logs`, of
/// every instance the status indexes name).
fn cached_points(store: &Store, logs: bool) -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<(String, serde_json::Value)> = instance_manifests(store)
        .into_iter()
        .map(|(_, m)| (m.stage, m.point))
        .collect();
    if logs {
        for name in index_names(store) {
            for id in store.read_index(&name).entries.keys() {
                if let Some((stage, point)) = id.split_once(' ') {
                    let point = serde_json::from_str(point).unwrap_or_default();
                    out.push((stage.to_string(), point));
                }
            }
        }
    }
    out
}

/// The names of the cache's status indexes (`index/NAME.json`).
fn index_names(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.root().join("index"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect()
}

/// Refuses a selector naming a variable no instance in the cache has (a typo must not
/// match everything).
fn check_vars(store: &Store, sel: &Selector, logs: bool) -> Result<(), Error> {
    if sel.point.is_empty() {
        return Ok(());
    }
    let mut known: Vec<String> = cached_points(store, logs)
        .into_iter()
        .filter_map(|(_, p)| p.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect();
    known.sort();
    known.dedup();
    for (k, _) in &sel.point {
        if !known.contains(k) {
            return Err(Error::usage(format!(
                "`{sel}`: no artifact in {} has a variable {k}{}; variables: {}",
                store.root().display(),
                pipe_engine::error::suggest(k, known.iter().map(String::as_str)),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// The instances of the pipeline file `file` (with its last run's overrides) that `sel`
/// selects.
fn by_plan(sel: &Selector, loaded: Loaded, ask: &Ask) -> Result<(Store, Vec<Target>), Error> {
    sel.check(&loaded.plan).map_err(Error::usage)?;
    let plan = &loaded.plan;
    let mut out = Vec::new();
    for &n in &plan.order {
        let hit = if ask.exact {
            sel.matches_exact(plan.stage_name(n), &plan.point(n))
        } else {
            sel.matches(plan, n)
        };
        if !hit {
            continue;
        }
        let Some(key) = plan.key(n) else {
            return Err(Error::usage(format!(
                "{}: its key is not known until its inputs are computed; run the pipeline first",
                plan.label(n)
            )));
        };
        out.push(Target {
            key,
            label: plan.label(n),
            parts: plan
                .parts(n)
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.key)
                .collect(),
        });
    }
    Ok((loaded.store, out))
}

/// The instances' artifacts in the cache (not their parts) whose manifest's stage and
/// point `sel` selects, newest first; with `logs`, also what the status indexes name that
/// has a log.
fn by_cache(store: &Store, sel: &Selector, ask: &Ask) -> Vec<Target> {
    let matches = |stage: &str, point: &serde_json::Value| {
        if ask.exact {
            sel.matches_exact(stage, point)
        } else {
            sel.matches_point(stage, point)
        }
    };
    let mut found: Vec<(f64, Target)> = instance_manifests(store)
        .into_iter()
        .filter_map(|(k, m)| {
            matches(&m.stage, &m.point).then(|| {
                (
                    m.started,
                    Target {
                        label: format!("{}[{}]", m.stage, point_label(&m.point)),
                        key: k,
                        parts: m.parts.into_values().collect(),
                    },
                )
            })
        })
        .collect();
    if ask.logs {
        for name in index_names(store) {
            let index = store.read_index(&name);
            for (id, e) in &index.entries {
                let Some((stage, point)) = id.split_once(' ') else {
                    continue;
                };
                let point: serde_json::Value = serde_json::from_str(point).unwrap_or_default();
                let log = store.log_path(&e.key);
                if matches(stage, &point)
                    && log.exists()
                    && !found.iter().any(|(_, t)| t.key == e.key)
                {
                    let t = std::fs::metadata(&log)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0.0, |d| d.as_secs_f64());
                    found.push((
                        t,
                        Target {
                            key: e.key.clone(),
                            label: format!("{stage}[{}]", point_label(&point)),
                            parts: Vec::new(),
                        },
                    ));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().map(|(_, t)| t).collect()
}

/// The one instance of `targets`, or an error listing them when there are several.
pub fn one(target: &str, targets: Vec<Target>) -> Result<Target, Error> {
    if let Some(first) = targets.first()
        && targets.iter().all(|t| t.label == first.label)
    {
        if targets.len() > 1 {
            super::errln!(
                "note: {} artifacts of {} are cached (other parameters or runs); this is the newest; name the pipeline file for the one it plans now",
                targets.len(),
                first.label
            );
        }
        return Ok(targets.into_iter().next().expect("not empty"));
    }
    Err(Error::usage(format!(
        "`{target}` names {} instances: {}{}; name more variables (stage[noise=0.4,seed=1]), the pipeline file, or a key",
        targets.len(),
        targets
            .iter()
            .take(6)
            .map(|t| format!("{} ({})", t.label, pipe_engine::key::short(&t.key, 12)))
            .collect::<Vec<_>>()
            .join(", "),
        if targets.len() > 6 { ", ..." } else { "" }
    )))
}
