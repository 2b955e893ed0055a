//! `pipe-kinds`: the stage kinds `pipe` ships.
//!
//! Both binaries depend on this crate and on nothing of each other: `pipe` (the command
//! line, export, report) registers the kinds and runs the ones that need no libtorch;
//! `pipe-torch` (the worker) reads the same typed parameters and writes the same tables for
//! the kinds that do. What is here:
//! - [`stages`]: one file per kind (its typed parameters, inputs, checks, parts, and its
//!   work or the hand-off to the worker), and the registry;
//! - [`tables`]: every table an artifact holds, declared once with its file name;
//! - [`worker`]: the protocol with `pipe-torch serve` and the pool of worker processes.

pub mod stages;
pub mod tables;
pub mod worker;
