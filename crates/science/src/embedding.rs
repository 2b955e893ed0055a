//! 2-D embeddings of a point set: how a layer represents a few hundred to a few thousand
//! examples, drawn on a plane.
//!
//! - [`pca_2d`]: projection on the top two principal components.
//! - [`tsne_2d`]: exact t-SNE (van der Maaten & Hinton, 2008), seeded and deterministic.
//! - [`neighbour_agreement`]: per point, the fraction of its nearest 2-D neighbours that
//!   share its label (how well an embedding keeps classes together).
//!
//! Points come in as `f32` (activations as a network produces them), row-major `n x d`;
//! every computation is in `f64` and coordinates come out as `[f64; 2]`, one per point.
//!
//! Results depend on the input and options alone: never on the number of threads. The
//! parallel loops (over points) each compute one point's values in a fixed order, and
//! every sum across points is taken sequentially in point order; faer runs sequentially.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::simd::clear_upper_vector_state;

/// The most points [`tsne_2d`] accepts: it is exact, with an `n x n` matrix in memory
/// and `O(n^2)` work per iteration.
pub const TSNE_MAX_POINTS: usize = 5000;

/// Standard deviation of the first coordinate of t-SNE's starting points.
const INIT_STD: f64 = 1e-4;
/// Momentum of the t-SNE updates during early exaggeration, and after it.
const MOMENTUM: (f64, f64) = (0.5, 0.8);
/// Smallest gain of a t-SNE coordinate.
const MIN_GAIN: f64 = 0.01;
/// Tolerance (nats) of the bandwidth search.
const ENTROPY_TOL: f64 = 1e-5;
/// Most steps of the bandwidth search.
const BANDWIDTH_STEPS: usize = 200;
/// Columns per task of the parallel Gram products.
const GRAM_BLOCK: usize = 64;
/// Points per block of the t-SNE gradient's pair loop: one task computes the pairs of a
/// block's points with every later point.
const PAIR_BLOCK: usize = 64;
/// Independent accumulators per sum in the t-SNE gradient (lets the loop vectorize while
/// keeping a fixed summation order).
const LANES: usize = 4;

/// The points' coordinates on their top two principal components.
///
/// `x` holds `n` points of dimension `d`, row-major (`x[i * d + j]` is coordinate `j` of
/// point `i`). The columns are centered, then projected on the two directions of largest
/// variance: the first coordinate has the largest variance, the second the next. The
/// decomposition is the symmetric eigendecomposition of the smaller of the `n x n` Gram
/// matrix and the `d x d` covariance matrix.
///
/// Signs are fixed: in each coordinate, the point with the largest absolute value (the
/// lowest index among values within a relative 1e-9 of the largest) is positive, so
/// results do not flip between runs or platforms. A component the data do not have (the
/// second one for two points, points on a line or `d = 1`; both for one point, equal points
/// or `d = 0`) gives a coordinate of zero for every point; so does one whose variance is
/// negligible (below `16 m eps` times the first's, `m` the size of the decomposed matrix).
///
/// Errors: `x.len() != n * d`, or a value that is not finite.
pub fn pca_2d(x: &[f32], n: usize, d: usize) -> Result<Vec<[f64; 2]>, String> {
    check_points(x, n, d)?;
    let xc = centered(x, n, d);
    pca_of_centered(xc.as_ref(), None)
}

/// How [`tsne_2d`] places the points before optimizing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TsneInit {
    /// The [`pca_2d`] coordinates, scaled so that the first has standard deviation 1e-4.
    /// Deterministic: the seed is only used for a component the data do not have, which is
    /// drawn like [`TsneInit::Random`].
    #[default]
    Pca,
    /// Independent Gaussian coordinates of standard deviation 1e-4 drawn from a
    /// `ChaCha8Rng` seeded with [`TsneOptions::seed`].
    Random,
}

/// Settings of [`tsne_2d`]. The defaults are van der Maaten's (with scikit-learn's learning
/// rate).
#[derive(Clone, Debug, PartialEq)]
pub struct TsneOptions {
    /// Perplexity of each point's Gaussian neighbourhood in the input: roughly its number
    /// of effective neighbours (default 30). Needs more than `3 x perplexity` points.
    pub perplexity: f64,
    /// Gradient-descent iterations (default 1000).
    pub iterations: usize,
    /// Step size; `None` (default) for `max(n / early_exaggeration / 4, 50)`.
    pub learning_rate: Option<f64>,
    /// Factor on the input affinities during the first iterations (default 12).
    pub early_exaggeration: f64,
    /// Iterations with early exaggeration and momentum 0.5; momentum is 0.8 after them
    /// (default 250).
    pub exaggeration_iterations: usize,
    /// Starting points (default [`TsneInit::Pca`]).
    pub init: TsneInit,
    /// Seed of every random draw (see [`TsneInit`]); default 0.
    pub seed: u64,
}

impl Default for TsneOptions {
    fn default() -> Self {
        TsneOptions {
            perplexity: 30.0,
            iterations: 1000,
            learning_rate: None,
            early_exaggeration: 12.0,
            exaggeration_iterations: 250,
            init: TsneInit::Pca,
            seed: 0,
        }
    }
}

