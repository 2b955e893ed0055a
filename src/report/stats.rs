//! The mean and spread over seeds that every figure plots.

/// Mean, sample standard deviation and count of a set of values (one per seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); 0 for a single value.
    pub sd: f64,
    /// How many values.
    pub n: usize,
}

impl Stat {
    /// Summarizes values; `None` for an empty set.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stat { mean, sd, n })
    }

    /// Lower end of the band drawn around the mean.
    pub fn low(&self) -> f64 {
        self.mean - self.sd
    }

    /// Upper end of the band drawn around the mean.
    pub fn high(&self) -> f64 {
        self.mean + self.sd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_standard_deviation_by_hand() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum to 32, 32 / 7.
        let s = Stat::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-15);
        assert_eq!(s.n, 8);
        let one = Stat::of(&[0.25]).unwrap();
        assert_eq!(
            (one.mean, one.sd, one.low(), one.high()),
            (0.25, 0.0, 0.25, 0.25)
        );
        assert!(Stat::of(&[]).is_none());
    }
}
