//! Per-key lock files: created with `O_EXCL`, carrying host, pid and process start time.
//!
//! A lock whose process is gone (same host, pid dead or reused) is stale and is broken
//! by the next process that wants it; this survives `kill -9` without relying on flock.
//! A holder refreshes its lock file's modification time every [`HEARTBEAT`]; a lock of
//! another host (a node of a cluster sharing the cache) is stale once that time is older
//! than [`stale_after`], since its process cannot be checked from here.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A held lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct KeyLock {
    path: PathBuf,
    token: String,
    /// Its entry among the locks the heartbeat refreshes.
    beat: u64,
}

/// How often a process waiting for a lock says again what it waits for.
pub const WAIT_NOTICE: Duration = Duration::from_secs(60);

/// How often a holder refreshes its lock file's modification time.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// Age after which another host's lock counts as abandoned: `PIPE_LOCK_STALE_SECS`, else
/// 300 seconds (15 missed heartbeats).
pub fn stale_after() -> Duration {
    std::env::var("PIPE_LOCK_STALE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(300), Duration::from_secs_f64)
}

/// The locks this process holds, refreshed by one heartbeat thread: each entry's file and
/// token, by a number of its own.
fn held() -> std::sync::MutexGuard<'static, BTreeMap<u64, (PathBuf, String)>> {
    static HELD: Mutex<BTreeMap<u64, (PathBuf, String)>> = Mutex::new(BTreeMap::new());
    static HEART: OnceLock<()> = OnceLock::new();
    HEART.get_or_init(|| {
        // One thread for every lock of the process (a thread per lock cost each instance
        // a thread start); it lives as long as the process.
        let _ = std::thread::Builder::new()
            .name("pipe-heartbeat".into())
            .spawn(heartbeat);
    });
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every [`HEARTBEAT`], refreshes the time of each held lock's file that still holds its
/// token.
fn heartbeat() {
    loop {
        std::thread::sleep(HEARTBEAT);
        let locks: Vec<(PathBuf, String)> = held().values().cloned().collect();
        for (path, token) in locks {
            if super::read_regular_string(&path).is_ok_and(|t| t == token)
                && let Ok(f) = OpenOptions::new().append(true).open(&path)
            {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
        }
    }
}

/// How long ago the file at `path` was modified (zero if its time is in the future).
fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::symlink_metadata(path).ok()?.modified().ok()?;
    // A time in the future (another host's clock runs ahead) is a heartbeat just now.
    Some(modified.elapsed().unwrap_or(Duration::ZERO))
}

/// Who holds a lock, as written in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Process start time (clock ticks since boot), to detect pid reuse.
    pub start: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Start time of a process in clock ticks since boot, from /proc; `None` if it is gone.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that wrote `holder` still runs (always true for other hosts).
pub fn is_alive(holder: &Holder, this_host: &str) -> bool {
    if holder.host != this_host {
        return true;
    }
    match process_start(holder.pid) {
        Some(start) => holder.start == 0 || start == holder.start,
        None => false,
    }
}

/// Whether the lock file at `path` is held: its process runs (this host), or its heartbeat
/// is recent (another host).
pub fn is_held(path: &Path, this_host: &str) -> bool {
    read_holder(path).is_some_and(|h| {
        is_alive(&h, this_host)
            && ((h.host == this_host && h.start != 0)
                || age(path).is_some_and(|a| a <= stale_after()))
    })
}

/// This process, as a lock holder.
pub fn me(host: &str) -> Holder {
    // Read from /proc once per process (a forked child has its own pid, and reads again).
    static START: std::sync::OnceLock<(u32, u64)> = std::sync::OnceLock::new();
    let pid = std::process::id();
    let &(first, start) = START.get_or_init(|| (pid, process_start(pid).unwrap_or(0)));
    Holder {
        host: host.to_string(),
        pid,
        start: if first == pid {
            start
        } else {
            process_start(pid).unwrap_or(0)
        },
    }
}

fn parse_holder(text: &str) -> Option<Holder> {
    let mut it = text.split_whitespace();
    Some(Holder {
        host: it.next()?.to_string(),
        pid: it.next()?.parse().ok()?,
        start: it.next()?.parse().ok()?,
    })
}

/// Reads who holds the lock at `path`, if anyone.
pub fn read_holder(path: &Path) -> Option<Holder> {
    parse_holder(&super::read_regular_string(path).ok()?)
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// How a lock file's second line starts when it lists what its holder reads.
const READS: &str = "reads";

/// The artifacts the holder of a lock file says it reads (its `reads` line), if any.
fn reads_of(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix(READS))
        .flat_map(str::split_whitespace)
}

/// Who holds a lock in `locks_dir` that lists `key` among what it reads, if anyone: a
/// live process of this host, or another host's holder whose heartbeat is recent.
pub fn reader_of(locks_dir: &Path, key: &str, this_host: &str) -> Option<Holder> {
    let entries = std::fs::read_dir(locks_dir).ok()?;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "lock") {
            continue;
        }
        let Ok(text) = super::read_regular_string(&path) else {
            continue;
        };
        if reads_of(&text).any(|k| k == key) && is_held(&path, this_host) {
            return parse_holder(&text);
        }
    }
    None
}

