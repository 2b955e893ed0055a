//! Finding mislabeled examples from training dynamics: per-example scores (higher = more
//! likely mislabeled) and how well a score ranks the truly mislabeled ones.
//!
//! Scores from one training run, per example, from its per-epoch records:
//! - [`aum`]: area under the margin (Pleiss et al. 2020), the margin of the training label
//!   (its logit minus the largest other logit) averaged over an epoch window, negated;
//! - [`mean_loss`]: the training-label loss averaged over the window;
//! - [`forgetting`]: forgetting events (Toneva et al. 2019), the times an example goes from
//!   classified as its training label to not; one never learned counts `epochs + 1`.
//!
//! Rankings are judged against the truth with [`auroc`] (ties count half, the Mann-Whitney
//! statistic), [`average_precision`] (the mean of the precision at each true positive, as
//! scikit-learn computes it, ties grouped) and [`flagged_quality`] at a flagged count.
//! [`estimate_flagged`] says how many to flag without knowing the noise level: Otsu's
//! threshold on the scores (the cut that best separates them into two groups).

/// The quality of flagging the `k` highest-scored examples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flagged {
    /// How many are flagged.
    pub k: usize,
    /// Of the flagged, the fraction truly mislabeled (`NaN` when `k` is 0).
    pub precision: f64,
    /// Of the truly mislabeled, the fraction flagged (`NaN` when there are none).
    pub recall: f64,
    /// Their harmonic mean (0 when both are 0, `NaN` when either is).
    pub f1: f64,
}

/// Area under the ROC curve of `scores` for the examples where `positive` is true: the
/// probability that a random positive scores above a random negative, ties counting half.
/// `None` without at least one positive and one negative (or with a non-finite score).
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len(), "one label per score");
    if scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Sum of the positives' ranks (1-based, ties averaged), then Mann-Whitney U.
    let order = sorted_ascending(scores);
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * order[i..=j].iter().filter(|&&e| positive[e]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Average precision of the ranking by `scores` (descending): the sum over score thresholds
/// of the precision there times the gain in recall, examples with equal scores taken
/// together. `None` without a positive (or with a non-finite score).
pub fn average_precision(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len(), "one label per score");
    if scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let n_pos = positive.iter().filter(|p| **p).count();
    if n_pos == 0 {
        return None;
    }
    let mut order = sorted_ascending(scores);
    order.reverse();
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        tp += order[i..=j].iter().filter(|&&e| positive[e]).count();
        seen += j - i + 1;
        let recall = tp as f64 / n_pos as f64;
        ap += (recall - last_recall) * tp as f64 / seen as f64;
        last_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

/// Precision, recall and F1 of flagging the `k` highest-scored examples (ties broken by
/// index, lower first).
pub fn flagged_quality(scores: &[f64], positive: &[bool], k: usize) -> Flagged {
    assert_eq!(scores.len(), positive.len(), "one label per score");
    let k = k.min(scores.len());
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let tp = order[..k].iter().filter(|&&e| positive[e]).count() as f64;
    let n_pos = positive.iter().filter(|p| **p).count() as f64;
    let precision = if k == 0 { f64::NAN } else { tp / k as f64 };
    let recall = if n_pos == 0.0 { f64::NAN } else { tp / n_pos };
    let f1 = if precision.is_nan() || recall.is_nan() {
        f64::NAN
    } else if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Flagged {
        k,
        precision,
        recall,
        f1,
    }
}

/// How many examples to flag, from the scores alone: those above Otsu's threshold, the cut
/// of the sorted scores that maximizes the variance between the two sides. 0 for fewer than
/// two distinct scores.
pub fn estimate_flagged(scores: &[f64]) -> usize {
    let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n < 2 || sorted[0] == sorted[n - 1] {
        return 0;
    }
    let total: f64 = sorted.iter().sum();
    let (mut best, mut best_between) = (0, f64::NEG_INFINITY);
    let mut low_sum = 0.0;
    for i in 1..n {
        low_sum += sorted[i - 1];
        // A cut only between distinct values.
        if sorted[i] == sorted[i - 1] {
            continue;
        }
        let (w0, w1) = (i as f64, (n - i) as f64);
        let (m0, m1) = (low_sum / w0, (total - low_sum) / w1);
        let between = w0 * w1 * (m0 - m1).powi(2);
        if between > best_between {
            best_between = between;
            best = n - i;
        }
    }
    best
}

/// Area under the margin, negated (higher = more likely mislabeled): minus the mean of
/// `margins[e][i]` over the epochs `e` in `window`, per example `i`.
pub fn aum(margins: &[Vec<f64>], window: std::ops::Range<usize>) -> Vec<f64> {
    mean_over(margins, window).into_iter().map(|m| -m).collect()
}

/// The mean of `losses[e][i]` over the epochs `e` in `window`, per example `i`.
pub fn mean_loss(losses: &[Vec<f64>], window: std::ops::Range<usize>) -> Vec<f64> {
    mean_over(losses, window)
}

/// Forgetting events per example from `correct[e][i]` (whether example `i` is classified
/// as its training label after epoch `e`, epochs in order): transitions from true to false;
/// an example never classified as its label counts `epochs + 1`, above any that was.
pub fn forgetting(correct: &[Vec<bool>]) -> Vec<f64> {
    let n = correct.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let learned = correct.iter().any(|c| c[i]);
            if !learned {
                return (correct.len() + 1) as f64;
            }
            correct.windows(2).filter(|w| w[0][i] && !w[1][i]).count() as f64
        })
        .collect()
}

