//! The bootstrap over dev examples: the gate's paired GLUE checks and the confidence intervals
//! `glue run` records (one implementation for both).
//!
//! Both runs predicted the same dev examples in every trial (paired by `idx`). One resample
//! draws `n` examples with replacement ([`crate::rng::SplitMix64`], a stream per evaluation
//! set derived from the thresholds' `seed` with the label `gate/bootstrap/<set>`); every trial
//! of both runs is re-scored on the *same* drawn examples with
//! [`crate::glue::tasks::score`], and each run's value is the median over its trials (the
//! manifest's own statistic). The resample's difference is candidate − baseline in percent
//! points. The aggregate is recomputed from the per-set resampled medians under the rule's
//! terms, resample by resample.
use crate::glue::predictions::Row;
use crate::glue::tasks::{self, EvalSet, Target};
use crate::rng::SplitMix64;
use anyhow::Result;
use std::collections::BTreeMap;

/// One evaluation set's predictions of one or more sides, paired by example:
/// `pred[side][trial][i]` for example `i` (the examples in ascending `idx` order), `gold[i]`.
/// In the gate, side 0 is the baseline and side 1 the candidate; `glue run` uses side 0 for the
/// run and further sides for its controls.
#[derive(Debug, Clone)]
pub struct Paired {
    pub set: EvalSet,
    pub gold: Vec<Target>,
    pub pred: Vec<Vec<Vec<Target>>>,
}

impl Paired {
    /// Pair the trials of both runs by `idx`. `Err(reason)` (a plain string, not an error)
    /// when they cannot be paired: different example sets or different gold labels.
    pub fn new(
        set: EvalSet,
        baseline: &[Vec<Row>],
        candidate: &[Vec<Row>],
    ) -> std::result::Result<Paired, String> {
        Paired::of_sides(set, &[baseline, candidate])
    }

    /// Pair the trials of any number of sides by `idx` (every side needs at least one trial).
    pub fn of_sides(set: EvalSet, sides: &[&[Vec<Row>]]) -> std::result::Result<Paired, String> {
        let mut gold: Option<BTreeMap<u64, Target>> = None;
        let mut pred: Vec<Vec<Vec<Target>>> = vec![Vec::new(); sides.len()];
        for (side, trials) in sides.iter().enumerate() {
            for (k, rows) in trials.iter().enumerate() {
                let mut map = BTreeMap::new();
                for r in rows {
                    let g = r.gold.ok_or_else(|| {
                        format!(
                            "trial {k}: idx {} has no gold label in its predictions",
                            r.idx
                        )
                    })?;
                    map.insert(r.idx, (r.prediction, g));
                }
                let g: BTreeMap<u64, Target> = map.iter().map(|(i, (_, g))| (*i, *g)).collect();
                match &gold {
                    None => gold = Some(g),
                    Some(first) => {
                        if first.len() != g.len() || !first.keys().eq(g.keys()) {
                            return Err(format!(
                                "the runs' predictions cover different dev examples ({} vs {})",
                                first.len(),
                                g.len()
                            ));
                        }
                        if first.values().zip(g.values()).any(|(a, b)| a != b) {
                            return Err("the runs' gold labels differ".into());
                        }
                    }
                }
                pred[side].push(map.into_values().map(|(p, _)| p).collect());
            }
        }
        let gold: Vec<Target> = gold
            .ok_or_else(|| "no trials".to_string())?
            .into_values()
            .collect();
        if gold.is_empty() || pred.is_empty() || pred.iter().any(Vec::is_empty) {
            return Err("no trials with predictions".into());
        }
        Ok(Paired { set, gold, pred })
    }

    /// Number of dev examples.
    pub fn len(&self) -> usize {
        self.gold.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.gold.is_empty()
    }
}

/// Per-trial-median metric values of one side on one resample, by metric name (fractions).
pub type SideValues = BTreeMap<String, f64>;

/// Resample `p` (two sides) `resamples` times with the generator seeded by `seed`; returns,
/// per resample, the trial-median metrics of [baseline, candidate] for the metrics in `metrics`.
pub fn resample(
    p: &Paired,
    metrics: &[String],
    resamples: u32,
    seed: u64,
) -> Result<Vec<[SideValues; 2]>> {
    if p.pred.len() != 2 {
        anyhow::bail!(
            "internal: a paired resample needs 2 sides, not {}",
            p.pred.len()
        );
    }
    Ok(resample_sides(p, metrics, resamples, seed)?
        .into_iter()
        .map(|mut v| {
            let c = v.pop().unwrap_or_default();
            let b = v.pop().unwrap_or_default();
            [b, c]
        })
        .collect())
}

