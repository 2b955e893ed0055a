//! Scoring predictions: the one accuracy helper that training epochs and every analysis use.

use tch::{Kind, Tensor};

/// Fraction of `mask`ed positions where `pred == y` (`None` if the mask is empty).
pub fn accuracy(pred: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Option<f64> {
    let hits = pred.eq_tensor(y);
    match mask {
        None => {
            let n = hits.size()[0];
            (n > 0).then(|| hits.sum(Kind::Int64).int64_value(&[]) as f64 / n as f64)
        }
        Some(m) => {
            let n = m.sum(Kind::Int64).int64_value(&[]);
            (n > 0).then(|| hits.logical_and(m).sum(Kind::Int64).int64_value(&[]) as f64 / n as f64)
        }
    }
}
