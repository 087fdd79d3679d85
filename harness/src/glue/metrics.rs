//! GLUE metrics, computed the way `evaluate.load("glue", task)` computes them (scikit-learn and
//! scipy), and tested against those libraries to 1e-9 (`tests/glue_metrics.rs`).
//!
//! * [`accuracy`] — fraction of exact matches (`sklearn.metrics.accuracy_score`).
//! * [`f1_positive`] — F1 of class 1 (`sklearn.metrics.f1_score`, `pos_label=1`); 0 when
//!   there is no true and no predicted positive (scikit-learn's `zero_division` default).
//! * [`matthews`] — multi-class Matthews correlation (`sklearn.metrics.matthews_corrcoef`),
//!   with the same arithmetic order; 0 when undefined (a constant prediction or gold column).
//! * [`pearson`] — Pearson's r (`scipy.stats.pearsonr`).
//! * [`spearman`] — Spearman's ρ with average ranks for ties (`scipy.stats.spearmanr`).
//!
//! Correlations are `None` where scipy returns NaN (fewer than two points, or a constant
//! input); the task-level scorer ([`crate::glue::tasks::score`]) records such a value as 0,
//! like Matthews, because a constant regressor has no skill and the manifest holds no NaN.
//!
//! All functions return `None` on empty input. Callers check that prediction and gold columns
//! have equal lengths (bad input is reported there); here a mismatch is a bug and panics.

/// Fraction of positions where `pred == gold`. `None` for empty input.
pub fn accuracy<T: PartialEq>(pred: &[T], gold: &[T]) -> Option<f64> {
    assert_eq!(pred.len(), gold.len(), "accuracy: length mismatch");
    if pred.is_empty() {
        return None;
    }
    let hits = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    Some(hits as f64 / pred.len() as f64)
}

/// F1 score of the positive class 1: `2·tp / (2·tp + fp + fn)`; 0 when the denominator is 0
/// (scikit-learn's default `zero_division` behaviour). `None` for empty input.
pub fn f1_positive(pred: &[usize], gold: &[usize]) -> Option<f64> {
    assert_eq!(pred.len(), gold.len(), "f1: length mismatch");
    if pred.is_empty() {
        return None;
    }
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == 1, g == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fn_;
    Some(if denom == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denom as f64
    })
}

/// Matthews correlation coefficient for any number of classes, with scikit-learn's arithmetic:
/// `cov(t,p) / sqrt(cov(p,p)·cov(t,t))` from the confusion-matrix sums, and 0 when the product
/// under the root is 0. `None` for empty input.
pub fn matthews(pred: &[usize], gold: &[usize]) -> Option<f64> {
    assert_eq!(pred.len(), gold.len(), "matthews: length mismatch");
    if pred.is_empty() {
        return None;
    }
    let k = pred.iter().chain(gold).copied().max().unwrap_or(0) + 1;
    let mut t_sum = vec![0f64; k];
    let mut p_sum = vec![0f64; k];
    let mut n_correct = 0f64;
    for (&p, &g) in pred.iter().zip(gold) {
        t_sum[g] += 1.0;
        p_sum[p] += 1.0;
        if p == g {
            n_correct += 1.0;
        }
    }
    let n = pred.len() as f64;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov_ytyp = n_correct * n - dot(&t_sum, &p_sum);
    let cov_ypyp = n * n - dot(&p_sum, &p_sum);
    let cov_ytyt = n * n - dot(&t_sum, &t_sum);
    let prod = cov_ypyp * cov_ytyt;
    Some(if prod == 0.0 {
        0.0
    } else {
        cov_ytyp / prod.sqrt()
    })
}

/// Pearson's correlation coefficient, clipped to [−1, 1]. `None` (scipy: NaN) for fewer than
/// two points or a constant input.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "pearson: length mismatch");
    let n = x.len();
    if n < 2 {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    // Constant input is undefined (scipy checks exact equality with the first element).
    if x.iter().all(|&v| v == x[0]) || y.iter().all(|&v| v == y[0]) {
        return None;
    }
    if n == 2 {
        // scipy returns the exact sign for two points.
        return Some((x[1] - x[0]).signum() * (y[1] - y[0]).signum());
    }
    let xm: Vec<f64> = x.iter().map(|v| v - mx).collect();
    let ym: Vec<f64> = y.iter().map(|v| v - my).collect();
    // Scale by the largest deviation first (as scipy does) so squares cannot overflow.
    let sx = xm.iter().fold(0f64, |a, v| a.max(v.abs()));
    let sy = ym.iter().fold(0f64, |a, v| a.max(v.abs()));
    if sx == 0.0 || sy == 0.0 {
        return None;
    }
    let xs: Vec<f64> = xm.iter().map(|v| v / sx).collect();
    let ys: Vec<f64> = ym.iter().map(|v| v / sy).collect();
    let nx = xs.iter().map(|v| v * v).sum::<f64>().sqrt();
    let ny = ys.iter().map(|v| v * v).sum::<f64>().sqrt();
    let r: f64 = xs.iter().zip(&ys).map(|(a, b)| (a / nx) * (b / ny)).sum();
    Some(r.clamp(-1.0, 1.0))
}

/// Ranks 1..=n with ties given the average of the ranks they span (`scipy.stats.rankdata`,
/// `method="average"`).
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0f64; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) share the mean of ranks i+1 ..= j+1.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation: Pearson's r of the average ranks. `None` (scipy: NaN) for
/// fewer than two points or a constant input.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "spearman: length mismatch");
    if x.len() < 2 {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hand-known values (no Python needed).
    #[test]
    fn known_values() {
        assert_eq!(accuracy(&[1, 0, 1, 1], &[1, 1, 1, 0]), Some(0.5));
        // tp=2 fp=1 fn=1 → 4/6
        assert!((f1_positive(&[1, 1, 1, 0], &[1, 1, 0, 1]).unwrap() - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(f1_positive(&[0, 0], &[0, 0]), Some(0.0));
        // sklearn docstring: y_true=[+1,+1,+1,-1], y_pred=[+1,-1,+1,+1] → -1/3
        let m = matthews(&[1, 0, 1, 1], &[1, 1, 1, 0]).unwrap();
        assert!((m + 1.0 / 3.0).abs() < 1e-15, "{m}");
        assert_eq!(matthews(&[1, 1, 1], &[0, 1, 0]), Some(0.0));
        assert!((matthews(&[0, 1, 2], &[0, 1, 2]).unwrap() - 1.0).abs() < 1e-15);
        assert_eq!(pearson(&[1.0, 2.0], &[1.0, 3.0]), Some(1.0));
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-15);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 3.0]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 5.0]),
            vec![2.5, 4.0, 2.5, 1.0]
        );
        // spearmanr([1,1,2],[1,2,3]) = sqrt(3)/2
        let s = spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((s - 3f64.sqrt() / 2.0).abs() < 1e-15, "{s}");
        assert_eq!(accuracy::<usize>(&[], &[]), None);
    }
}
