//! Samples of a benchmark figure: median and range.

/// Measurements of one figure, in the order taken.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub samples: Vec<f64>,
}

impl Stats {
    /// The median (the mean of the middle two for an even count); NaN without samples.
    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => s[n / 2],
            _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    /// The smallest and largest sample.
    pub fn range(&self) -> (f64, f64) {
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Stats {
            samples: vec![3.0, 1.0, 2.0, 10.0],
        };
        assert_eq!(s.median(), 2.5);
        assert_eq!(s.range(), (1.0, 10.0));
        assert_eq!(
            Stats {
                samples: vec![4.0, 1.0, 2.0]
            }
            .median(),
            2.0
        );
        assert!(Stats::default().median().is_nan());
    }
}
