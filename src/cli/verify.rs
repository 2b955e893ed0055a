//! `pipe verify`: rehashes every artifact in the cache and lists the damaged ones.

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
}

/// Runs `pipe verify`; returns 1 if an artifact is damaged and was not removed (no `--fix`,
/// or a running instance reads it), else 0.
pub fn verify(args: &VerifyArgs) -> Result<i32, Error> {
    let store = Store::new(cache_dir(&args.cache));
    let (n, damages) = store
        .verify(args.fix)
        .map_err(|e| Error::io(store.root(), e))?;
    if args.json {
        print_json(&VerifyJson {
            checked: n,
            damaged: &damages,
            removed: args.fix,
        })?;
    } else {
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
