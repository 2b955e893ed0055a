//! Linear probe: how well a linear classifier reads the classes off a layer's features.
//!
//! The classifier is ridge regression to one-hot targets (closed form), predicting the
//! class with the largest output. Features are standardized with the mean and standard
//! deviation of the training part (a constant feature is only centered). The regularizer
//! is `ridge * n_train`, i.e. `ridge` relative to the squared norm of a standardized
//! feature. With fewer training examples than features the dual (kernel) form
//! `W = X^T (X X^T + lambda I)^{-1} Y` is solved, else the primal
//! `W = (X^T X + lambda I)^{-1} X^T Y`; an intercept comes from centering the targets.
//!
//! The examples are split by [`stratified_half_split`].

use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::error::{GeometryError, check_finite};

/// Settings of [`linear_probe`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearProbeOptions {
    /// Ridge strength relative to the squared norm of a standardized feature (> 0).
    pub ridge: f64,
    /// Seed of the train/test split.
    pub seed: u64,
}

impl Default for LinearProbeOptions {
    fn default() -> Self {
        LinearProbeOptions {
            ridge: 1e-2,
            seed: 0,
        }
    }
}

/// What [`linear_probe`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearProbeResult {
    /// Fraction of held-out examples classified correctly.
    pub test_accuracy: f64,
    /// Fraction of training examples classified correctly.
    pub train_accuracy: f64,
    /// Number of training examples.
    pub n_train: usize,
    /// Number of held-out examples.
    pub n_test: usize,
    /// Number of distinct labels.
    pub n_classes: usize,
}

