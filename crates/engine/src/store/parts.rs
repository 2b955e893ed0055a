//! Parts: further artifacts an instance stores besides its own (training checkpoints).
//!
//! A part has its own key (computed by the stage kind from the instance's parameters and
//! input keys) and is sealed into the store exactly like an instance's artifact. [`Parts`]
//! is plain data so that a worker process can receive it and write parts itself.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{Manifest, Store};

/// Where an instance's parts go, and what their manifests say about where they came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Parts {
    /// The cache directory.
    pub cache: PathBuf,
    /// The producing instance's manifest; each part's copy gets its own key, kind and params.
    pub template: Manifest,
}

impl Parts {
    /// The directory of a complete artifact, if the key is in the store.
    pub fn get(&self, key: &str) -> Option<PathBuf> {
        let store = Store::new(&self.cache);
        store.is_complete(key).then(|| store.artifact_dir(key))
    }

    /// Stores a part under `key` unless it is already there: `write` fills a temp folder
    /// that is sealed and renamed into place like any artifact. Returns its directory.
    pub fn put(
        &self,
        key: &str,
        kind: &str,
        params: &Json,
        write: &mut dyn FnMut(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        self.get_or_put(key, kind, params, write)
            .map(|(dir, _)| dir)
    }

    /// Like [`Parts::put`], also saying whether `write` made the part now (`false`: it was
    /// cached and `write` did not run, so work done inside `write` is done only when needed).
    pub fn get_or_put(
        &self,
        key: &str,
        kind: &str,
        params: &Json,
        write: &mut dyn FnMut(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<(PathBuf, bool)> {
        let store = Store::new(&self.cache);
        if store.is_complete(key) {
            return Ok((store.artifact_dir(key), false));
        }
        let _lock = store.lock(key, &mut |_| {})?;
        if store.is_complete(key) {
            return Ok((store.artifact_dir(key), false));
        }
        // A damaged part (a file missing or of the wrong size) is replaced.
        if std::fs::symlink_metadata(store.artifact_dir(key)).is_ok() {
            store.remove(key)?;
        }
        let tmp = store.begin(key)?;
        let clock = Instant::now();
        if let Err(e) = write(&tmp) {
            store.discard(&tmp);
            return Err(e);
        }
        let mut m = self.template.clone();
        m.key = key.to_string();
        m.kind = kind.to_string();
        m.params = params.clone();
        m.parts.clear();
        m.started = super::unix_now() - clock.elapsed().as_secs_f64();
        m.seconds = clock.elapsed().as_secs_f64();
        store.commit(&tmp, m)?;
        Ok((store.artifact_dir(key), true))
    }

    /// Removes the part `key` under its lock: one this instance stored earlier and no
    /// longer needs (a resume point that a later one supersedes). Nothing there is fine.
    pub fn remove(&self, key: &str) -> anyhow::Result<()> {
        let store = Store::new(&self.cache);
        let _lock = store.lock(key, &mut |_| {})?;
        store.remove(key)?;
        Ok(())
    }
}
