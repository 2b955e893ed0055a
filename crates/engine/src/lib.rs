//! `pipe-engine`: the workflow engine underneath `pipe`.
//!
//! Data flows one way: pipeline file -> [`spec`] -> [`plan`] (instances and their [`key`]s)
//! -> [`exec`] -> a stage kind's [`stage::StageKind::run`] -> [`store`]. The engine knows no
//! stage kind and nothing about machine learning: kinds plug in through
//! [`stage::StageKind`] and a [`stage::Registry`] the caller builds. See ARCHITECTURE.md.

pub mod error;
pub mod exec;
pub mod key;
pub mod plan;
pub mod resources;
pub mod runs;
pub mod select;
pub mod spec;
pub mod stage;
pub mod stamp;
pub mod status;
pub mod store;
pub mod table;
