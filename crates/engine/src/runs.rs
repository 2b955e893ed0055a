//! Run records: every `pipe run` leaves `CACHE/runs/RUN/run.json`, saying which pipeline
//! file (and its hash) it ran with which overrides, when, where, with what outcome, and the
//! keys its plan read or wrote. `pipe runs` lists them; `status`, `export`, `report` and
//! `gc` take `--run`; `gc` keeps what recent runs used and never what a live run holds.
//!
//! A run in progress holds a lease, `locks/run-RUN.lock` (a [`KeyLock`]: host, pid, process
//! start, heartbeat), so any process sharing the cache can tell a live run from one that
//! died. A run whose executor returned before its work ended (a detached cluster run) is
//! live until its executor marks the record finished.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::store::{KeyLock, Store, lock, read_regular, unix_now, write_atomic_unsynced};

/// Counts of a run's instances by outcome.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunCounts {
    /// Instances the run planned (after `--only`).
    pub planned: usize,
    /// Computed.
    pub executed: usize,
    /// Found in the cache.
    pub cached: usize,
    /// Failed.
    pub failed: usize,
    /// Not run because something they need failed.
    pub skipped: usize,
}

/// One job a run submitted to a cluster executor, as its record keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// The instance's recipe ([`crate::plan::Instance::recipe`]).
    #[serde(alias = "key")]
    pub recipe: String,
    /// `stage[point]`.
    pub label: String,
    /// The cluster's job id.
    pub job_id: String,
    /// The cluster's log of the job.
    #[serde(rename = "slurm_log")]
    pub log: PathBuf,
}

/// The keys a run's plan read or wrote. They are kept in `runs/RUN/keys.json`, beside the
/// record: most commands read every record for its other fields, and the keys of a
/// 1,000-instance sweep (64 KiB) read with each record were most of what `pipe status`
/// spent once a cache held 100 records. A record read from the cache holds `None` (read
/// them with [`keys_of`]); one this process builds holds its list, which
/// [`save_record`] writes. An older record with its keys inside it holds them as text.
#[derive(Clone, Debug)]
pub struct RunKeys(Option<Box<serde_json::value::RawValue>>);

impl RunKeys {
    /// Keys given as a list.
    pub fn from_list(keys: Vec<String>) -> RunKeys {
        // A list of strings always serializes.
        RunKeys(Some(
            serde_json::value::to_raw_value(&keys).expect("a list of strings"),
        ))
    }
    /// The keys this record holds in memory (none when they are kept apart, not read).
    fn held(&self) -> Vec<String> {
        self.0
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }
    /// Keys kept in `keys.json`, not read (a record without a `keys` field).
    fn kept_apart() -> RunKeys {
        RunKeys(None)
    }
}

impl Default for RunKeys {
    fn default() -> RunKeys {
        RunKeys::from_list(Vec::new())
    }
}

impl<'de> Deserialize<'de> for RunKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RunKeys, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(d).map(|raw| RunKeys(Some(raw)))
    }
}

