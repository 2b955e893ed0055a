//! Declared files' hashes kept across processes (`hashes/PIPELINE.json`), so that
//! planning rereads only the files whose stamp changed since an earlier command read
//! them (`stamp::hash_file` remembers the others). The file is written atomically (temp,
//! fsync, rename) and holds only stamps that had settled (see `stamp::remembered`); one
//! that does not parse is ignored.

use std::path::PathBuf;

use super::Store;
use crate::stamp::{self, Remembered};

/// A stamp is trusted across processes only once its file has not changed for this long.
const SETTLED_NS: i128 = 2_000_000_000;

impl Store {
    fn hashes_path(&self, pipeline: &str) -> PathBuf {
        self.root().join("hashes").join(format!("{pipeline}.json"))
    }

    /// Makes the hashes an earlier command kept for `pipeline` known to this process.
    pub fn load_file_hashes(&self, pipeline: &str) {
        let entries: Option<Vec<Remembered>> = super::read_regular(&self.hashes_path(pipeline))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(entries) = entries {
            stamp::remember(entries);
        }
    }

    /// Keeps the hashes this process knows for later commands on `pipeline`, when it read
    /// a file and the folder is a pipe cache (nothing is written into another folder).
    /// Best effort: a cache that cannot be written is left as it is.
    pub fn save_file_hashes(&self, pipeline: &str) {
        let settled = (super::unix_now() * 1e9) as i128 - SETTLED_NS;
        if !self.is_marked() {
            return;
        }
        let Some(entries) = stamp::remembered(settled) else {
            return;
        };
        let path = self.hashes_path(pipeline);
        let Ok(bytes) = serde_json::to_vec(&entries) else {
            return;
        };
        if let Some(dir) = path.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let _ = super::write_atomic(&path, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_kept_for_the_next_process_only_in_a_marked_cache() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data.txt");
        std::fs::write(&f, "x").unwrap();
        let (h, _) = stamp::hash_file(&f).unwrap();
        let unmarked = Store::new(dir.path().join("plain"));
        std::fs::create_dir_all(unmarked.root()).unwrap();
        std::fs::write(unmarked.root().join("mine.txt"), "user data").unwrap();
        unmarked.save_file_hashes("p");
        assert!(!unmarked.hashes_path("p").exists());

        let store = Store::new(dir.path().join("cache"));
        store.prepare().unwrap();
        // The file changed just now: its stamp has not settled, so it is left out.
        stamp::hash_file(&f).unwrap();
        store.save_file_hashes("p");
        let saved: Vec<Remembered> =
            serde_json::from_slice(&std::fs::read(store.hashes_path("p")).unwrap()).unwrap();
        assert!(
            !saved
                .iter()
                .any(|e| e.path == std::path::absolute(&f).unwrap())
        );
        // Settled ones are kept, by absolute path, with their hash.
        let g = dir.path().join("other.txt");
        std::fs::write(&g, "y").unwrap();
        stamp::hash_file(&g).unwrap();
        let all = stamp::remembered(i128::MAX).unwrap_or_default();
        let mine = all
            .iter()
            .find(|e| e.path == std::path::absolute(&f).unwrap());
        assert_eq!(mine.map(|e| e.hash.as_str()), Some(h.as_str()));
    }
}
