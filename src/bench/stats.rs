//! Median and spread of repeated measurements.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
}

impl Stat {
    /// `None` for no samples (or only non-finite ones).
    pub fn of(samples: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            samples: n,
        })
    }

    /// Each sample mapped through `f` (e.g. seconds → rate); keeps min/max ordered.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Stat {
        let (a, b) = (f(self.min), f(self.max));
        Stat {
            median: f(self.median),
            min: a.min(b),
            max: a.max(b),
            samples: self.samples,
        }
    }
}
