//! The status index: for each (pipeline, stage, point), what was last computed.
//!
//! Keys say *whether* an instance changed; the index lets `pipe status` say *why*
//! ("param lr changed 0.1 -> 0.05") by keeping the ingredients of the last key.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::complete::{AnyMap, AnyStr, StrMap};
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

/// An [`IndexEntry`] in brief: its key and each input slot's key. Everything else in an
/// entry (kind, code version, key parameters, declared files and their hashes) is what the
/// key is computed from ([`crate::key::compute_key`], which also takes the slots' names),
/// so two entries with the same non-empty key and the same input keys are equal: a run
/// sees whether the index already holds what it would record without building entries.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryBrief {
    /// The key (never empty: an instance whose key is not known has no brief).
    pub key: String,
    /// Input slot -> key.
    pub inputs: BTreeMap<String, String>,
}

/// An index as [`Store::index_holds`] reads it: the types of [`Index`], each field checked
/// for the same JSON type, so it parses exactly when [`Index`] does, but only the last
/// entries' keys and input keys are kept.
#[derive(Deserialize)]
struct IndexCheck<'a> {
    #[serde(borrow)]
    entries: HashMap<Cow<'a, str>, EntryCheck<'a>>,
    #[allow(dead_code)]
    #[serde(default, borrow)]
    history: HashMap<Cow<'a, str>, Vec<EntryCheck<'a>>>,
}

/// An [`IndexEntry`] as [`IndexCheck`] reads it.
#[derive(Deserialize)]
struct EntryCheck<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[allow(dead_code)]
    kind: AnyStr,
    #[allow(dead_code)]
    version: u32,
    #[allow(dead_code)]
    params: AnyMap,
    #[serde(borrow)]
    inputs: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    #[allow(dead_code)]
    files: StrMap,
}