/// Every key run `r` read or wrote: those it holds, else those of its `keys.json`.
pub fn keys_of(store: &Store, r: &RunRecord) -> Vec<String> {
    match &r.keys.0 {
        Some(_) => r.keys.held(),
        None => read_regular(&keys_path(store, &r.id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
    }
}

/// `runs/RUN/keys.json`.
fn keys_path(store: &Store, id: &str) -> PathBuf {
    runs_dir(store).join(id).join("keys.json")
}

/// A run's record, `runs/RUN/run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id: UTC start time and a few hex digits, `20261203-074228-3fa9`.
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Unix time the run started (for a Slurm run, when it submitted).
    pub submitted: f64,
    /// The jobs a cluster executor submitted, in submission order.
    #[serde(default)]
    pub jobs: Vec<JobRecord>,
    /// Whether the run has ended (for a cluster executor, every job done, failed or cancelled).
    pub finished: bool,
    /// Whether `pipe cancel` cancelled it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// The pipeline file, absolute.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// blake3 of the pipeline file's bytes when the run started.
    #[serde(default)]
    pub file_hash: String,
    /// The `--set` overrides, as given.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The `--only` stages, as given.
    #[serde(default)]
    pub only: Vec<String>,
    /// The name of the executor that ran it (`local`, `slurm`).
    #[serde(default)]
    pub executor: String,
    /// Host the run was started on.
    #[serde(default)]
    pub host: String,
    /// Its process id.
    #[serde(default)]
    pub pid: u32,
    /// Unix time the run ended (`None` while it runs, or if it died).
    #[serde(default)]
    pub ended: Option<f64>,
    /// Its exit code (`None` while it runs, or if it died).
    #[serde(default)]
    pub exit: Option<i32>,
    /// Instances by outcome.
    #[serde(default)]
    pub counts: RunCounts,
    /// Every key the run's plan read or wrote (instances and their parts), sorted: in
    /// `keys.json` beside the record ([`keys_of`]).
    #[serde(default = "RunKeys::kept_apart", skip_serializing)]
    pub keys: RunKeys,
    /// A name given with `pipe run --name` (`--run NAME` finds the latest run so named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A note given with `pipe run --note`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl RunRecord {
    /// A new record for a run of `pipeline` started now by this process.
    pub fn begin(pipeline: &str, file: Option<&Path>, overrides: &[String]) -> RunRecord {
        let now = unix_now();
        let file = file.map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()));
        let file_hash = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .map(|b| blake3::hash(&b).to_hex().to_string())
            .unwrap_or_default();
        RunRecord {
            id: new_run_id(now),
            pipeline: pipeline.to_string(),
            submitted: now,
            jobs: Vec::new(),
            finished: false,
            cancelled: false,
            file,
            file_hash,
            overrides: overrides.to_vec(),
            only: Vec::new(),
            executor: "local".into(),
            host: lock::host_name(),
            pid: std::process::id(),
            ended: None,
            exit: None,
            counts: RunCounts::default(),
            keys: RunKeys::default(),
            name: None,
            note: None,
        }
    }

    /// Adds keys to the record this process keeps of its own run (kept sorted and unique).
    pub fn add_keys(&mut self, keys: impl IntoIterator<Item = String>) {
        let mut all: BTreeSet<String> = self.keys.held().into_iter().collect();
        all.extend(keys);
        self.keys = RunKeys::from_list(all.into_iter().collect());
    }

    /// The run's state in words: `running`, `ok`, `failed (exit 1)`, `died` (its process is
    /// gone without ending it), `submitted` (a detached run not finished).
    pub fn state(&self, store: &Store) -> String {
        match self.exit {
            _ if self.cancelled => "cancelled".into(),
            Some(0) if !self.finished => "submitted".into(),
            Some(0) => "ok".into(),
            Some(130) => "interrupted".into(),
            Some(c) => format!("failed (exit {c})"),
            None if is_live(store, self) => "running".into(),
            None => "died".into(),
        }
    }

    /// Whether the run's pipeline file differs now from when it ran (`None`: unreadable).
    pub fn file_changed(&self) -> Option<bool> {
        let bytes = std::fs::read(self.file.as_ref()?).ok()?;
        Some(blake3::hash(&bytes).to_hex().as_str() != self.file_hash)
    }

    /// Whether the run has ended (or died) more than `secs` seconds ago; a live run never has.
    pub fn older_than(&self, secs: f64) -> bool {
        unix_now() - self.ended.unwrap_or(self.submitted) > secs
    }
}

/// Whether a run may still read or write its keys: its lease is held by a live process,
/// or its process returned successfully before its work ended (a detached run whose jobs
/// have not all ended; only such a run exits 0 unfinished).
pub fn is_live(store: &Store, r: &RunRecord) -> bool {
    if !r.finished && r.exit == Some(0) {
        return true;
    }
    lock::is_held(&lease_path(store, &r.id), store.host())
}

/// Whether a live run's lease is in `locks/` without a record among `records` (its record
/// not written yet, or unreadable): what it holds cannot be known.
pub fn live_lease_without_record(store: &Store, records: &[RunRecord]) -> bool {
    let Ok(entries) = std::fs::read_dir(store.root().join("locks")) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            return false;
        };
        !records.iter().any(|r| r.id == id) && lock::is_held(&e.path(), store.host())
    })
}