/// Per example, the mean of `values[e][i]` over `window` (clipped to the epochs there are).
fn mean_over(values: &[Vec<f64>], window: std::ops::Range<usize>) -> Vec<f64> {
    let n = values.first().map_or(0, Vec::len);
    let end = window.end.min(values.len());
    let start = window.start.min(end);
    let epochs = &values[start..end];
    (0..n)
        .map(|i| {
            if epochs.is_empty() {
                f64::NAN
            } else {
                epochs.iter().map(|e| e[i]).sum::<f64>() / epochs.len() as f64
            }
        })
        .collect()
}

/// The ROC curve of `scores` for the examples where `positive` is true: `(fpr, tpr)` at
/// every distinct score taken as a threshold (flag those scoring at least it), from (0, 0)
/// to (1, 1), thinned to at most `max_points` (the ends always kept). Empty without at
/// least one positive and one negative.
pub fn roc_curve(scores: &[f64], positive: &[bool], max_points: usize) -> Vec<(f64, f64)> {
    assert_eq!(scores.len(), positive.len(), "one label per score");
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Vec::new();
    }
    let mut order = sorted_ascending(scores);
    order.reverse();
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp, mut i) = (0usize, 0usize, 0usize);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let pos = order[i..=j].iter().filter(|&&e| positive[e]).count();
        tp += pos;
        fp += j - i + 1 - pos;
        points.push((fp as f64 / n_neg as f64, tp as f64 / n_pos as f64));
        i = j + 1;
    }
    let max_points = max_points.max(2);
    if points.len() <= max_points {
        return points;
    }
    let last = points.len() - 1;
    (0..max_points)
        .map(|k| points[k * last / (max_points - 1)])
        .collect()
}

/// Each score's rank among `scores` divided by their count, in (0, 1] (ties share their
/// mean rank): scores of different methods on one scale, for averaging into an ensemble.
pub fn normalized_ranks(scores: &[f64]) -> Vec<f64> {
    let n = scores.len();
    let order = sorted_ascending(scores);
    let mut ranks = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = ((i + j) as f64 / 2.0 + 1.0) / n as f64;
        for &e in &order[i..=j] {
            ranks[e] = mean_rank;
        }
        i = j + 1;
    }
    ranks
}

