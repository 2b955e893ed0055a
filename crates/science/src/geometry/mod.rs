//! Geometry of layer representations: manifold capacity analysis and linear probes.
//!
//! - [`mftma`]: mean-field theoretic manifold analysis (capacity, radius, dimension and
//!   center correlation of class manifolds).
//! - [`linear_probe`](mod@linear_probe): accuracy of a ridge-regression linear classifier
//!   on features.
//! - [`nnls`]: the non-negative least squares solver the manifold analysis rests on.
//! - [`error`]: the error all of them return.
//!
//! Matrices are faer's ([`Mat`], [`MatRef`]); the linear algebra (QR, Cholesky,
//! triangular solves, products, symmetric eigendecomposition) is faer's too.

mod centers;
mod columns;
pub mod error;
pub mod linear_probe;
pub mod mftma;
pub mod nnls;
mod random;

pub use error::GeometryError;
/// faer's dense matrices, owned and borrowed: the inputs of every analysis here.
pub use faer::{Mat, MatRef};
pub use linear_probe::{
    LinearProbeOptions, LinearProbeResult, linear_probe, stratified_half_split,
};
pub use mftma::{
    ManifoldGeometry, MftmaOptions, MftmaResult, anchor_dimension, group_by_label,
    manifold_analysis, manifold_analysis_with_t, manifold_geometry,
};
pub use nnls::{GramNnls, NnlsInfo, nnls_gram};