/// Writes a new lock file's token. It is not synced: a lock only matters while its
/// process lives, and one that a power loss leaves empty or torn is removed once it is 5 s
/// old, like any lock without a holder.
fn write_token(f: &mut std::fs::File, token: &str) -> io::Result<()> {
    f.write_all(token.as_bytes())
}

impl KeyLock {
    /// Takes the lock at `path`, waiting while a live process holds it.
    ///
    /// `on_wait` is called once, with the holder, if the lock is busy.
    pub fn acquire(
        path: &Path,
        host: &str,
        on_wait: &mut dyn FnMut(&Holder),
    ) -> io::Result<KeyLock> {
        Self::take(path, host, &[], true, on_wait)?.ok_or_else(|| io::Error::other("lock busy"))
    }

    /// Takes the lock at `path` for an instance that reads the artifacts `reads`, which
    /// the lock file lists (a `reads KEY...` line), so that no other process removes them
    /// while the lock is held ([`readers_in`]). Waits like [`KeyLock::acquire`].
    pub fn acquire_reading(
        path: &Path,
        host: &str,
        reads: &[String],
        on_wait: &mut dyn FnMut(&Holder),
    ) -> io::Result<KeyLock> {
        Self::take(path, host, reads, true, on_wait)?.ok_or_else(|| io::Error::other("lock busy"))
    }

    /// Takes the lock at `path` if no live process holds it; `None` if one does.
    pub fn try_acquire(path: &Path, host: &str) -> io::Result<Option<KeyLock>> {
        Self::take(path, host, &[], false, &mut |_| {})
    }

