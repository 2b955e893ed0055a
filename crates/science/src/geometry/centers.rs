//! Correlations between class centers, and the low-rank center structure whose removal
//! decorrelates them (step 2 of [`super::mftma`]).
//!
//! With `x_m` the centers in an orthonormal basis of their span (from the eigenvectors of
//! their Gram matrix) and `V` a `rank x K`
//! matrix with orthonormal columns, the residual Gram matrix is
//! `G = X X^T - (X V)(X V)^T` and the cost `1/2 sum_{m,n} G_mn^2 / (G_mm G_nn)` (the sum
//! of squared correlations of the residual centers). It is minimized over the Stiefel
//! manifold by Riemannian conjugate gradient (Polak–Ribière+, restarted on non-descent,
//! tangent-space projection as vector transport) with a QR retraction and Armijo
//! backtracking, from several seeded starting points per `K` (the first one extends the
//! best `K - 1` solution by a random column). `K` runs from 1 until the residual mean
//! absolute correlation has risen three times in a row or reaches its cap
//! `min(P - 1, rank - 1, n95 + 10)`, `n95` the number of leading singular values of the
//! centers that hold 95% of their variance; the `K` with the smallest residual mean
//! absolute correlation wins. Reference: U. Cohen, S. Chung, D. D. Lee and
//! H. Sompolinsky, Nat. Commun. 11, 746 (2020).

use faer::{Mat, MatRef, Side};
use rayon::prelude::*;

use super::error::GeometryError;
use super::random::{Purpose, gaussian_matrix, stream};

/// Mean absolute cosine between distinct vectors, from their Gram matrix.
pub(crate) fn mean_abs_correlation(gram: MatRef<'_, f64>) -> f64 {
    let p = gram.nrows();
    if p < 2 {
        return 0.0;
    }
    let mut sum = 0.0;
    for a in 0..p {
        for b in 0..p {
            if a != b {
                let denom = (gram[(a, a)] * gram[(b, b)]).sqrt();
                if denom > 0.0 {
                    sum += gram[(a, b)].abs() / denom;
                }
            }
        }
    }
    sum / (p * (p - 1)) as f64
}

/// The center directions to remove, and how well removing them decorrelates the centers.
pub(crate) struct CenterSubspace {
    /// `N x K`, orthonormal columns.
    pub(crate) directions: Mat<f64>,
    /// Mean absolute cosine between distinct centers once the directions are removed.
    pub(crate) residual_correlation: f64,
}

/// How [`center_subspace`] searches.
pub(crate) struct SubspaceSearch {
    /// Cap on `K` on top of the default one.
    pub(crate) max_k: Option<usize>,
    /// Optimizations per `K`.
    pub(crate) restarts: usize,
    /// Iteration cap of each optimization.
    pub(crate) max_iter: usize,
    /// Seed of the random starting points.
    pub(crate) seed: u64,
}

