//! Task definitions: the nine GLUE tasks (WNLI off by default) and the `demo-*` tasks, their
//! evaluation sets, the ONE internal label order per task, and scoring of a prediction column.
//!
//! # Internal label order
//!
//! Every layout is mapped onto the order of the Hugging Face `nyu-mll/glue` ClassLabels, which
//! is also what the SuperGLUE RTE files use:
//!
//! | task | 0 | 1 | 2 |
//! |---|---|---|---|
//! | cola | unacceptable | acceptable | |
//! | sst2 | negative | positive | |
//! | mrpc | not_equivalent | equivalent | |
//! | qqp | not_duplicate | duplicate | |
//! | mnli | entailment | neutral | contradiction |
//! | qnli | entailment | not_entailment | |
//! | rte | entailment | not_entailment | |
//! | wnli | not_entailment | entailment | |
//! | stsb | (regression: one float, 0–5) | | |
//!
//! The TSV files of `download_glue_data.py` write `0`/`1` for CoLA, SST-2, MRPC, QQP and WNLI
//! with the same meaning, and label names for MNLI, QNLI and RTE, which are looked up in the
//! table above (so the transformers processors' `[contradiction, entailment, neutral]` order is
//! never used). F1 is for class 1 (MRPC `equivalent`, QQP `duplicate`), as in `evaluate`.
//!
//! # Evaluation sets and metrics
//!
//! MNLI has two dev sets, `mnli-m` (matched) and `mnli-mm` (mismatched), scored from the same
//! fine-tuned model; every other task has one, named like the task. Metrics per set follow
//! `evaluate`'s `glue` metric; names: `accuracy`, `f1`, `mcc`, `pearson`, `spearman`. Metric
//! values are fractions as scikit-learn returns them (0.565, not 56.5).
use crate::error::Error;
use crate::glue::metrics;
use anyhow::Result;
use std::collections::BTreeMap;

/// A fine-tuning task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    Cola,
    Sst2,
    Mrpc,
    Qqp,
    Stsb,
    Mnli,
    Qnli,
    Rte,
    Wnli,
    /// UCI Sentiment Labelled Sentences (Kotzias et al. 2015), shipped in `harness/assets`.
    DemoSentiment,
    /// "Is B the sentence that follows A?", derived from the shipped demo corpus.
    DemoNextSentence,
}

/// Metrics of one evaluation set, by name (`accuracy`, `f1`, `mcc`, `pearson`, `spearman`).
pub type Metrics = BTreeMap<String, f64>;

/// A gold label or a prediction: a class index in the task's internal order, or a score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Class(usize),
    Score(f64),
}

impl Target {
    /// As written in a predictions TSV: the class index, or the score in shortest round-trip
    /// form.
    pub fn to_field(&self) -> String {
        match self {
            Target::Class(c) => c.to_string(),
            Target::Score(s) => format!("{s:?}"),
        }
    }
}

/// One example: two texts (the second absent for single-sentence tasks) and its gold label
/// (absent in test splits).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The example's index in its split (the `idx` column of the Parquet layout; the 0-based
    /// data-row ordinal in a TSV file).
    pub idx: u64,
    pub text_a: String,
    pub text_b: Option<String>,
    pub label: Option<Target>,
}

/// An evaluation set of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalSet {
    pub task: Task,
    /// `cola`, …, `mnli-m`, `mnli-mm`, …
    pub id: &'static str,
}

impl EvalSet {
    /// The number of examples of this set's dev split: GLUE's published dev sets (the
    /// `nyu-mll/glue` validation splits and `download_glue_data.py`'s `dev.tsv` files agree), and
    /// the embedded demo dev sets ([`crate::glue::demo`]).
    pub fn dev_examples(&self) -> usize {
        match self.id {
            "cola" => 1043,
            "sst2" => 872,
            "mrpc" => 408,
            "qqp" => 40430,
            "stsb" => 1500,
            "mnli-m" => 9815,
            "mnli-mm" => 9832,
            "qnli" => 5463,
            "rte" => 277,
            "wnli" => 71,
            "demo-sentiment" => crate::glue::demo::SENTIMENT_DEV,
            "demo-next-sentence" => crate::glue::demo::NEXT_SENTENCE_DEV,
            other => unreachable!("evaluation set ids are fixed; {other} is not one"),
        }
    }
}

/// STS-B gold similarity scores lie in [0, 5] (GLUE's definition); predictions may fall outside.
pub const STSB_RANGE: (f64, f64) = (0.0, 5.0);

/// Whether a gold label is one the task can have (class labels are checked when parsed; an
/// STS-B score must lie in [`STSB_RANGE`]).
pub fn gold_in_range(task: Task, t: &Target) -> bool {
    match (task, t) {
        (Task::Stsb, Target::Score(v)) => (STSB_RANGE.0..=STSB_RANGE.1).contains(v),
        _ => true,
    }
}

