//! What a file or a folder tree looks like from its metadata, without reading it: the
//! stamps that tell whether something an instance reads changed while it ran, and the
//! content hashes of declared files remembered by stamp.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// A file's identity and last change as the file system reports them: any write,
/// replacement (`sed -i`, an editor's save), truncation or `chmod` changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time (also moved by `touch -d`, which can set `mtime` back).
    pub ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of `meta`.
    pub fn of_meta(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// The stamp of the file at `path` (following links, as reading it would).
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        Ok(FileStamp::of_meta(&std::fs::metadata(path)?))
    }
}

/// Content hashes of files by absolute path, valid while the file's stamp is unchanged.
static HASHES: Mutex<Option<HashMap<PathBuf, (FileStamp, String)>>> = Mutex::new(None);

/// Whether a file was hashed (read) since the process started or [`remembered`] last
/// answered: whether saving the memory would add anything.
static HASHED: AtomicBool = AtomicBool::new(false);

/// One remembered hash, as kept across processes: a file's absolute path, the stamp it
/// had when it was read, and the blake3 of its content then.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Remembered {
    /// The file (absolute, without `.` components).
    pub path: PathBuf,
    /// Its stamp when it was read.
    pub stamp: FileStamp,
    /// The blake3 of what was read (hex).
    pub hash: String,
}

/// Adds hashes remembered by an earlier process (each is used only while its file's
/// stamp is the one it was read under); what this process already knows stays.
pub fn remember(entries: Vec<Remembered>) {
    let mut memo = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    let memo = memo.get_or_insert_with(HashMap::new);
    for e in entries {
        memo.entry(e.path).or_insert((e.stamp, e.hash));
    }
}

/// Everything remembered, to keep for later processes, if a file was read since the last
/// call (`None` otherwise). Left out: files changed (modification or status change time)
/// at or after `settled_before_ns` (nanoseconds since the epoch), which a write within
/// the same clock tick could change without changing their stamp.
pub fn remembered(settled_before_ns: i128) -> Option<Vec<Remembered>> {
    if !HASHED.swap(false, Ordering::SeqCst) {
        return None;
    }
    let memo = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<Remembered> = memo
        .iter()
        .flatten()
        .filter(|(_, (s, _))| s.mtime_ns < settled_before_ns && s.ctime_ns < settled_before_ns)
        .map(|(p, (s, h))| Remembered {
            path: p.clone(),
            stamp: *s,
            hash: h.clone(),
        })
        .collect();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    Some(all)
}

/// The blake3 of a regular file's content (hex) and the stamp it was read under: taken
/// from memory when the file's stamp is the one it was hashed at, read otherwise. A file
/// that changes while it is read is read again.
pub fn hash_file(path: &Path) -> std::io::Result<(String, FileStamp)> {
    hash_file_in(path, None, None)
}

/// [`hash_file`] for a caller that hashes many files: `cwd`, the process's working
/// directory taken once (else asked for here, one `getcwd` per relative path; a relative
/// `path` is still opened relative to the process's), and `meta`, the file's
/// metadata (following links) if the caller already took it (else one `stat` here).
pub fn hash_file_in(
    path: &Path,
    cwd: Option<&Path>,
    meta: Option<std::fs::Metadata>,
) -> std::io::Result<(String, FileStamp)> {
    let meta = match meta {
        Some(m) => m,
        None => std::fs::metadata(path)?,
    };
    if meta.is_dir() {
        return Err(std::io::Error::other("is a directory, not a file"));
    }
    if !meta.is_file() {
        // A FIFO or a device (`/dev/zero`) would block or never end.
        return Err(std::io::Error::other(
            "is not a regular file (a FIFO, socket or device)",
        ));
    }
    let mut stamp = FileStamp::of_meta(&meta);
    // Remembered by absolute path: a relative one means another file in another folder.
    let abs = match cwd {
        Some(cwd) if path.is_relative() && !path.as_os_str().is_empty() => {
            std::path::absolute(cwd.join(path))?
        }
        _ => std::path::absolute(path)?,
    };
    {
        let memo = HASHES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, h)) = memo.as_ref().and_then(|m| m.get(&abs))
            && *s == stamp
        {
            return Ok((h.clone(), stamp));
        }
    }
    let mut tries = 0;
    let hash = loop {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        let after = FileStamp::of(path)?;
        if after == stamp || tries == 3 {
            stamp = after;
            break hasher.finalize().to_hex().to_string();
        }
        stamp = after;
        tries += 1;
    };
    HASHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(abs, (stamp, hash.clone()));
    HASHED.store(true, Ordering::SeqCst);
    Ok((hash, stamp))
}

/// One entry of a [`TreeStamp`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// `/`-separated path under the tree's root (empty for the root).
    path: String,
    /// Whether it is a folder (else a file or anything else).
    dir: bool,
    /// Inode, size and modification time (not the status change time: a hard link made
    /// to a file, as a stage that reuses its input's file does, moves that).
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// Every entry under a folder, with its identity, size and modification time, in path
/// order: taken before a stage runs and after, it shows whether anything under the folder
/// was added, removed, replaced or written meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeStamp {
    entries: Vec<Entry>,
}

impl TreeStamp {
    /// The stamp of the tree at `root` (links are not followed; a missing root is an
    /// error).
    pub fn of(root: &Path) -> std::io::Result<TreeStamp> {
        let mut entries = Vec::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((path, rel)) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path)?;
            let dir = meta.is_dir();
            entries.push(Entry {
                path: rel.clone(),
                dir,
                ino: meta.ino(),
                size: if dir { 0 } else { meta.size() },
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            });
            if dir {
                for e in std::fs::read_dir(&path)? {
                    let e = e?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    let sub = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((e.path(), sub));
                }
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(TreeStamp { entries })
    }

