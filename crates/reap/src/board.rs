//! Which supervisors are idle: a page shared by the server and every supervisor it forks
//! (an anonymous `MAP_SHARED` mapping made before the forks), one slot per supervisor.
//! A supervisor marks its slot busy when it takes a request and idle when it is done; the
//! server frees the slot of one that ended, and forks more while fewer than it wants are
//! idle. Nothing else is shared.

use std::sync::atomic::{AtomicI32, Ordering};

/// One supervisor's slot.
#[repr(C)]
struct Slot {
    /// Its pid (0: a free slot).
    pid: AtomicI32,
    /// 1 while it runs a command.
    busy: AtomicI32,
}

/// The most supervisors at once: as many commands can run at the same time.
pub(crate) const SLOTS: usize = 1024;

/// The shared slots.
pub(crate) struct Board {
    slots: *const Slot,
}

// SAFETY: the slots are atomics in a mapping that lives as long as the process.
unsafe impl Send for Board {}
// SAFETY: as above.
unsafe impl Sync for Board {}

impl Board {
    /// A new board, every slot free; forks made after share it.
    pub(crate) fn new() -> std::io::Result<Board> {
        // SAFETY: a fresh anonymous mapping, zeroed by the kernel (every slot free); it is
        // never unmapped, so the pointer stays valid for the process's life.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SLOTS * std::mem::size_of::<Slot>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Board {
            slots: ptr as *const Slot,
        })
    }

    /// Slot `i`.
    fn slot(&self, i: usize) -> &Slot {
        assert!(i < SLOTS);
        // SAFETY: within the mapping, which is never unmapped.
        unsafe { &*self.slots.add(i) }
    }

    /// A free slot, taken for `pid` (idle).
    pub(crate) fn take(&self, pid: i32) -> Option<usize> {
        let i = (0..SLOTS).find(|&i| {
            self.slot(i)
                .pid
                .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        self.slot(i).busy.store(0, Ordering::SeqCst);
        Some(i)
    }

    /// Sets slot `i`'s pid (the server and the forked supervisor both do: whichever runs
    /// first).
    pub(crate) fn set_pid(&self, i: usize, pid: i32) {
        self.slot(i).pid.store(pid, Ordering::SeqCst);
    }

    /// Frees the slot of `pid`, which ended.
    pub(crate) fn free(&self, pid: i32) {
        if let Some(i) = (0..SLOTS).find(|&i| self.slot(i).pid.load(Ordering::SeqCst) == pid) {
            self.slot(i).busy.store(0, Ordering::SeqCst);
            self.slot(i).pid.store(0, Ordering::SeqCst);
        }
    }

    /// Marks slot `i` busy or idle.
    pub(crate) fn set_busy(&self, i: usize, busy: bool) {
        self.slot(i).busy.store(busy as i32, Ordering::SeqCst);
    }

    /// How many supervisors are idle.
    pub(crate) fn idle(&self) -> usize {
        (0..SLOTS)
            .map(|i| self.slot(i))
            .filter(|s| s.pid.load(Ordering::SeqCst) != 0 && s.busy.load(Ordering::SeqCst) == 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_marked_and_freed() {
        let b = Board::new().unwrap();
        let a = b.take(100).unwrap();
        let c = b.take(200).unwrap();
        assert_ne!(a, c);
        assert_eq!(b.idle(), 2);
        b.set_busy(a, true);
        assert_eq!(b.idle(), 1);
        b.free(200);
        assert_eq!(b.idle(), 0);
        b.set_busy(a, false);
        assert_eq!(b.idle(), 1);
        // A freed slot is taken again.
        assert_eq!(b.take(300), Some(c));
    }

    #[test]
    fn a_fork_sees_the_same_slots() {
        let b = Board::new().unwrap();
        let i = b.take(1).unwrap();
        // SAFETY: the child only stores into the shared mapping and exits at once.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            b.set_busy(i, true);
            // SAFETY: ends the child without running the test harness's code.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        assert_eq!(b.idle(), 0, "the child's mark is seen by the parent");
    }
}
