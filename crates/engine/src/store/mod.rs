//! The content-addressed artifact store under the cache directory.
//!
//! Layout (all written by this module, nothing else):
//! - `CACHEDIR.TAG`: the marker that makes the folder a pipe cache ([`MARKER`]); written
//!   when `prepare` finds the folder new or empty, and required before anything under the
//!   folder is removed or rewritten, so that a folder that is not a cache is never cleaned;
//! - `artifacts/KEY/`: one complete artifact: the stage's files and `manifest.json`;
//! - `tmp/KEY.HOST.PID.N/`: an artifact being written; renamed into `artifacts/` when done;
//! - `locks/KEY.lock`: held while a process computes KEY;
//! - `logs/KEY.log`: the last run's log of KEY (kept for failures too);
//! - `logs/KEY.TABLE.parquet`: a table of KEY as it grows while KEY runs (a train
//!   instance's metrics so far, [`live_table_path`]), replaced atomically; removed when the
//!   instance succeeds, kept after a failure;
//! - `index/PIPELINE.json`: the last key run for each (stage, point), for `pipe status`.
//!
//! An artifact directory exists only once every file and the manifest are fsynced, so a
//! key is either complete or absent whatever happens to the process.

mod complete;
pub mod hashes;
pub mod index;
pub mod lock;
pub mod parts;
pub mod remote;
pub mod sync;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use lock::{Holder, KeyLock};
pub use parts::Parts;

/// The file in every artifact that describes it.
pub const MANIFEST: &str = "manifest.json";

/// The file that marks a folder as a pipe cache, after the Cache Directory Tagging
/// convention (<https://bford.info/cachedir/>), so that backup tools skip the cache too.
pub const MARKER: &str = "CACHEDIR.TAG";

/// The line of [`MARKER`] that says pipe wrote it: other tools write `CACHEDIR.TAG` too,
/// and their caches are not pipe's.
const MARKER_LINE: &str = "# This folder is a pipe cache.";

/// What pipe writes into [`MARKER`]: the convention's signature, then pipe's line.
const MARKER_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by pipe.\n\
# This folder is a pipe cache.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// The folders directly under a cache, all pipe's own (`runs/` holds the run records).
const LAYOUT: [&str; 6] = ["artifacts", "tmp", "locks", "logs", "index", "runs"];

/// Whether `name` is a temp file [`write_atomic`] leaves while it writes the marker.
fn is_marker_temp(name: &str) -> bool {
    name.starts_with(&format!(".{MARKER}.tmp."))
}

/// One file of an artifact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path inside the artifact, `/`-separated.
    pub path: String,
    /// blake3 of the content, hex.
    pub blake3: String,
    /// Size in bytes.
    pub size: u64,
}

/// What `manifest.json` records about an artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The artifact's key.
    pub key: String,
    /// Stage kind that produced it.
    pub kind: String,
    /// The kind's code version.
    pub version: u32,
    /// Name of the stage that produced it (informational: keys do not depend on names).
    pub stage: String,
    /// Pipeline that produced it (informational).
    pub pipeline: String,
    /// Sweep variables of the producing instance (informational).
    pub point: Json,
    /// Parameters that went into the key.
    pub params: Json,
    /// Input slot -> input key.
    pub inputs: BTreeMap<String, String>,
    /// Declared files hashed into the key: name -> blake3.
    #[serde(default)]
    pub declared_files: BTreeMap<String, String>,
    /// The artifact's files.
    pub files: Vec<FileEntry>,
    /// The instance's parts (name -> key), as its kind keyed them: what a dependent that
    /// reads only some parts is keyed on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, String>,
    /// Unix time the run started, in seconds.
    pub started: f64,
    /// Wall-clock seconds the stage ran.
    pub seconds: f64,
    /// Version of `pipe` that wrote it.
    pub pipe_version: String,
    /// Host it ran on.
    pub host: String,
}

impl Manifest {
    /// Checks a manifest read from outside this process (a remote, a job's node) before
    /// any of its names becomes a path: keys and hashes are 64 hex digits, file paths stay
    /// inside the artifact.
    pub fn check_names(&self) -> Result<(), String> {
        let bad_key =
            |what: &str, k: &str| format!("{what} {:?} is not a key", crate::key::short(k, 70));
        if !crate::key::is_key(&self.key) {
            return Err(bad_key("its key", &self.key));
        }
        for (slot, k) in &self.inputs {
            if !crate::key::is_key(k) {
                return Err(bad_key(&format!("input {slot}:"), k));
            }
        }
        for (name, k) in &self.parts {
            if !crate::key::is_key(k) {
                return Err(bad_key(&format!("part {name}:"), k));
            }
        }
        for f in &self.files {
            if !remote::is_inside(&f.path) || f.path == MANIFEST {
                return Err(format!(
                    "file {:?} is not a path inside the artifact",
                    f.path
                ));
            }
            if !crate::key::is_key(&f.blake3) {
                return Err(format!(
                    "file {:?}: blake3 {:?} is not a hash",
                    f.path,
                    crate::key::short(&f.blake3, 70)
                ));
            }
        }
        Ok(())
    }

    /// Whether two manifests describe the same artifact: the same key, kind, version,
    /// parameters, declared files, parts and files (paths, hashes and sizes). What only
    /// says how it was made may differ: stage, pipeline, point, times, host, `pipe`
    /// version, and the input keys (two instances of one key may read inputs of the same
    /// content under different keys).
    pub fn same_content(&self, other: &Manifest) -> bool {
        fn files(m: &Manifest) -> Vec<&FileEntry> {
            let mut f: Vec<&FileEntry> = m.files.iter().collect();
            f.sort_by(|a, b| a.path.cmp(&b.path));
            f
        }
        self.key == other.key
            && self.kind == other.kind
            && self.version == other.version
            && self.params == other.params
            && self.declared_files == other.declared_files
            && self.parts == other.parts
            && files(self) == files(other)
    }

    /// The content digest of the artifact's files ([`crate::key::content_digest`]).
    pub fn digest(&self) -> String {
        crate::key::content_digest(
            self.files
                .iter()
                .map(|f| (f.path.as_str(), f.blake3.as_str(), f.size)),
        )
    }
}

/// What [`Store::remove_unread`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The artifact was removed.
    Removed,
    /// There was none.
    Absent,
    /// Kept: a running instance computes or reads it (who, in words).
    InUse(String),
}

/// A damaged artifact found by [`Store::verify`].
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    /// The artifact's key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// Whether it was removed (`verify --fix`; one a running instance reads is kept).
    pub removed: bool,
}