/// Every evaluation set id, for messages that list the valid ones.
pub fn eval_set_ids() -> Vec<&'static str> {
    Task::ALL_GLUE
        .iter()
        .chain(Task::DEMO.iter())
        .flat_map(|t| t.eval_sets())
        .map(|s| s.id)
        .collect()
}

impl Task {
    /// The GLUE tasks run by `--tasks all` (WNLI excluded, as in the paper and the reference).
    pub const DEFAULT_GLUE: [Task; 8] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::Qqp,
        Task::Stsb,
        Task::Mnli,
        Task::Qnli,
        Task::Rte,
    ];
    /// Every GLUE task including WNLI.
    pub const ALL_GLUE: [Task; 9] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::Qqp,
        Task::Stsb,
        Task::Mnli,
        Task::Qnli,
        Task::Rte,
        Task::Wnli,
    ];
    /// The demo suite.
    pub const DEMO: [Task; 2] = [Task::DemoSentiment, Task::DemoNextSentence];

    /// Short id used on the command line and in outputs.
    pub fn id(&self) -> &'static str {
        match self {
            Task::Cola => "cola",
            Task::Sst2 => "sst2",
            Task::Mrpc => "mrpc",
            Task::Qqp => "qqp",
            Task::Stsb => "stsb",
            Task::Mnli => "mnli",
            Task::Qnli => "qnli",
            Task::Rte => "rte",
            Task::Wnli => "wnli",
            Task::DemoSentiment => "demo-sentiment",
            Task::DemoNextSentence => "demo-next-sentence",
        }
    }

    /// Parse a task id (case-insensitive; `sst-2`, `sts-b` accepted) given by `--tasks`.
    pub fn parse(s: &str) -> Result<Task> {
        Self::parse_as("--tasks", s)
    }

    /// Parse a task id; an unknown one is bad input in `what` (the option or recipe field it
    /// came from).
    pub fn parse_as(what: &str, s: &str) -> Result<Task> {
        let l = s.to_ascii_lowercase().replace('_', "-");
        let t = match l.as_str() {
            "cola" => Task::Cola,
            "sst2" | "sst-2" => Task::Sst2,
            "mrpc" => Task::Mrpc,
            "qqp" => Task::Qqp,
            "stsb" | "sts-b" => Task::Stsb,
            "mnli" => Task::Mnli,
            "qnli" => Task::Qnli,
            "rte" => Task::Rte,
            "wnli" => Task::Wnli,
            "demo-sentiment" => Task::DemoSentiment,
            "demo-next-sentence" => Task::DemoNextSentence,
            _ => {
                return Err(Error::input(
                    what,
                    format!(
                        "unknown task `{s}` (known: {}, {}, all, demo)",
                        Task::ALL_GLUE.map(|t| t.id()).join(", "),
                        Task::DEMO.map(|t| t.id()).join(", ")
                    ),
                )
                .into())
            }
        };
        Ok(t)
    }

    /// Parse a comma-separated task list; `all` is the eight default GLUE tasks, `demo` the
    /// demo suite.
    pub fn parse_list(s: &str) -> Result<Vec<Task>> {
        Self::parse_list_as("--tasks", s)
    }

    /// [`Task::parse_list`] for a list that came from `what` (an option or a recipe field),
    /// which errors name.
    pub fn parse_list_as(what: &str, s: &str) -> Result<Vec<Task>> {
        let mut out: Vec<Task> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let add: Vec<Task> = match part.to_ascii_lowercase().as_str() {
                "all" => Task::DEFAULT_GLUE.to_vec(),
                "demo" => Task::DEMO.to_vec(),
                _ => vec![Task::parse_as(what, part)?],
            };
            for t in add {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        if out.is_empty() {
            return Err(Error::input(what, "no task given").into());
        }
        Ok(out)
    }

    /// Whether the task belongs to GLUE (demo tasks are never reported as GLUE).
    pub fn is_glue(&self) -> bool {
        !matches!(self, Task::DemoSentiment | Task::DemoNextSentence)
    }

    /// STS-B is a regression task with one output.
    pub fn is_regression(&self) -> bool {
        matches!(self, Task::Stsb)
    }

    /// Whether the input is a sentence pair.
    pub fn is_pair(&self) -> bool {
        !matches!(self, Task::Cola | Task::Sst2 | Task::DemoSentiment)
    }

    /// Class names in the internal order (empty for regression).
    pub fn labels(&self) -> &'static [&'static str] {
        match self {
            Task::Cola => &["unacceptable", "acceptable"],
            Task::Sst2 | Task::DemoSentiment => &["negative", "positive"],
            Task::Mrpc => &["not_equivalent", "equivalent"],
            Task::Qqp => &["not_duplicate", "duplicate"],
            Task::Stsb => &[],
            Task::Mnli => &["entailment", "neutral", "contradiction"],
            Task::Qnli | Task::Rte => &["entailment", "not_entailment"],
            Task::Wnli => &["not_entailment", "entailment"],
            Task::DemoNextSentence => &["not_next", "next"],
        }
    }

    /// Outputs of the classification head: the number of classes, or 1 for regression.
    pub fn num_labels(&self) -> usize {
        if self.is_regression() {
            1
        } else {
            self.labels().len()
        }
    }

    /// The task's evaluation sets.
    pub fn eval_sets(&self) -> Vec<EvalSet> {
        let ids: &[&'static str] = match self {
            Task::Mnli => &["mnli-m", "mnli-mm"],
            t => {
                return vec![EvalSet {
                    task: *t,
                    id: t.id(),
                }]
            }
        };
        ids.iter().map(|id| EvalSet { task: *self, id }).collect()
    }

    /// Parse a label as the TSV layout writes it: `0`/`1` for CoLA, SST-2, MRPC, QQP, WNLI;
    /// a class name for MNLI, QNLI, RTE; a float for STS-B. `None` if it is not a label.
    pub fn label_from_text(&self, s: &str) -> Option<Target> {
        let s = s.trim();
        match self {
            Task::Stsb => s
                .parse::<f64>()
                .ok()
                .filter(|v| (STSB_RANGE.0..=STSB_RANGE.1).contains(v))
                .map(Target::Score),
            Task::Mnli | Task::Qnli | Task::Rte => self
                .labels()
                .iter()
                .position(|l| *l == s)
                .map(Target::Class),
            _ => match s {
                "0" => Some(Target::Class(0)),
                "1" => Some(Target::Class(1)),
                _ => None,
            },
        }
    }

    /// Map a class index of the Hugging Face layout (already the internal order). `-1` (test
    /// splits) and out-of-range values give `None`.
    pub fn label_from_index(&self, v: i64) -> Option<Target> {
        if self.is_regression() || v < 0 || v as usize >= self.labels().len() {
            return None;
        }
        Some(Target::Class(v as usize))
    }
}

