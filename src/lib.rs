//! `pipe`: a workflow engine for deep-learning experiments.
//!
//! This crate is the `pipe` command: the stage kinds ([`stages`]), the command line
//! ([`cli`]), [`export`] and [`report`]. The engine underneath (spec, plan, store,
//! executors, status) is the crate `pipe-engine`, and the measurements and data readers
//! are `pipe-science`; both are re-exported here under their module names. See
//! ARCHITECTURE.md for the crate graph.

pub use pipe_engine::{
    error, exec, key, param_enum, plan, resources, runs, select, spec, stage, stage_params, status,
    store, table,
};
pub use pipe_science::{datasets, detection, embedding, geometry};

pub mod cli;
pub mod export;
pub mod render;
pub mod report;
pub mod stages;
pub mod tables;
pub mod worker;
