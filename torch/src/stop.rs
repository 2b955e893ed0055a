//! SIGINT and SIGTERM in the worker: a request to stop, which a running train job answers
//! by keeping a resume point (see `stages::train`), not a reason to die at once. pipe sends
//! SIGINT to the workers of its train instances when it is stopped, and a terminal's Ctrl-C
//! reaches the worker too (it shares pipe's process group). A worker with no job to stop
//! lives on until pipe ends, which kills it (PR_SET_PDEATHSIG).

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the signal handler.
static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler of SIGINT and SIGTERM (restarting interrupted reads).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction with a handler that only stores an atomic (async-signal-safe);
        // the struct is plain data, zeroed then filled in.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Whether the worker was asked to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