    /// What differs from `before`, in words (the first file added, removed, replaced or
    /// written, in path order; else a folder whose entries changed), or `None`.
    pub fn change_since(&self, before: &TreeStamp) -> Option<String> {
        let name = |p: &str| {
            if p.is_empty() {
                "the folder".to_string()
            } else {
                p.to_string()
            }
        };
        let mut folder_changed: Option<String> = None;
        let mut a = before.entries.iter().peekable();
        let mut b = self.entries.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return folder_changed,
                (Some(x), None) => return Some(format!("{} was removed", name(&x.path))),
                (None, Some(y)) => return Some(format!("{} was added", name(&y.path))),
                (Some(x), Some(y)) => match x.path.cmp(&y.path) {
                    std::cmp::Ordering::Less => {
                        return Some(format!("{} was removed", name(&x.path)));
                    }
                    std::cmp::Ordering::Greater => {
                        return Some(format!("{} was added", name(&y.path)));
                    }
                    std::cmp::Ordering::Equal => {
                        if x.ino != y.ino || x.dir != y.dir {
                            return Some(format!("{} was replaced", name(&x.path)));
                        }
                        if !x.dir && (x.size != y.size || x.mtime_ns != y.mtime_ns) {
                            return Some(format!("{} was written", name(&x.path)));
                        }
                        if x.dir && x.mtime_ns != y.mtime_ns && folder_changed.is_none() {
                            folder_changed = Some(format!("{} was changed", name(&x.path)));
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_stamp_sees_writes_replacements_additions_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/x"), b"1").unwrap();
        std::fs::write(root.join("y"), b"2").unwrap();
        let t0 = TreeStamp::of(&root).unwrap();
        assert_eq!(TreeStamp::of(&root).unwrap().change_since(&t0), None);
        // A hard link to a file (a stage reusing it) changes nothing the stamp holds.
        std::fs::hard_link(root.join("y"), dir.path().join("link")).unwrap();
        assert_eq!(TreeStamp::of(&root).unwrap().change_since(&t0), None);
        // Same size, new content, written in place.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(root.join("y"), b"3").unwrap();
        assert_eq!(
            TreeStamp::of(&root).unwrap().change_since(&t0).as_deref(),
            Some("y was written")
        );
        let t1 = TreeStamp::of(&root).unwrap();
        // `sed -i`: a new file renamed over the old one.
        std::fs::write(dir.path().join("new"), b"3").unwrap();
        std::fs::rename(dir.path().join("new"), root.join("sub/x")).unwrap();
        assert_eq!(
            TreeStamp::of(&root).unwrap().change_since(&t1).as_deref(),
            Some("sub/x was replaced")
        );
        let t2 = TreeStamp::of(&root).unwrap();
        std::fs::write(root.join("z"), b"").unwrap();
        assert_eq!(
            TreeStamp::of(&root).unwrap().change_since(&t2).as_deref(),
            Some("z was added")
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert!(TreeStamp::of(&root).is_err());
    }

    #[test]
    fn a_hash_is_remembered_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"v1").unwrap();
        let (h1, s1) = hash_file(&f).unwrap();
        assert_eq!(h1, blake3::hash(b"v1").to_hex().to_string());
        assert_eq!(hash_file(&f).unwrap(), (h1.clone(), s1));
        std::fs::write(&f, b"v2").unwrap();
        let (h2, s2) = hash_file(&f).unwrap();
        assert_eq!(h2, blake3::hash(b"v2").to_hex().to_string());
        assert_ne!(s1, s2);
        assert!(hash_file(dir.path()).is_err());
    }

    #[test]
    fn metadata_and_folder_given_by_the_caller_name_the_same_file() {
        let cwd = std::env::current_dir().unwrap();
        let dir = tempfile::tempdir_in(&cwd).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let f = dir.path().join("sub/f");
        std::fs::write(&f, b"one").unwrap();
        let want = blake3::hash(b"one").to_hex().to_string();
        // Relative to the working directory given by the caller, with the caller's stat.
        let rel = Path::new(".")
            .join(dir.path().strip_prefix(&cwd).unwrap())
            .join("sub/f");
        let meta = std::fs::metadata(&f).unwrap();
        let (h, s) = hash_file_in(&rel, Some(&cwd), Some(meta)).unwrap();
        assert_eq!((h.as_str(), s), (want.as_str(), FileStamp::of(&f).unwrap()));
        // Remembered under the file's absolute path: the plain call finds the same entry.
        let memo = HASHES.lock().unwrap();
        assert_eq!(
            memo.as_ref()
                .and_then(|m| m.get(&f))
                .map(|(_, h)| h.as_str()),
            Some(want.as_str())
        );
        drop(memo);
        // A stale stat from the caller is checked like any other: after a change the
        // file is read again under its new stamp.
        let old = std::fs::metadata(&f).unwrap();
        std::fs::write(&f, b"two!").unwrap();
        let now = std::fs::metadata(&f).unwrap();
        let (h2, s2) = hash_file_in(&f, None, Some(now)).unwrap();
        assert_eq!(h2, blake3::hash(b"two!").to_hex().to_string());
        assert_ne!(s2, FileStamp::of_meta(&old));
        // A folder or a missing file is refused, with or without the caller's stat.
        let d = std::fs::metadata(dir.path()).unwrap();
        assert!(hash_file_in(dir.path(), None, Some(d)).is_err());
        assert!(hash_file_in(&dir.path().join("none"), Some(&cwd), None).is_err());
    }
}