/// Exact t-SNE embedding of the points in 2-D.
///
/// `x` holds `n` points of dimension `d`, row-major, as for [`pca_2d`]. The input
/// affinities are Gaussian on squared Euclidean distances, with each point's bandwidth
/// found by binary search so that its conditional distribution has the requested
/// perplexity (entropy within 1e-5 nats of `ln(perplexity)`), then symmetrized:
/// `p_ij = (p_j|i + p_i|j) / 2n`. The map's affinities are Student-t (one degree of
/// freedom). The KL divergence is minimized by gradient descent with momentum and
/// per-coordinate gains (delta-bar-delta: a gain grows by 0.2 when the gradient's sign
/// opposes the previous step, else shrinks by a factor 0.8, never below 0.01), with early
/// exaggeration; see [`TsneOptions`]. The gradient is the true one, `4 sum_j (p_ij - q_ij)
/// (y_i - y_j) / (1 + |y_i - y_j|^2)`, so learning rates compare with scikit-learn's. The map
/// is recentered after each step.
///
/// The same input and options give bit-identical coordinates on a machine, whatever the
/// number of threads (see the module documentation).
///
/// Errors: `x.len() != n * d`, a value that is not finite, more than [`TSNE_MAX_POINTS`]
/// points, a perplexity that is not positive or above `(n - 1) / 3`, a learning rate
/// or exaggeration that is not positive, or a failed eigendecomposition.
pub fn tsne_2d(
    x: &[f32],
    n: usize,
    d: usize,
    options: &TsneOptions,
) -> Result<Vec<[f64; 2]>, String> {
    check_points(x, n, d)?;
    if n > TSNE_MAX_POINTS {
        return Err(format!(
            "t-SNE is exact here and takes at most {TSNE_MAX_POINTS} points, got {n}; \
             subsample the points"
        ));
    }
    let perplexity = options.perplexity;
    if !(perplexity.is_finite() && perplexity > 0.0) {
        return Err(format!(
            "perplexity must be a positive number, got {perplexity}"
        ));
    }
    if (n as f64) - 1.0 < 3.0 * perplexity {
        return Err(format!(
            "perplexity {perplexity} needs more than {} points (3 x perplexity), got {n}",
            3.0 * perplexity
        ));
    }
    let exaggeration = options.early_exaggeration;
    if !(exaggeration.is_finite() && exaggeration > 0.0) {
        return Err(format!(
            "early exaggeration must be a positive number, got {exaggeration}"
        ));
    }
    let learning_rate = match options.learning_rate {
        Some(rate) if rate.is_finite() && rate > 0.0 => rate,
        Some(rate) => {
            return Err(format!(
                "learning rate must be a positive number, got {rate}"
            ));
        }
        None => (n as f64 / exaggeration / 4.0).max(50.0),
    };

    let xc = centered(x, n, d);
    // Inner products of the centered points: the input distances, and the PCA when n <= d.
    let mut gram = outer_gram(xc.as_ref());
    let start = initial_map(xc.as_ref(), &gram, options)?;
    joint_probabilities(&mut gram, n, perplexity);
    let p = gram;
    Ok(optimize(&p, start, learning_rate, options))
}

/// For each point, the fraction of its `k` nearest neighbours in the plane that share its
/// label.
///
/// Neighbours are the other points (never the point itself) in increasing Euclidean
/// distance, ties broken by the lower index; `k` is capped at `n - 1`. Where that leaves no
/// neighbour (`k = 0`, or a single point) the fraction is NaN. A value of 1 means the
/// point's neighbourhood is pure; the mean over points summarizes how well an embedding
/// keeps the classes apart.
///
/// # Panics
///
/// If `coords` and `labels` differ in length.
pub fn neighbour_agreement(coords: &[[f64; 2]], labels: &[i64], k: usize) -> Vec<f64> {
    assert_eq!(
        coords.len(),
        labels.len(),
        "neighbour_agreement: {} points but {} labels",
        coords.len(),
        labels.len()
    );
    let n = coords.len();
    let k = k.min(n.saturating_sub(1));
    if k == 0 {
        return vec![f64::NAN; n];
    }
    (0..n)
        .into_par_iter()
        .map_init(
            || Vec::with_capacity(n),
            |others: &mut Vec<(f64, usize)>, i| {
                let [xi, yi] = coords[i];
                others.clear();
                others.extend((0..n).filter(|&j| j != i).map(|j| {
                    let [xj, yj] = coords[j];
                    ((xi - xj).powi(2) + (yi - yj).powi(2), j)
                }));
                others
                    .select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let same = others[..k]
                    .iter()
                    .filter(|&&(_, j)| labels[j] == labels[i])
                    .count();
                same as f64 / k as f64
            },
        )
        .collect()
}

/// Checks the shape and values of a row-major point set.
fn check_points(x: &[f32], n: usize, d: usize) -> Result<(), String> {
    let expected = n
        .checked_mul(d)
        .ok_or_else(|| format!("{n} points of dimension {d} are too many values"))?;
    if x.len() != expected {
        return Err(format!(
            "{n} points of dimension {d} need {expected} values, got {}",
            x.len()
        ));
    }
    if let Some(at) = x.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "coordinate {} of point {} is not finite ({})",
            at % d,
            at / d,
            x[at]
        ));
    }
    Ok(())
}

/// The points as an `n x d` matrix with centered columns (means summed in point order).
fn centered(x: &[f32], n: usize, d: usize) -> Mat<f64> {
    let mut means = vec![0.0f64; d];
    for i in 0..n {
        for (mean, &v) in means.iter_mut().zip(&x[i * d..(i + 1) * d]) {
            *mean += f64::from(v);
        }
    }
    for mean in &mut means {
        *mean /= n.max(1) as f64;
    }
    Mat::from_fn(n, d, |i, j| f64::from(x[i * d + j]) - means[j])
}

/// `a a^T` (`m x m` for `a` with `m` rows), column-major. Blocks of columns are computed
/// in parallel, each by a sequential product whose shape depends on `m` alone, so every
/// entry is the same whatever the number of threads.
fn outer_gram(a: MatRef<'_, f64>) -> Vec<f64> {
    let m = a.nrows();
    let mut out = vec![0.0; m * m];
    if m == 0 {
        return out;
    }
    out.par_chunks_mut(m * GRAM_BLOCK)
        .enumerate()
        .for_each(|(block, chunk)| {
            let width = chunk.len() / m;
            let dst = MatMut::from_column_major_slice_mut(chunk, m, width);
            let rhs = a.subrows(block * GRAM_BLOCK, width).transpose();
            matmul(dst, Accum::Replace, a, rhs, 1.0, Par::Seq);
            clear_upper_vector_state();
        });
    out
}

/// An eigenvalue and its unit eigenvector; `None` for a negligible or missing one.
type Eigenpair = Option<(f64, Vec<f64>)>;

