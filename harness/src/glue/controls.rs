//! Controls and uncertainty of a `glue run`, recorded beside the run's own numbers and never
//! mixed into its aggregate.
//!
//! Controls:
//! * `constant` — the majority-class predictor of each task (the most frequent training label,
//!   ties to the lowest class index), or for STS-B the mean training score, predicted for every
//!   dev example. No training; always recorded.
//! * `no_pretraining` — the same architecture fine-tuned from its untrained initialisation
//!   under the same protocol and trial seeds (the paper's "BERT-base (no pretraining)" row), when
//!   `[glue] control_no_pretraining` resolves to true (see [`crate::glue::config`]).
//!
//! Uncertainty: for the run and every control, per evaluation set and metric, a 95% percentile
//! bootstrap interval of the median over trials ([`crate::glue::bootstrap`]): B = [`RESAMPLES`]
//! draws of the dev examples with replacement, from the generator seeded by
//! `seeds::derive(master, "glue/bootstrap/<set>")`, the same draws for the run and its controls;
//! each trial is re-scored on the drawn examples and the resample's value is the trial median.
//! The aggregate's interval recomputes the rule from each resample's per-set medians (resample
//! `b` of every set together). "Above control" is run − control in percent points, with the
//! interval of the paired differences. The spread over trials is min, max and the sample
//! standard deviation of the trial values.
use crate::glue::aggregate::{self, Aggregate, Rule};
use crate::glue::bootstrap::{self, Paired};
use crate::glue::predictions::Row;
use crate::glue::tasks::{self, EvalSet, Example, Metrics, Target, Task};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bootstrap resamples behind every recorded interval.
pub const RESAMPLES: u32 = 1000;
/// Level of the recorded intervals.
pub const LEVEL: f64 = 0.95;

/// The constant predictor of `task` from its training examples: the most frequent class (ties
/// to the lowest index) or, for a regression task, the mean score.
pub fn constant_prediction(task: Task, train: &[Example]) -> Result<Target> {
    if task.is_regression() {
        let s: Vec<f64> = train
            .iter()
            .filter_map(|e| match e.label {
                Some(Target::Score(s)) => Some(s),
                _ => None,
            })
            .collect();
        if s.is_empty() {
            return Err(crate::error::Error::input(task.id(), "no training scores").into());
        }
        return Ok(Target::Score(s.iter().sum::<f64>() / s.len() as f64));
    }
    let mut counts = vec![0usize; task.num_labels().max(1)];
    for e in train {
        if let Some(Target::Class(c)) = e.label {
            if c < counts.len() {
                counts[c] += 1;
            }
        }
    }
    if counts.iter().all(|c| *c == 0) {
        return Err(crate::error::Error::input(task.id(), "no training labels").into());
    }
    let best = counts.iter().copied().max().unwrap_or(0);
    Ok(Target::Class(
        counts.iter().position(|c| *c == best).unwrap_or(0),
    ))
}

/// The constant predictor's rows on dev examples.
pub fn constant_rows(pred: Target, dev: &[Example]) -> Vec<Row> {
    dev.iter()
        .map(|e| Row {
            idx: e.idx,
            prediction: pred,
            gold: e.label,
        })
        .collect()
}

/// An interval, in the units of the value it bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    fn of(values: &[f64]) -> Option<Interval> {
        bootstrap::percentile_interval(values, LEVEL).map(|(lo, hi)| Interval { lo, hi })
    }

    /// Half the interval's width (the "± Y" of a sentence).
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// A difference run − control in percent points, with its paired bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub delta: f64,
    pub ci95: Interval,
}

/// Trial values of one metric: min, max and sample standard deviation (fractions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrialSpread {
    pub n: usize,
    pub min: f64,
    pub max: f64,
    /// Sample standard deviation (n − 1); 0 for one trial.
    pub sd: f64,
}

impl TrialSpread {
    pub fn of(v: &[f64]) -> Option<TrialSpread> {
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(TrialSpread {
            n,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            sd,
        })
    }
}

