//! The one trait through which stage kinds plug into the engine, and its parameter schema.
//!
//! The engine (spec, plan, store, executor) only ever sees `&'static dyn StageKind`:
//! it validates parameters against [`StageKind::params`], hashes what the kind declares
//! into the key, and calls [`StageKind::run`] with a [`RunContext`]. What a kind does
//! inside `run` (load images, train a network) is invisible to it.
//!
//! One concern per file: `params` (the schema and resolved values), `declare` (the
//! `stage_params!` and `param_enum!` macros), `kind` (the traits and the registry),
//! `parts` (keying an instance's parts), `context` (what `run` sees) and `process`
//! (starting, waiting for and stopping the commands a stage runs, under the supervisors of
//! the `pipe-reap` crate, which kill every descendant of a command). Everything is re-exported here, so paths are
//! `pipe_engine::stage::Name`.

mod context;
mod declare;
mod kind;
mod params;
mod parts;
mod process;

pub use context::{BadData, InputArtifact, RunContext};
pub use kind::{CheckEnv, DeclaredFile, InputInfo, Inputs, Kind, Registry, Slot, StageKind};
pub use params::{
    KindParams, ParamError, ParamSpec, ParamType, ParamValue, Params, Presence, Scalar,
    default_literal, json_type, keep_typed_views,
};
pub use parts::{InputIdentities, InputParts, KeyInputs, Part};
pub use process::{NotStarted, Supervised, SupervisedChild, TimedOut, kill_live_groups, stopping};
