//! What `show`, `log` and `rm` are pointed at: a key (or a unique prefix of one), or a
//! selector `stage[var=value,...]` (narrowed by `--point`), resolved through the pipeline
//! file when one is given, else through the cache's manifests and status indexes.

use std::path::PathBuf;

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
/// instances that have a log but no artifact (failed ones).
pub fn resolve(
    target: &str,
    file: Option<&PathBuf>,
    point: Option<&str>,
    cache: &Option<PathBuf>,
    logs: bool,
) -> Result<(Store, Vec<Target>), Error> {
    let selector_like = target.contains('[') || target.contains('=') || point.is_some();
    if is_key(target) && !selector_like {
        let store = Store::new(match file {
            Some(f) => super::pipeline_cache(cache, f),
            None => cache_dir(cache),
        });
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
                if let Ok(found) = resolve_selector(target, file, None, cache, logs)
                    && !found.1.is_empty()
                {
                    return Ok(found);
                }
                return Err(Error::usage(e));
            }
        }
    }
    resolve_selector(target, file, point, cache, logs)
}

/// [`resolve`] for a selector.
fn resolve_selector(
    target: &str,
    file: Option<&PathBuf>,
    point: Option<&str>,
    cache: &Option<PathBuf>,
    logs: bool,
) -> Result<(Store, Vec<Target>), Error> {
    let mut sel = Selector::parse(target).map_err(Error::usage)?;
    if let Some(p) = point {
        let p = Selector::parse(p).map_err(|e| Error::usage(format!("--point: {e}")))?;
        sel = sel.with_point(&p);
    }
    match file {
        Some(f) => by_plan(&sel, f, cache),
        None => {
            let store = Store::new(cache_dir(cache));
            let found = by_cache(&store, &sel, logs);
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

/// The instances of the pipeline file `file` (with its last run's overrides) that `sel`
/// selects.
fn by_plan(
    sel: &Selector,
    file: &std::path::Path,
    cache: &Option<PathBuf>,
) -> Result<(Store, Vec<Target>), Error> {
    let loaded = load(
        &PipelineArgs {
            file: Some(file.to_path_buf()),
            set: Vec::new(),
            cache: cache.clone(),
            run: None,
        },
        true,
    )?;
    sel.check(&loaded.plan).map_err(Error::usage)?;
    let plan = &loaded.plan;
    let mut out = Vec::new();
    for &n in &plan.order {
        if !sel.matches(plan, n) {
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

/// The artifacts in the cache whose manifest's stage and point `sel` selects, newest
/// first; with `logs`, also what the status indexes name that has a log.
fn by_cache(store: &Store, sel: &Selector, logs: bool) -> Vec<Target> {
    let mut found: Vec<(f64, Target)> = store
        .keys()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| {
            let m = store.manifest(&k)?;
            sel.matches_point(&m.stage, &m.point).then(|| {
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
    if logs {
        let dir = store.root().join("index");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
            else {
                continue;
            };
            let index = store.read_index(&name);
            for (id, e) in &index.entries {
                let Some((stage, point)) = id.split_once(' ') else {
                    continue;
                };
                let point: serde_json::Value = serde_json::from_str(point).unwrap_or_default();
                let log = store.log_path(&e.key);
                if sel.matches_point(stage, &point)
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
