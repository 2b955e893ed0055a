//! Threads of a scope that run the local executor's instances, each kept for the next
//! instance once its own ends (starting a thread per instance cost each one a thread
//! start and teardown). A job given when no thread is idle gets a new one, so that as
//! many instances run at once as are given: the scheduler alone decides how many.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::Scope;

/// A job: one instance, run to its end.
type Job<'scope> = Box<dyn FnOnce() + Send + 'scope>;

/// The threads, and the queue of jobs for those that are idle. Dropping it lets the
/// threads end once their jobs have (the scope then joins them).
pub(super) struct Workers<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    /// Jobs for idle threads.
    queue: mpsc::Sender<Job<'scope>>,
    /// Where idle threads take them.
    taken: Arc<Mutex<mpsc::Receiver<Job<'scope>>>>,
    /// How many threads are idle and not yet promised a job.
    idle: Arc<AtomicUsize>,
}

impl<'scope, 'env> Workers<'scope, 'env> {
    /// No threads yet: they start in `scope` as jobs come.
    pub(super) fn new(scope: &'scope Scope<'scope, 'env>) -> Workers<'scope, 'env> {
        let (queue, taken) = mpsc::channel();
        Workers {
            scope,
            queue,
            taken: Arc::new(Mutex::new(taken)),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `job` on an idle thread, or on a new one when none is idle.
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'scope) {
        // Promise the job to one idle thread (whichever takes it first).
        let promised = self
            .idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let mut job: Job<'scope> = Box::new(job);
        if promised {
            // The receiver lives as long as `self`: the send does not fail.
            match self.queue.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(back)) => job = back,
            }
        }
        let (taken, idle) = (self.taken.clone(), self.idle.clone());
        self.scope.spawn(move || {
            job();
            loop {
                idle.fetch_add(1, Ordering::SeqCst);
                let next = taken.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match next {
                    Ok(job) => job(),
                    // The workers were dropped: no job will come.
                    Err(_) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn jobs_given_together_run_together_and_threads_are_reused() {
        let threads = Mutex::new(std::collections::HashSet::new());
        let ran = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers = Workers::new(scope);
            for round in 0..3 {
                // Four jobs that can only end once all four run at the same time.
                let together = Arc::new(Barrier::new(5));
                for _ in 0..4 {
                    let together = together.clone();
                    let (threads, ran) = (&threads, &ran);
                    workers.run(move || {
                        threads.lock().unwrap().insert(std::thread::current().id());
                        ran.fetch_add(1, Ordering::SeqCst);
                        together.wait();
                    });
                }
                together.wait();
                // Let the four go idle before the next round.
                while workers.idle.load(Ordering::SeqCst) < 4 {
                    std::thread::yield_now();
                }
                assert_eq!(ran.load(Ordering::SeqCst), 4 * (round + 1));
            }
        });
        assert_eq!(ran.into_inner(), 12);
        assert_eq!(
            threads.into_inner().unwrap().len(),
            4,
            "the first round's four threads ran all"
        );
    }
}