/// The cache directory.
pub struct Store {
    root: PathBuf,
    host: String,
    /// The group commit of artifacts sealed by this process's threads.
    syncs: sync::GroupSync,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Largest bookkeeping file (run record, index, lock, manifest) read whole: beyond it the
/// file is refused rather than read into memory.
pub const MAX_BOOKKEEPING: u64 = 256 << 20;

/// The error of a bookkeeping file over [`MAX_BOOKKEEPING`].
fn too_large() -> io::Error {
    io::Error::other(format!("larger than {} MiB", MAX_BOOKKEEPING >> 20))
}

fn not_regular() -> io::Error {
    io::Error::other("not a regular file")
}

/// Opens a file for reading only if it is a regular file: a FIFO, a device or a symlink put
/// where a file should be is refused, never opened in a way that could block. It is opened
/// with `O_NONBLOCK | O_NOFOLLOW` (a symlink fails to open; a FIFO opens at once, without a
/// writer) and checked through the open descriptor, which is what is read: one `stat` per
/// open, where a check by path before opening would add one (a no-op run reads every
/// cached instance's manifest).
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_regular_sized(path).map(|(f, _)| f)
}

/// [`open_regular`], with the file's size when it was opened.
fn open_regular_sized(path: &Path) -> io::Result<(File, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => not_regular(),
            _ => e,
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((f, meta.len()))
}

/// Whether every `(path, size)` under `dir` is a regular file of that size (following
/// links, as reading it would).
fn files_complete<'a>(dir: &Path, mut files: impl Iterator<Item = (&'a str, u64)>) -> bool {
    files.all(|(path, size)| {
        fs::metadata(dir.join(path)).is_ok_and(|md| md.is_file() && md.len() == size)
    })
}

/// `artifacts/` open for a pass of completeness checks ([`Store::scan`]).
pub struct Scan<'a> {
    store: &'a Store,
    /// `artifacts/`, if it could be opened.
    dir: Option<File>,
}

impl Scan<'_> {
    /// [`Store::is_complete`], the same checks on the same files, with paths taken from
    /// the open `artifacts/` (a key that is not a key is checked by path, as there).
    pub fn is_complete(&self, key: &str) -> bool {
        use std::os::fd::AsRawFd;
        let Some(dir) = self.dir.as_ref().filter(|_| crate::key::is_key(key)) else {
            return self.store.is_complete(key);
        };
        let fd = dir.as_raw_fd();
        let Ok(bytes) = read_sealed_at(fd, &format!("{key}/{MANIFEST}")) else {
            return false;
        };
        let Ok(m) = serde_json::from_slice::<complete::ManifestCheck<'_>>(&bytes) else {
            return false;
        };
        m.key == key
            && m.files.iter().all(|f| {
                // As `Path::join`: an absolute path stands for itself.
                if Path::new(&*f.path).is_absolute() {
                    return files_complete(Path::new("/"), std::iter::once((&*f.path, f.size)));
                }
                let Ok(name) = std::ffi::CString::new(format!("{key}/{}", f.path)) else {
                    return false;
                };
                let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                // SAFETY: `name` is a C string and `st` room for a `stat`; fstatat fills it in
                // when it returns 0.
                if unsafe { libc::fstatat(fd, name.as_ptr(), st.as_mut_ptr(), 0) } != 0 {
                    return false;
                }
                // SAFETY: fstatat returned 0.
                let st = unsafe { st.assume_init() };
                st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size as u64 == f.size
            })
    }
}