/// The `K` directions in the span of `centers` (`N x P`, Gram matrix `gram`) whose
/// removal best decorrelates them (see the module documentation); `None` when there is
/// no direction to remove (centers spanning fewer than two dimensions).
pub(crate) fn center_subspace(
    centers: MatRef<'_, f64>,
    gram: MatRef<'_, f64>,
    search: &SubspaceSearch,
) -> Result<Option<CenterSubspace>, GeometryError> {
    let p = gram.nrows();
    let eig = gram.self_adjoint_eigen(Side::Lower).map_err(|e| {
        GeometryError::NotConverged(format!(
            "eigendecomposition of the center Gram matrix: {e:?}"
        ))
    })?;
    let values: Vec<f64> = (0..p).map(|i| eig.S()[i].max(0.0)).collect();
    let vectors = eig.U();
    let largest = values.iter().cloned().fold(0.0, f64::max);
    // Orthonormal coordinates of the centers in their span (descending variance).
    let keep: Vec<usize> = (0..p)
        .rev()
        .filter(|&i| values[i] > largest * 1e-12 * p as f64)
        .collect();
    let rank = keep.len();
    let total: f64 = keep.iter().map(|&i| values[i]).sum();
    let mut cumulative = 0.0;
    let mut n95 = rank;
    for (n, &i) in keep.iter().enumerate() {
        cumulative += values[i];
        if cumulative >= 0.95 * total {
            n95 = n + 1;
            break;
        }
    }
    let max_k = (n95 + 10)
        .min(p - 1)
        .min(rank.saturating_sub(1))
        .min(search.max_k.unwrap_or(usize::MAX));
    if max_k == 0 {
        return Ok(None);
    }
    let coords = Mat::from_fn(p, rank, |a, c| {
        vectors[(a, keep[c])] * values[keep[c]].sqrt()
    });
    let cost = CorrelationCost {
        coords: coords.as_ref(),
        gram,
    };

    let mut best: Option<(Mat<f64>, f64)> = None;
    let mut previous: Option<Mat<f64>> = None;
    let mut history: Vec<f64> = Vec::new();
    for k in 1..=max_k {
        let candidates: Vec<(Mat<f64>, f64)> = (0..search.restarts)
            .into_par_iter()
            .map(|r| {
                let mut rng = stream(
                    search.seed,
                    Purpose::SubspaceRestart,
                    ((k as u64) << 32) | r as u64,
                );
                let mut v0 = gaussian_matrix(&mut rng, rank, k);
                if let (0, Some(prev)) = (r, previous.as_ref()) {
                    for c in 0..k - 1 {
                        for a in 0..rank {
                            v0[(a, c)] = prev[(a, c)];
                        }
                    }
                }
                let v0 = orthonormalize(v0.as_ref());
                let v = stiefel_cg(&cost, v0, search.max_iter);
                let f = cost.value(v.as_ref());
                (v, f)
            })
            .collect();
        let (v, _) = candidates
            .into_iter()
            .fold(None, |acc: Option<(Mat<f64>, f64)>, c| match acc {
                Some(a) if a.1 <= c.1 || !c.1.is_finite() => Some(a),
                _ => Some(c),
            })
            .expect("at least one restart");
        let residual = cost.residual_correlation(v.as_ref());
        history.push(residual);
        if best.as_ref().is_none_or(|b| residual < b.1) {
            best = Some((v.clone(), residual));
        }
        previous = Some(v);
        let h = &history;
        let n = h.len();
        if n >= 4 && h[n - 1] > h[n - 2] && h[n - 2] > h[n - 3] && h[n - 3] > h[n - 4] {
            break;
        }
    }
    let (v, residual_correlation) = best.expect("max_k >= 1");
    let k = v.ncols();
    // Directions in feature space: centers * U_keep * diag(1 / sqrt(lambda)) * V.
    let to_span = Mat::from_fn(p, k, |a, c| {
        (0..rank)
            .map(|b| vectors[(a, keep[b])] / values[keep[b]].sqrt() * v[(b, c)])
            .sum::<f64>()
    });
    let directions = orthonormalize((centers * &to_span).as_ref());
    Ok(Some(CenterSubspace {
        directions,
        residual_correlation,
    }))
}

/// `Q` of a thin QR with a non-negative diagonal of `R`.
pub(crate) fn orthonormalize(a: MatRef<'_, f64>) -> Mat<f64> {
    let qr = a.qr();
    let mut q = qr.compute_thin_Q();
    let r = qr.thin_R();
    for c in 0..q.ncols() {
        if r[(c, c)] < 0.0 {
            for v in q.col_as_slice_mut(c) {
                *v = -*v;
            }
        }
    }
    q
}

/// The cost `1/2 sum_{m,n} G_mn^2 / (G_mm G_nn)` of the centers with directions `V`
/// (`rank x K`, in span coordinates) projected out: `G = X X^T - (X V)(X V)^T`.
struct CorrelationCost<'a> {
    /// `P x rank` coordinates `X` of the centers.
    coords: MatRef<'a, f64>,
    /// `X X^T`.
    gram: MatRef<'a, f64>,
}

impl CorrelationCost<'_> {
    fn residual_gram(&self, v: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
        let c = self.coords * v;
        let g = self.gram - &c * c.transpose();
        (g, c)
    }

    fn value(&self, v: MatRef<'_, f64>) -> f64 {
        let (g, _) = self.residual_gram(v);
        let Some(inv) = inverse_diagonal(g.as_ref()) else {
            return f64::INFINITY;
        };
        let mut f = 0.0;
        for (b, ib) in inv.iter().enumerate() {
            f += g
                .col_as_slice(b)
                .iter()
                .zip(&inv)
                .map(|(gab, ia)| gab * gab * ia * ib)
                .sum::<f64>();
        }
        0.5 * f
    }

    /// Value and Euclidean gradient `2 X^T (diag(r / g) - A) X V`, with
    /// `A_mn = G_mn / (g_m g_n)`, `g = diag(G)` and `r_m = sum_n G_mn A_mn`.
    fn value_and_gradient(&self, v: MatRef<'_, f64>) -> (f64, Mat<f64>) {
        let (mut g, c) = self.residual_gram(v);
        let Some(inv) = inverse_diagonal(g.as_ref()) else {
            return (f64::INFINITY, Mat::zeros(v.nrows(), v.ncols()));
        };
        let p = g.nrows();
        let mut f = 0.0;
        let mut row = vec![0.0; p];
        for (b, ib) in inv.iter().enumerate() {
            for ((gab, ia), ra) in g.col_as_slice_mut(b).iter_mut().zip(&inv).zip(&mut row) {
                let ratio = *gab * ia * ib;
                let term = *gab * ratio;
                f += term;
                *ra += term;
                *gab = -ratio;
            }
        }
        for a in 0..p {
            g[(a, a)] += row[a] * inv[a];
        }
        let grad = self.coords.transpose() * (&g * &c) * faer::Scale(2.0);
        (0.5 * f, grad)
    }

    /// Mean absolute cosine between distinct residual centers.
    fn residual_correlation(&self, v: MatRef<'_, f64>) -> f64 {
        mean_abs_correlation(self.residual_gram(v).0.as_ref())
    }
}

