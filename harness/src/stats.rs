//! Small descriptive statistics shared by benchmarks and result summaries: median, quantiles
//! (linear interpolation between closest ranks, as numpy's default) and a run summary.
use serde::Serialize;

/// The q-quantile (0 ≤ q ≤ 1) of an ascending, non-empty slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Median (mean of the two middle values for an even count); `None` for an empty slice.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(quantile_sorted(&v, 0.5))
}

/// Timings or scores of repeated runs, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    /// Every run, in the order measured.
    pub runs: Vec<f64>,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Summarise `runs`; `None` when empty.
    pub fn of(runs: &[f64]) -> Option<Spread> {
        if runs.is_empty() {
            return None;
        }
        let mut v = runs.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            runs: runs.to_vec(),
            median: quantile_sorted(&v, 0.5),
            q1: quantile_sorted(&v, 0.25),
            q3: quantile_sorted(&v, 0.75),
            min: v[0],
            max: v[v.len() - 1],
        })
    }

    /// Interquartile range relative to the median.
    pub fn relative_iqr(&self) -> f64 {
        (self.q3 - self.q1) / self.median
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values: numpy.quantile / numpy.median (linear method) on the same inputs.
    #[test]
    fn matches_numpy_linear_quantiles() {
        let xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        let s = Spread::of(&xs).unwrap();
        assert_eq!(s.median, 3.5);
        assert_eq!(s.q1, 1.75);
        assert_eq!(s.q3, 5.25);
        assert_eq!((s.min, s.max), (1.0, 9.0));
        assert_eq!(median(&[2.0, 7.0, 1.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        assert!(Spread::of(&[]).is_none());
    }
}