/// Where a run's lease is.
fn lease_path(store: &Store, id: &str) -> PathBuf {
    store.root().join("locks").join(format!("run-{id}.lock"))
}

/// Takes a run's lease, held until the returned lock is dropped.
pub fn lease(store: &Store, id: &str) -> std::io::Result<KeyLock> {
    KeyLock::acquire(&lease_path(store, id), store.host(), &mut |_| {})
}

/// Where the runs' files live.
pub fn runs_dir(store: &Store) -> PathBuf {
    store.root().join("runs")
}

/// Where a run's record is, `runs/RUN/run.json`.
fn record_path(store: &Store, id: &str) -> PathBuf {
    runs_dir(store).join(id).join("run.json")
}

/// Saves a run record atomically; refuses a folder that is not a pipe cache
/// ([`Store::check_marked`]).
pub fn save_record(store: &Store, r: &RunRecord) -> Result<(), Error> {
    store
        .check_marked()
        .map_err(|e| Error::io(store.root(), e))?;
    let path = record_path(store, &r.id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // The keys first: a record is never on disk without the keys it says it read.
    if let Some(raw) = &r.keys.0
        && raw.get() != "[]"
    {
        let keys = keys_path(store, &r.id);
        // A run saves its record at its start and at its end, most often with the same
        // keys: a file that already holds them is not written (and synced) again.
        if read_regular(&keys).ok().as_deref() != Some(raw.get().as_bytes()) {
            write_atomic_unsynced(&keys, raw.get().as_bytes()).map_err(|e| Error::io(&keys, e))?;
        }
    }
    // Not synced (two `fsync`s per file cost more than the rest of a no-op run): a record
    // lost or torn by a power loss is skipped when records are read, so gc keeps its
    // artifacts only as long as other runs or pipelines use them (work to redo at most).
    let text = serde_json::to_vec_pretty(r).unwrap_or_default();
    write_atomic_unsynced(&path, &text).map_err(|e| Error::io(&path, e))
}

/// Every run record in the cache, oldest first (records that do not parse are skipped).
pub fn records(store: &Store) -> Vec<RunRecord> {
    use rayon::prelude::*;
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs_dir(store))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    // Read and parsed on every core: a cache run nightly holds hundreds of records, and
    // `status` and `run` read them all.
    let mut out: Vec<RunRecord> = dirs
        .par_iter()
        .filter_map(|d| read_record_file(&d.join("run.json")))
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a: &RunRecord, b| a.submitted.total_cmp(&b.submitted).then(a.id.cmp(&b.id)));
    out
}

/// The bytes of a run record file; one that is not a regular file (a FIFO say) is skipped
/// with a warning, never opened.
fn read_record_file(path: &Path) -> Option<Vec<u8>> {
    match read_regular(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
                eprintln!("warning: {}: {e}; skipped", path.display());
            }
            None
        }
    }
}

/// The run `id` names: `last` (the latest run, of `file` if given), an id or unique
/// prefix of one, or a name given with `pipe run --name` (the latest run so named).
pub fn find_record(store: &Store, id: &str) -> Result<RunRecord, Error> {
    find_run(store, id, None)
}