/// The top two eigenpairs (eigenvalue clamped at zero, eigenvector) of the symmetric
/// `m x m` matrix `sym` (column-major, lower triangle read), largest first; a pair whose
/// eigenvalue is negligible (or that does not exist, `m < 2`) is `None`.
fn top_two_eigenpairs(sym: &[f64], m: usize) -> Result<[Eigenpair; 2], String> {
    let mut pairs = [None, None];
    if m == 0 {
        return Ok(pairs);
    }
    let a = MatRef::from_column_major_slice(sym, m, m);
    let mut s = Diag::<f64>::zeros(m);
    let mut u = Mat::<f64>::zeros(m, m);
    let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        m,
        ComputeEigenvectors::Yes,
        Par::Seq,
        Default::default(),
    ));
    let done = evd::self_adjoint_evd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| format!("eigendecomposition of a {m} x {m} matrix: {e:?}"));
    clear_upper_vector_state();
    done?;
    let s = s.column_vector();
    // Ascending eigenvalues: the largest is last.
    let largest = s[m - 1].max(0.0);
    let negligible = largest * m as f64 * 16.0 * f64::EPSILON;
    for (rank, pair) in pairs.iter_mut().enumerate().take(m) {
        let index = m - 1 - rank;
        let value = s[index].max(0.0);
        if largest > 0.0 && value > negligible {
            *pair = Some((value, u.col(index).iter().copied().collect()));
        }
    }
    Ok(pairs)
}

/// [`pca_2d`] of centered points, reusing their Gram matrix when given.
fn pca_of_centered(xc: MatRef<'_, f64>, gram: Option<&[f64]>) -> Result<Vec<[f64; 2]>, String> {
    let (n, d) = (xc.nrows(), xc.ncols());
    let mut coords = vec![[0.0; 2]; n];
    if n == 0 || d == 0 {
        return Ok(coords);
    }
    if n <= d {
        // Gram matrix X X^T = U S U^T: the coordinates are U sqrt(S).
        let owned;
        let gram = match gram {
            Some(g) => g,
            None => {
                owned = outer_gram(xc);
                &owned
            }
        };
        for (c, pair) in top_two_eigenpairs(gram, n)?.into_iter().enumerate() {
            if let Some((value, vector)) = pair {
                let scale = value.sqrt();
                for (point, v) in coords.iter_mut().zip(&vector) {
                    point[c] = v * scale;
                }
            }
        }
    } else {
        // Covariance X^T X = V S V^T: the coordinates are X V.
        let covariance = outer_gram(xc.transpose());
        for (c, pair) in top_two_eigenpairs(&covariance, d)?.into_iter().enumerate() {
            if let Some((_, vector)) = pair {
                let v = MatRef::from_column_major_slice(&vector, d, 1);
                let mut projected = Mat::<f64>::zeros(n, 1);
                matmul(projected.as_mut(), Accum::Replace, xc, v, 1.0, Par::Seq);
                clear_upper_vector_state();
                for (i, point) in coords.iter_mut().enumerate() {
                    point[c] = projected[(i, 0)];
                }
            }
        }
    }
    for c in 0..2 {
        fix_sign(&mut coords, c);
    }
    Ok(coords)
}

/// Flips coordinate `c` of every point if needed so that the point with the largest
/// absolute value in it (the lowest index among near-ties) is positive.
fn fix_sign(coords: &mut [[f64; 2]], c: usize) {
    let largest = coords.iter().map(|p| p[c].abs()).fold(0.0, f64::max);
    if largest == 0.0 {
        return;
    }
    let threshold = largest * (1.0 - 1e-9);
    if let Some(lead) = coords.iter().find(|p| p[c].abs() >= threshold)
        && lead[c] < 0.0
    {
        for p in coords.iter_mut() {
            p[c] = -p[c];
        }
    }
}

/// The starting map of t-SNE (see [`TsneInit`]).
fn initial_map(
    xc: MatRef<'_, f64>,
    gram: &[f64],
    options: &TsneOptions,
) -> Result<Vec<[f64; 2]>, String> {
    let n = xc.nrows();
    let mut map = vec![[0.0; 2]; n];
    let mut missing = [true, true];
    if options.init == TsneInit::Pca {
        map = pca_of_centered(xc, Some(gram))?;
        missing = [0, 1].map(|c| map.iter().all(|p| p[c] == 0.0));
        if !missing[0] {
            let mean = map.iter().map(|p| p[0]).sum::<f64>() / n as f64;
            let var = map.iter().map(|p| (p[0] - mean).powi(2)).sum::<f64>() / n as f64;
            let scale = INIT_STD / var.sqrt();
            for p in &mut map {
                p[0] *= scale;
                p[1] *= scale;
            }
        }
    }
    if missing.iter().any(|&m| m) {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        for p in &mut map {
            for c in 0..2 {
                if missing[c] {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    p[c] = INIT_STD * z;
                }
            }
        }
    }
    Ok(map)
}

/// Turns the Gram matrix of the centered points (`n x n`) into t-SNE's joint
/// probabilities `p_ij`, in place.
fn joint_probabilities(gram: &mut [f64], n: usize, perplexity: f64) {
    let norms: Vec<f64> = (0..n).map(|i| gram[i * n + i]).collect();
    let target = perplexity.ln();
    // Column i of the Gram matrix holds x_j . x_i for every j; it becomes p_{j|i}.
    gram.par_chunks_mut(n).enumerate().for_each_init(
        || vec![0.0; n],
        |dist, (i, row)| {
            clear_upper_vector_state();
            for (j, (dist, &g)) in dist.iter_mut().zip(row.iter()).enumerate() {
                *dist = if j == i {
                    0.0
                } else {
                    (norms[i] + norms[j] - 2.0 * g).max(0.0)
                };
            }
            conditional_probabilities(dist, i, target, row);
        },
    );
    let scale = 1.0 / (2.0 * n as f64);
    for i in 0..n {
        gram[i * n + i] = 0.0;
        for j in i + 1..n {
            let p = (gram[i * n + j] + gram[j * n + i]) * scale;
            gram[i * n + j] = p;
            gram[j * n + i] = p;
        }
    }
}