/// One side's uncertainty on one set: per metric, the median's interval (fractions) and the
/// spread over trials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetUncertainty {
    pub ci95: BTreeMap<String, Interval>,
    pub trials: BTreeMap<String, TrialSpread>,
}

/// The run's uncertainty (`glue.json` and the manifest's `glue.uncertainty`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uncertainty {
    pub method: String,
    pub resamples: u32,
    pub level: f64,
    /// Seed label of each set's resampling generator (`<set>` replaced by the set's id).
    pub seed_label: String,
    pub tasks: BTreeMap<String, SetUncertainty>,
    /// Interval of the aggregate (percent points) under `rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Interval>,
}

/// One control on one evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlSet {
    /// Median over trials (fractions; the constant predictor has one "trial").
    pub metrics: Metrics,
    pub ci95: BTreeMap<String, Interval>,
    /// Run − control per metric (percent points).
    pub above: BTreeMap<String, Difference>,
    /// The constant predicted (constant control only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<f64>,
}

/// One control: per set, and the aggregate under the run's rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    pub description: String,
    pub tasks: BTreeMap<String, ControlSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate_ci95: Option<Interval>,
    /// Run − control on the aggregate (percent points).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub above: Option<Difference>,
}

/// Every control of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Controls {
    pub constant: Control,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_pretraining: Option<Control>,
}

/// One evaluation set's inputs: the run's trials, the constant predictor, the no-pretraining
/// trials (when run), all on the same dev examples.
pub struct SetInput<'a> {
    pub set: EvalSet,
    pub run: &'a [Vec<Row>],
    pub constant: Target,
    pub no_pretraining: Option<&'a [Vec<Row>]>,
}

/// Description of the constant control.
pub const CONSTANT: &str =
    "majority class of the training labels (STS-B: mean training score), predicted for every dev example";
/// Description of the no-pretraining control.
pub const NO_PRETRAINING: &str =
    "the same architecture fine-tuned from its untrained initialisation under the same protocol and trial seeds";

