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

    /// Merges entries into a pipeline's index, atomically and under a lock.
    pub fn update_index(
        &self,
        pipeline: &str,
        updates: Vec<(String, IndexEntry)>,
    ) -> io::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let _lock = KeyLock::acquire(
            &self
                .root()
                .join("locks")
                .join(format!("index-{pipeline}.lock")),
            self.host(),
            &mut |_| {},
        )?;
        let path = self.index_path(pipeline);
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
