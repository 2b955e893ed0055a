//! Mean-field theoretic manifold analysis (MFTMA): capacity, radius and dimension of class
//! manifolds, and the correlation of their centers.
//!
//! References: S. Chung, D. D. Lee and H. Sompolinsky, "Classification and geometry of
//! general perceptual manifolds", Phys. Rev. X 8, 031003 (2018); U. Cohen, S. Chung,
//! D. D. Lee and H. Sompolinsky, "Separability and geometry of object manifolds in deep
//! neural networks", Nat. Commun. 11, 746 (2020).
//!
//! Input: `P` manifolds, each an `N x M_i` matrix whose columns are its points (all in the
//! same `N`-dimensional feature space). [`group_by_label`] builds them from an
//! `examples x features` matrix and one label per example.
//!
//! Steps, as [`manifold_analysis`] carries them out:
//! 1. Subtract the global mean of all points; the class centers are the means of the
//!    centered points. The reported center correlation is the mean absolute cosine between
//!    distinct centers, before any removal.
//! 2. With [`MftmaOptions::center_correlation`] on, find `K` orthonormal directions in the
//!    span of the centers that minimize `1/2 sum_{m,n} G_mn^2 / (G_mm G_nn)`, `G` the Gram
//!    matrix of the centers with those directions projected out (Riemannian conjugate
//!    gradient on the Stiefel manifold, QR retraction, Armijo backtracking,
//!    [`MftmaOptions::restarts`] seeded starts per `K`, the best final cost wins), for
//!    `K = 1, 2, ...` until the residual mean absolute correlation has risen three times in
//!    a row or `K` reaches its cap ([`MftmaOptions::max_k`]); keep the `K` with the
//!    smallest residual correlation and project every point off those `K` directions.
//! 3. Per manifold: subtract its center (after the removal), divide by the norm of that
//!    center, express the
//!    points in an orthonormal basis of their own span when `N > M_i` (the `R` factor of a
//!    thin QR with a non-negative diagonal, so `D_i = min(N, M_i)` coordinates), and append
//!    a coordinate equal to 1: `S` is `(D_i + 1) x M_i`.
//! 4. Per manifold, `n_t` standard Gaussian vectors `t` in `R^(D_i+1)`. If
//!    `max_j t.s_j + kappa < 0` the anchor point is the point of largest projection;
//!    otherwise `alpha = argmin_{alpha >= 0} |t + kappa e_last - S alpha|^2` (the dual of
//!    the margin quadratic program, solved by [`GramNnls`] with one Gram matrix per
//!    manifold) and the anchor is `S alpha / sum(alpha)` (the largest-projection point
//!    again when `|S alpha| < 1e-8`, an interior `t`).
//! 5. Per manifold: capacity `a_i = 1 / mean_t[max(t.s + kappa, 0)^2 / |s|^2]`, radius
//!    `R_i = sqrt(mean_t |s_shape - mean_t s_shape|^2 / s_center^2)` and dimension
//!    `D_i = D * (mean_t cos(t_shape, s_shape))^2` (a zero vector has cosine 0), `s` the
//!    anchor, shape = all coordinates but the last, center = the last.
//! 6. Across manifolds: capacity `1 / mean_i(1 / a_i)`; radius and dimension are means.
//!
//! All randomness comes from `ChaCha8Rng` streams derived from [`MftmaOptions::seed`] and
//! the index of the manifold (or of the optimizer restart), so results do not depend on
//! the number of threads. Few points per manifold over-estimate capacity: report `P`,
//! `M` and `n_t` with the results.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::qr::no_pivoting::factor as qr_factor;
use faer::{Mat, MatRef, Par};
use rayon::prelude::*;

use super::centers::{SubspaceSearch, center_subspace, mean_abs_correlation};
use super::columns::for_each_column;
use super::error::{GeometryError, check_finite};
use super::nnls::GramNnls;
use super::random::{Purpose, gaussian_matrix, stream};

/// Settings of [`manifold_analysis`].
#[derive(Clone, Debug, PartialEq)]
pub struct MftmaOptions {
    /// Margin `kappa` (usually 0).
    pub kappa: f64,
    /// Gaussian vectors per manifold (200 to 300 is the usual choice).
    pub n_t: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Remove the correlations between class centers before the analysis.
    pub center_correlation: bool,
    /// Cap on the number `K` of center directions removed, on top of the default cap
    /// `min(P - 1, rank of the centers - 1, number of leading singular values of the
    /// centers that hold 95% of their variance + 10)`; `None` keeps the default.
    pub max_k: Option<usize>,
    /// Random restarts of the center-subspace optimization per `K` (the first one starts
    /// from the best `K - 1` solution).
    pub restarts: usize,
    /// Iteration cap of each center-subspace optimization.
    pub max_iter: usize,
}