    /// Takes the lock, listing `reads`; waits while it is held when `wait`, else returns
    /// `None` at once.
    fn take(
        path: &Path,
        host: &str,
        reads: &[String],
        wait: bool,
        on_wait: &mut dyn FnMut(&Holder),
    ) -> io::Result<Option<KeyLock>> {
        let me = me(host);
        let mut token = format!(
            "{} {} {} {}\n",
            me.host,
            me.pid,
            me.start,
            NONCE.fetch_add(1, Ordering::Relaxed)
        );
        if !reads.is_empty() {
            token.push_str(READS);
            for k in reads {
                token.push(' ');
                token.push_str(k);
            }
            token.push('\n');
        }
        let mut last_said: Option<std::time::Instant> = None;
        let mut delay = Duration::from_millis(10);
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    // A lock file without its token (a full disk) would be nobody's: remove
                    // it before failing, so it never stands in anyone's way.
                    if let Err(e) = write_token(&mut f, &token) {
                        drop(f);
                        // Only while it still holds nothing but a beginning of our token.
                        if super::read_regular_string(path).is_ok_and(|t| token.starts_with(&t)) {
                            let _ = std::fs::remove_file(path);
                        }
                        return Err(e);
                    }
                    let beat = NONCE.fetch_add(1, Ordering::Relaxed);
                    held().insert(beat, (path.to_path_buf(), token.clone()));
                    return Ok(Some(KeyLock {
                        path: path.to_path_buf(),
                        token,
                        beat,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let text = match super::read_regular_string(path) {
                        Ok(t) => t,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) => {
                            return Err(io::Error::other(format!(
                                "lock {} is {e}: remove it",
                                path.display()
                            )));
                        }
                        Err(_) => String::new(),
                    };
                    let abandoned = |h: &Holder| {
                        (h.host != host || h.start == 0)
                            && age(path).is_some_and(|a| a > stale_after())
                    };
                    match parse_holder(&text) {
                        Some(h) if !is_alive(&h, host) || abandoned(&h) => {
                            // Stale: move it aside under a unique name, then retry.
                            let aside = path.with_extension(format!(
                                "stale.{}.{}",
                                me.pid,
                                NONCE.fetch_add(1, Ordering::Relaxed)
                            ));
                            if std::fs::rename(path, &aside).is_ok() {
                                let _ = std::fs::remove_file(&aside);
                            }
                            continue;
                        }
                        Some(_) if !wait => return Ok(None),
                        Some(h) => {
                            // Say who is waited for at once, then every minute.
                            if last_said
                                .is_none_or(|t: std::time::Instant| t.elapsed() >= WAIT_NOTICE)
                            {
                                on_wait(&h);
                                last_said = Some(std::time::Instant::now());
                            }
                        }
                        None if !wait => return Ok(None),
                        None => {
                            // Being written right now, or torn by a crash between create and write.
                            if age(path).is_some_and(|age| age > Duration::from_secs(5)) {
                                let _ = std::fs::remove_file(path);
                                continue;
                            }
                        }
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        held().remove(&self.beat);
        // Remove only our own lock (a stale-breaker may have replaced it).
        if super::read_regular_string(&self.path).is_ok_and(|t| t == self.token) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        let host = host_name();
        let a = KeyLock::acquire(&p, &host, &mut |_| {}).unwrap();
        assert_eq!(read_holder(&p).unwrap().pid, std::process::id());
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        let h2 = host.clone();
        let t = std::thread::spawn(move || {
            let mut saw = false;
            let _b = KeyLock::acquire(&p2, &h2, &mut |_| saw = true).unwrap();
            tx.send(saw).unwrap();
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(a);
        assert!(rx.recv().unwrap(), "second taker waited for the first");
        t.join().unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn stale_lock_of_dead_process_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        let host = host_name();
        // A pid that cannot be running: beyond the kernel's pid_max.
        std::fs::write(&p, format!("{host} 4194305 1 0\n")).unwrap();
        let _l = KeyLock::acquire(&p, &host, &mut |_| panic!("must not wait")).unwrap();
        assert_eq!(read_holder(&p).unwrap().pid, std::process::id());
    }

    #[test]
    fn another_hosts_lock_is_stale_only_without_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        let host = host_name();
        // Fresh: another node is working on it; wait.
        std::fs::write(&p, "node-17 1234 99 0\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (p2, h2) = (p.clone(), host.clone());
        let t = std::thread::spawn(move || {
            let _l = KeyLock::acquire(&p2, &h2, &mut |h| tx.send(h.host.clone()).unwrap()).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), "node-17");
        std::fs::remove_file(&p).unwrap();
        t.join().unwrap();
        // Not refreshed for longer than the stale age: broken at once.
        std::fs::write(&p, "node-17 1234 99 0\n").unwrap();
        let old = std::time::SystemTime::now() - stale_after() - Duration::from_secs(5);
        std::fs::File::options()
            .append(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let _l = KeyLock::acquire(&p, &host, &mut |_| panic!("must not wait")).unwrap();
        assert_eq!(read_holder(&p).unwrap().host, host);
    }
}