/// Score predictions of an evaluation set against gold labels. Both columns must have the
/// same kind (classes, or scores for STS-B). Undefined correlations (constant predictions)
/// are recorded as 0, like Matthews correlation.
pub fn score(set: &EvalSet, pred: &[Target], gold: &[Target]) -> Result<Metrics> {
    if pred.len() != gold.len() {
        return Err(Error::input(
            set.id,
            format!("{} predictions for {} gold labels", pred.len(), gold.len()),
        )
        .into());
    }
    if pred.is_empty() {
        return Err(Error::input(set.id, "nothing to score").into());
    }
    let mut m = Metrics::new();
    if set.task.is_regression() {
        let p = scores_of(set, pred)?;
        let g = scores_of(set, gold)?;
        m.insert("pearson".into(), metrics::pearson(&p, &g).unwrap_or(0.0));
        m.insert("spearman".into(), metrics::spearman(&p, &g).unwrap_or(0.0));
        return Ok(m);
    }
    let p = classes_of(set, pred)?;
    let g = classes_of(set, gold)?;
    let acc = metrics::accuracy(&p, &g).unwrap_or(0.0);
    match set.task {
        Task::Cola => {
            m.insert("mcc".into(), metrics::matthews(&p, &g).unwrap_or(0.0));
        }
        Task::Mrpc | Task::Qqp => {
            m.insert("accuracy".into(), acc);
            m.insert("f1".into(), metrics::f1_positive(&p, &g).unwrap_or(0.0));
        }
        _ => {
            m.insert("accuracy".into(), acc);
        }
    }
    Ok(m)
}

fn scores_of(set: &EvalSet, v: &[Target]) -> Result<Vec<f64>> {
    v.iter()
        .map(|t| match t {
            Target::Score(s) => Ok(*s),
            Target::Class(_) => Err(Error::input(set.id, "expected scores, found a class").into()),
        })
        .collect()
}

fn classes_of(set: &EvalSet, v: &[Target]) -> Result<Vec<usize>> {
    let n = set.task.labels().len();
    v.iter()
        .map(|t| match t {
            Target::Class(c) if *c < n => Ok(*c),
            Target::Class(c) => {
                Err(Error::input(set.id, format!("class {c} out of range 0..{n}")).into())
            }
            Target::Score(_) => Err(Error::input(set.id, "expected classes, found a score").into()),
        })
        .collect()
}

/// Find an evaluation set by id (`cola`, …, `mnli-m`, `mnli-mm`, `demo-sentiment`, …).
pub fn eval_set(id: &str) -> Result<EvalSet> {
    let l = id.to_ascii_lowercase();
    for t in Task::ALL_GLUE.iter().chain(Task::DEMO.iter()) {
        for s in t.eval_sets() {
            if s.id == l {
                return Ok(s);
            }
        }
    }
    if let Ok(t) = Task::parse(&l) {
        if t == Task::Mnli {
            return Err(
                Error::input("--task", "MNLI has two dev sets: use mnli-m or mnli-mm").into(),
            );
        }
    }
    Err(Error::input(
        "--task",
        format!(
            "unknown evaluation set `{id}` (valid: {})",
            eval_set_ids().join(", ")
        ),
    )
    .into())
}
