//! Seeded random streams: every random draw of the geometry module comes from one of
//! these, so results depend on the seed alone, never on the number of threads.

use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// What a stream is drawn for; part of its seed, so that purposes never share numbers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// The Gaussian vectors `t` of one manifold (index: the manifold).
    GaussianVectors = 1,
    /// The starting point of one center-subspace optimization (index: `K` and restart).
    SubspaceRestart = 2,
}

/// An independent `ChaCha8Rng` for `(seed, purpose, index)`.
pub(crate) fn stream(seed: u64, purpose: Purpose, index: u64) -> ChaCha8Rng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    bytes[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(bytes)
}

/// A `rows x cols` matrix of standard Gaussian entries, drawn column by column.
pub(crate) fn gaussian_matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Mat<f64> {
    let mut m = Mat::zeros(rows, cols);
    for j in 0..cols {
        for v in m.col_as_slice_mut(j) {
            *v = StandardNormal.sample(rng);
        }
    }
    m
}