/// Indices of `scores` in ascending order of score (ties by index).
fn sorted_ascending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    // scikit-learn's documented example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    // = 0.75 and average_precision_score(...) = 0.8333.
    const Y: [bool; 4] = [false, false, true, true];
    const S: [f64; 4] = [0.1, 0.4, 0.35, 0.8];

    #[test]
    fn auroc_and_average_precision_match_the_reference_example() {
        assert!((auroc(&S, &Y).unwrap() - 0.75).abs() < 1e-12);
        assert!((average_precision(&S, &Y).unwrap() - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn ties_count_half_and_degenerate_cases_are_none() {
        assert_eq!(auroc(&[0.5; 4], &Y), Some(0.5));
        // All tied: one threshold, precision 2/4 at recall 1.
        assert_eq!(average_precision(&[0.5; 4], &Y), Some(0.5));
        assert_eq!(auroc(&S, &[true; 4]), None);
        assert_eq!(average_precision(&S, &[false; 4]), None);
        assert_eq!(auroc(&[0.1, f64::NAN, 0.2, 0.3], &Y), None);
        // A perfect ranking and its reverse.
        assert_eq!(auroc(&[0.0, 0.1, 0.9, 1.0], &Y), Some(1.0));
        assert_eq!(auroc(&[1.0, 0.9, 0.1, 0.0], &Y), Some(0.0));
        assert_eq!(average_precision(&[0.0, 0.1, 0.9, 1.0], &Y), Some(1.0));
    }

    #[test]
    fn flagging_the_top_k() {
        // Top 2 of S: indices 3 (0.8, positive) and 1 (0.4, negative).
        let f = flagged_quality(&S, &Y, 2);
        assert_eq!((f.k, f.precision, f.recall), (2, 0.5, 0.5));
        assert_eq!(f.f1, 0.5);
        let f = flagged_quality(&S, &Y, 3);
        assert!((f.precision - 2.0 / 3.0).abs() < 1e-12 && f.recall == 1.0);
        assert!((f.f1 - 0.8).abs() < 1e-12);
        assert!(flagged_quality(&S, &Y, 0).precision.is_nan());
        assert_eq!(flagged_quality(&S, &Y, 99).k, 4);
    }

    #[test]
    fn otsu_splits_two_groups() {
        assert_eq!(estimate_flagged(&[0.0, 0.1, 0.05, 5.0, 5.2]), 2);
        assert_eq!(estimate_flagged(&[1.0, 1.0, 1.0]), 0);
        assert_eq!(estimate_flagged(&[]), 0);
        // Ties are never split: the cut falls between 0 and 3.
        assert_eq!(estimate_flagged(&[0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0]), 4);
    }

    #[test]
    fn roc_curve_of_the_reference_example() {
        // Thresholds 0.8, 0.4, 0.35, 0.1: scikit-learn's roc_curve gives fpr [0, 0, .5, .5, 1]
        // and tpr [0, .5, .5, 1, 1].
        assert_eq!(
            roc_curve(&S, &Y, 100),
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        // Thinned to 3: the ends and the middle point.
        assert_eq!(
            roc_curve(&S, &Y, 3),
            vec![(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
        );
        assert!(roc_curve(&S, &[true; 4], 10).is_empty());
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(
            normalized_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5 / 4.0, 0.25, 3.5 / 4.0, 0.5]
        );
    }

    #[test]
    fn dynamics_scores() {
        // Two examples over 3 epochs: margins and losses per epoch.
        let margins = vec![vec![1.0, -2.0], vec![3.0, -1.0], vec![5.0, 4.0]];
        assert_eq!(aum(&margins, 0..2), vec![-2.0, 1.5]);
        assert_eq!(aum(&margins, 0..10), vec![-3.0, -1.0 / 3.0]);
        assert_eq!(mean_loss(&margins, 1..3), vec![4.0, 1.5]);
        let correct = vec![
            vec![true, false, false],
            vec![false, false, true],
            vec![true, false, false],
            vec![false, false, true],
        ];
        assert_eq!(forgetting(&correct), vec![2.0, 5.0, 1.0]);
    }
}
