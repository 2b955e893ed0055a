//! `pipe rm`: removes the artifacts (and parts) of the instances a key or selector names.

use crate::cli::outln;

use super::RmArgs;
use pipe_engine::error::Error;

/// Runs `pipe rm`; returns its exit code.
pub fn rm(args: &RmArgs) -> Result<i32, Error> {
    let (store, found) = super::target::resolve(
        &args.target,
        args.file.as_ref(),
        args.point.as_deref(),
        &args.cache,
        false,
    )?;
    let mut removed = 0;
    for t in &found {
        let mut keys = vec![t.key.clone()];
        if !args.keep_parts {
            keys.extend(t.parts.iter().cloned());
        }
        let present: Vec<&String> = keys.iter().filter(|k| store.is_complete(k)).collect();
        if present.is_empty() {
            continue;
        }
        if !args.dry_run {
            for k in &present {
                store.remove(k).map_err(|e| Error::io(store.root(), e))?;
            }
        }
        removed += present.len();
        outln!(
            "{} {}  {}  ({} artifact{})",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            t.label,
            pipe_engine::key::short(&t.key, 12),
            present.len(),
            if present.len() == 1 { "" } else { "s" }
        );
    }
    outln!(
        "{} {removed} artifacts of {} instances",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        found.len()
    );
    Ok(0)
}
