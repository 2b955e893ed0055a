//! `pipe-science`: the measurements and data readers behind pipe's stage kinds.
//!
//! [`geometry`] computes manifold capacity, radius and dimension (MFTMA), NNLS and linear
//! probes on plain matrices; [`datasets`] reads IDX (MNIST, Fashion-MNIST) and CIFAR
//! binary files. Nothing here knows the engine (pipelines, keys, the store) or libtorch.

pub mod datasets;
pub mod geometry;