/// `1 / G_mm` for every `m`; `None` when a diagonal entry is not positive (a center
/// entirely inside the removed directions).
fn inverse_diagonal(g: MatRef<'_, f64>) -> Option<Vec<f64>> {
    (0..g.nrows())
        .map(|a| {
            let d = g[(a, a)];
            (d > 0.0).then(|| 1.0 / d)
        })
        .collect()
}

/// Tangent projection at `v` on the Stiefel manifold: `z - v sym(v^T z)`.
fn tangent(v: MatRef<'_, f64>, z: MatRef<'_, f64>) -> Mat<f64> {
    let vz = v.transpose() * z;
    let sym = Mat::from_fn(vz.nrows(), vz.ncols(), |a, b| {
        0.5 * (vz[(a, b)] + vz[(b, a)])
    });
    z - v * &sym
}

fn inner(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            s += a[(i, j)] * b[(i, j)];
        }
    }
    s
}

/// Riemannian conjugate gradient (Polak–Ribière+, restarted on non-descent) with QR
/// retraction and Armijo backtracking, from `v` (orthonormal columns).
fn stiefel_cg(cost: &CorrelationCost<'_>, mut v: Mat<f64>, max_iter: usize) -> Mat<f64> {
    let (mut f, egrad) = cost.value_and_gradient(v.as_ref());
    if !f.is_finite() {
        return v;
    }
    let mut grad = tangent(v.as_ref(), egrad.as_ref());
    let mut grad_sq = inner(grad.as_ref(), grad.as_ref());
    let mut dir = &grad * faer::Scale(-1.0);
    // Decrease of the cost at the last accepted step (0: none yet).
    let mut last_decrease = 0.0f64;
    let mut stalls = 0;
    for _ in 0..max_iter {
        // The cost is O(P); a gradient this small leaves it within rounding of a
        // stationary point for the purpose of picking K.
        if grad_sq.sqrt() < 1e-6 * f.abs().max(1.0) {
            break;
        }
        let mut slope = inner(grad.as_ref(), dir.as_ref());
        if slope >= 0.0 {
            dir = &grad * faer::Scale(-1.0);
            slope = -grad_sq;
        }
        let dir_norm = inner(dir.as_ref(), dir.as_ref()).sqrt();
        // First trial: the step that would repeat the last decrease on a quadratic
        // model (Nocedal and Wright, eq. 3.60), at most a unit move.
        let mut alpha = if last_decrease > 0.0 {
            (2.02 * last_decrease / -slope).min(1.0 / dir_norm)
        } else {
            0.1 / dir_norm
        };
        let mut accepted = None;
        for _ in 0..40 {
            let candidate = orthonormalize((&v + &dir * faer::Scale(alpha)).as_ref());
            let fc = cost.value(candidate.as_ref());
            if fc <= f + 1e-4 * alpha * slope {
                accepted = Some((candidate, fc));
                break;
            }
            alpha *= 0.5;
        }
        let Some((v_new, _)) = accepted else {
            if slope == -grad_sq {
                break;
            }
            dir = &grad * faer::Scale(-1.0);
            last_decrease = 0.0;
            continue;
        };
        let (f_new, egrad) = cost.value_and_gradient(v_new.as_ref());
        let grad_new = tangent(v_new.as_ref(), egrad.as_ref());
        let grad_old = tangent(v_new.as_ref(), grad.as_ref());
        let dir_old = tangent(v_new.as_ref(), dir.as_ref());
        let new_sq = inner(grad_new.as_ref(), grad_new.as_ref());
        let beta = ((new_sq - inner(grad_new.as_ref(), grad_old.as_ref())) / grad_sq).max(0.0);
        dir = &dir_old * faer::Scale(beta) - &grad_new;
        last_decrease = f - f_new;
        if f - f_new <= 1e-12 * f.abs() {
            stalls += 1;
            if stalls >= 5 {
                v = v_new;
                break;
            }
        } else {
            stalls = 0;
        }
        v = v_new;
        f = f_new;
        grad = grad_new;
        grad_sq = new_sq;
    }
    v
}
