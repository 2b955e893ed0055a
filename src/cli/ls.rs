//! `pipe ls`: the artifacts in the cache, optionally of one stage.

use crate::cli::outln;
use serde::Serialize;
use serde_json::Value as Json;
use std::path::PathBuf;

use super::{cache_dir, print_json};
use pipe_engine::error::Error;
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

/// One artifact in `pipe ls --json`.
#[derive(Serialize)]
struct LsJson<'a> {
    /// Bytes its files hold.
    bytes: u64,
    /// Its key.
    key: &'a str,
    /// The stage kind that made it.
    kind: &'a str,
    /// The pipeline that made it.
    pipeline: &'a str,
    /// The sweep point of the instance that made it.
    point: &'a Json,
    /// Seconds the stage ran.
    seconds: f64,
    /// The stage that made it.
    stage: &'a str,
}

/// Bytes an artifact's files hold.
fn bytes(m: &Manifest) -> u64 {
    m.files.iter().map(|f| f.size).sum()
}

/// Runs `pipe ls`; returns its exit code.
pub fn ls(args: &LsArgs) -> Result<i32, Error> {
    let store = Store::new(cache_dir(&args.cache)?);
    let keys = store.keys().map_err(|e| Error::io(store.root(), e))?;
    let rows: Vec<Manifest> = keys
        .iter()
        .filter_map(|k| store.manifest(k))
        .filter(|m| args.stage.as_ref().is_none_or(|s| *s == m.stage))
        .collect();
    if args.json {
        let items: Vec<LsJson> = rows
            .iter()
            .map(|m| LsJson {
                bytes: bytes(m),
                key: &m.key,
                kind: &m.kind,
                pipeline: &m.pipeline,
                point: &m.point,
                seconds: m.seconds,
                stage: &m.stage,
            })
            .collect();
        print_json(&items)?;
    } else {
        for m in &rows {
            outln!(
                "{}  {:<18} {:<16} {:<28} {:>10} bytes {:>8.2}s",
                pipe_engine::key::short(&m.key, 12),
                m.kind,
                m.stage,
                pipe_engine::plan::point_label(&m.point),
                bytes(m),
                m.seconds
            );
        }
        outln!("{} artifacts", rows.len());
    }
    Ok(0)
}
