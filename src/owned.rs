//! Output folders that `pipe` writes into (`export --out`, `report --out`) without ever
//! touching what it did not write.
//!
//! A mark file in the folder, [`OWNED_MARK`], lists every file pipe wrote there. A run
//! replaces only files in that list, removes only listed files it no longer writes, and
//! leaves every other file alone; a file it would have to write that exists but is not
//! listed (a user's file) stops it before it writes anything. Temp files a killed run left
//! beside the files it lists are removed by the next run into the folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use pipe_engine::error::Error;
use pipe_engine::store::lock::process_start;
use pipe_engine::store::{remove_tree, write_atomic};

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
        remove_stale_temps(root, &old);
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

/// The process id in the name of a temp file of ours: `.NAME.tmp.PID` ([`OwnedDir::write_with`])
/// or `.NAME.tmp.PID.N` ([`write_atomic`]), NAME one of `names`.
fn temp_pid(entry: &str, names: &BTreeSet<&str>) -> Option<u32> {
    let (name, rest) = entry.strip_prefix('.')?.rsplit_once(".tmp.")?;
    if !names.contains(name) {
        return None;
    }
    let pid = match rest.split_once('.') {
        Some((pid, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => pid,
        Some(_) => return None,
        None => rest,
    };
    pid.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| pid.parse().ok())
        .flatten()
}

/// Whether `pid` names no process on this host.
fn is_dead(pid: u32) -> bool {
    process_start(pid).is_none()
}

/// Removes what runs killed on this host left in the output folder `root`: the temp files
/// beside the files pipe listed there (and beside the mark), and the staging folders of
/// earlier versions, `.figures.tmp.PID` in the folder (report) and `.DIR.new.PID` beside
/// it (export). Only names pipe makes, only when their process is gone; failures are left
/// for the next run.
fn remove_stale_temps(root: &Path, listed: &BTreeSet<String>) {
    let mut by_folder: BTreeMap<PathBuf, BTreeSet<&str>> = BTreeMap::new();
    by_folder
        .entry(root.to_path_buf())
        .or_default()
        .insert(OWNED_MARK);
    for rel in listed {
        // `rel` is inside the folder (checked when the mark was read).
        let rel = Path::new(rel);
        if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name().and_then(|n| n.to_str()))
        {
            by_folder.entry(root.join(parent)).or_default().insert(name);
        }
    }
    for (folder, names) in &by_folder {
        // Never through a link put where a folder of ours was.
        if folder != root && !std::fs::symlink_metadata(folder).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            if is_file && temp_pid(&name, names).is_some_and(is_dead) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let legacy = |folder: &Path, prefix: &str| {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && pid.bytes().all(|b| b.is_ascii_digit()) && pid.parse().is_ok_and(is_dead) {
                let _ = remove_tree(&e.path());
            }
        }
    };
    legacy(root, ".figures.tmp.");
    if let Some(base) = root.file_name().and_then(|n| n.to_str()) {
        let parent = root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        legacy(parent, &format!(".{base}.new."));
    }
}
