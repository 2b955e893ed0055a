//! `pipe rm`: removes the artifacts (and parts) of the instances a key or selector names.

use crate::cli::outln;
use std::path::PathBuf;

use pipe_engine::error::Error;

/// Arguments of `pipe rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// A key (or unique prefix), or `stage` / `stage[var=value,...]`: every instance it names.
    pub target: String,
    /// The pipeline file to look the stage up in [default: the cache's manifests].
    pub file: Option<PathBuf>,
    /// Narrow to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Keep the instances' parts (checkpoints), so a rerun resumes from them.
    #[arg(long)]
    pub keep_parts: bool,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The cache directory [default: $PIPE_CACHE, else found from the file or working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// Runs `pipe rm`; returns its exit code.
pub fn rm(args: &RmArgs) -> Result<i32, Error> {
    let (store, found) = super::target::resolve(
        &args.target,
        args.file.as_ref(),
        args.point.as_deref(),
        &args.cache,
        false,
        true,
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
