//! `pipe`: a workflow engine for deep-learning experiments.
//!
//! This crate is the `pipe` command: the command line ([`cli`]), [`export`] (and runs
//! side by side, [`compare`]), [`report`]
//! and [`render`]. It builds on three crates, named where they are used: the engine
//! (`pipe_engine`: spec, plan, store, executors, status), the stage kinds (`pipe_kinds`:
//! typed parameters, tables, the worker protocol) and the measurements and data readers
//! (`pipe_science`). See ARCHITECTURE.md for the crate graph.

pub mod cli;
pub mod compare;
pub mod export;
pub mod owned;
pub mod render;
pub mod report;
