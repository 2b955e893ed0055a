//! `pipe-science`: the measurements and data readers behind pipe's stage kinds.
//!
//! [`geometry`] computes manifold capacity, radius and dimension (MFTMA), NNLS and linear
//! probes on plain matrices; [`datasets`] reads IDX (MNIST, Fashion-MNIST) and CIFAR
//! binary files; [`embedding`] draws a point set in 2-D (PCA, exact t-SNE) and scores how
//! well a drawing keeps labels together; [`detection`] scores examples as likely mislabeled
//! from training dynamics and judges the ranking (AUROC, average precision). Nothing here knows the engine (pipelines, keys,
//! the store) or libtorch.

pub mod datasets;
pub mod detection;
pub mod embedding;
pub mod geometry;
mod simd;
