//! `pipe`: a workflow engine for deep-learning experiments.
//!
//! Data flows one way: pipeline file -> [`spec`] -> [`plan`] -> [`exec`] -> stage kind
//! ([`stage::StageKind`], implemented in [`stages`]) -> [`store`]. See ARCHITECTURE.md.

pub mod cli;
pub mod datasets;
pub mod error;
pub mod exec;
pub mod export;
pub mod geometry;
pub mod plan;
pub mod render;
pub mod report;
pub mod spec;
pub mod stage;
pub mod stages;
pub mod status;
pub mod store;
pub mod table;
pub mod worker;
