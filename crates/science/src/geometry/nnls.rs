//! Non-negative least squares (Lawson–Hanson) from a precomputed Gram matrix.
//!
//! Solves `min_{a >= 0} |b - S a|^2` knowing only `G = S^T S` and `h = S^T b`. The
//! objective equals `a^T G a - 2 h^T a + |b|^2`, so `G` and `h` determine the minimizer;
//! one `G` serves every right-hand side, which is how the manifold analysis uses it (one
//! Gram matrix per manifold, one `h` per Gaussian vector).
//!
//! Reference: C. L. Lawson and R. J. Hanson, *Solving Least Squares Problems*, 1974, ch. 23.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::cholesky::llt::factor::LltRegularization;
use faer::linalg::triangular_solve;
use faer::reborrow::Reborrow;
use faer::{Mat, MatMut, MatRef, Par};

use super::error::{GeometryError, check_finite};

/// How a call of [`GramNnls::solve`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NnlsInfo {
    /// Outer iterations (variables moved into the passive set).
    pub iterations: usize,
    /// Number of strictly positive entries of the solution.
    pub n_positive: usize,
}

/// A Lawson–Hanson solver bound to one Gram matrix, with its workspace; reuse it for many
/// right-hand sides.
///
/// The passive subproblem `G[P, P] z = h[P]` (passive variables in the order they
/// entered) is solved with a Cholesky factor `G[P, P] = U^T U` that is kept between
/// iterations: a variable entering the passive set appends one column to `U` (its
/// off-diagonal part from faer's triangular solve with `U^T`, its diagonal the square
/// root of the remaining Schur complement), and the forward-substituted right-hand side
/// `U^{-T} h[P]` grows by one entry; each iteration then needs one triangular solve with
/// `U` (faer). A variable leaving the passive set truncates `U` at its position and the
/// later ones are appended again. Should an append meet a non-positive pivot, `G[P, P]` is
/// factored from scratch by faer's Cholesky.
pub struct GramNnls {
    gram: Mat<f64>,
    /// Top-left `k x k` upper triangle: `U` with `G[P, P] = U^T U`.
    upper: Mat<f64>,
    /// Number of leading passive variables whose columns of `upper` and entries of
    /// `forward` are current.
    factored: usize,
    /// `U^{-T} h[P]` for the current right-hand side.
    forward: Vec<f64>,
    /// Additive mask of the entering-variable search: 0 for a candidate, -inf for a
    /// passive or rejected variable.
    excluded: Vec<f64>,
    mem: MemBuffer,
    passive: Vec<usize>,
    z: Vec<f64>,
    w: Vec<f64>,
    /// Largest entry of the Gram matrix (on its diagonal).
    max_gram: f64,
}

impl GramNnls {
    /// Binds a solver to `gram` (`M x M`, symmetric positive semi-definite, finite).
    pub fn new(gram: MatRef<'_, f64>) -> Result<GramNnls, GeometryError> {
        let m = gram.nrows();
        if gram.ncols() != m {
            return Err(GeometryError::DimensionMismatch(format!(
                "Gram matrix must be square, got {} x {}",
                m,
                gram.ncols()
            )));
        }
        check_finite(gram, || "Gram matrix".to_string())?;
        let mut max_gram = 0.0f64;
        for j in 0..m {
            let d = gram[(j, j)];
            max_gram = max_gram.max(d);
            if d < 0.0 {
                return Err(GeometryError::InvalidOption(format!(
                    "Gram matrix has a negative diagonal entry {d} at {j}"
                )));
            }
        }
        let scratch =
            llt::factor::cholesky_in_place_scratch::<f64>(m.max(1), Par::Seq, Default::default());
        Ok(GramNnls {
            gram: gram.to_owned(),
            upper: Mat::zeros(m, m),
            factored: 0,
            forward: vec![0.0; m],
            excluded: vec![0.0; m],
            mem: MemBuffer::new(scratch),
            passive: Vec::with_capacity(m),
            z: vec![0.0; m],
            w: vec![0.0; m],
            max_gram,
        })
    }

    /// Number of unknowns `M`.
    pub fn dim(&self) -> usize {
        self.gram.nrows()
    }

