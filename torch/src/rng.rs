//! libtorch's global random generator, shared by every thread of the worker.

/// Held while seeding libtorch's global generator and drawing from it, so that threads
/// that build models at the same time each get the weights their seed promises.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