/// The resampling indices: `resamples` draws of `n` example positions with replacement, from
/// the generator seeded by `seed` (draw `b`, position `i` is the `b·n + i`-th
/// [`SplitMix64::below`]`(n)`). Written out so other implementations can use the same draws.
pub fn indices(n: usize, resamples: u32, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64(seed);
    (0..resamples)
        .map(|_| (0..n).map(|_| rng.below(n as u64) as usize).collect())
        .collect()
}

/// Resample every side of `p`: per resample (same drawn examples for every side and trial),
/// per side, the trial-median of each metric in `metrics` (fractions).
pub fn resample_sides(
    p: &Paired,
    metrics: &[String],
    resamples: u32,
    seed: u64,
) -> Result<Vec<Vec<SideValues>>> {
    let n = p.len();
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(resamples as usize);
    let mut idx = vec![0usize; n];
    let mut gold = vec![Target::Class(0); n];
    let mut pred = vec![Target::Class(0); n];
    for _ in 0..resamples {
        for (i, slot) in idx.iter_mut().enumerate() {
            *slot = rng.below(n as u64) as usize;
            gold[i] = p.gold[*slot];
        }
        let mut sides: Vec<SideValues> = vec![BTreeMap::new(); p.pred.len()];
        for (side, values) in sides.iter_mut().enumerate() {
            let mut per_metric: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for trial in &p.pred[side] {
                for (i, &j) in idx.iter().enumerate() {
                    pred[i] = trial[j];
                }
                let m = tasks::score(&p.set, &pred, &gold)?;
                for name in metrics {
                    if let Some(v) = m.get(name) {
                        per_metric.entry(name).or_default().push(*v);
                    }
                }
            }
            for (name, v) in per_metric {
                values.insert(
                    name.to_string(),
                    crate::stats::median(&v).unwrap_or(f64::NAN),
                );
            }
        }
        out.push(sides);
    }
    Ok(out)
}

/// The percentile interval of level `level` (0.95 for 95%) of bootstrap values: the
/// `(1−level)/2` and `(1+level)/2` quantiles, linearly interpolated between closest ranks
/// (numpy's default `percentile`). Non-finite values are dropped; `None` when none is left.
pub fn percentile_interval(values: &[f64], level: f64) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0;
    Some((
        crate::stats::quantile_sorted(&v, a),
        crate::stats::quantile_sorted(&v, 1.0 - a),
    ))
}

/// The one-sided bootstrap p-value of "the candidate is worse than the baseline by more than
/// `margin`": the share of resampled differences `d_b` (candidate − baseline) with
/// `d_b ≥ −margin`, as `(1 + count) / (1 + B)` so it is never 0.
pub fn p_value(differences: &[f64], margin: f64) -> f64 {
    let count = differences.iter().filter(|d| **d >= -margin).count();
    (1.0 + count as f64) / (1.0 + differences.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(usize, usize)]) -> Vec<Row> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (p, g))| Row {
                idx: i as u64,
                prediction: Target::Class(*p),
                gold: Some(Target::Class(*g)),
            })
            .collect()
    }

    #[test]
    fn identical_runs_give_zero_differences_and_p_one() {
        let set = tasks::eval_set("sst2").unwrap();
        let t: Vec<(usize, usize)> = (0..50).map(|i| (i % 3 % 2, i % 2)).collect();
        let p = Paired::new(set, &[rows(&t), rows(&t)], &[rows(&t), rows(&t)]).unwrap();
        let r = resample(&p, &["accuracy".into()], 200, 1).unwrap();
        let d: Vec<f64> = r
            .iter()
            .map(|s| s[1]["accuracy"] - s[0]["accuracy"])
            .collect();
        assert!(d.iter().all(|x| *x == 0.0));
        assert_eq!(p_value(&d, 0.0), 1.0);
        // A clearly worse candidate: every resample worse by far more than the margin.
        let worse: Vec<(usize, usize)> = (0..50).map(|i| (1 - i % 2, i % 2)).collect();
        let good: Vec<(usize, usize)> = (0..50).map(|i| (i % 2, i % 2)).collect();
        let p = Paired::new(set, &[rows(&good)], &[rows(&worse)]).unwrap();
        let r = resample(&p, &["accuracy".into()], 200, 1).unwrap();
        let d: Vec<f64> = r
            .iter()
            .map(|s| 100.0 * (s[1]["accuracy"] - s[0]["accuracy"]))
            .collect();
        assert_eq!(p_value(&d, 1.0), 1.0 / 201.0);
    }

    #[test]
    fn unpairable_inputs_say_why() {
        let set = tasks::eval_set("sst2").unwrap();
        let a = rows(&[(0, 0), (1, 1)]);
        let b = rows(&[(0, 0)]);
        assert!(Paired::new(set, std::slice::from_ref(&a), &[b])
            .unwrap_err()
            .contains("different"));
        let c = rows(&[(0, 1), (1, 1)]);
        assert!(Paired::new(set, &[a], &[c]).unwrap_err().contains("gold"));
    }
}
