//! Group commit: one `syncfs` of the cache's file system makes durable everything that
//! was written to it before the call began, so instances that finish close together share
//! one sync instead of paying several fsyncs each.
//!
//! A caller asks for a sync that *starts* after its own writes ended. If one is running,
//! it waits for it to end, then either finds that a later one has covered it or starts the
//! next one itself for everyone waiting. An error is given to every caller the failed
//! sync was meant to cover.
//!
//! While callers come from several threads close together (instances of a run finishing a
//! millisecond apart), syncs start at most once every [`MIN_GAP`]: a caller that would
//! start one sooner after the last ended waits out the gap, gathering the callers that
//! come meanwhile. A run of a thousand short instances then makes about a hundred syncs a
//! second at most, not one per instance. A caller alone (one thread committing one
//! artifact after another, a lone instance, the first of a run) never waits.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The least time from the end of one sync to the start of the next.
pub const MIN_GAP: Duration = Duration::from_millis(10);

/// Where the syncs of one cache stand.
#[derive(Default)]
struct State {
    /// Number of syncs started so far (the generation of the latest).
    started: u64,
    /// Generation of the latest sync that ended.
    done: u64,
    /// Whether a sync is running now.
    running: bool,
    /// The latest failed generation and its error.
    failed: Option<(u64, String)>,
    /// When the latest sync ended.
    last_end: Option<Instant>,
    /// The latest caller's thread, and when it came.
    last_caller: Option<(std::thread::ThreadId, Instant)>,
    /// When a caller last came within [`MIN_GAP`] of one from another thread.
    crowded: Option<Instant>,
    /// How many syncs waited out a gap (for the tests).
    gaps: u64,
}

/// Syncs of one file system, shared by the threads of a run (see the module doc).
#[derive(Default)]
pub struct GroupSync {
    state: Mutex<State>,
    ended: Condvar,
    /// Whether something was written that only a later sync makes durable (a rename
    /// since the last sync): see [`GroupSync::written`], [`GroupSync::sync_if_written`].
    unsynced: AtomicBool,
}

impl GroupSync {
    /// Notes a write (a rename) that the next sync is to make durable.
    pub fn written(&self) {
        self.unsynced.store(true, Ordering::SeqCst);
    }

    /// [`GroupSync::sync`] if something was [`written`](GroupSync::written) since the
    /// last sync; nothing otherwise (a run that published nothing syncs nothing).
    pub fn sync_if_written(&self, dir: &Path) -> io::Result<()> {
        if self.unsynced.load(Ordering::SeqCst) {
            self.sync(dir)
        } else {
            Ok(())
        }
    }

    /// Makes durable everything written under `dir`'s file system before this call.
    pub fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A sync that starts from now on covers this caller's writes.
        let need = s.started + 1;
        let (me, now) = (std::thread::current().id(), Instant::now());
        if s.last_caller
            .is_some_and(|(other, at)| other != me && now.duration_since(at) < MIN_GAP)
        {
            s.crowded = Some(now);
        }
        s.last_caller = Some((me, now));
        loop {
            if s.done >= need {
                return match &s.failed {
                    Some((g, e)) if *g >= need => Err(io::Error::other(e.clone())),
                    _ => Ok(()),
                };
            }
            if s.running {
                s = self.ended.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.running = true;
            // Too soon after the last while callers crowd: wait out the gap (still
            // `running`, so that callers coming meanwhile wait for this sync, which starts
            // after their writes).
            let crowded = s.crowded.is_some_and(|at| at.elapsed() < 2 * MIN_GAP);
            let gap = match (crowded, s.last_end) {
                (true, Some(end)) => MIN_GAP.saturating_sub(end.elapsed()),
                _ => Duration::ZERO,
            };
            if !gap.is_zero() {
                s.gaps += 1;
                drop(s);
                std::thread::sleep(gap);
                s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            }
            s.started += 1;
            // What was written until now is covered by this sync.
            self.unsynced.store(false, Ordering::SeqCst);
            let generation = s.started;
            drop(s);
            let result = sync_file_system(dir);
            s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.running = false;
            s.done = generation;
            s.last_end = Some(Instant::now());
            if let Err(e) = &result {
                s.failed = Some((generation, e.to_string()));
            }
            self.ended.notify_all();
        }
    }
}

/// `syncfs(2)` of the file system that holds `dir`: every file's data and metadata,
/// every directory entry, written to stable storage (the device's cache flushed).
fn sync_file_system(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    // SAFETY: `f` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_callers_share_syncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupSync::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5 {
                        g.sync(dir.path()).unwrap();
                    }
                });
            }
        });
        let st = g.state.lock().unwrap();
        assert!(!st.running && st.done == st.started && st.started <= 40);
    }

    #[test]
    fn syncs_start_at_least_the_gap_apart() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupSync::default();
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10 {
                        g.sync(dir.path()).unwrap();
                    }
                });
            }
        });
        let elapsed = start.elapsed();
        let st = g.state.lock().unwrap();
        // The first sync starts at once; while the four threads crowd, each later one waits
        // out the gap after the end of the one before.
        assert!(
            st.started >= 10,
            "each thread's 10 calls need 10 syncs at least"
        );
        assert!(st.gaps > 0, "four threads calling at once crowd");
        assert!(
            elapsed >= MIN_GAP * st.gaps as u32,
            "{} gaps in {elapsed:?}",
            st.gaps
        );
    }

    #[test]
    fn a_caller_alone_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupSync::default();
        for _ in 0..20 {
            g.sync(dir.path()).unwrap();
        }
        let st = g.state.lock().unwrap();
        assert_eq!((st.started, st.gaps), (20, 0));
    }

    #[test]
    fn a_sync_of_a_missing_folder_fails() {
        let g = GroupSync::default();
        assert!(g.sync(Path::new("/nonexistent/pipe-sync-test")).is_err());
    }
}