impl Default for MftmaOptions {
    fn default() -> Self {
        MftmaOptions {
            kappa: 0.0,
            n_t: 200,
            seed: 0,
            center_correlation: true,
            max_k: None,
            restarts: 4,
            max_iter: 500,
        }
    }
}

/// Capacity, radius and dimension of one manifold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ManifoldGeometry {
    /// Capacity `a_i` (infinite when no Gaussian vector needed a nonzero field).
    pub capacity: f64,
    /// Radius `R_i`, relative to the norm of the manifold's center.
    pub radius: f64,
    /// Dimension `D_i`.
    pub dimension: f64,
}

/// What [`manifold_analysis`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct MftmaResult {
    /// Capacity across manifolds, `1 / mean_i(1 / a_i)`.
    pub capacity: f64,
    /// Mean radius.
    pub radius: f64,
    /// Mean dimension.
    pub dimension: f64,
    /// Mean absolute cosine between distinct class centers, before any removal.
    pub center_correlation: f64,
    /// The same after removing the `k` center directions (equal to
    /// `center_correlation` when `k` is 0).
    pub residual_center_correlation: f64,
    /// Number of center directions removed (0 when removal is off).
    pub k: usize,
    /// Number of manifolds.
    pub p: usize,
    /// Points per manifold (their mean when they differ).
    pub m: f64,
    /// Gaussian vectors per manifold.
    pub n_t: usize,
    /// Per-manifold capacities `a_i`.
    pub capacities: Vec<f64>,
    /// Per-manifold radii `R_i`.
    pub radii: Vec<f64>,
    /// Per-manifold dimensions `D_i`.
    pub dimensions: Vec<f64>,
}

/// Number `D` of coordinates a manifold of `n_points` points in `n_features` dimensions is
/// expressed in: `min(n_features, n_points)`. Explicit Gaussian vectors given to
/// [`manifold_analysis_with_t`] have `D + 1` rows.
pub fn anchor_dimension(n_features: usize, n_points: usize) -> usize {
    n_features.min(n_points)
}

/// Groups the rows of an `examples x features` matrix by label into `features x points`
/// manifolds, in increasing label order (labels without examples are skipped).
pub fn group_by_label(
    features: MatRef<'_, f64>,
    labels: &[usize],
) -> Result<Vec<Mat<f64>>, GeometryError> {
    if labels.len() != features.nrows() {
        return Err(GeometryError::DimensionMismatch(format!(
            "{} labels for {} examples",
            labels.len(),
            features.nrows()
        )));
    }
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    Ok(classes
        .iter()
        .map(|&c| {
            let rows: Vec<usize> = (0..labels.len()).filter(|&r| labels[r] == c).collect();
            Mat::from_fn(features.ncols(), rows.len(), |i, j| features[(rows[j], i)])
        })
        .collect())
}

