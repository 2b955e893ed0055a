//! The stage kinds `pipe` ships, each in its own file, and the registry of them.

pub mod analysis;
pub mod corrupt;
pub mod dataset;
pub mod exec;
pub mod probe;
pub mod train;

use crate::stage::Registry;

/// Every built-in stage kind.
pub fn registry() -> Registry {
    Registry::new(vec![
        &exec::Exec,
        &dataset::Dataset,
        &corrupt::Corrupt,
        &train::Train,
        &analysis::Activations,
        &analysis::GradNorm,
        &analysis::Rollback,
        &probe::Probe,
    ])
}
