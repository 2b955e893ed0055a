//! The stage kinds `pipe` ships, one file each, and the registry of them.
//!
//! A kind that runs in the libtorch worker has a second file, `torch/src/stages/NAME.rs`,
//! with the same name constant; see ARCHITECTURE.md, "Adding a stage kind".

pub mod activations;
pub mod corrupt;
pub mod dataset;
pub mod embed;
pub mod exec;
pub mod gradnorm;
pub mod probe;
pub mod rollback;
pub mod train;
pub mod trained;

use crate::stage::Registry;

/// Every built-in stage kind, in the order `pipe kinds` lists them.
pub fn registry() -> Registry {
    Registry::new(vec![
        &exec::Exec,
        &dataset::Dataset,
        &corrupt::Corrupt,
        &train::Train,
        &activations::Activations,
        &gradnorm::GradNorm,
        &rollback::Rollback,
        &probe::Probe,
        &embed::Embed,
    ])
}
