//! `pipe verify`: rehashes every artifact in the cache and lists the damaged ones; with
//! `--adopt`, first marks a cache made by an older pipe as a pipe cache.

use crate::cli::outln;
use serde::Serialize;
use std::path::PathBuf;

use super::{cache_dir, print_json};
use pipe_engine::error::Error;
use pipe_engine::store::{Damage, Store};

/// Arguments of `pipe verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Remove damaged artifacts (they are recomputed by the next run).
    #[arg(long)]
    pub fix: bool,
    /// Mark a cache made by an older pipe (no CACHEDIR.TAG) as a pipe cache, if it holds
    /// only what pipe writes; then verify it.
    #[arg(long)]
    pub adopt: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pipe verify --json`.
#[derive(Serialize)]
struct VerifyJson<'a> {
    /// Artifacts checked.
    checked: usize,
    /// The damaged ones: `{"key", "problem"}`.
    damaged: &'a [Damage],
    /// Whether damaged artifacts were removed (`--fix`).
    removed: bool,
    /// Whether `--adopt` marked the folder as a pipe cache now.
    adopted: bool,
}

/// Runs `pipe verify`; returns 1 if an artifact is damaged and was not removed (no `--fix`,
/// or a running instance reads it), else 0.
pub fn verify(args: &VerifyArgs) -> Result<i32, Error> {
    let store = Store::new(cache_dir(&args.cache)?);
    let adopted = args.adopt && adopt(&store)?;
    let (n, damages) = store
        .verify(args.fix)
        .map_err(|e| Error::io(store.root(), e))?;
    if args.json {
        print_json(&VerifyJson {
            checked: n,
            damaged: &damages,
            removed: args.fix,
            adopted,
        })?;
    } else {
        if adopted {
            outln!("adopted {} as a pipe cache", store.root().display());
        }
        for d in &damages {
            outln!("damaged {}: {}", d.key, d.problem);
        }
        let removed = damages.iter().filter(|d| d.removed).count();
        outln!(
            "{n} artifacts checked, {} damaged{}",
            damages.len(),
            if removed > 0 {
                format!(" ({removed} removed)")
            } else {
                String::new()
            }
        );
    }
    Ok(if damages.iter().all(|d| d.removed) {
        0
    } else {
        1
    })
}

/// `--adopt`: marks the folder as a pipe cache if it holds only what pipe writes; returns
/// whether it was marked now. A folder with anything else is refused, naming the entry.
fn adopt(store: &Store) -> Result<bool, Error> {
    store.adopt().map_err(|entry| {
        Error::usage(format!(
            "{}: not adopted as a pipe cache: {entry}. pipe adopts only a folder that holds \
             nothing but what pipe writes; move that entry out of it, or use another folder \
             as the cache",
            store.root().display()
        ))
    })
}
