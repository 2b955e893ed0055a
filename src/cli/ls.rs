//! `pipe ls`: the instances in the cache (`stage[point]`, age, size with their parts,
//! pipeline), newest first, optionally of one stage; `--json` lists every artifact.

use crate::cli::outln;
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;

use super::{cache_dir, print_json};
use pipe_engine::error::Error;
use pipe_engine::plan::point_label;
use pipe_engine::store::{Manifest, Store};

/// Arguments of `pipe ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only artifacts made by this stage name.
    #[arg(long)]
    pub stage: Option<String>,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One artifact in `pipe ls --json` (every artifact, parts included).
#[derive(Serialize)]
struct LsJson<'a> {
    /// Bytes its files hold.
    bytes: u64,
    /// Its key.
    key: &'a str,
    /// The stage kind that made it.
    kind: &'a str,
    /// The key of the instance it is a part of (a checkpoint's train instance), if any.
    part_of: Option<&'a str>,
    /// The pipeline that made it.
    pipeline: &'a str,
    /// The sweep point of the instance that made it.
    point: &'a Json,
    /// Seconds the stage ran.
    seconds: f64,
    /// The stage that made it.
    stage: &'a str,
    /// Unix time its instance started, in seconds.
    started: f64,
}

/// Bytes an artifact's files hold.
fn bytes(m: &Manifest) -> u64 {
    m.files.iter().map(|f| f.size).sum()
}

/// `n` bytes in words: `812 B`, `3.4 KB`, `120 MB`.
pub(super) fn size(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", units[u])
    } else {
        format!("{v:.0} {}", units[u])
    }
}

/// How long ago Unix time `t` was, in words: `40s`, `12m`, `3h`, `5d`.
pub(super) fn age(t: f64, now: f64) -> String {
    let s = (now - t).max(0.0);
    if t <= 0.0 {
        "-".to_string()
    } else if s < 60.0 {
        format!("{s:.0}s ago")
    } else if s < 3600.0 {
        format!("{:.0}m ago", (s / 60.0).floor())
    } else if s < 86400.0 {
        format!("{:.0}h ago", (s / 3600.0).floor())
    } else {
        format!("{:.0}d ago", (s / 86400.0).floor())
    }
}

/// One line of `pipe ls`: an instance with its parts, or a part whose instance is gone.
struct Row<'a> {
    /// The instance's (or lone part's) manifest.
    m: &'a Manifest,
    /// Its parts present in the cache.
    parts: Vec<&'a Manifest>,
    /// Whether it is a part whose instance is not in the cache.
    lone_part: bool,
}

/// Runs `pipe ls`; returns its exit code.
pub fn ls(args: &LsArgs) -> Result<i32, Error> {
    let store = Store::new(cache_dir(&args.cache)?);
    let keys = store.keys().map_err(|e| Error::io(store.root(), e))?;
    let all: Vec<Manifest> = keys
        .iter()
        .filter_map(|k| store.manifest(k))
        .filter(|m| args.stage.as_ref().is_none_or(|s| *s == m.stage))
        .collect();
    let by_key: HashMap<&str, &Manifest> = all.iter().map(|m| (m.key.as_str(), m)).collect();
    // Each part's instance, among the artifacts present.
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for m in &all {
        for k in m.parts.values() {
            if k != &m.key && by_key.contains_key(k.as_str()) {
                owner.insert(k.as_str(), m.key.as_str());
            }
        }
    }
    if args.json {
        let items: Vec<LsJson> = all
            .iter()
            .map(|m| LsJson {
                bytes: bytes(m),
                key: &m.key,
                kind: &m.kind,
                part_of: owner.get(m.key.as_str()).copied(),
                pipeline: &m.pipeline,
                point: &m.point,
                seconds: m.seconds,
                stage: &m.stage,
                started: m.started,
            })
            .collect();
        return print_json(&items).map(|_| 0);
    }
    let mut rows: Vec<Row> = all
        .iter()
        .filter(|m| !owner.contains_key(m.key.as_str()))
        .map(|m| Row {
            m,
            parts: m
                .parts
                .values()
                .filter(|k| **k != m.key)
                .filter_map(|k| by_key.get(k.as_str()).copied())
                .collect(),
            // A part's kind is `KIND.PART` (`train.checkpoint`).
            lone_part: m.kind.contains('.'),
        })
        .collect();
    let newest = |r: &Row| {
        r.parts
            .iter()
            .map(|p| p.started)
            .fold(r.m.started, f64::max)
    };
    rows.sort_by(|a, b| {
        newest(b)
            .total_cmp(&newest(a))
            .then_with(|| a.m.stage.cmp(&b.m.stage))
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut l = match r.m.point.as_object() {
                Some(o) if !o.is_empty() => format!("{}[{}]", r.m.stage, point_label(&r.m.point)),
                _ => r.m.stage.clone(),
            };
            if r.lone_part {
                l.push_str(&format!(" ({})", r.m.kind));
            }
            l
        })
        .collect();
    let width = labels
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .clamp(8, 60);
    if !rows.is_empty() {
        outln!(
            "{:<width$}  {:>8}  {:>8}  {:<14}  key",
            "instance",
            "age",
            "size",
            "pipeline"
        );
    }
    let mut total = 0;
    for (r, label) in rows.iter().zip(&labels) {
        let b = bytes(r.m) + r.parts.iter().map(|p| bytes(p)).sum::<u64>();
        total += b;
        let parts = match r.parts.len() {
            0 => String::new(),
            1 => "  +1 part".to_string(),
            n => format!("  +{n} parts"),
        };
        outln!(
            "{label:<width$}  {:>8}  {:>8}  {:<14}  {}{parts}",
            age(newest(r), now),
            size(b),
            r.m.pipeline,
            pipe_engine::key::short(&r.m.key, 12),
        );
    }
    outln!(
        "{} instance{} ({} artifact{} with their parts), {}; newest first",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        all.len(),
        if all.len() == 1 { "" } else { "s" },
        size(total)
    );
    Ok(0)
}
