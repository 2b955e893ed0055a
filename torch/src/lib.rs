//! The libtorch side of `pipe`: models with named layers, data loading, optimizers, the
//! training loop, checkpoints, and the stage implementations the `pipe-torch` worker runs.
//!
//! The engine never links this crate: `pipe` hands instances of libtorch stage kinds to the
//! `pipe-torch` binary (see `pipe_kinds::worker`), whose [`serve`] loop runs each job through
//! [`stages::run_job`].

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod models;
pub mod optim;
pub mod records;
pub mod rng;
pub mod score;
pub mod script;
pub mod serve;
pub mod stages;
pub mod stop;
pub mod tensors;
pub mod trainer;