/// `p_{j|i}` for every `j` (0 for `j = i`) from the squared distances `dist` of point `i`,
/// with the bandwidth whose entropy is `target` (nats).
fn conditional_probabilities(dist: &[f64], i: usize, target: f64, out: &mut [f64]) {
    let nearest = dist
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, &v)| v)
        .fold(f64::INFINITY, f64::min);
    // Distances beyond the nearest: the weights exp(-beta * shifted) are at most 1 and
    // the nearest weighs 1, so no sum underflows; the distribution is unchanged.
    let shifted = |j: usize| dist[j] - nearest;
    let mean_shift = (0..dist.len())
        .filter(|&j| j != i)
        .map(shifted)
        .sum::<f64>()
        / (dist.len() - 1) as f64;
    let mut beta = if mean_shift > 0.0 {
        1.0 / mean_shift
    } else {
        1.0
    };
    let (mut low, mut high) = (0.0, f64::INFINITY);
    let mut total = 0.0;
    for _ in 0..BANDWIDTH_STEPS {
        total = 0.0;
        let mut weighted = 0.0;
        for (j, o) in out.iter_mut().enumerate() {
            if j == i {
                *o = 0.0;
                continue;
            }
            let s = shifted(j);
            let w = (-beta * s).exp();
            *o = w;
            total += w;
            weighted += s * w;
        }
        let entropy = total.ln() + beta * weighted / total;
        let excess = entropy - target;
        if excess.abs() < ENTROPY_TOL {
            break;
        }
        if excess > 0.0 {
            // Too flat: narrow the Gaussian.
            low = beta;
            beta = if high.is_finite() {
                (beta + high) / 2.0
            } else {
                beta * 2.0
            };
        } else {
            high = beta;
            beta = (beta + low) / 2.0;
        }
    }
    for o in out.iter_mut() {
        *o /= total;
    }
}

/// One point's sums over the other points, for the gradient: `attraction` =
/// sum p_ij q_ij (y_i - y_j), `repulsion` = sum q_ij^2 (y_i - y_j) and `q_sum` = sum q_ij,
/// with q_ij = 1 / (1 + |y_i - y_j|^2) unnormalized.
#[derive(Clone, Copy, Default)]
struct PointSums {
    attraction: [f64; 2],
    repulsion: [f64; 2],
    q_sum: f64,
}

impl PointSums {
    /// Adds `other` term by term.
    fn add(&mut self, other: &PointSums) {
        for c in 0..2 {
            self.attraction[c] += other.attraction[c];
            self.repulsion[c] += other.repulsion[c];
        }
        self.q_sum += other.q_sum;
    }
}

/// Five sums for the gradient, `N` at a time: `ax`, `ay` (attraction), `rx`, `ry`
/// (repulsion) and `q`, each an array (struct of arrays, so the pair loop vectorizes).
#[derive(Clone)]
struct Sums<const N: usize> {
    ax: [f64; N],
    ay: [f64; N],
    rx: [f64; N],
    ry: [f64; N],
    q: [f64; N],
}

impl<const N: usize> Default for Sums<N> {
    fn default() -> Self {
        Sums {
            ax: [0.0; N],
            ay: [0.0; N],
            rx: [0.0; N],
            ry: [0.0; N],
            q: [0.0; N],
        }
    }
}

/// Lane accumulators of one point's [`PointSums`] (its row of pairs).
type Lanes = Sums<LANES>;

impl Lanes {
    #[inline(always)]
    fn sums(&self) -> PointSums {
        let total = |v: &[f64; LANES]| v.iter().sum::<f64>();
        PointSums {
            attraction: [total(&self.ax), total(&self.ay)],
            repulsion: [total(&self.rx), total(&self.ry)],
            q_sum: total(&self.q),
        }
    }
}

/// The other side's sums of a tile's pairs: one [`PointSums`] per point of a column block.
type ColumnSums = Sums<PAIR_BLOCK>;

impl ColumnSums {
    /// Point `k` of the block's sums.
    fn get(&self, k: usize) -> PointSums {
        PointSums {
            attraction: [self.ax[k], self.ay[k]],
            repulsion: [self.rx[k], self.ry[k]],
            q_sum: self.q[k],
        }
    }
}

/// The pairs of point `(xi, yi)` with the points `(xs[k], ys[k])` of affinities `p[k]`:
/// each pair's terms are computed once and added to the row's `lanes` (point `k` in lane
/// `k % LANES`) and, with the opposite sign where they have one, to `cols[from + k]`.
///
/// The AVX2 kernel runs when `allow_avx2` and the CPU has AVX2 (the tests compare both
/// paths). Every lane takes the same operations in the same order on every path, so the
/// bits do not depend on the CPU.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn add_pairs(
    allow_avx2: bool,
    lanes: &mut Lanes,
    cols: &mut ColumnSums,
    from: usize,
    yi: (f64, f64),
    p: &[f64],
    xs: &[f64],
    ys: &[f64],
) {
    let len = p.len();
    assert!(xs.len() == len && ys.len() == len && from + len <= PAIR_BLOCK);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if allow_avx2 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above; the lengths were checked above.
        done = unsafe { add_pairs_avx2(lanes, cols, from, yi, p, xs, ys) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = allow_avx2;
    for k in done..len {
        pair_term(lanes, cols, k % LANES, from + k, yi, p[k], xs[k], ys[k]);
    }
}

/// One pair's terms: point `(xi, yi)`'s in lane `l` of `lanes`, the other point's (at
/// `(x, y)`, affinity `p`) in `cols[at]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pair_term(
    lanes: &mut Lanes,
    cols: &mut ColumnSums,
    l: usize,
    at: usize,
    (xi, yi): (f64, f64),
    p: f64,
    x: f64,
    y: f64,
) {
    let (dx, dy) = (xi - x, yi - y);
    let q = 1.0 / (1.0 + dx * dx + dy * dy);
    let pq = p * q;
    let qq = q * q;
    let (a, b, c, d) = (pq * dx, pq * dy, qq * dx, qq * dy);
    lanes.ax[l] += a;
    lanes.ay[l] += b;
    lanes.rx[l] += c;
    lanes.ry[l] += d;
    lanes.q[l] += q;
    cols.ax[at] -= a;
    cols.ay[at] -= b;
    cols.rx[at] -= c;
    cols.ry[at] -= d;
    cols.q[at] += q;
}