    /// The Gram matrix the solver is bound to.
    pub fn gram(&self) -> MatRef<'_, f64> {
        self.gram.as_ref()
    }

    /// Solves for `h = S^T b` and writes the minimizer into `x` (length `M`).
    pub fn solve(&mut self, h: &[f64], x: &mut [f64]) -> Result<NnlsInfo, GeometryError> {
        let m = self.dim();
        if h.len() != m || x.len() != m {
            return Err(GeometryError::DimensionMismatch(format!(
                "NNLS with {m} unknowns got a right-hand side of length {} and an output of length {}",
                h.len(),
                x.len()
            )));
        }
        if let Some(i) = h.iter().position(|v| !v.is_finite()) {
            return Err(GeometryError::NonFinite(format!(
                "NNLS right-hand side at {i}"
            )));
        }
        x.fill(0.0);
        self.passive.clear();
        self.factored = 0;
        self.excluded.fill(0.0);
        let h_scale = h.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let max_outer = 3 * m + 10;
        let mut iterations = 0;
        loop {
            // Dual vector w = h - G x (G symmetric: a sum of passive columns).
            self.w.copy_from_slice(h);
            for &i in &self.passive {
                let xi = x[i];
                for (wj, gj) in self.w.iter_mut().zip(self.gram.col_as_slice(i)) {
                    *wj -= xi * gj;
                }
            }
            // The largest candidate w_j, against a tolerance relative to |h| and to the
            // bound max|G| * sum(x) >= |G x| (x >= 0).
            let (mut entering, mut best) = (0, f64::NEG_INFINITY);
            for (j, (wj, ex)) in self.w.iter().zip(&self.excluded).enumerate() {
                let candidate = wj + ex;
                if candidate > best {
                    (entering, best) = (j, candidate);
                }
            }
            let x_sum: f64 = self.passive.iter().map(|&i| x[i]).sum();
            let tol = 10.0 * f64::EPSILON * (m as f64) * h_scale.max(self.max_gram * x_sum);
            if best.is_nan() || best <= tol {
                break;
            }
            iterations += 1;
            if iterations > max_outer {
                return Err(GeometryError::NotConverged(format!(
                    "Lawson-Hanson NNLS with {m} unknowns after {max_outer} iterations"
                )));
            }
            self.passive.push(entering);
            self.excluded[entering] = f64::NEG_INFINITY;
            if !self.extend_factor(h) {
                // The entering column is numerically in the span of the passive ones:
                // reject it and pick another one, as Lawson and Hanson do.
                self.passive.pop();
                continue;
            }
            let mut first_inner = true;
            let mut inner = 0;
            loop {
                inner += 1;
                if inner > m + 2 {
                    return Err(GeometryError::NotConverged(format!(
                        "Lawson-Hanson NNLS inner loop with {m} unknowns"
                    )));
                }
                self.solve_passive(h)?;
                let k = self.passive.len();
                if self.z[..k].iter().all(|v| *v > 0.0) {
                    for (&i, &zi) in self.passive.iter().zip(&self.z) {
                        x[i] = zi;
                    }
                    // Rejected variables become candidates again once x has moved; the
                    // passive ones (x > 0) stay out.
                    for (ex, xi) in self.excluded.iter_mut().zip(x.iter()) {
                        *ex = if *xi > 0.0 { f64::NEG_INFINITY } else { 0.0 };
                    }
                    break;
                }
                if first_inner && self.z[..k - 1].iter().all(|v| *v > 0.0) {
                    // Only the entering variable wants to be negative (rounding): reject
                    // it, as in Lawson and Hanson's original algorithm.
                    self.passive.pop();
                    self.factored = self.factored.min(k - 1);
                    break;
                }
                first_inner = false;
                // Step from x towards z until the first passive variable reaches zero.
                let mut step = f64::INFINITY;
                let mut hit = 0;
                for p in 0..k {
                    if self.z[p] <= 0.0 {
                        let xi = x[self.passive[p]];
                        let s = if xi > 0.0 { xi / (xi - self.z[p]) } else { 0.0 };
                        if s < step {
                            step = s;
                            hit = p;
                        }
                    }
                }
                for p in 0..k {
                    let i = self.passive[p];
                    x[i] += step * (self.z[p] - x[i]);
                }
                x[self.passive[hit]] = 0.0;
                let mut p = 0;
                while p < self.passive.len() {
                    let i = self.passive[p];
                    if x[i] <= 0.0 {
                        x[i] = 0.0;
                        self.excluded[i] = 0.0;
                        self.passive.remove(p);
                        self.factored = self.factored.min(p);
                    } else {
                        p += 1;
                    }
                }
                if self.passive.is_empty() {
                    break;
                }
            }
        }
        let n_positive = x.iter().filter(|v| **v > 0.0).count();
        Ok(NnlsInfo {
            iterations,
            n_positive,
        })
    }

    /// Appends the columns of `U` (and entries of `U^{-T} h[P]`) for the passive variables
    /// from position `self.factored` on. False, with the factor left at the last good
    /// position, when a pivot is not positive (a column depends on the earlier ones).
    fn extend_factor(&mut self, h: &[f64]) -> bool {
        while self.factored < self.passive.len() {
            let p = self.factored;
            let j = self.passive[p];
            let g = self.gram.col_as_slice(j);
            let (head, tail) = self.upper.as_mut().split_at_col_mut(p);
            let col = tail
                .col_mut(0)
                .try_as_col_major_mut()
                .expect("column-major");
            let col = col.as_slice_mut();
            for (c, &i) in col.iter_mut().zip(&self.passive[..p]) {
                *c = g[i];
            }
            if p > 0 {
                let u11 = head.rb().submatrix(0, 0, p, p);
                triangular_solve::solve_lower_triangular_in_place(
                    u11.transpose(),
                    MatMut::from_column_major_slice_mut(&mut col[..p], p, 1),
                    Par::Seq,
                );
            }
            let schur = g[j] - col[..p].iter().map(|v| v * v).sum::<f64>();
            if schur.is_nan() || schur <= 1e-13 * g[j] {
                return false;
            }
            let pivot = schur.sqrt();
            col[p] = pivot;
            let dot: f64 = col[..p]
                .iter()
                .zip(&self.forward[..p])
                .map(|(u, y)| u * y)
                .sum();
            self.forward[p] = (h[j] - dot) / pivot;
            self.factored = p + 1;
        }
        true
    }

    /// Factors `G[P, P]` from scratch with faer's Cholesky, lifting tiny pivots if it is
    /// numerically singular, and recomputes `U^{-T} h[P]`.
    fn refactor(&mut self, h: &[f64]) -> Result<(), GeometryError> {
        let k = self.passive.len();
        let mut lower = Mat::<f64>::zeros(k, k);
        for (c, &j) in self.passive.iter().enumerate() {
            for (r, &i) in self.passive.iter().enumerate().skip(c) {
                lower[(r, c)] = self.gram[(i, j)];
            }
        }
        let max_diag = self
            .passive
            .iter()
            .fold(0.0f64, |a, &i| a.max(self.gram[(i, i)]));
        let delta = max_diag.max(f64::MIN_POSITIVE) * 1e-12;
        llt::factor::cholesky_in_place(
            lower.as_mut(),
            LltRegularization {
                dynamic_regularization_delta: delta,
                dynamic_regularization_epsilon: delta,
            },
            Par::Seq,
            MemStack::new(&mut self.mem),
            Default::default(),
        )
        .map_err(|e| GeometryError::Degenerate(format!("NNLS passive subsystem: {e}")))?;
        for c in 0..k {
            for r in 0..=c {
                self.upper[(r, c)] = lower[(c, r)];
            }
            self.forward[c] = h[self.passive[c]];
        }
        triangular_solve::solve_lower_triangular_in_place(
            lower.as_ref(),
            MatMut::from_column_major_slice_mut(&mut self.forward[..k], k, 1),
            Par::Seq,
        );
        self.factored = k;
        Ok(())
    }

    /// Solves `G[P, P] z = h[P]` with the current factor into `self.z[..|P|]`.
    fn solve_passive(&mut self, h: &[f64]) -> Result<(), GeometryError> {
        if !self.extend_factor(h) {
            self.refactor(h)?;
        }
        let k = self.passive.len();
        self.z[..k].copy_from_slice(&self.forward[..k]);
        triangular_solve::solve_upper_triangular_in_place(
            self.upper.as_ref().submatrix(0, 0, k, k),
            MatMut::from_column_major_slice_mut(&mut self.z[..k], k, 1),
            Par::Seq,
        );
        Ok(())
    }
}