/// Manifold capacity analysis of `manifolds` (each `N x M_i`, points as columns), drawing
/// the Gaussian vectors from [`MftmaOptions::seed`].
pub fn manifold_analysis(
    manifolds: &[MatRef<'_, f64>],
    options: &MftmaOptions,
) -> Result<MftmaResult, GeometryError> {
    analyze(manifolds, options, None)
}

/// [`manifold_analysis`] with given Gaussian vectors: `t_vectors[i]` is
/// `(D_i + 1) x n_t_i`, `D_i` = [`anchor_dimension`]`(N, M_i)`, one vector per column
/// (`options.n_t` is ignored; the result reports the first manifold's count).
pub fn manifold_analysis_with_t(
    manifolds: &[MatRef<'_, f64>],
    options: &MftmaOptions,
    t_vectors: &[MatRef<'_, f64>],
) -> Result<MftmaResult, GeometryError> {
    if t_vectors.len() != manifolds.len() {
        return Err(GeometryError::DimensionMismatch(format!(
            "{} sets of Gaussian vectors for {} manifolds",
            t_vectors.len(),
            manifolds.len()
        )));
    }
    analyze(manifolds, options, Some(t_vectors))
}

fn validate(manifolds: &[MatRef<'_, f64>], options: &MftmaOptions) -> Result<(), GeometryError> {
    if manifolds.len() < 2 {
        return Err(GeometryError::TooFewManifolds {
            found: manifolds.len(),
            needed: 2,
        });
    }
    let n = manifolds[0].nrows();
    if n == 0 {
        return Err(GeometryError::DimensionMismatch(
            "points have no features".into(),
        ));
    }
    for (i, x) in manifolds.iter().enumerate() {
        if x.nrows() != n {
            return Err(GeometryError::DimensionMismatch(format!(
                "manifold {i} has {} features, manifold 0 has {n}",
                x.nrows()
            )));
        }
        if x.ncols() == 0 {
            return Err(GeometryError::EmptyManifold { index: i });
        }
    }
    if !options.kappa.is_finite() {
        return Err(GeometryError::InvalidOption(format!(
            "kappa must be finite, got {}",
            options.kappa
        )));
    }
    if options.n_t == 0 {
        return Err(GeometryError::InvalidOption(
            "n_t must be at least 1".into(),
        ));
    }
    if options.center_correlation && (options.restarts == 0 || options.max_iter == 0) {
        return Err(GeometryError::InvalidOption(
            "restarts and max_iter must be at least 1 with center-correlation removal".into(),
        ));
    }
    Ok(())
}

fn analyze(
    manifolds: &[MatRef<'_, f64>],
    options: &MftmaOptions,
    t_vectors: Option<&[MatRef<'_, f64>]>,
) -> Result<MftmaResult, GeometryError> {
    validate(manifolds, options)?;
    let n = manifolds[0].nrows();
    let p = manifolds.len();
    if let Some(ts) = t_vectors {
        for (i, (t, x)) in ts.iter().zip(manifolds).enumerate() {
            let rows = anchor_dimension(n, x.ncols()) + 1;
            if t.nrows() != rows || t.ncols() == 0 {
                return Err(GeometryError::DimensionMismatch(format!(
                    "Gaussian vectors of manifold {i} are {} x {}, expected {rows} rows and at least one column",
                    t.nrows(),
                    t.ncols()
                )));
            }
            check_finite(*t, || format!("Gaussian vectors of manifold {i}"))?;
        }
    }

    // One pass over each manifold: its sum of points and, without center-correlation
    // removal, its coordinates too (centered on its own mean, not yet divided by its
    // center's norm, which needs the global mean: R of a QR scales with its input).
    let first_pass = manifolds
        .par_iter()
        .enumerate()
        .map(|(i, x)| {
            let (sum, largest) = point_sum(*x, i)?;
            let shape = (!options.center_correlation).then(|| {
                let own_mean: Vec<f64> = sum.iter().map(|v| v / x.ncols() as f64).collect();
                centered_coordinates(*x, &own_mean, 1.0, None)
            });
            Ok(((sum, largest), shape))
        })
        .collect::<Result<Vec<_>, GeometryError>>()?;
    let (sums, mut shapes): (Vec<_>, Vec<_>) = first_pass.into_iter().unzip();
    let (mean, centers) = mean_and_centers(manifolds, &sums);
    // A center whose norm is at rounding level next to the points' is at the global
    // mean: the manifold cannot be normalized.
    let check_center = |i: usize, norm: f64, after: &str| {
        if norm > 1e-12 * sums[i].1 {
            Ok(())
        } else {
            Err(GeometryError::Degenerate(format!(
                "the center of manifold {i} is at the global mean of all points{after}, so the \
                 manifold cannot be normalized"
            )))
        }
    };
    let gram = centers.transpose() * &centers;
    for i in 0..p {
        check_center(i, gram[(i, i)].max(0.0).sqrt(), "")?;
    }
    let center_correlation = mean_abs_correlation(gram.as_ref());
    let search = SubspaceSearch {
        max_k: options.max_k,
        restarts: options.restarts,
        max_iter: options.max_iter,
        seed: options.seed,
    };
    let (removal, residual_center_correlation) = if options.center_correlation {
        match center_subspace(centers.as_ref(), gram.as_ref(), &search)? {
            Some(sub) => (Some(sub.directions), sub.residual_correlation),
            None => (None, center_correlation),
        }
    } else {
        (None, center_correlation)
    };
    let k = removal.as_ref().map_or(0, |w| w.ncols());

    let residual_centers = match &removal {
        Some(w) => &centers - w * (w.transpose() * &centers),
        None => centers.clone(),
    };
    let mut scales = Vec::with_capacity(p);
    for i in 0..p {
        let norm = residual_centers
            .col_as_slice(i)
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        check_center(i, norm, " once the center directions are removed")?;
        scales.push(1.0 / norm);
    }

    let per_manifold: Vec<ManifoldGeometry> = shapes
        .par_iter_mut()
        .enumerate()
        .map(|(i, shape)| {
            let s = match shape.take() {
                Some(shape) => with_center_coordinate(shape, scales[i]),
                None => {
                    let offset: Vec<f64> = mean
                        .iter()
                        .zip(centers.col_as_slice(i))
                        .map(|(m, c)| m + c)
                        .collect();
                    let shape = centered_coordinates(
                        manifolds[i],
                        &offset,
                        scales[i],
                        removal.as_ref().map(|w| w.as_ref()),
                    );
                    with_center_coordinate(shape, 1.0)
                }
            };
            match t_vectors {
                Some(ts) => manifold_geometry(s.as_ref(), ts[i], options.kappa),
                None => {
                    let mut rng = stream(options.seed, Purpose::GaussianVectors, i as u64);
                    let t = gaussian_matrix(&mut rng, s.nrows(), options.n_t);
                    manifold_geometry(s.as_ref(), t.as_ref(), options.kappa)
                }
            }
        })
        .collect::<Result<_, _>>()?;

    let capacities: Vec<f64> = per_manifold.iter().map(|g| g.capacity).collect();
    let radii: Vec<f64> = per_manifold.iter().map(|g| g.radius).collect();
    let dimensions: Vec<f64> = per_manifold.iter().map(|g| g.dimension).collect();
    let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let inverse: Vec<f64> = capacities.iter().map(|a| 1.0 / a).collect();
    Ok(MftmaResult {
        capacity: 1.0 / mean_of(&inverse),
        radius: mean_of(&radii),
        dimension: mean_of(&dimensions),
        center_correlation,
        residual_center_correlation,
        k,
        p,
        m: manifolds.iter().map(|x| x.ncols() as f64).sum::<f64>() / p as f64,
        n_t: t_vectors.map_or(options.n_t, |ts| ts[0].ncols()),
        capacities,
        radii,
        dimensions,
    })
}

/// Sum of the columns of `x`, and the largest absolute entry; an error when an entry is
/// not finite.
fn point_sum(x: MatRef<'_, f64>, index: usize) -> Result<(Vec<f64>, f64), GeometryError> {
    let mut sum = vec![0.0; x.nrows()];
    let mut largest = 0.0f64;
    for_each_column(x, |_, col| {
        for (s, v) in sum.iter_mut().zip(col) {
            *s += v;
            largest = largest.max(v.abs());
        }
    });
    // NaN and infinities reach the sums; find the culprit only then.
    if !sum.iter().all(|s| s.is_finite()) {
        check_finite(x, || format!("manifold {index}"))?;
        return Err(GeometryError::NonFinite(format!(
            "manifold {index}: the sum of its points overflows"
        )));
    }
    Ok((sum, largest))
}

/// The global mean of all points, and the `N x P` class centers: the mean of each
/// manifold minus the global mean (from the per-manifold sums of points).
fn mean_and_centers(
    manifolds: &[MatRef<'_, f64>],
    sums: &[(Vec<f64>, f64)],
) -> (Vec<f64>, Mat<f64>) {
    let n = manifolds[0].nrows();
    let total: usize = manifolds.iter().map(|x| x.ncols()).sum();
    let mut mean = vec![0.0; n];
    for (sum, _) in sums {
        for (m, s) in mean.iter_mut().zip(sum) {
            *m += s;
        }
    }
    for m in &mut mean {
        *m /= total as f64;
    }
    let mut centers = Mat::zeros(n, manifolds.len());
    for (c, (x, (sum, _))) in manifolds.iter().zip(sums).enumerate() {
        let count = x.ncols() as f64;
        for ((v, s), mu) in centers.col_as_slice_mut(c).iter_mut().zip(sum).zip(&mean) {
            *v = s / count - mu;
        }
    }
    (mean, centers)
}

/// The `D x M` coordinates of a manifold's points, centered and normalized, in an
/// orthonormal basis of their span (see the module documentation, step 3): the points
/// `(x - offset) * scale`, projected off `removal`'s directions, then the `R` factor of
/// their thin QR with a non-negative diagonal when `N > M`. `offset` is the manifold's
/// mean before the removal and `scale` one over the norm of its center after it; as the
/// removal is linear, this centers the manifold on its projected center.
fn centered_coordinates(
    x: MatRef<'_, f64>,
    offset: &[f64],
    scale: f64,
    removal: Option<MatRef<'_, f64>>,
) -> Mat<f64> {
    let (n, m) = (x.nrows(), x.ncols());
    let mut y = Mat::<f64>::zeros(n, m);
    for_each_column(x, |j, col| {
        for ((yv, xv), o) in y.col_as_slice_mut(j).iter_mut().zip(col).zip(offset) {
            *yv = (xv - o) * scale;
        }
    });
    if let Some(w) = removal {
        let coef = w.transpose() * &y;
        y -= w * &coef;
    }
    if n <= m {
        return y;
    }
    // Householder QR in place: R is left in the upper triangle of y. Blocks of 16
    // reflectors: the fastest for tall, narrow manifolds (5000 x 50).
    let block = qr_factor::recommended_block_size::<f64>(n, m).min(16);
    let mut coeff = Mat::<f64>::zeros(block, m);
    let scratch = qr_factor::qr_in_place_scratch::<f64>(n, m, block, Par::Seq, Default::default());
    qr_factor::qr_in_place(
        y.as_mut(),
        coeff.as_mut(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    );
    let mut r = Mat::zeros(m, m);
    for row in 0..m {
        let sign = if y[(row, row)] < 0.0 { -1.0 } else { 1.0 };
        for col in row..m {
            r[(row, col)] = sign * y[(row, col)];
        }
    }
    r
}

/// `S`: the coordinates `shape` (`D x M`) times `scale`, with a last row of ones (the
/// center coordinate).
fn with_center_coordinate(shape: Mat<f64>, scale: f64) -> Mat<f64> {
    let (d, m) = (shape.nrows(), shape.ncols());
    let mut s = Mat::zeros(d + 1, m);
    for j in 0..m {
        for (v, x) in s.col_as_slice_mut(j).iter_mut().zip(shape.col_as_slice(j)) {
            *v = x * scale;
        }
        s[(d, j)] = 1.0;
    }
    s
}

/// Capacity, radius and dimension of one manifold given its `S` (`(D + 1) x M`, last row
/// all ones: the center coordinate) and Gaussian vectors `t` (`(D + 1) x n_t`, one per
/// column), at margin `kappa` (steps 4 and 5 of the module documentation).
pub fn manifold_geometry(
    s: MatRef<'_, f64>,
    t: MatRef<'_, f64>,
    kappa: f64,
) -> Result<ManifoldGeometry, GeometryError> {
    let (d1, m) = (s.nrows(), s.ncols());
    let n_t = t.ncols();
    if d1 < 1 || m == 0 || t.nrows() != d1 || n_t == 0 {
        return Err(GeometryError::DimensionMismatch(format!(
            "manifold coordinates are {d1} x {m} and Gaussian vectors {} x {n_t}",
            t.nrows()
        )));
    }
    check_finite(s, || "manifold coordinates".into())?;
    check_finite(t, || "Gaussian vectors".into())?;
    if !kappa.is_finite() {
        return Err(GeometryError::InvalidOption(format!(
            "kappa must be finite, got {kappa}"
        )));
    }
    if (0..m).any(|j| (s[(d1 - 1, j)] - 1.0).abs() > 1e-12) {
        return Err(GeometryError::InvalidOption(
            "the last row of the manifold coordinates (the center coordinate) must be all ones"
                .into(),
        ));
    }
    let d = d1 - 1;
    let gram = s.transpose() * s;
    let proj = s.transpose() * t;
    let mut nnls = GramNnls::new(gram.as_ref())?;
    let mut h = vec![0.0; m];
    let mut alpha = vec![0.0; m];
    let mut anchors = Mat::<f64>::zeros(d1, n_t);
    for k in 0..n_t {
        let pk = proj.col_as_slice(k);
        let (best, best_proj) =
            pk.iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc },
                );
        let anchor = anchors.col_as_slice_mut(k);
        let mut interior = best_proj + kappa < 0.0;
        if !interior {
            for (hj, pj) in h.iter_mut().zip(pk) {
                // S^T (t + kappa e_last) = S^T t + kappa, the last row of S being ones.
                *hj = pj + kappa;
            }
            nnls.solve(&h, &mut alpha)?;
            let mut total = 0.0;
            for (j, &a) in alpha.iter().enumerate() {
                if a > 0.0 {
                    total += a;
                    for (av, sv) in anchor.iter_mut().zip(s.col(j).iter()) {
                        *av += a * sv;
                    }
                }
            }
            let field = anchor.iter().map(|v| v * v).sum::<f64>().sqrt();
            if field < 1e-8 || total <= 0.0 {
                interior = true;
            } else {
                for v in anchor.iter_mut() {
                    *v /= total;
                }
            }
        }
        if interior {
            for (av, sv) in anchor.iter_mut().zip(s.col(best).iter()) {
                *av = *sv;
            }
        }
    }

    let mut lambda_sum = 0.0;
    let mut cos_sum = 0.0;
    let mut mean_anchor = vec![0.0; d1];
    for k in 0..n_t {
        let a = anchors.col_as_slice(k);
        let tk = t.col(k);
        let dot: f64 = a.iter().zip(tk.iter()).map(|(x, y)| x * y).sum();
        let norm_sq: f64 = a.iter().map(|x| x * x).sum();
        let gap = (dot + kappa).max(0.0);
        if norm_sq > 0.0 {
            lambda_sum += gap * gap / norm_sq;
        }
        let shape_dot: f64 = a[..d].iter().zip(tk.iter()).map(|(x, y)| x * y).sum();
        let a_norm = a[..d].iter().map(|x| x * x).sum::<f64>().sqrt();
        let t_norm = tk.iter().take(d).map(|x| x * x).sum::<f64>().sqrt();
        if a_norm > 0.0 && t_norm > 0.0 {
            cos_sum += shape_dot / (a_norm * t_norm);
        }
        for (mv, av) in mean_anchor.iter_mut().zip(a) {
            *mv += av;
        }
    }
    for v in &mut mean_anchor {
        *v /= n_t as f64;
    }
    let mut spread = 0.0;
    for k in 0..n_t {
        let a = anchors.col_as_slice(k);
        let c = a[d];
        let dev: f64 = a[..d]
            .iter()
            .zip(&mean_anchor)
            .map(|(x, mu)| ((x - mu) / c).powi(2))
            .sum();
        spread += dev;
    }
    let mean_cos = cos_sum / n_t as f64;
    Ok(ManifoldGeometry {
        capacity: n_t as f64 / lambda_sum,
        radius: (spread / n_t as f64).sqrt(),
        dimension: d as f64 * mean_cos * mean_cos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(rng: &mut ChaCha8Rng, r: usize, c: usize) -> Mat<f64> {
        Mat::from_fn(r, c, |_, _| StandardNormal.sample(rng))
    }

    fn refs(ms: &[Mat<f64>]) -> Vec<MatRef<'_, f64>> {
        ms.iter().map(|m| m.as_ref()).collect()
    }

    fn off(n_t: usize) -> MftmaOptions {
        MftmaOptions {
            n_t,
            center_correlation: false,
            ..MftmaOptions::default()
        }
    }

    /// `p` Gaussian clouds of `m` points in `n` dimensions around standard Gaussian centers,
    /// the points at standard deviation `spread / sqrt(n)` per coordinate.
    fn clouds(seed: u64, p: usize, m: usize, n: usize, spread: f64) -> Vec<Mat<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..p)
            .map(|_| {
                let center = gaussian(&mut rng, n, 1);
                let noise = gaussian(&mut rng, n, m);
                Mat::from_fn(n, m, |i, j| center[(i, 0)] + spread * noise[(i, j)])
            })
            .collect()
    }

    #[test]
    fn isolated_points_have_capacity_two() {
        // Cover's theorem: P points in general position are linearly separable (with any
        // dichotomy) up to P = 2N, so one point per manifold has capacity 2.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ms: Vec<Mat<f64>> = (0..20).map(|_| gaussian(&mut rng, 50, 1)).collect();
        let r = manifold_analysis(&refs(&ms), &off(1000)).unwrap();
        assert!((r.capacity - 2.0).abs() < 0.1, "capacity {}", r.capacity);
        assert_eq!((r.p, r.m, r.n_t, r.k), (20, 1.0, 1000, 0));
        assert!(r.radius.abs() < 1e-12, "radius {}", r.radius);
    }

    #[test]
    fn explicit_vectors_give_the_closed_form_for_points() {
        // With one point S = [0; 1]: the anchor is that point, and the capacity is
        // n_t / sum_t max(t_center, 0)^2.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let ms: Vec<Mat<f64>> = (0..3).map(|_| gaussian(&mut rng, 10, 1)).collect();
        let ts: Vec<Mat<f64>> = (0..3).map(|_| gaussian(&mut rng, 2, 50)).collect();
        let r = manifold_analysis_with_t(&refs(&ms), &off(7), &refs(&ts)).unwrap();
        for (i, t) in ts.iter().enumerate() {
            let sum: f64 = (0..50).map(|k| t[(1, k)].max(0.0).powi(2)).sum();
            assert!((r.capacities[i] - 50.0 / sum).abs() < 1e-12 * r.capacities[i]);
        }
        assert_eq!(r.n_t, 50);
    }

    #[test]
    fn capacity_falls_as_manifolds_grow() {
        let mut last: Option<MftmaResult> = None;
        for spread in [0.05, 0.2, 0.5, 1.0, 2.0] {
            let ms = clouds(3, 10, 20, 100, spread);
            let r = manifold_analysis(&refs(&ms), &off(300)).unwrap();
            if let Some(prev) = &last {
                assert!(
                    r.capacity < prev.capacity,
                    "spread {spread}: {} !< {}",
                    r.capacity,
                    prev.capacity
                );
                assert!(
                    r.radius > prev.radius,
                    "spread {spread}: {} !> {}",
                    r.radius,
                    prev.radius
                );
            }
            assert!(r.capacity > 0.0 && r.capacity < 2.0);
            last = Some(r);
        }
    }

    #[test]
    fn capacity_falls_with_margin() {
        let ms = clouds(4, 8, 10, 200, 0.5);
        let mut last = f64::INFINITY;
        for kappa in [0.0, 0.1, 0.3] {
            let r = manifold_analysis(&refs(&ms), &MftmaOptions { kappa, ..off(200) }).unwrap();
            assert!(r.capacity < last, "kappa {kappa}: {}", r.capacity);
            last = r.capacity;
        }
    }

    #[test]
    fn small_case_is_invariant_to_rotation_scale_and_shift() {
        // P = 8 Gaussian manifolds of M = 10 points in N = 200 dimensions. The analysis
        // only sees the points relative to the global mean, normalized by center norms
        // and in their own span, so an orthogonal map, a scaling and a translation of all
        // points leave every figure unchanged.
        let ms = clouds(5, 8, 10, 200, 1.0);
        let opts = off(200);
        let start = std::time::Instant::now();
        let r = manifold_analysis(&refs(&ms), &opts).unwrap();
        assert!(start.elapsed().as_secs_f64() < 2.0);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let rotation =
            crate::geometry::centers::orthonormalize(gaussian(&mut rng, 200, 200).as_ref());
        let shift = gaussian(&mut rng, 200, 1);
        let moved: Vec<Mat<f64>> = ms
            .iter()
            .map(|x| {
                let y = &rotation * x * faer::Scale(3.5);
                Mat::from_fn(200, 10, |i, j| y[(i, j)] + shift[(i, 0)])
            })
            .collect();
        let q = manifold_analysis(&refs(&moved), &opts).unwrap();
        for (a, b) in [
            (r.capacity, q.capacity),
            (r.radius, q.radius),
            (r.dimension, q.dimension),
        ] {
            assert!((a - b).abs() < 1e-8 * a.abs(), "{a} vs {b}");
        }
        assert!((r.center_correlation - q.center_correlation).abs() < 1e-10);
        for d in &r.dimensions {
            assert!(*d > 0.0 && *d <= 10.0);
        }
    }

    #[test]
    fn center_correlation_of_random_and_shared_centers() {
        // Independent Gaussian centers, once the global mean is subtracted, have pairwise
        // cosines of -1 / (P - 1) plus noise of standard deviation 1 / sqrt(N).
        let random = clouds(7, 40, 3, 4000, 0.3);
        let r = manifold_analysis(&refs(&random), &off(20)).unwrap();
        let bias = 1.0 / 39.0;
        assert!(
            r.center_correlation > bias * 0.8 && r.center_correlation < bias + 0.02,
            "random centers: {}",
            r.center_correlation
        );

        let n = 2000;

        // Centers along one shared direction with random weights, plus small independent
        // parts: after global centering they stay nearly collinear.
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let shared = gaussian(&mut rng, n, 1);
        let ms: Vec<Mat<f64>> = (0..12)
            .map(|_| {
                let w: f64 = StandardNormal.sample(&mut rng);
                let own = gaussian(&mut rng, n, 1);
                let noise = gaussian(&mut rng, n, 5);
                Mat::from_fn(n, 5, |i, j| {
                    3.0 * w * shared[(i, 0)] + 0.5 * own[(i, 0)] + 0.2 * noise[(i, j)]
                })
            })
            .collect();
        let kept = manifold_analysis(&refs(&ms), &off(50)).unwrap();
        assert!(
            kept.center_correlation > 0.6,
            "shared component: {}",
            kept.center_correlation
        );
        let removed = manifold_analysis(
            &refs(&ms),
            &MftmaOptions {
                n_t: 50,
                ..MftmaOptions::default()
            },
        )
        .unwrap();
        assert!(removed.k >= 1);
        assert_eq!(removed.center_correlation, kept.center_correlation);
        assert!(
            removed.residual_center_correlation < 0.3 * removed.center_correlation,
            "residual {} of {}",
            removed.residual_center_correlation,
            removed.center_correlation
        );
    }

    #[test]
    fn same_result_for_any_thread_count() {
        let ms = clouds(9, 10, 12, 150, 0.7);
        let opts = MftmaOptions {
            n_t: 60,
            ..MftmaOptions::default()
        };
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| manifold_analysis(&refs(&ms), &opts).unwrap())
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn rejects_bad_input() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let a = gaussian(&mut rng, 5, 3);
        let b = gaussian(&mut rng, 5, 3);
        let opts = MftmaOptions::default();
        let err = |ms: &[Mat<f64>]| manifold_analysis(&refs(ms), &opts).unwrap_err();
        assert!(matches!(
            err(std::slice::from_ref(&a)),
            GeometryError::TooFewManifolds { found: 1, .. }
        ));
        assert!(matches!(
            err(&[a.clone(), Mat::zeros(5, 0)]),
            GeometryError::EmptyManifold { index: 1 }
        ));
        assert!(matches!(
            err(&[a.clone(), gaussian(&mut rng, 4, 3)]),
            GeometryError::DimensionMismatch(_)
        ));
        let mut nan = b.clone();
        nan[(2, 1)] = f64::NAN;
        assert!(matches!(
            err(&[a.clone(), nan]),
            GeometryError::NonFinite(_)
        ));
        // Two manifolds with the same center: both centers are at the global mean.
        assert!(matches!(
            err(&[a.clone(), a.clone()]),
            GeometryError::Degenerate(_)
        ));
        let bad = MftmaOptions {
            n_t: 0,
            ..opts.clone()
        };
        assert!(manifold_analysis(&refs(&[a.clone(), b.clone()]), &bad).is_err());
        let t = gaussian(&mut rng, 3, 4);
        let e = manifold_analysis_with_t(
            &refs(&[a.clone(), b.clone()]),
            &off(1),
            &refs(&[t.clone(), t]),
        )
        .unwrap_err();
        assert!(matches!(e, GeometryError::DimensionMismatch(_)));
        assert!(
            manifold_geometry(
                Mat::<f64>::zeros(2, 2).as_ref(),
                Mat::<f64>::zeros(2, 1).as_ref(),
                0.0
            )
            .is_err()
        );
    }

    #[test]
    fn degenerate_but_valid_manifolds_are_analyzed() {
        // Duplicated points, points on a low-dimensional affine subspace, fewer features
        // than points (no QR), unequal sizes and single points, all in one analysis.
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let n = 60;
        let mut ms = Vec::new();
        let base = gaussian(&mut rng, n, 6);
        ms.push(Mat::from_fn(n, 12, |i, j| base[(i, j % 6)]));
        let center = gaussian(&mut rng, n, 1);
        let plane = gaussian(&mut rng, n, 2);
        let coef = gaussian(&mut rng, 2, 25);
        ms.push(Mat::from_fn(n, 25, |i, j| {
            center[(i, 0)] + plane[(i, 0)] * coef[(0, j)] + plane[(i, 1)] * coef[(1, j)]
        }));
        ms.push(gaussian(&mut rng, n, 1));
        ms.push(gaussian(&mut rng, n, 3));
        for opts in [
            off(100),
            MftmaOptions {
                n_t: 100,
                ..MftmaOptions::default()
            },
        ] {
            let r = manifold_analysis(&refs(&ms), &opts).unwrap();
            for v in r.capacities.iter().chain(&r.radii).chain(&r.dimensions) {
                assert!(v.is_finite() && *v >= 0.0, "{r:?}");
            }
            assert_eq!(r.m, 41.0 / 4.0);
        }
        // Fewer features than points: D = N.
        let few: Vec<Mat<f64>> = (0..3).map(|_| gaussian(&mut rng, 5, 20)).collect();
        let r = manifold_analysis(&refs(&few), &off(100)).unwrap();
        assert!(r.dimensions.iter().all(|d| *d > 0.0 && *d <= 5.0), "{r:?}");
    }

    #[test]
    fn groups_rows_by_label() {
        let features = Mat::from_fn(5, 2, |i, j| (10 * i + j) as f64);
        let groups = group_by_label(features.as_ref(), &[3, 1, 3, 1, 7]).unwrap();
        assert_eq!(groups.len(), 3);
        assert_eq!((groups[0].nrows(), groups[0].ncols()), (2, 2));
        assert_eq!(groups[0][(1, 1)], 31.0);
        assert_eq!(groups[1][(0, 1)], 20.0);
        assert_eq!(groups[2].ncols(), 1);
        assert!(group_by_label(features.as_ref(), &[0, 1]).is_err());
    }

    /// The check of science.md: P = 100 Gaussian manifolds of M = 50 points in N = 5000
    /// dimensions, kappa 0, n_t 200: capacity about 0.04, radius about 1.48, dimension
    /// about 36 and center correlation about 0.
    #[test]
    fn reference_gaussian_manifolds() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let ms: Vec<Mat<f64>> = (0..100).map(|_| gaussian(&mut rng, 5000, 50)).collect();
        let start = std::time::Instant::now();
        let r = manifold_analysis(&refs(&ms), &MftmaOptions::default()).unwrap();
        eprintln!(
            "capacity {:.4} radius {:.3} dimension {:.2} correlation {:.4} K {} in {:.2?}",
            r.capacity,
            r.radius,
            r.dimension,
            r.center_correlation,
            r.k,
            start.elapsed()
        );
        assert!((r.capacity - 0.04).abs() < 0.004, "capacity {}", r.capacity);
        assert!((r.radius - 1.48).abs() < 0.07, "radius {}", r.radius);
        assert!(
            (r.dimension - 36.0).abs() < 3.0,
            "dimension {}",
            r.dimension
        );
        assert!(
            r.center_correlation < 0.02,
            "center correlation {}",
            r.center_correlation
        );
    }
}