impl EntryCheck<'_> {
    fn matches(&self, brief: &EntryBrief) -> bool {
        self.key == brief.key
            && self.inputs.len() == brief.inputs.len()
            && self
                .inputs
                .iter()
                .zip(&brief.inputs)
                .all(|((s, k), (bs, bk))| s == bs && k == bk)
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

    /// Whether a pipeline's index holds each `(id, brief)` as the last entry for its id
    /// (an unchanged rerun), read once without the lock (the index is only ever replaced
    /// whole, so a read sees one version) and without building its entries. False when
    /// there is no index, it does not parse as an [`Index`], or a brief's key is empty.
    pub fn index_holds(&self, pipeline: &str, briefs: &[(String, EntryBrief)]) -> bool {
        if briefs.iter().any(|(_, b)| b.key.is_empty()) {
            return false;
        }
        let Ok(bytes) = super::read_regular(&self.index_path(pipeline)) else {
            return false;
        };
        let Ok(index) = serde_json::from_slice::<IndexCheck<'_>>(&bytes) else {
            return false;
        };
        briefs
            .iter()
            .all(|(id, b)| index.entries.get(id.as_str()).is_some_and(|e| e.matches(b)))
    }

    /// Records a run's entries in a pipeline's index: nothing when the index already holds
    /// every one of `briefs` ([`Store::index_holds`]), else the entries `build` gives are
    /// merged in under the lock ([`Store::update_index`], without its unlocked check).
    pub fn record_in_index(
        &self,
        pipeline: &str,
        briefs: &[(String, EntryBrief)],
        build: impl FnOnce() -> Vec<(String, IndexEntry)>,
    ) -> io::Result<()> {
        if briefs.is_empty() || self.index_holds(pipeline, briefs) {
            return Ok(());
        }
        self.merge_index(pipeline, build())
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
        self.merge_index(pipeline, updates)
    }

    /// Merges entries into a pipeline's index under its lock; writes only if one changed.
    fn merge_index(&self, pipeline: &str, updates: Vec<(String, IndexEntry)>) -> io::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let path = self.index_path(pipeline);
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

    fn brief(key: &str, inputs: &[(&str, &str)]) -> EntryBrief {
        EntryBrief {
            key: key.to_string(),
            inputs: inputs
                .iter()
                .map(|(s, k)| (s.to_string(), k.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_run_records_only_what_the_index_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let id = "train {\"seed\":1}".to_string();
        let mut e = entry("k1");
        e.inputs.insert("data".into(), "d1".into());
        e.params.insert("lr".into(), serde_json::json!(0.1));
        let built = std::cell::Cell::new(0);
        let record = |b: EntryBrief, e: &IndexEntry| {
            store
                .record_in_index("p", &[(id.clone(), b)], || {
                    built.set(built.get() + 1);
                    vec![(id.clone(), e.clone())]
                })
                .unwrap()
        };
        // No index yet: the entry is built and written.
        record(brief("k1", &[("data", "d1")]), &e);
        assert_eq!(built.get(), 1);
        assert_eq!(store.read_index("p").entries[&id], e);
        // The same key and input keys: nothing built, nothing written.
        let before = std::fs::metadata(store.index_path("p")).unwrap().ino();
        record(brief("k1", &[("data", "d1")]), &e);
        assert_eq!(built.get(), 1);
        assert_eq!(
            std::fs::metadata(store.index_path("p")).unwrap().ino(),
            before
        );
        // The same key from another input (early cutoff): the entry is written again.
        let mut e2 = e.clone();
        e2.inputs.insert("data".into(), "d2".into());
        record(brief("k1", &[("data", "d2")]), &e2);
        assert_eq!(built.get(), 2);
        assert_eq!(store.read_index("p").entries[&id].inputs["data"], "d2");
        assert!(!store.index_holds("p", &[(id.clone(), brief("k1", &[("data", "d1")]))]));
        // Another slot, another key, another id, an empty key: not held.
        for (i, b) in [
            (id.clone(), brief("k1", &[("other", "d2")])),
            (id.clone(), brief("k1", &[])),
            (id.clone(), brief("k2", &[("data", "d2")])),
            ("train {}".to_string(), brief("k1", &[("data", "d2")])),
            (id.clone(), brief("", &[("data", "d2")])),
        ] {
            assert!(
                !store.index_holds("p", &[(i.clone(), b.clone())]),
                "{i} {b:?}"
            );
        }
        assert!(store.index_holds("p", &[(id.clone(), brief("k1", &[("data", "d2")]))]));
    }

    #[test]
    fn the_check_reads_exactly_the_indexes_that_parse() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let good = r#"{"entries": {"s {}": {"key": "k\u0031", "kind": "exec", "version": 1,
            "params": {"cmd": ["sh", 1.5, null, true, {"a": -2}]}, "inputs": {"d": "x"},
            "files": {"f": "h"}}}, "history": {"s {}": [{"key": "k0", "kind": "exec",
            "version": 1, "params": {}, "inputs": {}, "files": {}}]}}"#;
        let held = [("s {}".to_string(), brief("k1", &[("d", "x")]))];
        let check = |text: &str| {
            std::fs::write(store.index_path("p"), text).unwrap();
            let full = serde_json::from_str::<Index>(text).is_ok();
            let holds = store.index_holds("p", &held);
            assert_eq!(full, holds, "{text}");
            holds
        };
        assert!(check(good));
        assert!(check(&good.replace(
            r#", "history": {"s {}": [{"key": "k0", "kind": "exec",
            "version": 1, "params": {}, "inputs": {}, "files": {}}]}"#,
            ""
        )));
        for bad in [
            good.replace("1.5", "1e999"),
            good.replace(
                r#""version": 1,
            "params""#,
                r#""version": -1,
            "params""#,
            ),
            good.replace(r#""params": {}"#, r#""params": []"#),
            good.replace(r#""files": {}"#, r#""files": {"f": 1}"#),
            good.replace(
                r#""kind": "exec", "version": 1,
            "params": {"cmd""#,
                r#""version": 1,
            "params": {"cmd""#,
            ),
            good.replace(
                r#""inputs": {"d": "x"}"#,
                r#""inputs": {"d": "x"}, "inputs": {}"#,
            ),
            good[..good.len() - 1].to_string(),
        ] {
            assert!(!check(&bad), "accepted: {bad}");
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
