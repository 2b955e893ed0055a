//! Which cache a command uses: `--cache`, `$PIPE_CACHE`, the pipeline file's `[cache] dir`,
//! or the one found from a folder.

use std::path::{Path, PathBuf};

use pipe_engine::error::Error;

/// `--cache` or `$PIPE_CACHE`, whichever is given first; an empty one is an error, never
/// the working folder.
fn given(arg: &Option<PathBuf>) -> Result<Option<PathBuf>, Error> {
    if let Some(dir) = arg {
        if dir.as_os_str().is_empty() {
            return Err(Error::usage(
                "--cache is empty: name the cache folder (--cache DIR)",
            ));
        }
        return Ok(Some(dir.clone()));
    }
    match std::env::var_os("PIPE_CACHE") {
        Some(dir) if dir.is_empty() => Err(Error::usage(
            "PIPE_CACHE is set but empty: set it to the cache folder (PIPE_CACHE=DIR), or unset it to use the default cache",
        )),
        dir => Ok(dir.map(PathBuf::from)),
    }
}

/// The cache directory of a command that names no pipeline file: `--cache`, else
/// `$PIPE_CACHE`, else the one found from the working folder ([`find_cache`]).
pub(super) fn cache_dir(arg: &Option<PathBuf>) -> Result<PathBuf, Error> {
    Ok(given(arg)?.unwrap_or_else(|| find_cache(Path::new("."))))
}

/// The cache directory of a pipeline file: `--cache`, else `$PIPE_CACHE`, else the file's
/// `[cache] dir`, else the one found from the file's folder ([`find_cache`]), so every
/// command finds the same cache wherever it is run from.
pub(super) fn pipeline_cache(arg: &Option<PathBuf>, file: &Path) -> Result<PathBuf, Error> {
    Ok(given(arg)?
        .or_else(|| pipe_engine::spec::cache_dir_of(file))
        .unwrap_or_else(|| find_cache(file.parent().unwrap_or(Path::new(".")))))
}

/// The default cache seen from folder `start`: the nearest `cache/` folder holding
/// `artifacts/` in `start` or a folder above it; else `cache/` in the nearest folder above
/// that is a project root (holds `.git`); else `start/cache`.
pub fn find_cache(start: &Path) -> PathBuf {
    let start = if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        start
    };
    let abs = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    for dir in abs.ancestors() {
        if dir.join("cache").join("artifacts").is_dir() {
            return relative_to_cwd(dir.join("cache"));
        }
        if dir.join(".git").exists() {
            return relative_to_cwd(dir.join("cache"));
        }
    }
    relative_to_cwd(abs.join("cache"))
}

/// `path` relative to the working folder when it lies under it (messages stay short).
pub(crate) fn relative_to_cwd(path: PathBuf) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
}