/// [`read_sealed`] of `name` under the folder open as `dir`.
fn read_sealed_at(dir: std::os::fd::RawFd, name: &str) -> io::Result<Vec<u8>> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` is a C string; the descriptor returned is owned by the `File` below.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            // O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => not_regular(),
            _ => e,
        });
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let f = unsafe { File::from_raw_fd(fd) };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > MAX_BOOKKEEPING {
        return Err(too_large());
    }
    let mut buf = vec![0u8; meta.len() as usize];
    (&f).read_exact(&mut buf)?;
    Ok(buf)
}

/// Reads a file only if it is a regular file ([`open_regular`]) of at most
/// [`MAX_BOOKKEEPING`] bytes.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let (f, size) = open_regular_sized(path)?;
    // Room for the whole file at once: `read_to_end` from empty would grow the buffer from
    // 32 bytes, one read call per doubling.
    let mut buf = Vec::with_capacity((size.min(MAX_BOOKKEEPING) + 1) as usize);
    f.take(MAX_BOOKKEEPING + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_BOOKKEEPING {
        return Err(too_large());
    }
    Ok(buf)
}

/// [`read_regular`] for a file that never changes once in place (a sealed artifact's
/// manifest): the bytes its size said when opened, in one read call, without a second
/// call to see its end.
fn read_sealed(path: &Path) -> io::Result<Vec<u8>> {
    let (f, size) = open_regular_sized(path)?;
    if size > MAX_BOOKKEEPING {
        return Err(too_large());
    }
    let mut buf = vec![0u8; size as usize];
    (&f).read_exact(&mut buf)?;
    Ok(buf)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Creates or empties a log at `path` and opens it for appending, refusing anything but a
/// regular file there (opening a FIFO to write would block until a reader comes).
pub fn create_log(path: &Path) -> io::Result<File> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(f)
}

/// Who made a temp folder `KEY.HOST.PID.N` (or `KEY.removed.HOST.PID.N`, an artifact
/// being removed, or `KEY.removing.HOST.PID.N`, one that may still be put back): the host
/// may hold dots, the key does not.
pub fn tmp_owner(name: &str) -> Option<Holder> {
    let (_, rest) = name.split_once('.')?;
    let rest = rest
        .strip_prefix("removed.")
        .or_else(|| rest.strip_prefix("removing."))
        .unwrap_or(rest);
    let mut parts = rest.rsplitn(3, '.');
    let _n = parts.next()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let host = parts.next()?;
    Some(Holder {
        host: host.to_string(),
        pid,
        start: 0,
    })
}

/// Whether a name under `tmp/` is an artifact set aside for removal, `KEY.removed.*`.
fn is_removed_tmp(name: &str) -> bool {
    name.split_once('.')
        .is_some_and(|(key, rest)| crate::key::is_key(key) && rest.starts_with("removed."))
}

/// Where a running instance whose log is `log` (`logs/KEY.log`) keeps table `table` so
/// far: `logs/KEY.TABLE.parquet`, beside its log and never inside its artifact.
pub fn live_table_path(log: &Path, table: &str) -> PathBuf {
    log.with_extension(format!("{table}.parquet"))
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, true)
}

/// [`write_atomic`] without the syncs: readers see the old bytes or the new ones, never a
/// part; after a power loss the file may be old, empty or torn. For bookkeeping whose loss
/// costs work to redo at most (run records), where two `fsync`s would cost more than the
/// rest of a no-op run.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, false)
}

/// Writes `bytes` to a temp file beside `path` and renames it over `path`, syncing the file
/// before and the folder after when `sync`.
fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if sync {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// fsyncs a directory so that renames into it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Every file under `dir` (recursively), as sorted `/`-separated relative paths.
fn walk_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|raw| {
                io::Error::other(format!(
                    "{}{}: file names must be UTF-8 (this one is not)",
                    if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    },
                    raw.to_string_lossy()
                ))
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push((entry.path(), rel));
            } else if ty.is_file() {
                out.push(rel);
            } else {
                return Err(io::Error::other(format!(
                    "{rel}: artifacts may hold only regular files and folders"
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes `path` and everything under it, whatever its contents, without following
/// symlinks: a link (or any other non-folder) is removed itself, never its target, and
/// folders made read-only are made writable first. A missing `path` is no error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    let gone = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Read-only folders; or another process removing the same tree (its entries
        // vanish under us, which is no error).
        Err(_) => {
            gone(make_folders_writable(path))?;
            gone(fs::remove_dir_all(path))
        }
    }
}

/// Gives the owner full access to `dir` and every folder under it (checked not to be
/// links, so nothing outside is changed).
fn make_folders_writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mut perm = meta.permissions();
    perm.set_mode(perm.mode() | 0o700);
    fs::set_permissions(dir, perm)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_folders_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Fails unless `out` is still a real folder (not a symlink to one, nor anything else):
/// what a stage must leave at its output folder before the store reads or seals anything
/// under it.
pub fn check_output_folder(out: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(out)?;
    if meta.file_type().is_symlink() {
        return Err(io::Error::other(
            "the stage replaced its output folder with a link",
        ));
    }
    if !meta.is_dir() {
        return Err(io::Error::other(
            "the stage replaced its output folder with something that is not a folder",
        ));
    }
    Ok(())
}

/// Removes every empty folder under `dir` (not `dir` itself), deepest first.
fn prune_empty_dirs(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let sub = entry.path();
            prune_empty_dirs(&sub)?;
            if fs::read_dir(&sub)?.next().is_none() {
                fs::remove_dir(&sub)?;
            }
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    if !fs::symlink_metadata(path)?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut hasher = blake3::Hasher::new();
    let f = File::open(path)?;
    hasher.update_reader(&f)?;
    Ok((hasher.finalize().to_hex().to_string(), f.metadata()?.len()))
}

impl Store {
    /// The store rooted at `root` (nothing is created until [`Store::prepare`]).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store {
            root: root.into(),
            host: lock::host_name(),
            syncs: sync::GroupSync::default(),
        }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the folder holds pipe's marker ([`MARKER`] with pipe's line).
    pub fn is_marked(&self) -> bool {
        let mut text = String::new();
        open_regular(&self.root.join(MARKER))
            .and_then(|f| f.take(4096).read_to_string(&mut text))
            .is_ok()
            && text.starts_with("Signature: 8a477f597d28d172789f06886806bc55")
            && text.lines().any(|l| l.trim_end() == MARKER_LINE)
    }

    /// Fails unless the folder is a pipe cache (holds pipe's [`MARKER`]), or does not exist
    /// or is empty (so holds nothing to change): what every removal or rewrite under the
    /// cache checks first.
    pub fn check_marked(&self) -> io::Result<()> {
        if self.is_marked() {
            return Ok(());
        }
        match fs::read_dir(&self.root).map(|mut entries| entries.next().is_none()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Ok(true) => Ok(()),
            _ => Err(self.not_a_cache()),
        }
    }

    /// The error for a folder without pipe's marker: why nothing is changed, and what to do.
    pub fn not_a_cache(&self) -> io::Error {
        io::Error::other(format!(
            "not a pipe cache: the folder has no {MARKER} written by pipe, so pipe writes and \
             removes nothing in it. Use a new or empty folder as the cache (--cache DIR or \
             PIPE_CACHE=DIR); if an older pipe made this cache, adopt it with `pipe verify \
             --adopt --cache {}`",
            self.root.display()
        ))
    }

    /// Makes the folder a pipe cache if it is new or empty (only an unfinished marker of
    /// another process may be there), by writing [`MARKER`]; fails for a folder that holds
    /// anything else without the marker.
    fn claim(&self) -> io::Result<()> {
        if self.is_marked() {
            return Ok(());
        }
        fs::create_dir_all(&self.root)?;
        for e in fs::read_dir(&self.root)? {
            if !e?.file_name().to_str().is_some_and(is_marker_temp) {
                // Another process may have marked the new folder since the first look:
                // it renames the marker into place before it creates anything else.
                return if self.is_marked() {
                    Ok(())
                } else {
                    Err(self.not_a_cache())
                };
            }
        }
        write_atomic(&self.root.join(MARKER), MARKER_TEXT.as_bytes())
    }

    /// Marks a cache made by an older pipe, which wrote no marker, after checking that it
    /// holds only what pipe writes: every top-level entry one of pipe's folders, every
    /// entry of `artifacts/` a folder named by a key whose manifest names that key.
    /// Returns whether it was marked now (false: it already was); `Err` names the first
    /// entry that is not pipe's, relative to the folder, and why.
    pub fn adopt(&self) -> Result<bool, String> {
        if self.is_marked() {
            return Ok(false);
        }
        let sorted = |dir: &Path| -> Result<Vec<fs::DirEntry>, String> {
            let mut v = fs::read_dir(dir)
                .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            v.sort_by_key(|e| e.file_name());
            Ok(v)
        };
        let is_dir = |e: &fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
        for e in sorted(&self.root)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_marker_temp(&name) {
                continue;
            }
            if name == MARKER {
                return Err(format!(
                    "{MARKER}: written by another program (it lacks pipe's line)"
                ));
            }
            if !LAYOUT.contains(&name.as_str()) {
                return Err(format!("{name}: not one of pipe's folders"));
            }
            if !is_dir(&e) {
                return Err(format!("{name}: not a folder"));
            }
        }
        let artifacts = self.root.join("artifacts");
        if artifacts.is_dir() {
            for e in sorted(&artifacts)? {
                let name = e.file_name().to_string_lossy().into_owned();
                let why = if !crate::key::is_key(&name) {
                    Some("not an artifact (its name is not a key)")
                } else if !is_dir(&e) {
                    Some("not an artifact (not a folder)")
                } else if self.manifest(&name).is_none_or(|m| m.key != name) {
                    Some("not an artifact (no manifest that names its key)")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(format!("artifacts/{name}: {why}"));
                }
            }
        }
        write_atomic(&self.root.join(MARKER), MARKER_TEXT.as_bytes())
            .map_err(|e| format!("{MARKER}: {e}"))?;
        Ok(true)
    }

    /// Creates the directory layout and removes temp dirs left by dead processes, and every
    /// artifact set aside for removal (`KEY.removed.HOST.PID.N`, whatever host made it:
    /// garbage from the moment it was renamed there). A new or empty folder becomes a pipe
    /// cache ([`MARKER`]); any other folder without the marker is refused before anything
    /// in it changes ([`Store::not_a_cache`]).
    pub fn prepare(&self) -> io::Result<()> {
        self.claim()?;
        for d in LAYOUT {
            fs::create_dir_all(self.root.join(d))?;
        }
        if let Ok(entries) = fs::read_dir(self.root.join("tmp")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let garbage = is_removed_tmp(&name)
                    || tmp_owner(&name).is_some_and(|h| !lock::is_alive(&h, &self.host));
                if garbage {
                    // Another process may be removing it too: a missing path is no error.
                    let _ = remove_tree(&e.path());
                }
            }
        }
        Ok(())
    }

    /// Removes the temp folders and lock files of this process: what a run interrupted by
    /// a signal leaves (its commands are killed first). Does nothing in a folder that is
    /// not a pipe cache.
    pub fn release_mine(&self) {
        if !self.is_marked() {
            return;
        }
        let me = lock::me(&self.host);
        if let Ok(entries) = fs::read_dir(self.root.join("tmp")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if tmp_owner(&name).is_some_and(|h| h.host == me.host && h.pid == me.pid) {
                    let _ = remove_tree(&e.path());
                }
            }
        }
        if let Ok(entries) = fs::read_dir(self.root.join("locks")) {
            for e in entries.flatten() {
                if lock::read_holder(&e.path())
                    .is_some_and(|h| h.host == me.host && h.pid == me.pid)
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Directory of a key's artifact (which may not exist).
    pub fn artifact_dir(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(key)
    }

    /// Path of a key's log.
    pub fn log_path(&self, key: &str) -> PathBuf {
        self.root.join("logs").join(format!("{key}.log"))
    }

    /// Path of table `table` of a key as it grows while the key runs ([`live_table_path`]).
    pub fn live_table(&self, key: &str, table: &str) -> PathBuf {
        live_table_path(&self.log_path(key), table)
    }

    /// The manifest of a key, if the artifact exists and its manifest parses (a manifest
    /// that is not a regular file, a FIFO say, is never opened).
    pub fn manifest(&self, key: &str) -> Option<Manifest> {
        let bytes = read_sealed(&self.artifact_dir(key).join(MANIFEST)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The content digest of a complete artifact, `None` if it is not complete.
    pub fn digest(&self, key: &str) -> Option<String> {
        self.complete_manifest(key).map(|m| m.digest())
    }

    /// Whether the key's artifact is present with every file at its recorded size: its
    /// manifest parses and names the key ([`Store::complete_manifest`] is `Some`), read
    /// without building the [`Manifest`] (a no-op run asks this of every instance).
    pub fn is_complete(&self, key: &str) -> bool {
        let dir = self.artifact_dir(key);
        let Ok(bytes) = read_sealed(&dir.join(MANIFEST)) else {
            return false;
        };
        let Ok(m) = serde_json::from_slice::<complete::ManifestCheck<'_>>(&bytes) else {
            return false;
        };
        m.key == key && files_complete(&dir, m.files.iter().map(|f| (&*f.path, f.size)))
    }

    /// `artifacts/` opened for one pass of [`Scan::is_complete`] checks (a run's triage, a
    /// status): each manifest and file is then looked up from that folder, not along the
    /// whole path from `/`. Held for one pass only, never by the `Store`: the cache folder
    /// may be removed and made again between commands.
    pub fn scan(&self) -> Scan<'_> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(self.root.join("artifacts"))
            .ok();
        Scan { store: self, dir }
    }

    /// The manifest of a complete artifact (see [`Store::is_complete`]).
    pub fn complete_manifest(&self, key: &str) -> Option<Manifest> {
        let m = self.manifest(key)?;
        let dir = self.artifact_dir(key);
        let complete =
            m.key == key && files_complete(&dir, m.files.iter().map(|f| (&*f.path, f.size)));
        complete.then_some(m)
    }

    /// Takes the per-key lock, waiting (and calling `on_wait` once) while another process holds it.
    pub fn lock(&self, key: &str, on_wait: &mut dyn FnMut(&Holder)) -> io::Result<KeyLock> {
        KeyLock::acquire(&self.lock_path(key), &self.host, on_wait)
    }

    /// A fresh temp directory to write a key's artifact into.
    pub fn begin(&self, key: &str) -> io::Result<PathBuf> {
        let dir = self.tmp_path(key);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A fresh name under `tmp/`: `NAME.HOST.PID.N`.
    fn tmp_path(&self, name: &str) -> PathBuf {
        self.root.join("tmp").join(format!(
            "{name}.{}.{}.{}",
            self.host,
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Removes a temp directory after a failure.
    pub fn discard(&self, tmp: &Path) {
        let _ = remove_tree(tmp);
    }

    /// Seals a temp directory into the key's artifact: [`Store::seal`], then
    /// [`Store::publish`]. `draft.files` is filled in here.
    pub fn commit(&self, tmp: &Path, draft: Manifest) -> io::Result<Manifest> {
        let sealed = self.seal(tmp, draft)?;
        self.publish(tmp, &sealed)?;
        Ok(sealed)
    }

    /// The first half of [`Store::commit`]: hashes every file of the temp directory, makes
    /// it read-only and writes the manifest (with `draft.files` filled in). Nothing is
    /// synced yet and nothing is visible under `artifacts/`. On error the temp directory
    /// is discarded.
    pub fn seal(&self, tmp: &Path, mut draft: Manifest) -> io::Result<Manifest> {
        let result = (|| {
            // Nothing under a link is read or changed: the stage may have put one where its
            // output folder was, pointing anywhere.
            check_output_folder(tmp)?;
            // An artifact is its files: empty folders are not kept (a manifest could not
            // bring them back from a remote).
            prune_empty_dirs(tmp)?;
            let names = walk_files(tmp)?;
            if names.iter().any(|n| n == MANIFEST) {
                return Err(io::Error::other(format!(
                    "the stage wrote `{MANIFEST}`, a name the store reserves"
                )));
            }
            let mut files = Vec::with_capacity(names.len());
            for name in names {
                let p = tmp.join(&name);
                let (blake3, size) = hash_file(&p)?;
                // Sealed: read-only, so a stray writer gets an error instead of changing it.
                let mut perm = fs::metadata(&p)?.permissions();
                perm.set_readonly(true);
                fs::set_permissions(&p, perm)?;
                files.push(FileEntry {
                    path: name,
                    blake3,
                    size,
                });
            }
            draft.files = files;
            let mut f = File::create(tmp.join(MANIFEST))?;
            f.write_all(&serde_json::to_vec_pretty(&draft).map_err(io::Error::other)?)?;
            Ok(())
        })();
        match result {
            Ok(()) => Ok(draft),
            Err(e) => {
                self.discard(tmp);
                Err(e)
            }
        }
    }

    /// The second half of [`Store::commit`]: makes the sealed temp directory durable (its
    /// files, manifest and folders, through one `syncfs` shared with every other thread
    /// publishing at the same time: a group commit), then renames it into place. The rename
    /// itself becomes durable with the next sync (the next group commit, or the one
    /// [`Store::sync`] makes at the end of a run): a power loss before it loses the
    /// artifact (work to redo), never makes a partial one visible. The caller holds the
    /// key's lock. On error the temp directory is discarded.
    pub fn publish(&self, tmp: &Path, sealed: &Manifest) -> io::Result<()> {
        let result = (|| {
            self.syncs.sync(tmp)?;
            let dest = self.artifact_dir(&sealed.key);
            match fs::rename(tmp, &dest) {
                Ok(()) => Ok(()),
                Err(_) if self.is_complete(&sealed.key) => {
                    let _ = remove_tree(tmp);
                    Ok(())
                }
                // A damaged artifact (a file missing or of the wrong size) is in the way:
                // the caller holds the key's lock, so it is replaced.
                Err(_) if fs::symlink_metadata(&dest).is_ok() => {
                    self.remove(&sealed.key)?;
                    fs::rename(tmp, &dest)
                }
                Err(e) => Err(e),
            }
        })();
        match &result {
            // After the rename: a sync that starts later covers it.
            Ok(()) => self.syncs.written(),
            Err(_) => self.discard(tmp),
        }
        result
    }

    /// Makes durable everything this process wrote in the cache so far (renames of
    /// published artifacts included): one `syncfs`, shared with concurrent callers, or
    /// nothing when nothing was published since the last one.
    pub fn sync(&self) -> io::Result<()> {
        self.syncs.sync_if_written(&self.root)
    }

    /// Every key with an artifact directory.
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        match fs::read_dir(self.root.join("artifacts")) {
            Ok(entries) => {
                for e in entries {
                    keys.push(e?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        keys.sort();
        Ok(keys)
    }

    /// Rehashes every file of every artifact; with `fix`, removes the damaged ones (and
    /// then refuses a folder that is not a pipe cache, [`Store::check_marked`]).
    pub fn verify(&self, fix: bool) -> io::Result<(usize, Vec<Damage>)> {
        if fix {
            self.check_marked()?;
        }
        let keys = self.keys()?;
        let damages: Vec<Damage> = {
            use rayon::prelude::*;
            keys.par_iter()
                .filter_map(|k| {
                    self.check(k).err().map(|problem| Damage {
                        key: k.clone(),
                        problem,
                        removed: false,
                    })
                })
                .collect()
        };
        let mut damages = damages;
        if fix {
            for d in &mut damages {
                // One a running instance reads is left (that instance fails when it sees
                // the change, as it does for any change of what it reads).
                match self.remove_unread(&d.key)? {
                    Removal::InUse(who) => {
                        d.problem.push_str(&format!(" (kept: in use by {who})"));
                    }
                    Removal::Removed | Removal::Absent => d.removed = true,
                }
            }
        }
        Ok((keys.len(), damages))
    }

    /// Rehashes one artifact against its manifest: `Err` says what is wrong.
    pub fn check(&self, key: &str) -> Result<(), String> {
        let dir = self.artifact_dir(key);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err("not a folder: a stray file in artifacts/".to_string());
        }
        let bytes =
            read_regular(&dir.join(MANIFEST)).map_err(|e| format!("manifest unreadable: {e}"))?;
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| format!("manifest does not parse: {e}"))?;
        if m.key != key {
            return Err(format!("manifest names key {} instead", m.key));
        }
        for f in &m.files {
            match hash_file(&dir.join(&f.path)) {
                Err(e) => return Err(format!("{}: {e}", f.path)),
                Ok((_, size)) if size != f.size => {
                    return Err(format!(
                        "{}: size {size} bytes, manifest says {}",
                        f.path, f.size
                    ));
                }
                Ok((h, _)) if h != f.blake3 => {
                    return Err(format!(
                        "{}: content hash differs from the manifest",
                        f.path
                    ));
                }
                Ok(_) => {}
            }
        }
        let on_disk = walk_files(&dir).map_err(|e| e.to_string())?;
        if let Some(extra) = on_disk
            .iter()
            .find(|n| *n != MANIFEST && !m.files.iter().any(|f| &f.path == *n))
        {
            return Err(format!("{extra}: file not listed in the manifest"));
        }
        Ok(())
    }

    /// Removes an artifact completely, whatever it holds (read-only files and folders
    /// included, links removed and never followed): renamed aside first, so it disappears
    /// atomically. Refuses a folder that is not a pipe cache ([`Store::check_marked`]).
    pub fn remove(&self, key: &str) -> io::Result<()> {
        self.check_marked()?;
        let dir = self.artifact_dir(key);
        fs::create_dir_all(self.root.join("tmp"))?;
        let aside = self.tmp_path(&format!("{key}.removed"));
        match fs::rename(&dir, &aside) {
            Ok(()) => remove_tree(&aside),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes a key's lock for an instance that reads the artifacts `reads` (inputs and the
    /// parts of them it sees): while it is held, [`Store::remove_unread`] removes none of
    /// them.
    pub fn lock_reading(
        &self,
        key: &str,
        reads: &[String],
        on_wait: &mut dyn FnMut(&Holder),
    ) -> io::Result<KeyLock> {
        KeyLock::acquire_reading(&self.lock_path(key), &self.host, reads, on_wait)
    }

    /// Where a key's lock file is.
    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    /// Who is computing `key` or reading it as an input right now, if anyone.
    pub fn user_of(&self, key: &str) -> Option<Holder> {
        if lock::is_held(&self.lock_path(key), &self.host) {
            return lock::read_holder(&self.lock_path(key));
        }
        lock::reader_of(&self.root.join("locks"), key, &self.host)
    }

    /// Waits up to `max` while another process holds `key`'s lock (it is removing or
    /// storing that artifact right now).
    pub fn wait_while_locked(&self, key: &str, max: std::time::Duration) {
        let until = std::time::Instant::now() + max;
        while lock::is_held(&self.lock_path(key), &self.host) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Removes an artifact for a command (`rm`, `run --force`, `gc`, `verify --fix`) unless
    /// a running instance computes it or reads it: under the key's lock, the artifact is
    /// renamed aside and removed only if no lock lists it as read, before or after the
    /// rename (an instance lists what it reads in its lock before it looks for its inputs,
    /// so either it finds the artifact gone or this finds it listed and puts it back).
    /// Refuses a folder that is not a pipe cache ([`Store::check_marked`]).
    pub fn remove_unread(&self, key: &str) -> io::Result<Removal> {
        self.check_marked()?;
        if fs::symlink_metadata(self.artifact_dir(key)).is_err() {
            return Ok(Removal::Absent);
        }
        let Some(_lock) = KeyLock::try_acquire(&self.lock_path(key), &self.host)? else {
            return Ok(Removal::InUse(
                lock::read_holder(&self.lock_path(key))
                    .map_or_else(|| "another process".to_string(), |h| h.to_string()),
            ));
        };
        let reader = |s: &Store| lock::reader_of(&s.root.join("locks"), key, &s.host);
        if let Some(h) = reader(self) {
            return Ok(Removal::InUse(h.to_string()));
        }
        let dir = self.artifact_dir(key);
        // Not `KEY.removed.*` (garbage to any process) while it may still be put back:
        // `KEY.removing.HOST.PID.N` is left alone while this process lives.
        fs::create_dir_all(self.root.join("tmp"))?;
        let aside = self.tmp_path(&format!("{key}.removing"));
        match fs::rename(&dir, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Absent),
            Err(e) => return Err(e),
        }
        if let Some(h) = reader(self) {
            fs::rename(&aside, &dir)?;
            return Ok(Removal::InUse(h.to_string()));
        }
        remove_tree(&aside)?;
        Ok(Removal::Removed)
    }

    /// This machine's host name, as used in lock files and manifests.
    pub fn host(&self) -> &str {
        &self.host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(key: &str) -> Manifest {
        Manifest {
            key: key.into(),
            kind: "exec".into(),
            version: 1,
            stage: "s".into(),
            pipeline: "p".into(),
            point: Json::Null,
            params: Json::Null,
            inputs: BTreeMap::new(),
            declared_files: BTreeMap::new(),
            files: Vec::new(),
            parts: BTreeMap::new(),
            started: 0.0,
            seconds: 0.0,
            pipe_version: "test".into(),
            host: "h".into(),
        }
    }

    #[test]
    fn a_scan_finds_complete_exactly_what_the_store_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        fs::create_dir_all(dir.path().join("artifacts")).unwrap();
        fs::write(dir.path().join("five"), b"hello").unwrap();
        let five = dir.path().join("five").to_str().unwrap().to_string();
        // An artifact written by hand: `key` (named `name` in its manifest), its manifest
        // listing `files`, and `make` setting up its folder.
        let case = |n: u8, named: Option<&str>, files: &[(&str, u64)], make: &dyn Fn(&Path)| {
            let key = format!("{n:064x}");
            let art = dir.path().join("artifacts").join(&key);
            fs::create_dir_all(&art).unwrap();
            let mut m = draft(named.unwrap_or(&key));
            m.files = files
                .iter()
                .map(|(p, size)| FileEntry {
                    path: p.to_string(),
                    blake3: "b".into(),
                    size: *size,
                })
                .collect();
            fs::write(art.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
            make(&art);
            key
        };
        let out = |art: &Path| fs::write(art.join("out.txt"), b"hello").unwrap();
        let cases = [
            (case(1, None, &[("out.txt", 5)], &out), true),
            (case(2, None, &[("out.txt", 4)], &out), false),
            (case(3, None, &[("out.txt", 5), ("gone", 0)], &out), false),
            (
                case(4, None, &[("sub/link", 5)], &|a| {
                    fs::create_dir(a.join("sub")).unwrap();
                    std::os::unix::fs::symlink("../../../five", a.join("sub/link")).unwrap()
                }),
                true,
            ),
            (
                case(5, None, &[("sub", 0)], &|a| {
                    fs::create_dir(a.join("sub")).unwrap()
                }),
                false,
            ),
            (case(6, Some("other"), &[("out.txt", 5)], &out), false),
            (case(7, None, &[(&five, 5)], &|_| {}), true),
            (case(8, None, &[(&five, 6)], &|_| {}), false),
            (
                case(9, None, &[], &|a| {
                    fs::rename(a.join(MANIFEST), a.join("m")).unwrap();
                    std::os::unix::fs::symlink("m", a.join(MANIFEST)).unwrap()
                }),
                false,
            ),
            (
                case(10, None, &[], &|a| {
                    fs::remove_file(a.join(MANIFEST)).unwrap();
                    fs::create_dir(a.join(MANIFEST)).unwrap()
                }),
                false,
            ),
            (
                case(11, None, &[], &|a| {
                    fs::write(a.join(MANIFEST), b"{").unwrap()
                }),
                false,
            ),
            (format!("{:064x}", 12), false),
        ];
        let scan = store.scan();
        for (key, complete) in &cases {
            assert_eq!(store.is_complete(key), *complete, "{key}");
            assert_eq!(scan.is_complete(key), *complete, "{key}");
        }
        // A name that is not a key is looked up by path.
        let tmp = store.begin("k1").unwrap();
        fs::write(tmp.join("a"), b"x").unwrap();
        store.commit(&tmp, draft("k1")).unwrap();
        assert!(scan.is_complete("k1"));
        // No `artifacts/` at all: nothing is complete.
        let empty = tempfile::tempdir().unwrap();
        assert!(!Store::new(empty.path()).scan().is_complete(&cases[0].0));
    }

    #[test]
    fn commit_records_hashes_and_verify_finds_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let tmp = store.begin("k1").unwrap();
        fs::create_dir(tmp.join("sub")).unwrap();
        fs::write(tmp.join("sub/a.txt"), b"hello").unwrap();
        fs::write(tmp.join("b.bin"), b"").unwrap();
        assert!(!store.is_complete("k1"));
        let m = store.commit(&tmp, draft("k1")).unwrap();
        assert!(!tmp.exists());
        assert!(store.is_complete("k1"));
        let names: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["b.bin", "sub/a.txt"]);
        assert_eq!(
            m.files[1].blake3,
            blake3::hash(b"hello").to_hex().to_string()
        );
        assert_eq!(m.files[1].size, 5);
        assert!(store.verify(false).unwrap().1.is_empty());

        // Same size, other content: only a rehash notices.
        fs::write(store.artifact_dir("k1").join("sub/a.txt"), b"jello").unwrap();
        assert!(store.is_complete("k1"));
        let (n, damage) = store.verify(true).unwrap();
        assert_eq!(n, 1);
        assert_eq!(damage.len(), 1);
        assert!(
            damage[0].problem.contains("sub/a.txt"),
            "{}",
            damage[0].problem
        );
        assert!(!store.artifact_dir("k1").exists(), "--fix removed it");
    }

    #[test]
    fn a_linked_output_folder_fails_commit_and_its_target_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("cache"));
        store.prepare().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("empty")).unwrap();
        fs::write(outside.join("a"), b"x").unwrap();
        let tmp = store.begin("k4").unwrap();
        fs::remove_dir(&tmp).unwrap();
        std::os::unix::fs::symlink(&outside, &tmp).unwrap();
        let e = store.commit(&tmp, draft("k4")).unwrap_err();
        assert!(e.to_string().contains("with a link"), "{e}");
        assert!(fs::symlink_metadata(&tmp).is_err(), "the link is removed");
        assert!(outside.join("empty").is_dir() && outside.join("a").is_file());
        assert!(
            !fs::metadata(outside.join("a"))
                .unwrap()
                .permissions()
                .readonly()
        );
        assert!(!store.artifact_dir("k4").exists());
    }

    #[test]
    fn a_damaged_artifact_in_the_way_is_replaced_by_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let tmp = store.begin("k5").unwrap();
        fs::write(tmp.join("a"), b"1").unwrap();
        fs::write(tmp.join("b"), b"2").unwrap();
        store.commit(&tmp, draft("k5")).unwrap();
        fs::remove_file(store.artifact_dir("k5").join("b")).unwrap();
        let tmp = store.begin("k5").unwrap();
        fs::write(tmp.join("a"), b"1").unwrap();
        fs::write(tmp.join("b"), b"2").unwrap();
        store.commit(&tmp, draft("k5")).unwrap();
        assert!(store.check("k5").is_ok());
    }

    #[test]
    fn an_artifact_a_running_instance_reads_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        for k in ["in1", "other"] {
            let tmp = store.begin(k).unwrap();
            fs::write(tmp.join("a"), b"1").unwrap();
            store.commit(&tmp, draft(k)).unwrap();
        }
        // An instance computing `out` reads `in1`.
        let reading = store
            .lock_reading("out", &["in1".to_string()], &mut |_| {})
            .unwrap();
        let me = lock::me(store.host()).to_string();
        assert_eq!(store.remove_unread("in1").unwrap(), Removal::InUse(me));
        assert!(store.is_complete("in1"));
        let mut policy = GcPolicy::default();
        let report = store.gc(&mut policy, false, &mut |_| {}).unwrap();
        let removed: Vec<&str> = report.removed.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(removed, ["other"], "gc removes only what nothing reads");
        assert_eq!(report.kept, 1);
        assert!(store.is_complete("in1"));
        // While a process holds the key's own lock (storing or removing it), it is kept too.
        drop(reading);
        let held = store.lock("in1", &mut |_| {}).unwrap();
        assert!(matches!(
            store.remove_unread("in1").unwrap(),
            Removal::InUse(_)
        ));
        drop(held);
        assert_eq!(store.remove_unread("in1").unwrap(), Removal::Removed);
        assert_eq!(store.remove_unread("in1").unwrap(), Removal::Absent);
        assert!(!store.artifact_dir("in1").exists());
    }

    #[test]
    fn only_a_new_or_empty_folder_becomes_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let new = Store::new(dir.path().join("new"));
        new.prepare().unwrap();
        assert!(new.is_marked());
        let empty = Store::new(dir.path().join("empty"));
        fs::create_dir(empty.root()).unwrap();
        assert!(empty.check_marked().is_ok(), "nothing to change in it");
        // An unfinished marker of another process does not make the folder foreign.
        fs::write(empty.root().join(".CACHEDIR.TAG.tmp.1.0"), b"Sig").unwrap();
        empty.prepare().unwrap();
        assert!(empty.is_marked());
        let text = fs::read_to_string(empty.root().join(MARKER)).unwrap();
        assert!(text.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"));

        let home = Store::new(dir.path().join("home"));
        fs::create_dir_all(home.root().join("tmp/backup.vm.999999.d")).unwrap();
        fs::create_dir_all(home.root().join("artifacts/photos")).unwrap();
        let e = home.prepare().unwrap_err();
        assert!(e.to_string().contains("not a pipe cache"), "{e}");
        assert!(home.remove("photos").is_err());
        assert!(home.remove_unread("photos").is_err());
        assert!(
            home.gc(&mut GcPolicy::default(), true, &mut |_| {})
                .is_err()
        );
        assert!(home.verify(true).is_err());
        assert!(home.verify(false).is_ok(), "reading is allowed");
        // Another tool's tag is not pipe's.
        fs::write(
            home.root().join(MARKER),
            "Signature: 8a477f597d28d172789f06886806bc55\n# other tool\n",
        )
        .unwrap();
        assert!(home.prepare().is_err());
        let mut left: Vec<String> = fs::read_dir(home.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [MARKER, "artifacts", "tmp"]);
        assert!(home.root().join("tmp/backup.vm.999999.d").is_dir());
        assert!(home.root().join("artifacts/photos").is_dir());
        assert_eq!(
            home.adopt().unwrap_err(),
            "CACHEDIR.TAG: written by another program (it lacks pipe's line)"
        );
    }

    #[test]
    fn adopt_marks_only_a_folder_that_holds_what_pipe_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("c"));
        store.prepare().unwrap();
        let key = "a".repeat(64);
        let tmp = store.begin(&key).unwrap();
        fs::write(tmp.join("x"), b"1").unwrap();
        store.commit(&tmp, draft(&key)).unwrap();
        fs::remove_file(store.root().join(MARKER)).unwrap();
        assert!(store.prepare().is_err(), "an old cache is refused");
        fs::create_dir(store.root().join("artifacts/photos")).unwrap();
        assert_eq!(
            store.adopt().unwrap_err(),
            "artifacts/photos: not an artifact (its name is not a key)"
        );
        fs::remove_dir(store.root().join("artifacts/photos")).unwrap();
        fs::write(store.root().join("notes.txt"), b"mine").unwrap();
        assert_eq!(
            store.adopt().unwrap_err(),
            "notes.txt: not one of pipe's folders"
        );
        fs::remove_file(store.root().join("notes.txt")).unwrap();
        assert!(!store.is_marked());
        assert!(store.adopt().unwrap());
        assert!(store.is_marked());
        assert!(!store.adopt().unwrap(), "already marked");
        store.prepare().unwrap();
        assert!(store.is_complete(&key));
    }

    #[test]
    fn truncated_file_makes_artifact_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let tmp = store.begin("k2").unwrap();
        fs::write(tmp.join("a"), b"12345").unwrap();
        store.commit(&tmp, draft("k2")).unwrap();
        fs::write(store.artifact_dir("k2").join("a"), b"12").unwrap();
        assert!(!store.is_complete("k2"));
    }

    #[test]
    fn reserved_manifest_name_fails_commit_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let tmp = store.begin("k3").unwrap();
        fs::write(tmp.join(MANIFEST), b"{}").unwrap();
        assert!(store.commit(&tmp, draft("k3")).is_err());
        assert!(!tmp.exists());
        assert!(!store.artifact_dir("k3").exists());
    }
}

/// What [`Store::gc`] removed (or would remove), and what it kept.
#[derive(Debug, Default)]
pub struct GcReport {
    /// The artifacts removed, in key order.
    pub removed: Vec<Removed>,
    /// Bytes they held.
    pub freed_bytes: u64,
    /// Artifacts kept although nothing named them: newer than the cut-off, locked, or
    /// made since a live run started.
    pub kept: usize,
}

/// One artifact [`Store::gc`] removed.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// Its key.
    pub key: String,
    /// The stage that made it (empty when its manifest is unreadable).
    pub stage: String,
    /// The pipeline that made it.
    pub pipeline: String,
    /// Its sweep point.
    pub point: Json,
    /// Seconds since it was made.
    pub age_secs: f64,
    /// Bytes its files hold.
    pub size: u64,
}

/// What [`Store::gc`] must keep.
#[derive(Debug, Default)]
pub struct GcPolicy {
    /// Keys kept whatever their age (reached by a pipeline, used by a recent or live run).
    pub keep: std::collections::HashSet<String>,
    /// Artifacts made less than this many seconds ago are kept.
    pub keep_secs: f64,
    /// Artifacts made at or after this Unix time are kept (the start of the oldest live run).
    pub pinned_since: Option<f64>,
    /// A live run's lease was seen before its record: nothing is removed until the
    /// record can be read.
    pub unsettled: bool,
}

impl Store {
    /// Finds the one artifact (or, with `logs`, log) key starting with `prefix`.
    pub fn resolve_key(&self, prefix: &str, logs: bool) -> Result<String, String> {
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`{prefix}` is not a key (keys are hexadecimal)"));
        }
        let mut keys = self.keys().map_err(|e| e.to_string())?;
        if logs && let Ok(rd) = fs::read_dir(self.root.join("logs")) {
            keys.extend(rd.flatten().filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".log")
                    .map(str::to_string)
            }));
            keys.sort();
            keys.dedup();
        }
        let hits: Vec<&String> = keys.iter().filter(|k| k.starts_with(prefix)).collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(format!(
                "no artifact{} with a key starting with {prefix} in {}",
                if logs { " or log" } else { "" },
                self.root.display()
            )),
            many => Err(format!(
                "{prefix} is ambiguous: it starts {} keys ({}...); give more digits",
                many.len(),
                many.iter()
                    .take(3)
                    .map(|k| crate::key::short(k, 16))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Total size of an artifact's files.
    pub fn size(&self, key: &str) -> u64 {
        walk_files(&self.artifact_dir(key))
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| fs::metadata(self.artifact_dir(key).join(f)).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The run leases in `locks/` (file names), sorted.
    fn run_leases(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join("locks"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("run-") && n.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Removes every artifact that `policy` does not keep (never one that a live process
    /// computes or reads: see [`Store::remove_unread`]). With `dry_run`, removes nothing.
    ///
    /// A run that starts while gc works is seen: before the first artifact, and before
    /// each one after the run leases in `locks/` changed, `refresh` updates the policy from
    /// the runs' records. Refuses a folder that is not a pipe cache
    /// ([`Store::check_marked`]), dry run or not.
    pub fn gc(
        &self,
        policy: &mut GcPolicy,
        dry_run: bool,
        refresh: &mut dyn FnMut(&mut GcPolicy),
    ) -> io::Result<GcReport> {
        self.check_marked()?;
        let mut report = GcReport::default();
        let now = unix_now();
        let mut leases: Option<Vec<String>> = None;
        for key in self.keys()? {
            let current = self.run_leases();
            if leases.as_ref() != Some(&current) {
                leases = Some(current);
                refresh(policy);
                // A run writes its record just after taking its lease.
                let since = std::time::Instant::now();
                while policy.unsettled && since.elapsed() < std::time::Duration::from_secs(2) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    refresh(policy);
                }
            }
            if policy.keep.contains(&key) || policy.unsettled {
                if policy.unsettled {
                    report.kept += 1;
                }
                continue;
            }
            let manifest = self.manifest(&key);
            let made = manifest
                .as_ref()
                .map(|m| m.started + m.seconds)
                .or_else(|| {
                    let t = fs::metadata(self.artifact_dir(&key))
                        .ok()?
                        .modified()
                        .ok()?;
                    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
                });
            let age = made.map_or(f64::INFINITY, |t| now - t);
            let pinned = policy
                .pinned_since
                .is_some_and(|since| made.is_none_or(|t| t >= since));
            if age < policy.keep_secs || pinned || self.user_of(&key).is_some() {
                report.kept += 1;
                continue;
            }
            let size = self.size(&key);
            if !dry_run {
                if self.remove_unread(&key)? != Removal::Removed {
                    report.kept += 1;
                    continue;
                }
                let log = self.log_path(&key);
                if fs::symlink_metadata(&log).is_ok_and(|m| m.is_file()) {
                    let _ = fs::remove_file(log);
                }
            }
            report.freed_bytes += size;
            let (stage, pipeline, point) = manifest
                .map(|m| (m.stage, m.pipeline, m.point))
                .unwrap_or_default();
            report.removed.push(Removed {
                key,
                stage,
                pipeline,
                point,
                age_secs: age,
                size,
            });
        }
        Ok(report)
    }
}
