//! `pipe gc`: removes the artifacts no given pipeline reaches, older than `--keep-days`.

use crate::cli::outln;
use std::collections::HashSet;

use serde::Serialize;

use super::{GcArgs, PipelineArgs, cache_dir, load_plan, print_json};
use crate::error::Error;
use crate::status;
use crate::store::Store;

/// `pipe gc --json`.
#[derive(Serialize)]
struct GcJson<'a> {
    /// Whether nothing was removed (`--dry-run`).
    dry_run: bool,
    /// Bytes the removed artifacts held.
    freed_bytes: u64,
    /// Unreachable artifacts kept (too recent, or locked by a run).
    kept: usize,
    /// Keys removed (or that would be).
    removed: &'a [String],
}

/// Runs `pipe gc`; returns its exit code.
pub fn gc(args: &GcArgs) -> Result<i32, Error> {
    if args.files.is_empty() && args.keep_days.is_none() {
        return Err(Error::usage(
            "pipe gc: name the pipelines whose artifacts to keep (pipe gc pipelines/*.toml), or give --keep-days N to remove everything older",
        ));
    }
    let store = Store::new(cache_dir(&args.cache));
    let reachable = reachable(args, &store)?;
    let dry_run = args.dry_run;
    let report = store
        .gc(
            &reachable,
            args.keep_days.unwrap_or(0.0) * 86_400.0,
            dry_run,
        )
        .map_err(|e| Error::io(store.root(), e))?;
    if args.json {
        print_json(&GcJson {
            dry_run,
            freed_bytes: report.freed_bytes,
            kept: report.kept,
            removed: &report.removed,
        })?;
    } else {
        for k in &report.removed {
            outln!("{} {k}", if dry_run { "would remove" } else { "removed" });
        }
        outln!(
            "{} {} artifacts, {:.1} MB; kept {} unreachable (too recent or in use)",
            if dry_run { "would free" } else { "freed" },
            report.removed.len(),
            report.freed_bytes as f64 / 1e6,
            report.kept
        );
    }
    Ok(0)
}

/// The keys of every instance and part of the given pipelines, at their current sweep. An
/// instance whose key waits for an input's output keeps what it last computed (and that
/// artifact's parts): the next run may find it unchanged and reuse it.
fn reachable(args: &GcArgs, store: &Store) -> Result<HashSet<String>, Error> {
    let mut keys = HashSet::new();
    for f in &args.files {
        let plan = load_plan(&PipelineArgs {
            file: f.clone(),
            set: Vec::new(),
            cache: args.cache.clone(),
        })?;
        let index = store.read_index(&plan.spec.name);
        for &n in &plan.order {
            keys.extend(plan.key(n));
            for (part, _) in status::parts(&plan, store, n) {
                keys.insert(part.key);
            }
            if plan.key(n).is_none()
                && let Some(last) = index.entries.get(&crate::store::index::entry_id(
                    plan.stage_name(n),
                    &plan.point(n),
                ))
            {
                keys.insert(last.key.clone());
                if let Some(m) = store.manifest(&last.key) {
                    keys.extend(m.parts.into_values());
                }
            }
        }
    }
    Ok(keys)
}
