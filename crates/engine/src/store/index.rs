//! The status index: for each (pipeline, stage, point), what was last computed.
//!
//! Keys say *whether* an instance changed; the index lets `pipe status` say *why*
//! ("param lr changed 0.1 -> 0.05") by keeping the ingredients of the last key.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{KeyLock, Store, write_atomic};

/// What was last computed for one (stage, point).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// The key.
    pub key: String,
    /// Stage kind.
    pub kind: String,
    /// The kind's code version.
    pub version: u32,
    /// Parameters that went into the key.
    pub params: serde_json::Map<String, Json>,
    /// Input slot -> key.
    pub inputs: BTreeMap<String, String>,
    /// Declared file -> blake3.
    pub files: BTreeMap<String, String>,
}

/// The index of one pipeline: entry id (`stage` + point) -> entry.
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Index {
    /// Entries by [`entry_id`].
    pub entries: HashMap<String, IndexEntry>,
    /// Earlier entries by [`entry_id`], newest first (at most [`HISTORY`] each, distinct
    /// keys): what a runs with other overrides computed before the last entry.
    #[serde(default)]
    pub history: HashMap<String, Vec<IndexEntry>>,
}

/// How many earlier entries the index keeps per (stage, point).
pub const HISTORY: usize = 16;

impl Index {
    /// Every entry known for an id, newest first: the last, then the earlier ones.
    pub fn all(&self, id: &str) -> impl Iterator<Item = &IndexEntry> {
        self.entries
            .get(id)
            .into_iter()
            .chain(self.history.get(id).into_iter().flatten())
    }
}

/// The id of a (stage, point) in the index.
pub fn entry_id(stage: &str, point: &Json) -> String {
    let mut s = String::with_capacity(64);
    s.push_str(stage);
    s.push(' ');
    crate::key::canonical_json(point, &mut s);
    s
}

fn file_name(pipeline: &str) -> String {
    format!("{pipeline}.json")
}

impl Store {
    fn index_path(&self, pipeline: &str) -> PathBuf {
        self.root().join("index").join(file_name(pipeline))
    }

    /// Reads a pipeline's index (empty if there is none or it does not parse).
    pub fn read_index(&self, pipeline: &str) -> Index {
        super::read_regular(&self.index_path(pipeline))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Merges entries into a pipeline's index, atomically and under a lock. When the
    /// index already holds every entry as given (a no-op rerun), nothing is locked or
    /// written: the index is read once, without the lock (it is only ever replaced whole,
    /// so a read sees one version), and left as it is.
    pub fn update_index(
        &self,
        pipeline: &str,
        updates: Vec<(String, IndexEntry)>,
    ) -> io::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let path = self.index_path(pipeline);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            let index = self.read_index(pipeline);
            if updates
                .iter()
                .all(|(id, e)| index.entries.get(id) == Some(e))
            {
                return Ok(());
            }
        }
        let _lock = KeyLock::acquire(
            &self
                .root()
                .join("locks")
                .join(format!("index-{pipeline}.lock")),
            self.host(),
            &mut |_| {},
        )?;
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(io::Error::other(format!(
                "{} is not a regular file: remove it",
                path.display()
            )));
        }
        let mut index = self.read_index(pipeline);
        let mut changed = false;
        for (id, e) in updates {
            if index.entries.get(&id) != Some(&e) {
                if let Some(old) = index.entries.insert(id.clone(), e.clone())
                    && old.key != e.key
                {
                    let h = index.history.entry(id).or_default();
                    h.retain(|x| x.key != old.key && x.key != e.key);
                    h.insert(0, old);
                    h.truncate(HISTORY);
                } else if let Some(h) = index.history.get_mut(&id) {
                    h.retain(|x| x.key != e.key);
                }
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&index).map_err(io::Error::other)?;
        write_atomic(&self.index_path(pipeline), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;
    use std::time::Duration;

    fn entry(key: &str) -> IndexEntry {
        IndexEntry {
            key: key.to_string(),
            kind: "exec".to_string(),
            version: 1,
            params: serde_json::Map::new(),
            inputs: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// Runs `update_index` on another thread while this one holds the index lock; whether
    /// it returned within `wait`.
    fn returns_while_locked(store: &std::sync::Arc<Store>, key: &str, wait: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let (s, k) = (store.clone(), key.to_string());
        std::thread::spawn(move || {
            let r = s.update_index("p", vec![("copy {\"i\":1}".to_string(), entry(&k))]);
            let _ = tx.send(r.is_ok());
        });
        rx.recv_timeout(wait) == Ok(true)
    }

    #[test]
    fn an_unchanged_index_is_neither_locked_nor_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::new(dir.path()));
        store.prepare().unwrap();
        let id = "copy {\"i\":1}".to_string();
        store
            .update_index("p", vec![(id.clone(), entry("k1"))])
            .unwrap();
        let path = store.index_path("p");
        let before = std::fs::metadata(&path).unwrap();
        let lock = KeyLock::acquire(
            &store.root().join("locks").join("index-p.lock"),
            store.host(),
            &mut |_| {},
        )
        .unwrap();
        // The same entry again: done at once, although another holds the lock.
        assert!(returns_while_locked(&store, "k1", Duration::from_secs(10)));
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (before.ino(), before.modified().unwrap()),
            (after.ino(), after.modified().unwrap())
        );
        // A changed entry waits for the lock, then is written, the old one kept as history.
        let (tx, rx) = mpsc::channel();
        let s = store.clone();
        let waiter = std::thread::spawn(move || {
            let r = s.update_index("p", vec![("copy {\"i\":1}".to_string(), entry("k2"))]);
            let _ = tx.send(r.is_ok());
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        drop(lock);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true));
        waiter.join().unwrap();
        let index = store.read_index("p");
        assert_eq!(index.entries[&id].key, "k2");
        assert_eq!(
            index.history[&id]
                .iter()
                .map(|e| &e.key)
                .collect::<Vec<_>>(),
            ["k1"]
        );
    }
}
