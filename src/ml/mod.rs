//! Machine learning behind the stage kinds: models with named layers, data loading,
//! optimizers, the training loop and checkpoints (all on tch / libtorch).
//!
//! Nothing here knows about the engine except the table helpers.

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod models;
pub mod optim;
pub mod train;

/// Held while seeding libtorch's global generator and drawing from it, so that instances
/// running in parallel threads each get the weights their seed promises.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