/// [`find_record`], where `last` means the latest run of `file` when a file is given.
pub fn find_run(store: &Store, id: &str, file: Option<&Path>) -> Result<RunRecord, Error> {
    let all = records(store);
    if id == "last" {
        return match file {
            Some(f) => last_of(&all, f).cloned().ok_or_else(|| {
                Error::usage(format!(
                    "--run last: no run of {} in {}",
                    f.display(),
                    runs_dir(store).display()
                ))
            }),
            None => all.last().cloned().ok_or_else(|| {
                Error::usage(format!(
                    "--run last: no runs in {}",
                    runs_dir(store).display()
                ))
            }),
        };
    }
    let mut hits: Vec<&RunRecord> = all.iter().filter(|r| r.id.starts_with(id)).collect();
    if hits.is_empty()
        && let Some(named) = all.iter().rev().find(|r| r.name.as_deref() == Some(id))
    {
        hits.push(named);
    }
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::usage(format!(
            "no run `{id}` in {}; `pipe runs` lists them (latest: {})",
            runs_dir(store).display(),
            all.last().map_or("none", |r| r.id.as_str())
        ))),
        many => Err(Error::usage(format!(
            "`{id}` names {} runs ({}); give more of the id",
            many.len(),
            many.iter()
                .take(5)
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The latest run of pipeline file `file` among `all` (oldest first).
pub fn last_of<'a>(all: &'a [RunRecord], file: &Path) -> Option<&'a RunRecord> {
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    all.iter()
        .rev()
        .find(|r| r.file.as_deref() == Some(file.as_path()))
}

/// The last run of `file` ([`last_of`]) and its last full run ([`last_full_of`]), reading
/// the records newest first and only as far back as the full run: what every command not
/// told a run needs, at a cost that does not grow with the runs a cache has kept.
///
/// Run folders are named by their start second, so they are read a second at a time, the
/// newest first, and ordered within a second as [`records`] orders them. A folder whose
/// name is not a run id makes it read every record instead.
pub fn last_runs_of(store: &Store, file: &Path) -> (Option<RunRecord>, Option<RunRecord>) {
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mine = |r: &RunRecord| r.file.as_deref() == Some(canonical.as_path());
    let names: Option<Vec<String>> = std::fs::read_dir(runs_dir(store)).ok().map(|d| {
        d.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    });
    let Some(mut names) = names else {
        return (None, None);
    };
    if !names.iter().all(|n| is_run_id(n)) {
        let all = records(store);
        return (
            last_of(&all, file).cloned(),
            last_full_of(&all, file).cloned(),
        );
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut last = None;
    for second in names.chunk_by(|a, b| a[..RUN_SECOND] == b[..RUN_SECOND]) {
        let mut group: Vec<RunRecord> = second
            .iter()
            .filter_map(|id| read_record_file(&record_path(store, id)))
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        // Newest first, the reverse of `records`' order.
        group.sort_by(|a, b| b.submitted.total_cmp(&a.submitted).then(b.id.cmp(&a.id)));
        for r in group.into_iter().filter(|r| mine(r)) {
            if r.only.is_empty() {
                return (last.or(Some(r.clone())), Some(r));
            }
            last.get_or_insert(r);
        }
    }
    (last, None)
}

/// The length of a run id's time, `YYYYMMDD-HHMMSS`.
const RUN_SECOND: usize = 15;

/// Whether `name` has the shape of a run id ([`new_run_id`]): `YYYYMMDD-HHMMSS-` and hex.
fn is_run_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > RUN_SECOND + 1
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..RUN_SECOND].iter().all(u8::is_ascii_digit)
        && b[RUN_SECOND] == b'-'
        && b[RUN_SECOND + 1..].iter().all(u8::is_ascii_hexdigit)
}

/// The last run of `file` that covered the whole pipeline (no `--only` or `--point`): the
/// one whose overrides define the file for commands that are not told a run.
pub fn last_full_of<'a>(all: &'a [RunRecord], file: &Path) -> Option<&'a RunRecord> {
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    all.iter()
        .rev()
        .find(|r| r.file.as_deref() == Some(file.as_path()) && r.only.is_empty())
}

