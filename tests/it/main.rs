//! The integration tests: one test crate (one binary to link) that runs the real `pipe` and
//! `pipe-torch` binaries in temp folders. Each module is one area; a test's full name is
//! `MODULE::NAME`, so `cargo test --release --test it reliability::` runs one module.
//!
//! The tests share one process and run in parallel threads: none may change process-wide
//! state (environment variables, the current folder, signal handlers). Give a child
//! process what it needs through its `Command` (`Project::command` sets `PIPE_CACHE` and
//! the working folder) instead.
//!
//! The test pipelines that train (and `BASIC`, which most engine tests use) are files in
//! `tests/pipelines/`, each written once (see `common`).

mod common;

mod adversary;
mod analysis;
mod cache_marker;
mod compare;
mod consistency;
mod cutoff;
mod daily;
mod datasets;
mod detect;
mod double_descent;
mod engine;
mod imported_run;
mod interrupt;
mod leaks;
mod outputs;
mod own_model;
mod readers;
mod reaping;
mod records;
mod reliability;
mod remote;
mod report;
mod results;
mod serve;
mod slurm;
mod train;