/// One-shot form of [`GramNnls`]: the `a >= 0` minimizing `|b - S a|^2` given
/// `gram = S^T S` and `s_t_b = S^T b`.
pub fn nnls_gram(gram: MatRef<'_, f64>, s_t_b: &[f64]) -> Result<Vec<f64>, GeometryError> {
    let mut solver = GramNnls::new(gram)?;
    let mut x = vec![0.0; solver.dim()];
    solver.solve(s_t_b, &mut x)?;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::prelude::Solve;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(rng: &mut ChaCha8Rng, r: usize, c: usize) -> Mat<f64> {
        Mat::from_fn(r, c, |_, _| StandardNormal.sample(rng))
    }

    fn objective(s: MatRef<'_, f64>, b: &[f64], a: &[f64]) -> f64 {
        (0..s.nrows())
            .map(|i| {
                let r = b[i] - (0..s.ncols()).map(|j| s[(i, j)] * a[j]).sum::<f64>();
                r * r
            })
            .sum()
    }

    /// Every active set, each solved as an unconstrained least squares problem with the
    /// normal equations; the best feasible one.
    fn brute_force(s: MatRef<'_, f64>, b: &[f64]) -> Vec<f64> {
        let m = s.ncols();
        let mut best = (objective(s, b, &vec![0.0; m]), vec![0.0; m]);
        for mask in 1u32..(1 << m) {
            let idx: Vec<usize> = (0..m).filter(|j| mask & (1 << j) != 0).collect();
            let sub = Mat::from_fn(s.nrows(), idx.len(), |i, j| s[(i, idx[j])]);
            let g = sub.transpose() * &sub;
            let rhs = Mat::from_fn(idx.len(), 1, |j, _| {
                (0..s.nrows()).map(|i| sub[(i, j)] * b[i]).sum()
            });
            let sol = g.full_piv_lu().solve(&rhs);
            if (0..idx.len()).any(|j| sol[(j, 0)] < 0.0) {
                continue;
            }
            let mut a = vec![0.0; m];
            for (j, &i) in idx.iter().enumerate() {
                a[i] = sol[(j, 0)];
            }
            let obj = objective(s, b, &a);
            if obj < best.0 {
                best = (obj, a);
            }
        }
        best.1
    }

    #[test]
    fn matches_brute_force_on_small_random_problems() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for trial in 0..400 {
            let m = 1 + trial % 6;
            let rows = m + trial % 4;
            let mut s = gaussian(&mut rng, rows, m);
            if trial % 3 == 0 {
                // The manifold-analysis shape: a last row of ones.
                for j in 0..m {
                    s[(rows - 1, j)] = 1.0;
                }
            }
            let b: Vec<f64> = (0..rows).map(|_| StandardNormal.sample(&mut rng)).collect();
            let g = s.transpose() * &s;
            let h: Vec<f64> = (0..m)
                .map(|j| (0..rows).map(|i| s[(i, j)] * b[i]).sum())
                .collect();
            let x = nnls_gram(g.as_ref(), &h).unwrap();
            let expected = brute_force(s.as_ref(), &b);
            for j in 0..m {
                assert!(
                    (x[j] - expected[j]).abs() < 1e-9,
                    "trial {trial}: {x:?} vs brute force {expected:?}"
                );
            }
        }
    }

    #[test]
    fn rank_deficient_problems_reach_the_optimum() {
        // More unknowns than rows (a singular Gram matrix), some columns repeated: an
        // optimum is attained on at most `rows` independent columns (Caratheodory), so
        // the brute force over those subsets gives the optimal objective.
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for trial in 0..300 {
            let rows = 2 + trial % 3;
            let m = rows + 2 + trial % 3;
            let mut s = gaussian(&mut rng, rows, m);
            for i in 0..rows {
                s[(i, m - 1)] = s[(i, 0)];
            }
            let b: Vec<f64> = (0..rows).map(|_| StandardNormal.sample(&mut rng)).collect();
            let g = s.transpose() * &s;
            let h: Vec<f64> = (0..m)
                .map(|j| (0..rows).map(|i| s[(i, j)] * b[i]).sum())
                .collect();
            let x = nnls_gram(g.as_ref(), &h).unwrap();
            assert!(x.iter().all(|v| *v >= 0.0));
            let distinct = Mat::from_fn(rows, m - 1, |i, j| s[(i, j)]);
            let best = objective(distinct.as_ref(), &b, &brute_force(distinct.as_ref(), &b));
            let got = objective(s.as_ref(), &b, &x);
            assert!(
                got <= best + 1e-9 * (1.0 + best),
                "trial {trial}: {got} vs {best}"
            );
        }
    }

    #[test]
    fn dependent_passive_columns_fall_back_to_a_regularized_factor() {
        // Columns 0 and 1 are equal: appending 1 after 0 meets a zero pivot, and the
        // subsystem is then factored from scratch with tiny pivots lifted; the solution
        // still solves the reduced problem (z0 + z1 is the weight of the shared column).
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let mut s = gaussian(&mut rng, 6, 3);
        for i in 0..6 {
            s[(i, 1)] = s[(i, 0)];
        }
        let b: Vec<f64> = (0..6).map(|_| StandardNormal.sample(&mut rng)).collect();
        let g = s.transpose() * &s;
        let h: Vec<f64> = (0..3)
            .map(|j| (0..6).map(|i| s[(i, j)] * b[i]).sum())
            .collect();
        let mut solver = GramNnls::new(g.as_ref()).unwrap();
        solver.passive.extend([0, 1, 2]);
        assert!(!solver.extend_factor(&h));
        assert_eq!(solver.factored, 1);
        solver.solve_passive(&h).unwrap();
        let reduced = Mat::from_fn(6, 2, |i, j| s[(i, 2 * j)]);
        let rg = reduced.transpose() * &reduced;
        let rh = Mat::from_fn(2, 1, |j, _| (0..6).map(|i| reduced[(i, j)] * b[i]).sum());
        let expected = rg.full_piv_lu().solve(&rh);
        let z = &solver.z;
        assert!(
            (z[0] + z[1] - expected[(0, 0)]).abs() < 1e-6,
            "{z:?} vs {expected:?}"
        );
        assert!(
            (z[2] - expected[(1, 0)]).abs() < 1e-6,
            "{z:?} vs {expected:?}"
        );
    }

    #[test]
    fn kkt_conditions_hold() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for trial in 0..50 {
            let (rows, m) = (51, 50);
            let mut s = gaussian(&mut rng, rows, m);
            for j in 0..m {
                s[(rows - 1, j)] = 1.0;
            }
            let g = s.transpose() * &s;
            let mut solver = GramNnls::new(g.as_ref()).unwrap();
            let b: Vec<f64> = (0..rows).map(|_| StandardNormal.sample(&mut rng)).collect();
            let h: Vec<f64> = (0..m)
                .map(|j| (0..rows).map(|i| s[(i, j)] * b[i]).sum())
                .collect();
            let mut x = vec![0.0; m];
            let info = solver.solve(&h, &mut x).unwrap();
            assert!(info.n_positive > 0, "trial {trial}");
            for j in 0..m {
                assert!(x[j] >= 0.0);
                let w = h[j] - (0..m).map(|i| g[(j, i)] * x[i]).sum::<f64>();
                // Dual feasibility and complementary slackness.
                assert!(w <= 1e-9, "trial {trial}: w[{j}] = {w}");
                if x[j] > 0.0 {
                    assert!(
                        w.abs() <= 1e-9,
                        "trial {trial}: w[{j}] = {w} with x = {}",
                        x[j]
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        let g = Mat::from_fn(2, 3, |_, _| 1.0);
        assert!(matches!(
            nnls_gram(g.as_ref(), &[1.0, 1.0]),
            Err(GeometryError::DimensionMismatch(_))
        ));
        let g = Mat::from_fn(2, 2, |i, j| if i == j { 1.0 } else { f64::NAN });
        assert!(matches!(
            nnls_gram(g.as_ref(), &[1.0, 1.0]),
            Err(GeometryError::NonFinite(_))
        ));
        let g = Mat::<f64>::identity(2, 2);
        assert!(matches!(
            nnls_gram(g.as_ref(), &[1.0]),
            Err(GeometryError::DimensionMismatch(_))
        ));
        assert!(matches!(
            nnls_gram(g.as_ref(), &[1.0, f64::NAN]),
            Err(GeometryError::NonFinite(_))
        ));
        assert_eq!(nnls_gram(g.as_ref(), &[2.0, -1.0]).unwrap(), vec![2.0, 0.0]);
        assert!(
            nnls_gram(Mat::<f64>::zeros(0, 0).as_ref(), &[])
                .unwrap()
                .is_empty()
        );
    }
}