/// Deterministic stratified split: the examples of each class (classes in increasing
/// label order) are shuffled with one `ChaCha8Rng` seeded from `seed`; the first
/// `ceil(n_c / 2)` go to training, the other `floor(n_c / 2)` to testing. Returns
/// `(train, test)` example indices, each in increasing order.
pub fn stratified_half_split(labels: &[usize], seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&e| labels[e] == c).collect();
        members.shuffle(&mut rng);
        let n_train = members.len().div_ceil(2);
        train.extend_from_slice(&members[..n_train]);
        test.extend_from_slice(&members[n_train..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Accuracy of a ridge-regression linear classifier on `features` (`examples x
/// features`) with one label per example, trained and tested on the halves of
/// [`stratified_half_split`] (see the module documentation for the classifier).
pub fn linear_probe(
    features: MatRef<'_, f64>,
    labels: &[usize],
    options: &LinearProbeOptions,
) -> Result<LinearProbeResult, GeometryError> {
    let (n_examples, n_features) = (features.nrows(), features.ncols());
    if labels.len() != n_examples {
        return Err(GeometryError::DimensionMismatch(format!(
            "{} labels for {n_examples} examples",
            labels.len()
        )));
    }
    if n_features == 0 {
        return Err(GeometryError::DimensionMismatch(
            "examples have no features".into(),
        ));
    }
    if !(options.ridge > 0.0 && options.ridge.is_finite()) {
        return Err(GeometryError::InvalidOption(format!(
            "ridge must be positive and finite, got {}",
            options.ridge
        )));
    }
    check_finite(features, || "features".into())?;
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() < 2 {
        return Err(GeometryError::TooFewManifolds {
            found: classes.len(),
            needed: 2,
        });
    }
    let class_of = |label: usize| classes.binary_search(&label).expect("label is a class");
    let (train, test) = stratified_half_split(labels, options.seed);
    if test.is_empty() {
        return Err(GeometryError::Degenerate(
            "no class has two examples, so none is left for testing".into(),
        ));
    }

    // Standardization from the training part.
    let n_tr = train.len();
    let mut mean = vec![0.0; n_features];
    let mut scale = vec![0.0; n_features];
    for (f, (mu, sd)) in mean.iter_mut().zip(scale.iter_mut()).enumerate() {
        let m = train.iter().map(|&e| features[(e, f)]).sum::<f64>() / n_tr as f64;
        let var = train
            .iter()
            .map(|&e| (features[(e, f)] - m).powi(2))
            .sum::<f64>()
            / n_tr as f64;
        *mu = m;
        *sd = if var > 0.0 { var.sqrt() } else { 1.0 };
    }
    let standardized = |rows: &[usize]| {
        Mat::from_fn(rows.len(), n_features, |r, f| {
            (features[(rows[r], f)] - mean[f]) / scale[f]
        })
    };
    let x_train = standardized(&train);
    let x_test = standardized(&test);

    let n_classes = classes.len();
    let mut y_mean = vec![0.0; n_classes];
    for &e in &train {
        y_mean[class_of(labels[e])] += 1.0 / n_tr as f64;
    }
    let y_train = Mat::from_fn(n_tr, n_classes, |r, c| {
        let one = if class_of(labels[train[r]]) == c {
            1.0
        } else {
            0.0
        };
        one - y_mean[c]
    });

    let lambda = options.ridge * n_tr as f64;
    let singular =
        |e| GeometryError::Degenerate(format!("ridge system is not positive definite: {e:?}"));
    let weights = if n_tr < n_features {
        let mut kernel = &x_train * x_train.transpose();
        for i in 0..n_tr {
            kernel[(i, i)] += lambda;
        }
        let dual = kernel.llt(Side::Lower).map_err(singular)?.solve(&y_train);
        x_train.transpose() * &dual
    } else {
        let mut gram = x_train.transpose() * &x_train;
        for i in 0..n_features {
            gram[(i, i)] += lambda;
        }
        gram.llt(Side::Lower)
            .map_err(singular)?
            .solve(x_train.transpose() * &y_train)
    };

    let accuracy = |x: &Mat<f64>, rows: &[usize]| {
        let scores = x * &weights;
        let correct = (0..rows.len())
            .filter(|&r| {
                let predicted = (0..n_classes)
                    .map(|c| (c, scores[(r, c)] + y_mean[c]))
                    .fold((0, f64::NEG_INFINITY), |best, (c, s)| {
                        if s > best.1 { (c, s) } else { best }
                    })
                    .0;
                predicted == class_of(labels[rows[r]])
            })
            .count();
        correct as f64 / rows.len() as f64
    };
    Ok(LinearProbeResult {
        test_accuracy: accuracy(&x_test, &test),
        train_accuracy: accuracy(&x_train, &train),
        n_train: n_tr,
        n_test: test.len(),
        n_classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(rng: &mut ChaCha8Rng, r: usize, c: usize) -> Mat<f64> {
        Mat::from_fn(r, c, |_, _| StandardNormal.sample(rng))
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let labels: Vec<usize> = (0..31).map(|e| [4, 9, 2][e % 3]).collect();
        let (train, test) = stratified_half_split(&labels, 3);
        assert_eq!((train.len(), test.len()), (16, 15));
        for c in [2, 4, 9] {
            let n_c = labels.iter().filter(|&&l| l == c).count();
            let in_train = train.iter().filter(|&&e| labels[e] == c).count();
            assert_eq!(in_train, n_c.div_ceil(2));
        }
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..31).collect::<Vec<_>>());
        assert_eq!(stratified_half_split(&labels, 3), (train, test.clone()));
        assert_ne!(stratified_half_split(&labels, 4).1, test);
    }

    #[test]
    fn separable_classes_are_read_perfectly() {
        // Four classes around far-apart means, in both the dual (examples < features) and
        // the primal form.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (examples, n_features) in [(80, 300), (400, 20)] {
            let means = gaussian(&mut rng, 4, n_features);
            let noise = gaussian(&mut rng, examples, n_features);
            let labels: Vec<usize> = (0..examples).map(|e| e % 4).collect();
            let x = Mat::from_fn(examples, n_features, |e, f| {
                5.0 * means[(labels[e], f)] + noise[(e, f)]
            });
            let r = linear_probe(x.as_ref(), &labels, &LinearProbeOptions::default()).unwrap();
            assert_eq!(r.test_accuracy, 1.0, "{examples} x {n_features}");
            assert_eq!(r.train_accuracy, 1.0);
            assert_eq!((r.n_train + r.n_test, r.n_classes), (examples, 4));
        }
    }

    #[test]
    fn random_labels_give_chance() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let x = gaussian(&mut rng, 2000, 30);
        let labels: Vec<usize> = (0..2000)
            .map(|_| rand::RngExt::random_range(&mut rng, 0..5))
            .collect();
        let r = linear_probe(x.as_ref(), &labels, &LinearProbeOptions::default()).unwrap();
        // Chance is 0.2; the standard deviation over 1000 test examples is 0.013.
        assert!(
            (r.test_accuracy - 0.2).abs() < 0.05,
            "accuracy {}",
            r.test_accuracy
        );
    }

    #[test]
    fn rejects_bad_input() {
        let x = Mat::from_fn(6, 3, |i, j| (i * j) as f64);
        let opts = LinearProbeOptions::default();
        assert!(matches!(
            linear_probe(x.as_ref(), &[0, 1], &opts),
            Err(GeometryError::DimensionMismatch(_))
        ));
        assert!(matches!(
            linear_probe(x.as_ref(), &[1; 6], &opts),
            Err(GeometryError::TooFewManifolds { found: 1, .. })
        ));
        assert!(matches!(
            linear_probe(x.as_ref(), &[0, 1, 2, 3, 4, 5], &opts),
            Err(GeometryError::Degenerate(_))
        ));
        let bad = LinearProbeOptions {
            ridge: 0.0,
            ..opts.clone()
        };
        assert!(matches!(
            linear_probe(x.as_ref(), &[0, 0, 0, 1, 1, 1], &bad),
            Err(GeometryError::InvalidOption(_))
        ));
        let mut nan = x.clone();
        nan[(1, 1)] = f64::NAN;
        assert!(matches!(
            linear_probe(nan.as_ref(), &[0, 0, 0, 1, 1, 1], &opts),
            Err(GeometryError::NonFinite(_))
        ));
        // Constant features are fine.
        let r = linear_probe(Mat::<f64>::zeros(6, 2).as_ref(), &[0, 0, 0, 1, 1, 1], &opts).unwrap();
        assert_eq!(r.n_test, 2);
    }
}
