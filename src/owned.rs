//! Output folders that `pipe` writes into (`export --out`, `report --out`) without ever
//! touching what it did not write.
//!
//! A mark file in the folder, [`OWNED_MARK`], lists every file pipe wrote there. A run
//! replaces only files in that list, removes only listed files it no longer writes, and
//! leaves every other file alone; a file it would have to write that exists but is not
//! listed (a user's file) stops it before it writes anything.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use pipe_engine::error::Error;
use pipe_engine::store::write_atomic;

/// The mark file: the files pipe wrote into the folder, as JSON.
pub const OWNED_MARK: &str = ".pipe-written.json";

/// An output folder being written: what pipe wrote there before and what it writes now.
#[derive(Debug)]
pub struct OwnedDir {
    root: PathBuf,
    old: BTreeSet<String>,
    new: BTreeSet<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Mark {
    files: Vec<String>,
}

/// Whether `rel` is a plain relative path inside the folder (no `..`, no root).
fn inside(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

impl OwnedDir {
    /// Opens (creating it if needed) the output folder `root` and reads its mark.
    pub fn open(root: &Path) -> Result<OwnedDir, Error> {
        if root.exists() && !root.is_dir() {
            return Err(Error::usage(format!(
                "--out {}: not a folder; give a new or empty folder",
                root.display()
            )));
        }
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let mark = root.join(OWNED_MARK);
        let old = match std::fs::symlink_metadata(&mark) {
            Err(_) => BTreeSet::new(),
            Ok(meta) => {
                let parsed = meta
                    .is_file()
                    .then(|| std::fs::read(&mark).ok())
                    .flatten()
                    .and_then(|bytes| serde_json::from_slice::<Mark>(&bytes).ok());
                let Some(m) = parsed else {
                    return Err(Error::usage(format!(
                        "--out {}: {} is not a list of what pipe wrote; move it away or give a \
                         new or empty folder",
                        root.display(),
                        mark.display()
                    )));
                };
                m.files.into_iter().filter(|f| inside(f)).collect()
            }
        };
        Ok(OwnedDir {
            root: root.to_path_buf(),
            old,
            new: BTreeSet::new(),
        })
    }

    /// Claims the files (paths relative to the folder) this run will write. Refused with
    /// the first one that exists but that pipe did not write, or that lies under something
    /// that is not a plain folder. Records them in the mark before any is written, so a
    /// crash in between leaves nothing pipe wrote unlisted.
    pub fn claim<S: AsRef<str>>(&mut self, files: &[S]) -> Result<(), Error> {
        for f in files {
            let rel = f.as_ref();
            if !inside(rel) {
                return Err(Error::usage(format!(
                    "cannot write `{rel}` into an output folder"
                )));
            }
            let mut at = self.root.clone();
            let parts: Vec<_> = Path::new(rel).components().collect();
            for (i, part) in parts.iter().enumerate() {
                at.push(part);
                let Ok(meta) = std::fs::symlink_metadata(&at) else {
                    break;
                };
                let last = i + 1 == parts.len();
                let ok = if last {
                    meta.is_file() && self.old.contains(rel)
                } else {
                    meta.is_dir()
                };
                if !ok {
                    return Err(Error::usage(format!(
                        "--out {}: {} is not a file pipe wrote there, and pipe does not replace \
                         what it did not write; move it away or give a new or empty folder",
                        self.root.display(),
                        at.display()
                    )));
                }
            }
            self.new.insert(rel.to_string());
        }
        let all: BTreeSet<String> = self.old.union(&self.new).cloned().collect();
        self.write_mark(&all)?;
        for f in &self.new {
            if let Some(parent) = self.path(f).parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
        }
        Ok(())
    }

    /// The full path of a file in the folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a claimed file atomically (a temp file renamed over it).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path(rel);
        write_atomic(&path, bytes).map_err(|e| Error::io(&path, e))
    }

    /// Writes a claimed file through `fill`, which writes a temp file beside it that is then
    /// renamed over it; a failure leaves the old file and removes the temp file.
    pub fn write_with(
        &self,
        rel: &str,
        fill: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> Result<(), Error> {
        let path = self.path(rel);
        let name = path
            .file_name()
            .map_or_else(|| "file".to_string(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
        let done = fill(&tmp)
            .map_err(|e| format!("{e:#}"))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
        Ok(())
    }

    /// Ends the run: removes the files pipe wrote before but not this time (only while they
    /// are still plain files) and lists just this run's files in the mark.
    pub fn finish(self) -> Result<(), Error> {
        for rel in self.old.difference(&self.new) {
            let path = self.path(rel);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        self.write_mark(&self.new)
    }

    fn write_mark(&self, files: &BTreeSet<String>) -> Result<(), Error> {
        let mark = Mark {
            files: files.iter().cloned().collect(),
        };
        let text = serde_json::to_vec_pretty(&mark).map_err(|e| Error::usage(e.to_string()))?;
        let path = self.root.join(OWNED_MARK);
        write_atomic(&path, &text).map_err(|e| Error::io(&path, e))
    }
}