/// A new run id: the UTC start time, then 4 hex digits of a hash of the time, the process
/// id and the host, so ids sort by time and two runs started in one second differ.
fn new_run_id(now: f64) -> String {
    let h = blake3::hash(format!("{now} {} {}", std::process::id(), lock::host_name()).as_bytes());
    let time = chrono::DateTime::from_timestamp(now as i64, 0)
        .map(|t| t.format("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_default();
    format!("{time}-{}", &h.to_hex()[..4])
}

/// A Unix time as local `YYYY-MM-DD HH:MM`.
pub fn local_time(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_beside_the_record_and_read_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let mut r = RunRecord::begin("p", None, &[]);
        r.add_keys(["b".to_string(), "a".to_string()]);
        r.add_keys(["a".to_string(), "c".to_string()]);
        save_record(&store, &r).unwrap();
        let text = std::fs::read_to_string(record_path(&store, &r.id)).unwrap();
        assert!(!text.contains("\"keys\""), "{text}");
        let back = find_record(&store, &r.id).unwrap();
        assert_eq!(keys_of(&store, &back), ["a", "b", "c"]);
        // Saved again as read (a settled or cancelled run), its keys stay.
        save_record(&store, &back).unwrap();
        assert_eq!(
            keys_of(&store, &find_record(&store, &r.id).unwrap()),
            ["a", "b", "c"]
        );
        // An older record, its keys inside it: read from there, and moved out when saved.
        let old = text.replacen("{", "{\n  \"keys\": [\"x\"],", 1);
        std::fs::remove_file(keys_path(&store, &r.id)).unwrap();
        std::fs::write(record_path(&store, &r.id), old).unwrap();
        let back = find_record(&store, &r.id).unwrap();
        assert_eq!(keys_of(&store, &back), ["x"]);
        save_record(&store, &back).unwrap();
        assert_eq!(keys_of(&store, &find_record(&store, &r.id).unwrap()), ["x"]);
    }

    #[test]
    fn keys_already_on_disk_are_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let mut r = RunRecord::begin("p", None, &[]);
        r.add_keys(["a".to_string()]);
        save_record(&store, &r).unwrap();
        let path = keys_path(&store, &r.id);
        let inode = std::fs::metadata(&path).unwrap().ino();
        // Saved again with the same keys (the run's end): the same file stays.
        r.exit = Some(0);
        save_record(&store, &r).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        // New keys: written anew (atomically: a new file renamed over the old one).
        r.add_keys(["b".to_string()]);
        save_record(&store, &r).unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"["a","b"]"#);
        assert_eq!(
            keys_of(&store, &find_record(&store, &r.id).unwrap()),
            ["a", "b"]
        );
    }

    #[test]
    fn the_last_runs_of_a_file_are_found_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.prepare().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "").unwrap();
        let other = dir.path().join("q.toml");
        std::fs::write(&other, "").unwrap();
        let run = |at: f64, id: &str, of: &Path, only: &[&str]| {
            let mut r = RunRecord::begin("p", Some(of), &[format!("at={at}")]);
            r.submitted = at;
            r.id = id.to_string();
            r.only = only.iter().map(|s| s.to_string()).collect();
            save_record(&store, &r).unwrap();
        };
        // A full run, then two narrowed runs in one second whose ids sort against their
        // start times, then a run of another file.
        run(1_700_000_000.0, "20231114-221320-aaaa", &file, &[]);
        run(1_700_000_100.7, "20231114-221500-0001", &file, &["b"]);
        run(1_700_000_100.2, "20231114-221500-ffff", &file, &["c"]);
        run(1_700_000_200.0, "20231114-221640-bbbb", &other, &[]);
        let (last, full) = last_runs_of(&store, &file);
        let id = |r: Option<RunRecord>| r.map(|r| r.id);
        assert_eq!(id(last.clone()), Some("20231114-221500-0001".into()));
        assert_eq!(id(full.clone()), Some("20231114-221320-aaaa".into()));
        // The same as reading every record.
        let all = records(&store);
        assert_eq!(id(last), last_of(&all, &file).map(|r| r.id.clone()));
        assert_eq!(id(full), last_full_of(&all, &file).map(|r| r.id.clone()));
        // Older records are not read once the full run is found: a damaged one is no
        // matter (and a folder that is not a run id makes every record read).
        std::fs::write(record_path(&store, "20231114-221320-aaaa"), "{").unwrap();
        run(1_700_000_300.0, "20231114-221820-cccc", &file, &[]);
        let (last, full) = last_runs_of(&store, &file);
        assert_eq!(id(last), Some("20231114-221820-cccc".into()));
        assert_eq!(id(full), Some("20231114-221820-cccc".into()));
        std::fs::create_dir(runs_dir(&store).join("notes")).unwrap();
        let (last, _) = last_runs_of(&store, &file);
        assert_eq!(id(last), Some("20231114-221820-cccc".into()));
        assert_eq!(
            last_runs_of(&store, &dir.path().join("none.toml"))
                .0
                .map(|r| r.id),
            None
        );
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_run_id(1_700_000_000.0);
        let b = new_run_id(1_700_000_001.0);
        assert!(a.starts_with("20231114-221320-"), "{a}");
        assert!(a < b);
    }
}
