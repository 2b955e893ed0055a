//! `pipe log`: the log of an instance, failed ones included; `-f` follows a running one.

use crate::cli::out;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::print_json;
use pipe_engine::error::Error;
use pipe_engine::store::Store;

/// Arguments of `pipe log`.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// A key (or unique prefix), or `stage[var=value,...]`.
    pub key: String,
    /// The pipeline file to look it up in, its overrides and cache (as `status` plans it)
    /// [default: without a file or `--run`, the cache's manifests].
    #[command(flatten)]
    pub pipeline: super::PipelineArgs,
    /// Narrow `stage` to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Keep printing what is appended to the log until the instance ends (like `tail -f`).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print `{"key", "path", "text"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pipe log --json`.
#[derive(Serialize)]
struct LogJson<'a> {
    /// The instance's key.
    key: &'a str,
    /// The log file.
    path: &'a Path,
    /// Its text.
    text: &'a str,
}

/// Runs `pipe log`; returns its exit code.
pub fn log(args: &LogArgs) -> Result<i32, Error> {
    let (store, found) = super::target::resolve(
        &args.key,
        &args.pipeline,
        args.point.as_deref(),
        true,
        false,
    )?;
    let key = super::target::one(&args.key, found)?.key;
    let path = store.log_path(&key);
    if args.follow {
        return follow(&store, &key, &path);
    }
    let text = pipe_engine::status::read_log(&path).map_err(|e| Error::io(&path, e))?;
    if args.json {
        print_json(&LogJson {
            key: &key,
            path: &path,
            text: &text,
        })?;
    } else {
        out!("{text}");
    }
    Ok(0)
}

/// Prints the log, then what is appended to it, until no process computes `key` any more
/// (its lock is released) and the log has stopped growing. Waits for the log to appear.
fn follow(store: &Store, key: &str, path: &Path) -> Result<i32, Error> {
    let lock = store.root().join("locks").join(format!("{key}.lock"));
    let mut at = 0u64;
    loop {
        let live = pipe_engine::store::lock::is_held(&lock, store.host());
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(Error::io(path, std::io::Error::other("not a regular file")));
        }
        if let Ok(mut f) = pipe_engine::store::open_regular(path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < at {
                at = 0; // a new attempt emptied the log
            }
            if len > at {
                let mut buf = Vec::new();
                f.seek(SeekFrom::Start(at))
                    .map_err(|e| Error::io(path, e))?;
                f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
                at += buf.len() as u64;
                out!("{}", String::from_utf8_lossy(&buf));
            }
        }
        if !live && (at > 0 || !path.exists()) {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