/// Compute the uncertainty of the run and its controls. `seed_of(set)` gives each set's
/// resampling seed; `rule` is the aggregate rule of the run (`None`: no aggregate interval).
pub fn analyse(
    inputs: &[SetInput],
    rule: Option<Rule>,
    resamples: u32,
    seed_of: &dyn Fn(&str) -> u64,
) -> Result<(Uncertainty, Controls)> {
    let with_np = !inputs.is_empty() && inputs.iter().all(|i| i.no_pretraining.is_some());
    let n_sides = if with_np { 3 } else { 2 };
    let mut unc = BTreeMap::new();
    let mut ctl: Vec<BTreeMap<String, ControlSet>> = vec![BTreeMap::new(), BTreeMap::new()];
    // Per set: per resample, per side, metric values (fractions).
    let mut draws: BTreeMap<String, Vec<Vec<bootstrap::SideValues>>> = BTreeMap::new();
    // Per side, per set: the observed medians.
    let mut observed: Vec<BTreeMap<String, Metrics>> = vec![BTreeMap::new(); n_sides];
    for inp in inputs {
        let id = inp.set.id.to_string();
        let first = inp
            .run
            .first()
            .ok_or_else(|| anyhow::anyhow!("internal: {id}: no trials"))?;
        let constant = vec![constant_rows_like(first, inp.constant)];
        let mut sides: Vec<&[Vec<Row>]> = vec![inp.run, &constant];
        if with_np {
            sides.push(inp.no_pretraining.unwrap_or_default());
        }
        let p = Paired::of_sides(inp.set, &sides)
            .map_err(|e| anyhow::anyhow!("{id}: the controls cannot be paired: {e}"))?;
        let trial_metrics: Vec<Vec<Metrics>> = p
            .pred
            .iter()
            .map(|trials| {
                trials
                    .iter()
                    .map(|t| tasks::score(&inp.set, t, &p.gold))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let names: Vec<String> = trial_metrics[0][0].keys().cloned().collect();
        let d = bootstrap::resample_sides(&p, &names, resamples, seed_of(&id))?;
        for (side, tm) in trial_metrics.iter().enumerate() {
            let mut med = Metrics::new();
            let mut su = SetUncertainty::default();
            for n in &names {
                let v: Vec<f64> = tm.iter().filter_map(|m| m.get(n).copied()).collect();
                if let Some(m) = crate::stats::median(&v) {
                    med.insert(n.clone(), m);
                }
                if let Some(s) = TrialSpread::of(&v) {
                    su.trials.insert(n.clone(), s);
                }
                let b: Vec<f64> = d.iter().filter_map(|r| r[side].get(n).copied()).collect();
                if let Some(i) = Interval::of(&b) {
                    su.ci95.insert(n.clone(), i);
                }
            }
            if side == 0 {
                unc.insert(id.clone(), su);
            } else {
                let mut above = BTreeMap::new();
                for n in &names {
                    let diffs: Vec<f64> = d
                        .iter()
                        .filter_map(|r| Some(100.0 * (r[0].get(n)? - r[side].get(n)?)))
                        .collect();
                    if let (Some(a), Some(b), Some(ci95)) =
                        (observed[0][&id].get(n), med.get(n), Interval::of(&diffs))
                    {
                        above.insert(
                            n.clone(),
                            Difference {
                                delta: 100.0 * (a - b),
                                ci95,
                            },
                        );
                    }
                }
                ctl[side - 1].insert(
                    id.clone(),
                    ControlSet {
                        metrics: med.clone(),
                        ci95: su.ci95,
                        above,
                        prediction: (side == 1).then_some(match inp.constant {
                            Target::Class(c) => c as f64,
                            Target::Score(s) => s,
                        }),
                    },
                );
            }
            observed[side].insert(id.clone(), med);
        }
        draws.insert(id, d);
    }
    // The aggregate: the rule over each resample's per-set values, resample by resample.
    let agg_draws = |side: usize| -> Vec<f64> {
        let Some(rule) = rule else { return Vec::new() };
        (0..resamples as usize)
            .filter_map(|b| {
                let sets: BTreeMap<String, Metrics> = draws
                    .iter()
                    .map(|(s, d)| (s.clone(), d[b][side].clone()))
                    .collect();
                aggregate::aggregate(rule, &sets).ok().map(|a| a.value)
            })
            .collect()
    };
    let run_draws = agg_draws(0);
    let run_agg = rule.and_then(|r| aggregate::aggregate(r, &observed[0]).ok());
    let mut controls = Vec::new();
    for (side, (tasks, description)) in ctl
        .into_iter()
        .zip([CONSTANT, NO_PRETRAINING])
        .enumerate()
        .map(|(i, x)| (i + 1, x))
    {
        if side >= n_sides {
            break;
        }
        let agg = rule.and_then(|r| aggregate::aggregate(r, &observed[side]).ok());
        let cd = agg_draws(side);
        let diffs: Vec<f64> = run_draws.iter().zip(&cd).map(|(a, b)| a - b).collect();
        let above = match (&run_agg, &agg, Interval::of(&diffs)) {
            (Some(a), Some(b), Some(ci95)) => Some(Difference {
                delta: a.value - b.value,
                ci95,
            }),
            _ => None,
        };
        controls.push(Control {
            description: description.into(),
            tasks,
            aggregate_ci95: Interval::of(&cd),
            aggregate: agg,
            above,
        });
    }
    let mut it = controls.into_iter();
    let constant = it
        .next()
        .ok_or_else(|| anyhow::anyhow!("internal: no constant control"))?;
    Ok((
        Uncertainty {
            method: "percentile bootstrap over dev examples; each resample's value is the median \
                     over trials of the metric re-scored on the drawn examples"
                .into(),
            resamples,
            level: LEVEL,
            seed_label: "glue/bootstrap/<set>".into(),
            tasks: unc,
            aggregate: Interval::of(&run_draws),
        },
        Controls {
            constant,
            no_pretraining: it.next(),
        },
    ))
}

/// "X ± Y points above WHAT" for one difference: X the point difference, Y half the width of
/// its 95% interval `[lo, hi]` (written out too, as the interval need not be symmetric), and
/// a note when the interval includes 0.
pub fn above_text(d: &Difference, what: &str) -> String {
    let word = if d.delta >= 0.0 { "above" } else { "below" };
    let unclear = if d.ci95.lo > 0.0 || d.ci95.hi < 0.0 {
        ""
    } else {
        "; includes 0: not distinguishable"
    };
    format!(
        "{:.2} ± {:.2} points {word} {what} (95% interval of the difference [{:+.2}, {:+.2}]{unclear})",
        d.delta.abs(),
        d.ci95.half_width(),
        d.ci95.lo,
        d.ci95.hi
    )
}

/// One line per control and set (and the aggregate): how far the run is above the control,
/// and the control's own value.
pub fn summary_lines(c: &Controls) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ctl) in [
        ("no-pretraining", c.no_pretraining.as_ref()),
        ("constant", Some(&c.constant)),
    ] {
        let Some(ctl) = ctl else { continue };
        for (set, cs) in &ctl.tasks {
            for (m, d) in &cs.above {
                let v = 100.0 * cs.metrics.get(m).copied().unwrap_or(f64::NAN);
                out.push(format!(
                    "{set} {m}: {}",
                    above_text(d, &format!("the {name} control ({v:.2})"))
                ));
            }
        }
        if let (Some(a), Some(d)) = (&ctl.aggregate, &ctl.above) {
            out.push(format!(
                "aggregate {}: {}",
                a.rule.name(),
                above_text(d, &format!("the {name} control ({:.2})", a.value))
            ));
        }
    }
    out
}

