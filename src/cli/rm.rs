//! `pipe rm`: removes the artifacts (and parts) of the instances a key or selector names.

use crate::cli::{errln, outln};
use pipe_engine::error::Error;
use pipe_engine::store::Removal;

/// Arguments of `pipe rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// A key (or unique prefix), or `stage` / `stage[var=value,...]`: every instance it names.
    pub target: String,
    /// The pipeline file to look it up in, its overrides and cache (as `status` plans it)
    /// [default: without a file or `--run`, the cache's manifests].
    #[command(flatten)]
    pub pipeline: super::PipelineArgs,
    /// Narrow to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Keep the instances' parts (checkpoints), so a rerun resumes from them.
    #[arg(long)]
    pub keep_parts: bool,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `pipe rm`; returns its exit code. A folder that is not a pipe cache is refused
/// before anything is looked up in it (unless `--dry-run`).
pub fn rm(args: &RmArgs) -> Result<i32, Error> {
    if !args.dry_run {
        let dir = match &args.pipeline.file {
            Some(f) => super::pipeline_cache(&args.pipeline.cache, f)?,
            None => super::cache_dir(&args.pipeline.cache)?,
        };
        let store = pipe_engine::store::Store::new(&dir);
        store.check_marked().map_err(|e| Error::io(&dir, e))?;
    }
    let (store, found) = super::target::resolve(
        &args.target,
        &args.pipeline,
        args.point.as_deref(),
        false,
        true,
    )?;
    let mut removed = 0;
    let mut in_use = 0;
    for t in &found {
        let mut keys = vec![t.key.clone()];
        if !args.keep_parts {
            keys.extend(t.parts.iter().cloned());
        }
        let present: Vec<&String> = keys.iter().filter(|k| store.is_complete(k)).collect();
        if present.is_empty() {
            continue;
        }
        let mut gone = 0;
        for k in &present {
            // A running instance computing or reading it keeps it.
            if let Some(who) = store.user_of(k).map(|h| h.to_string()) {
                in_use += 1;
                outln!(
                    "kept {}  {}: in use by {who}",
                    t.label,
                    pipe_engine::key::short(k, 12)
                );
                continue;
            }
            if args.dry_run {
                gone += 1;
                continue;
            }
            match store
                .remove_unread(k)
                .map_err(|e| Error::io(store.root(), e))?
            {
                Removal::Removed => gone += 1,
                Removal::Absent => {}
                Removal::InUse(who) => {
                    in_use += 1;
                    outln!(
                        "kept {}  {}: in use by {who}",
                        t.label,
                        pipe_engine::key::short(k, 12)
                    );
                }
            }
        }
        if gone == 0 {
            continue;
        }
        removed += gone;
        outln!(
            "{} {}  {}  ({} artifact{})",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            t.label,
            pipe_engine::key::short(&t.key, 12),
            gone,
            if gone == 1 { "" } else { "s" }
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
    if in_use > 0 {
        errln!(
            "{in_use} artifact{} in use by running instances kept; run `pipe rm` again when they end",
            if in_use == 1 { " was" } else { "s were" }
        );
        return Ok(1);
    }
    Ok(0)
}
