//! GLUE aggregates: one number from the per-set metrics, under a rule that is always named.
//!
//! * `cramming` (default) — the reference's `GLUE_amean`: the mean of 9 numbers, MNLI-m and
//!   MNLI-mm accuracy, SST-2 accuracy, STS-B **Pearson**, RTE and QNLI accuracy, QQP and MRPC
//!   F1, CoLA MCC (upstream `cramming/config/eval/GLUE_sane.yaml` and `eval.py`, JonasGeiping/cramming 196c991). WNLI is out.
//! * `bert-paper` — the BERT paper's Table 1 "Average": the same 9 with STS-B **Spearman**.
//! * `glue-official` — the leaderboard's macro average over the nine tasks, WNLI included; a
//!   task with several metrics counts as their unweighted mean (MRPC F1/accuracy, QQP
//!   F1/accuracy, STS-B Pearson/Spearman, MNLI matched/mismatched accuracy).
//!
//! * `demo` — the demo suite's own number: the mean accuracy of `demo-sentiment` and
//!   `demo-next-sentence`. It is computed only for the demo tasks and is never a GLUE score;
//!   compare, gate and the leaderboard treat it as a rule of its own.
//!
//! Inputs are the metrics of each evaluation set as fractions ([`crate::glue::tasks::Metrics`]);
//! the aggregate value is in **percent points** (80.9, like the papers). A metric the rule
//! needs but the input lacks is an error naming it — never silently skipped.
use crate::error::Error;
use crate::glue::tasks::Metrics;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An averaging rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    #[default]
    Cramming,
    BertPaper,
    GlueOfficial,
    Demo,
}

impl Rule {
    /// The GLUE rules.
    pub const ALL: [Rule; 3] = [Rule::Cramming, Rule::BertPaper, Rule::GlueOfficial];

    pub fn name(&self) -> &'static str {
        match self {
            Rule::Cramming => "cramming",
            Rule::BertPaper => "bert-paper",
            Rule::GlueOfficial => "glue-official",
            Rule::Demo => "demo",
        }
    }

    pub fn parse(s: &str) -> Result<Rule> {
        Rule::ALL
            .into_iter()
            .chain([Rule::Demo])
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                Error::input(
                    "aggregate rule",
                    format!("unknown rule `{s}` (cramming, bert-paper, glue-official, demo)"),
                )
                .into()
            })
    }

    /// The terms of the mean: each term is the mean of the listed (set, metric) pairs.
    pub fn terms(&self) -> Vec<Vec<(&'static str, &'static str)>> {
        let nine = |stsb: &'static str| {
            vec![
                vec![("mnli-m", "accuracy")],
                vec![("mnli-mm", "accuracy")],
                vec![("sst2", "accuracy")],
                vec![("stsb", stsb)],
                vec![("rte", "accuracy")],
                vec![("qnli", "accuracy")],
                vec![("qqp", "f1")],
                vec![("mrpc", "f1")],
                vec![("cola", "mcc")],
            ]
        };
        match self {
            Rule::Cramming => nine("pearson"),
            Rule::BertPaper => nine("spearman"),
            Rule::GlueOfficial => vec![
                vec![("cola", "mcc")],
                vec![("sst2", "accuracy")],
                vec![("mrpc", "f1"), ("mrpc", "accuracy")],
                vec![("stsb", "pearson"), ("stsb", "spearman")],
                vec![("qqp", "f1"), ("qqp", "accuracy")],
                vec![("mnli-m", "accuracy"), ("mnli-mm", "accuracy")],
                vec![("qnli", "accuracy")],
                vec![("rte", "accuracy")],
                vec![("wnli", "accuracy")],
            ],
            Rule::Demo => vec![
                vec![("demo-sentiment", "accuracy")],
                vec![("demo-next-sentence", "accuracy")],
            ],
        }
    }
}

/// An aggregate value with its rule, as embedded in the manifest (`$defs/glue.aggregate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub rule: Rule,
    /// Percent points.
    pub value: f64,
}

/// Compute `rule` over per-set metrics (fractions). Errors name every missing metric.
pub fn aggregate(rule: Rule, sets: &BTreeMap<String, Metrics>) -> Result<Aggregate> {
    let mut missing = Vec::new();
    let mut sum = 0.0;
    let terms = rule.terms();
    for term in &terms {
        let mut tsum = 0.0;
        for (set, metric) in term {
            match sets.get(*set).and_then(|m| m.get(*metric)) {
                Some(v) => tsum += v,
                None => missing.push(format!("{set}.{metric}")),
            }
        }
        sum += tsum / term.len() as f64;
    }
    if !missing.is_empty() {
        return Err(Error::input(
            format!("aggregate `{}`", rule.name()),
            format!("missing {}", missing.join(", ")),
        )
        .into());
    }
    Ok(Aggregate {
        rule,
        value: 100.0 * sum / terms.len() as f64,
    })
}

impl Rule {
    /// Whether this is a GLUE rule (everything but `demo`).
    pub fn is_glue(&self) -> bool {
        *self != Rule::Demo
    }
}

/// Every rule that can be computed from `sets` (rules with missing metrics are left out).
pub fn all_available(sets: &BTreeMap<String, Metrics>) -> Vec<Aggregate> {
    Rule::ALL
        .into_iter()
        .filter_map(|r| aggregate(r, sets).ok())
        .collect()
}

/// Median of a list (mean of the two middle values for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    crate::stats::median(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn missing_metrics_are_named() {
        let err = aggregate(Rule::Cramming, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mnli-m.accuracy") && err.contains("cola.mcc"),
            "{err}"
        );
    }
}