/// The constant predictor's rows on the examples of `like` (same `idx` and gold).
fn constant_rows_like(like: &[Row], pred: Target) -> Vec<Row> {
    like.iter()
        .map(|r| Row {
            idx: r.idx,
            prediction: pred,
            gold: r.gold,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(label: Target) -> Example {
        Example {
            idx: 0,
            text_a: String::new(),
            text_b: None,
            label: Some(label),
        }
    }

    #[test]
    fn constant_predictor_is_the_majority_or_the_mean() {
        let c = |v: &[usize]| -> Vec<Example> { v.iter().map(|&c| ex(Target::Class(c))).collect() };
        assert_eq!(
            constant_prediction(Task::Mnli, &c(&[2, 1, 2, 0, 2, 1])).unwrap(),
            Target::Class(2)
        );
        // A tie goes to the lowest class index.
        assert_eq!(
            constant_prediction(Task::Sst2, &c(&[1, 0, 1, 0])).unwrap(),
            Target::Class(0)
        );
        let s: Vec<Example> = [1.0, 2.0, 4.5]
            .iter()
            .map(|&s| ex(Target::Score(s)))
            .collect();
        assert_eq!(
            constant_prediction(Task::Stsb, &s).unwrap(),
            Target::Score(2.5)
        );
        assert!(constant_prediction(Task::Sst2, &[]).is_err());
    }

    #[test]
    fn above_text_says_x_plus_minus_y() {
        let d = Difference {
            delta: 1.8,
            ci95: Interval { lo: 1.1, hi: 2.3 },
        };
        assert_eq!(
            above_text(&d, "B"),
            "1.80 ± 0.60 points above B (95% interval of the difference [+1.10, +2.30])"
        );
        let d = Difference {
            delta: -0.5,
            ci95: Interval { lo: -1.5, hi: 0.5 },
        };
        assert!(above_text(&d, "B").starts_with("0.50 ± 1.00 points below B"));
        assert!(above_text(&d, "B").contains("includes 0"));
    }

    #[test]
    fn trial_spread_is_the_sample_sd() {
        let s = TrialSpread::of(&[0.5, 0.7, 0.6]).unwrap();
        assert_eq!((s.n, s.min, s.max), (3, 0.5, 0.7));
        assert!((s.sd - 0.1).abs() < 1e-12, "{}", s.sd);
        assert_eq!(TrialSpread::of(&[0.4]).unwrap().sd, 0.0);
    }
}
