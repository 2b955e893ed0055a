//! `pipe log`: the log of an instance, failed ones included.

use crate::cli::out;
use std::path::Path;

use serde::Serialize;

use super::{LogArgs, cache_dir, print_json};
use crate::error::Error;
use crate::store::Store;

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
    let store = Store::new(cache_dir(&args.cache));
    let key = store.resolve_key(&args.key, true).map_err(Error::usage)?;
    let path = store.log_path(&key);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
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