/// [`add_pairs`] on whole groups of [`LANES`] points with AVX2, the operations of
/// [`pair_term`] in the same order; returns how many points it took.
///
/// # Safety
///
/// The CPU has AVX2; `xs` and `ys` are as long as `p`, and `from + p.len() <= PAIR_BLOCK`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_pairs_avx2(
    lanes: &mut Lanes,
    cols: &mut ColumnSums,
    from: usize,
    (xi, yi): (f64, f64),
    p: &[f64],
    xs: &[f64],
    ys: &[f64],
) -> usize {
    use std::arch::x86_64::*;
    const { assert!(LANES == 4) };
    let whole = p.len() - p.len() % LANES;
    let (xi, yi, one) = (_mm256_set1_pd(xi), _mm256_set1_pd(yi), _mm256_set1_pd(1.0));
    // SAFETY (every load and store): `k + LANES <= whole <= p.len()`, the lengths of `xs`
    // and `ys`, and `from + k + LANES <= PAIR_BLOCK`, the length of each column array.
    unsafe {
        let mut ax = _mm256_loadu_pd(lanes.ax.as_ptr());
        let mut ay = _mm256_loadu_pd(lanes.ay.as_ptr());
        let mut rx = _mm256_loadu_pd(lanes.rx.as_ptr());
        let mut ry = _mm256_loadu_pd(lanes.ry.as_ptr());
        let mut qs = _mm256_loadu_pd(lanes.q.as_ptr());
        let column = |v: &mut [f64; PAIR_BLOCK], k: usize| v.as_mut_ptr().add(from + k);
        let mut k = 0;
        while k < whole {
            let dx = _mm256_sub_pd(xi, _mm256_loadu_pd(xs.as_ptr().add(k)));
            let dy = _mm256_sub_pd(yi, _mm256_loadu_pd(ys.as_ptr().add(k)));
            let d2 = _mm256_add_pd(
                _mm256_add_pd(one, _mm256_mul_pd(dx, dx)),
                _mm256_mul_pd(dy, dy),
            );
            let q = _mm256_div_pd(one, d2);
            let pq = _mm256_mul_pd(_mm256_loadu_pd(p.as_ptr().add(k)), q);
            let qq = _mm256_mul_pd(q, q);
            let (a, b) = (_mm256_mul_pd(pq, dx), _mm256_mul_pd(pq, dy));
            let (c, d) = (_mm256_mul_pd(qq, dx), _mm256_mul_pd(qq, dy));
            ax = _mm256_add_pd(ax, a);
            ay = _mm256_add_pd(ay, b);
            rx = _mm256_add_pd(rx, c);
            ry = _mm256_add_pd(ry, d);
            qs = _mm256_add_pd(qs, q);
            for (v, t, add) in [
                (&mut cols.ax, a, false),
                (&mut cols.ay, b, false),
                (&mut cols.rx, c, false),
                (&mut cols.ry, d, false),
                (&mut cols.q, q, true),
            ] {
                let at = column(v, k);
                let old = _mm256_loadu_pd(at);
                let new = if add {
                    _mm256_add_pd(old, t)
                } else {
                    _mm256_sub_pd(old, t)
                };
                _mm256_storeu_pd(at, new);
            }
            k += LANES;
        }
        _mm256_storeu_pd(lanes.ax.as_mut_ptr(), ax);
        _mm256_storeu_pd(lanes.ay.as_mut_ptr(), ay);
        _mm256_storeu_pd(lanes.rx.as_mut_ptr(), rx);
        _mm256_storeu_pd(lanes.ry.as_mut_ptr(), ry);
        _mm256_storeu_pd(lanes.q.as_mut_ptr(), qs);
    }
    whole
}

/// Block `block`'s share of every point's [`PointSums`]: the pairs `(i, j)` with `i` in
/// the block and `j > i`. Each point `i` of the block gets its terms with every later
/// point in `rows[i - start]`; the later points get theirs in `cols[b]` for block `b`
/// (block `block` itself included, for the pairs inside it).
fn block_pair_sums(
    block: usize,
    p: &[f64],
    xs: &[f64],
    ys: &[f64],
    rows: &mut [PointSums],
    cols: &mut [ColumnSums],
) {
    let n = xs.len();
    let start = block * PAIR_BLOCK;
    for c in cols.iter_mut() {
        *c = ColumnSums::default();
    }
    for (r, row) in rows.iter_mut().enumerate() {
        let i = start + r;
        let yi = (xs[i], ys[i]);
        let p_row = &p[i * n..(i + 1) * n];
        let mut lanes = Lanes::default();
        for (b, col) in cols.iter_mut().enumerate().skip(block) {
            let first = if b == block { i + 1 } else { b * PAIR_BLOCK };
            let end = ((b + 1) * PAIR_BLOCK).min(n);
            if first < end {
                let from = first - b * PAIR_BLOCK;
                add_pairs(
                    true,
                    &mut lanes,
                    col,
                    from,
                    yi,
                    &p_row[first..end],
                    &xs[first..end],
                    &ys[first..end],
                );
            }
        }
        *row = lanes.sums();
    }
}

/// Every point's [`PointSums`] for the map `(xs, ys)` and joint probabilities `p`
/// (`n x n`, symmetric), each pair's terms computed once.
///
/// The pairs are cut into blocks of [`PAIR_BLOCK`] rows, one task each; a point's sums
/// are then added in a fixed order (its own row, then the blocks' columns in block order),
/// so the result does not depend on the number of threads. `cols` is scratch space of
/// `blocks x blocks` column sums.
fn pair_sums(p: &[f64], xs: &[f64], ys: &[f64], sums: &mut [PointSums], cols: &mut [ColumnSums]) {
    let n = xs.len();
    let blocks = n.div_ceil(PAIR_BLOCK);
    sums.par_chunks_mut(PAIR_BLOCK)
        .zip(cols.par_chunks_mut(blocks))
        .enumerate()
        .for_each(|(block, (rows, cols))| {
            clear_upper_vector_state();
            block_pair_sums(block, p, xs, ys, rows, cols);
        });
    let cols = &*cols;
    sums.par_chunks_mut(PAIR_BLOCK)
        .enumerate()
        .for_each(|(block, rows)| {
            for (k, row) in rows.iter_mut().enumerate() {
                for from in 0..=block {
                    row.add(&cols[from * blocks + block].get(k));
                }
            }
        });
}

/// Gradient descent on the KL divergence from the joint probabilities `p` (`n x n`).
fn optimize(
    p: &[f64],
    start: Vec<[f64; 2]>,
    learning_rate: f64,
    options: &TsneOptions,
) -> Vec<[f64; 2]> {
    let n = start.len();
    let mut xs: Vec<f64> = start.iter().map(|p| p[0]).collect();
    let mut ys: Vec<f64> = start.iter().map(|p| p[1]).collect();
    let mut step = vec![[0.0f64; 2]; n];
    let mut gains = vec![[1.0f64; 2]; n];
    let mut sums = vec![PointSums::default(); n];
    let blocks = n.div_ceil(PAIR_BLOCK);
    let mut cols = vec![ColumnSums::default(); blocks * blocks];
    clear_upper_vector_state();
    for iteration in 0..options.iterations {
        let early = iteration < options.exaggeration_iterations;
        let exaggeration = if early {
            options.early_exaggeration
        } else {
            1.0
        };
        let momentum = if early { MOMENTUM.0 } else { MOMENTUM.1 };
        pair_sums(p, &xs, &ys, &mut sums, &mut cols);
        let q_total: f64 = sums.iter().map(|s| s.q_sum).sum();
        for i in 0..n {
            let s = &sums[i];
            for c in 0..2 {
                let gradient = 4.0 * (exaggeration * s.attraction[c] - s.repulsion[c] / q_total);
                let gain = &mut gains[i][c];
                *gain = if gradient * step[i][c] < 0.0 {
                    *gain + 0.2
                } else {
                    (*gain * 0.8).max(MIN_GAIN)
                };
                step[i][c] = momentum * step[i][c] - learning_rate * *gain * gradient;
            }
            xs[i] += step[i][0];
            ys[i] += step[i][1];
        }
        let mean_x = xs.iter().sum::<f64>() / n as f64;
        let mean_y = ys.iter().sum::<f64>() / n as f64;
        xs.iter_mut().for_each(|v| *v -= mean_x);
        ys.iter_mut().for_each(|v| *v -= mean_y);
    }
    xs.into_iter().zip(ys).map(|(x, y)| [x, y]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row-major points from f64 rows (every value used is exact in f32).
    fn flat(rows: &[Vec<f64>]) -> Vec<f32> {
        rows.iter().flatten().map(|&v| v as f32).collect()
    }

    fn distance(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    fn variance(coords: &[[f64; 2]], c: usize) -> f64 {
        let n = coords.len() as f64;
        let mean = coords.iter().map(|p| p[c]).sum::<f64>() / n;
        coords.iter().map(|p| (p[c] - mean).powi(2)).sum::<f64>() / n
    }

    /// Points `a u + b v + o` of a 2-D plane in 10-D, all exact in f32.
    fn plane_points(n: usize) -> Vec<Vec<f64>> {
        let u = [1.0, 2.0, 0.0, -1.0, 3.0, 0.0, 1.0, 0.0, 0.0, 2.0];
        let v = [0.0, 1.0, -2.0, 1.0, 0.0, 1.0, 0.0, 3.0, -1.0, 0.0];
        let o = [5.0, -3.0, 2.0, 0.0, 1.0, 7.0, -4.0, 2.0, 0.0, 1.0];
        (0..n)
            .map(|i| {
                let a = ((i * 7) % 13) as f64 / 4.0 - 1.5;
                let b = ((i * 5) % 11) as f64 / 8.0 - 0.625;
                (0..10).map(|k| a * u[k] + b * v[k] + o[k]).collect()
            })
            .collect()
    }

    #[test]
    fn pca_recovers_the_distances_of_points_on_a_plane() {
        // 6 points (Gram path, n <= d) and 40 points (covariance path, d < n).
        for n in [6, 40] {
            let rows = plane_points(n);
            let coords = pca_2d(&flat(&rows), n, 10).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let expected = distance(&rows[i], &rows[j]);
                    let got = distance(&coords[i], &coords[j]);
                    assert!(
                        (expected - got).abs() < 1e-9,
                        "n = {n}, points {i}, {j}: {got} instead of {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn pca_orders_components_by_variance_and_fixes_signs() {
        // ±3 u1, ±2 u2, ±1 u3 for orthonormal u1, u2, u3 of R^4: the components are u1
        // then u2, and in each the first point of the largest pair (a tie) is positive.
        let u = [
            [0.5, 0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5, -0.5],
            [0.5, 0.5, -0.5, -0.5],
        ];
        let mut rows = Vec::new();
        for (k, scale) in [3.0, 2.0, 1.0].into_iter().enumerate() {
            for sign in [-1.0, 1.0] {
                rows.push(u[k].iter().map(|v| sign * scale * v).collect::<Vec<f64>>());
            }
        }
        let coords = pca_2d(&flat(&rows), 6, 4).unwrap();
        // Rows: -3 u1, 3 u1, -2 u2, 2 u2, -u3, u3.
        let expected = [
            [3.0, 0.0],
            [-3.0, 0.0],
            [0.0, 2.0],
            [0.0, -2.0],
            [0.0, 0.0],
            [0.0, 0.0],
        ];
        for (got, want) in coords.iter().zip(&expected) {
            assert!(
                (got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12,
                "{coords:?}"
            );
        }
    }

    #[test]
    fn pca_first_component_has_the_most_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, d) = (50, 8);
        let x: Vec<f32> = (0..n * d)
            .map(|k| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * (1.0 + (k % d) as f64)) as f32
            })
            .collect();
        let coords = pca_2d(&x, n, d).unwrap();
        let (v0, v1) = (variance(&coords, 0), variance(&coords, 1));
        assert!(v0 >= v1 && v1 > 0.0);
        // No direction (here: 200 random ones) beats the first component.
        let rows: Vec<Vec<f64>> = x
            .chunks(d)
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect();
        for _ in 0..200 {
            let w: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
            let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
            let projected: Vec<[f64; 2]> = rows
                .iter()
                .map(|r| {
                    [
                        r.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / norm,
                        0.0,
                    ]
                })
                .collect();
            assert!(variance(&projected, 0) <= v0 * (1.0 + 1e-12));
        }
        // Sign conventions make the result independent of the data's orientation.
        let negated: Vec<f32> = x.iter().map(|v| -v).collect();
        let again = pca_2d(&negated, n, d).unwrap();
        for (a, b) in coords.iter().zip(&again) {
            assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn pca_handles_degenerate_inputs() {
        assert_eq!(pca_2d(&[], 0, 3).unwrap(), Vec::<[f64; 2]>::new());
        assert_eq!(pca_2d(&[1.0, 2.0], 1, 2).unwrap(), vec![[0.0, 0.0]]);
        assert_eq!(pca_2d(&[], 3, 0).unwrap(), vec![[0.0, 0.0]; 3]);
        // Two points: one component, half their distance (5) each side.
        let two = pca_2d(&[0.0, 0.0, 3.0, 4.0], 2, 2).unwrap();
        assert!((two[0][0] - 2.5).abs() < 1e-12 && (two[1][0] + 2.5).abs() < 1e-12);
        assert_eq!([two[0][1], two[1][1]], [0.0, 0.0]);
        // Equal points, then points on a line (both through the Gram and covariance paths).
        assert_eq!(pca_2d(&[1.5; 12], 4, 3).unwrap(), vec![[0.0, 0.0]; 4]);
        for (n, d) in [(3, 5), (8, 2)] {
            let x: Vec<f32> = (0..n * d).map(|k| ((k / d) * (k % d + 1)) as f32).collect();
            let coords = pca_2d(&x, n, d).unwrap();
            assert!(coords.iter().all(|p| p[1] == 0.0), "{coords:?}");
            assert!(variance(&coords, 0) > 0.0);
        }
        assert!(
            pca_2d(&[1.0, 2.0, 3.0], 2, 2)
                .unwrap_err()
                .contains("need 4 values")
        );
        assert!(
            pca_2d(&[1.0, f32::NAN], 1, 2)
                .unwrap_err()
                .contains("not finite")
        );
    }

    /// `blobs` Gaussian blobs of `per_blob` points in `d` dimensions (unit noise, centers
    /// 20 apart along the axes), with their labels.
    fn blobs(blobs: usize, per_blob: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for i in 0..blobs * per_blob {
            let blob = i % blobs;
            for k in 0..d {
                let z: f64 = StandardNormal.sample(&mut rng);
                let center = if k == blob % d { 20.0 } else { 0.0 };
                x.push((center + z) as f32);
            }
            labels.push(blob as i64);
        }
        (x, labels)
    }

    fn bits(coords: &[[f64; 2]]) -> Vec<[u64; 2]> {
        coords
            .iter()
            .map(|p| [p[0].to_bits(), p[1].to_bits()])
            .collect()
    }

    #[test]
    fn tsne_separates_blobs_deterministically() {
        let (n, d) = (180, 50);
        let (x, labels) = blobs(3, 60, d, 7);
        let options = TsneOptions::default();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| tsne_2d(&x, n, d, &options).unwrap())
        };
        let coords = run(2);
        let agreement = neighbour_agreement(&coords, &labels, 5);
        assert!(agreement.iter().all(|&a| a == 1.0), "{agreement:?}");
        // The map spreads out (it starts at a scale of 1e-4).
        assert!(variance(&coords, 0) + variance(&coords, 1) > 1.0);
        assert_eq!(bits(&coords), bits(&run(1)));
        assert_eq!(bits(&coords), bits(&run(3)));
    }

    #[test]
    fn tsne_random_start_depends_on_the_seed_alone() {
        let (n, d) = (40, 5);
        let (x, _) = blobs(2, 20, d, 1);
        let options = |seed| TsneOptions {
            perplexity: 5.0,
            iterations: 100,
            init: TsneInit::Random,
            seed,
            ..TsneOptions::default()
        };
        let a = tsne_2d(&x, n, d, &options(1)).unwrap();
        assert_eq!(bits(&a), bits(&tsne_2d(&x, n, d, &options(1)).unwrap()));
        assert_ne!(bits(&a), bits(&tsne_2d(&x, n, d, &options(2)).unwrap()));
    }

    #[test]
    fn tsne_with_more_dimensions_than_points() {
        // The PCA start comes from the Gram matrix shared with the affinities.
        let (n, d) = (30, 64);
        let (x, labels) = blobs(2, 15, d, 5);
        let options = TsneOptions {
            perplexity: 5.0,
            ..TsneOptions::default()
        };
        let xc = centered(&x, n, d);
        let start = initial_map(xc.as_ref(), &outer_gram(xc.as_ref()), &options).unwrap();
        let pca = pca_2d(&x, n, d).unwrap();
        let scale = INIT_STD / variance(&pca, 0).sqrt();
        for (a, b) in start.iter().zip(&pca) {
            assert!((a[0] - b[0] * scale).abs() < 1e-15 && (a[1] - b[1] * scale).abs() < 1e-15);
        }
        let coords = tsne_2d(&x, n, d, &options).unwrap();
        let agreement = neighbour_agreement(&coords, &labels, 3);
        assert!(agreement.iter().all(|&a| a == 1.0), "{agreement:?}");
    }

    #[test]
    fn tsne_handles_equal_points() {
        // No PCA component: the start is drawn from the seed and nothing is NaN.
        let options = TsneOptions {
            perplexity: 2.0,
            iterations: 50,
            ..TsneOptions::default()
        };
        let coords = tsne_2d(&[0.5; 30], 10, 3, &options).unwrap();
        assert!(coords.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
    }

    #[test]
    fn tsne_rejects_bad_input() {
        let (x, _) = blobs(2, 25, 3, 2);
        let err = tsne_2d(&x, 50, 3, &TsneOptions::default()).unwrap_err();
        assert_eq!(
            err,
            "perplexity 30 needs more than 90 points (3 x perplexity), got 50"
        );
        let bad = |options: TsneOptions| tsne_2d(&x, 50, 3, &options).unwrap_err();
        assert!(
            bad(TsneOptions {
                perplexity: 0.0,
                ..TsneOptions::default()
            })
            .contains("perplexity must be a positive number")
        );
        assert!(
            bad(TsneOptions {
                perplexity: 5.0,
                learning_rate: Some(-1.0),
                ..TsneOptions::default()
            })
            .contains("learning rate")
        );
        let many = vec![0.0f32; TSNE_MAX_POINTS + 1];
        let err = tsne_2d(&many, TSNE_MAX_POINTS + 1, 1, &TsneOptions::default()).unwrap_err();
        assert!(err.contains("at most 5000 points, got 5001"), "{err}");
        assert!(tsne_2d(&x, 50, 4, &TsneOptions::default()).is_err());
    }

    #[test]
    fn the_avx2_pair_kernel_gives_the_portable_bits() {
        // Every length from 0 to a whole block, at every offset that fits.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut draw = |scale: f64| -> f64 {
            let z: f64 = StandardNormal.sample(&mut rng);
            z * scale
        };
        let xs: Vec<f64> = (0..PAIR_BLOCK).map(|_| draw(5.0)).collect();
        let ys: Vec<f64> = (0..PAIR_BLOCK).map(|_| draw(5.0)).collect();
        let p: Vec<f64> = (0..PAIR_BLOCK).map(|_| draw(1e-3).abs()).collect();
        for len in [0, 1, 3, 4, 5, 17, PAIR_BLOCK - 1, PAIR_BLOCK] {
            for from in [0, 1, 2, 3, PAIR_BLOCK - len] {
                if from + len > PAIR_BLOCK {
                    continue;
                }
                let run = |avx2: bool| {
                    let (mut lanes, mut cols) = (Lanes::default(), ColumnSums::default());
                    let yi = (0.25, -1.5);
                    let (p, x, y) = (&p[..len], &xs[..len], &ys[..len]);
                    add_pairs(avx2, &mut lanes, &mut cols, from, yi, p, x, y);
                    let row = lanes.sums();
                    let mut all = vec![row.attraction[0], row.attraction[1], row.q_sum];
                    all.extend(row.repulsion);
                    for v in [&cols.ax, &cols.ay, &cols.rx, &cols.ry, &cols.q] {
                        all.extend_from_slice(v);
                    }
                    all.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(run(true), run(false), "len {len}, from {from}");
            }
        }
    }

    #[test]
    fn tsne_gradient_sums_match_the_pairwise_formula() {
        // 150 points: two whole blocks and a part; the sums against a direct double loop.
        let n = 150;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut draw = || -> f64 { StandardNormal.sample(&mut rng) };
        let xs: Vec<f64> = (0..n).map(|_| 3.0 * draw()).collect();
        let ys: Vec<f64> = (0..n).map(|_| 3.0 * draw()).collect();
        let mut p = vec![0.0; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let v = draw().abs() / (n * n) as f64;
                p[i * n + j] = v;
                p[j * n + i] = v;
            }
        }
        let blocks = n.div_ceil(PAIR_BLOCK);
        let mut sums = vec![PointSums::default(); n];
        let mut cols = vec![ColumnSums::default(); blocks * blocks];
        pair_sums(&p, &xs, &ys, &mut sums, &mut cols);
        for i in 0..n {
            let mut expected = [0.0f64; 5];
            for j in (0..n).filter(|&j| j != i) {
                let (dx, dy) = (xs[i] - xs[j], ys[i] - ys[j]);
                let q = 1.0 / (1.0 + dx * dx + dy * dy);
                let pq = p[i * n + j] * q;
                expected[0] += pq * dx;
                expected[1] += pq * dy;
                expected[2] += q * q * dx;
                expected[3] += q * q * dy;
                expected[4] += q;
            }
            let s = &sums[i];
            let got = [
                s.attraction[0],
                s.attraction[1],
                s.repulsion[0],
                s.repulsion[1],
                s.q_sum,
            ];
            for (g, e) in got.iter().zip(&expected) {
                assert!(
                    (g - e).abs() <= 1e-12 * e.abs().max(1e-3),
                    "point {i}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn neighbour_agreement_on_a_line() {
        // Points at 0, 1, 2 and 10; point 1 is as close to 0 as to 2 (the lower index
        // wins the tie).
        let coords = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0]];
        let labels = [1, 1, 2, 2];
        assert_eq!(
            neighbour_agreement(&coords, &labels, 1),
            vec![1.0, 1.0, 0.0, 1.0]
        );
        assert_eq!(
            neighbour_agreement(&coords, &labels, 2),
            vec![0.5, 0.5, 0.0, 0.5]
        );
        let third = 1.0 / 3.0;
        assert_eq!(neighbour_agreement(&coords, &labels, 3), vec![third; 4]);
        assert_eq!(neighbour_agreement(&coords, &labels, 10), vec![third; 4]);
        assert!(
            neighbour_agreement(&coords, &labels, 0)
                .iter()
                .all(|a| a.is_nan())
        );
        assert!(neighbour_agreement(&[[0.0, 0.0]], &[3], 5)[0].is_nan());
    }

    /// Run with `cargo test -p pipe-science --release embedding -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing"]
    fn tsne_timing_1000_points_512_dimensions() {
        timing(1000, 512);
    }

    /// The largest case of the stage: more dimensions than points.
    #[test]
    #[ignore = "timing"]
    fn tsne_timing_2000_points_5000_dimensions() {
        timing(2000, 5000);
    }

    /// Prints the time of `pca_2d` and `tsne_2d` (default options) on 10 blobs.
    fn timing(n: usize, d: usize) {
        let (x, labels) = blobs(10, n / 10, d, 11);
        let started = std::time::Instant::now();
        let pca = pca_2d(&x, n, d).unwrap();
        let pca_time = started.elapsed();
        let started = std::time::Instant::now();
        let setup = TsneOptions {
            iterations: 0,
            ..TsneOptions::default()
        };
        tsne_2d(&x, n, d, &setup).unwrap();
        let setup_time = started.elapsed();
        let started = std::time::Instant::now();
        let coords = tsne_2d(&x, n, d, &TsneOptions::default()).unwrap();
        let tsne_time = started.elapsed();
        let mean = |a: Vec<f64>| a.iter().sum::<f64>() / a.len() as f64;
        println!(
            "n = {n}, d = {d}, {} threads: pca_2d {pca_time:?} (agreement {:.3}), \
             tsne_2d {tsne_time:?} (agreement {:.3}; {setup_time:?} before the iterations)",
            rayon::current_num_threads(),
            mean(neighbour_agreement(&pca, &labels, 5)),
            mean(neighbour_agreement(&coords, &labels, 5)),
        );
    }
}
