//! What a report says, pulled out of a run record and a reference row once, so the Markdown
//! and HTML renderings cannot disagree. Numbers are taken from the signed statement as they
//! are; a field the statement lacks stays `None` and is shown empty, never filled in.
//!
//! GLUE metrics in the manifest are fractions; here they are percent points (× 100), like the
//! reference rows. The reference cell of an evaluation set is placed beside the metric that
//! the reference table's column reports for that set (`stsb` → Pearson, `qqp` → F1, …) and
//! beside no other metric.
use crate::manifest::predicate::{BudgetSection, PretrainingSection};
use crate::manifest::statement::Predicate;
use crate::record::RunRecord;
use crate::reference::ReferenceRow;
use crate::report::format;
use crate::report::metrics_log::{self, MetricsLog};
use crate::report::panels;
use serde_json::Value;

/// Everything a report shows.
#[derive(Debug, Clone)]
pub struct Facts {
    pub identity: Identity,
    pub budget: Budget,
    pub pretraining: Pretraining,
    pub glue: Glue,
    pub reference: ReferenceRow,
    pub metrics: MetricsLog,
    /// The recipe's hyperparameters ([`panels::recipe`]).
    pub recipe_panel: Vec<panels::Group>,
    /// The data summary ([`panels::data`]).
    pub data: Vec<(&'static str, String)>,
    /// Which inputs of the page are signed ([`panels::inputs`]).
    pub inputs: Vec<panels::Input>,
}

/// Which run this is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub recipe: Option<String>,
    pub recipe_sha256: Option<String>,
    pub created: Option<String>,
    pub crambench_version: Option<String>,
    pub hardware_class: Option<String>,
    /// The hardware in words from the fingerprint ("1 × NVIDIA H100 80GB HBM3", "AMD EPYC
    /// 7763, 2 physical cores") and the pretraining precision actually used (fp32 on a CPU,
    /// where autocast does not run; else the recipe's `train.precision`).
    pub hardware_words: Option<String>,
    pub precision: Option<String>,
    pub device_kind: Option<String>,
    pub devices: Option<u64>,
    pub master_seed: Option<u64>,
    /// Signatures on the envelope (0: unsigned). Not verified by the report.
    pub signatures: usize,
    pub subjects: Vec<Subject>,
}

/// One in-toto subject.
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub role: Option<String>,
    /// (algorithm, hex digest), sorted by algorithm.
    pub digests: Vec<(String, String)>,
}

/// Budget accounting.
#[derive(Debug, Clone)]
pub struct Budget {
    pub allowed_device_hours: Option<f64>,
    pub used_device_hours: Option<f64>,
    pub counted: Vec<String>,
    pub uncounted: Vec<String>,
    /// Phase → wall seconds, in the manifest's order.
    pub phase_seconds: Vec<(String, f64)>,
}

/// Pretraining summary.
#[derive(Debug, Clone)]
pub struct Pretraining {
    /// Optimizer steps.
    pub steps: Option<u64>,
    /// Micro-steps (absent in v0.1 manifests).
    pub micro_steps: Option<u64>,
    pub tokens_seen: Option<u64>,
    /// Mean MLM loss over the first micro-steps (absent in v0.1 manifests).
    pub initial_mlm_loss: Option<f64>,
    pub final_mlm_loss: Option<f64>,
    /// Micro-steps the final loss is averaged over.
    pub final_loss_window: Option<u64>,
    pub tokens_per_second: Option<f64>,
}

/// GLUE results against the reference row.
#[derive(Debug, Clone)]
pub struct Glue {
    pub present: bool,
    pub protocol: Option<String>,
    pub epochs: Option<f64>,
    pub rows: Vec<GlueRow>,
    pub aggregate: Option<AggregateLine>,
    /// Reference columns with a published cell that this run did not evaluate.
    pub not_evaluated: Vec<String>,
    /// The aggregate's 95% bootstrap interval (points), when the manifest records one.
    pub aggregate_ci95: Option<crate::glue::controls::Interval>,
    /// The control the report sets the run against: the no-pretraining control when it ran,
    /// else the constant predictor (`None` for manifests made before controls were recorded).
    pub control: Option<ControlLine>,
    /// Fine-tuning settings of the run that differ from the reference row's protocol
    /// ([`crate::reference::protocol_differences`]).
    pub protocol_differences: Vec<String>,
}

/// The control shown beside the run.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlLine {
    /// `no-pretraining` or `constant`.
    pub name: String,
    pub description: String,
    /// The control's aggregate under the run's rule (points) and run − control.
    pub aggregate: Option<f64>,
    pub above: Option<crate::glue::controls::Difference>,
    /// The constant predictor's aggregate (points), also shown when the main control is the
    /// no-pretraining one.
    pub constant_aggregate: Option<f64>,
}

/// One (evaluation set, metric) line.
#[derive(Debug, Clone, PartialEq)]
pub struct GlueRow {
    pub set: String,
    pub metric: String,
    /// Median over trials, percent points.
    pub median: Option<f64>,
    /// Every trial's value in trial order, percent points (`None`: the trial lacks the metric).
    pub trials: Vec<Option<f64>>,
    /// The reference row's cell for this set and metric (`None`: empty or not comparable).
    pub reference: Option<f64>,
    /// `median - reference`, when both exist.
    pub delta: Option<f64>,
    /// The median's 95% bootstrap interval over dev examples (points).
    pub ci95: Option<crate::glue::controls::Interval>,
    /// The shown control's median (points) and run − control with its interval.
    pub control: Option<f64>,
    pub above_control: Option<crate::glue::controls::Difference>,
}

/// The aggregate and how it relates to the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateLine {
    pub rule: String,
    pub value: f64,
    pub reference: AggregateReference,
}

/// Whether the run's aggregate can be set beside the reference's.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateReference {
    /// Same rule published: (reference value, run − reference).
    Compared { value: f64, delta: f64 },
    /// The `demo` rule: never compared with GLUE numbers.
    Demo,
    /// The reference publishes no average under this rule (the rules it has).
    NotPublished(Vec<String>),
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl Facts {
    /// Gather the facts of `record` (a `kind = "run"` record) against `reference`.
    pub fn gather(record: &RunRecord, reference: &ReferenceRow) -> Facts {
        let p = &record.predicate;
        let identity = identity(record);
        let metrics = metrics_log::read(record.metrics_log().as_deref());
        let null = Value::Null;
        Facts {
            recipe_panel: panels::recipe(p.recipe.as_ref().map_or(&null, |r| &r.resolved)),
            data: panels::data(
                p.data.as_ref().unwrap_or(&null),
                p.pretraining.as_ref().map(|t| t.tokens_seen),
            ),
            inputs: panels::inputs(identity.signatures, &identity.subjects, &metrics),
            identity,
            budget: budget(p.budget.as_ref()),
            pretraining: pretraining(p.pretraining.as_ref()),
            glue: glue(p, reference),
            reference: reference.clone(),
            metrics,
        }
    }
}

fn identity(record: &RunRecord) -> Identity {
    let p = &record.predicate;
    let subjects = record
        .subjects
        .iter()
        .map(|sub| Subject {
            name: sub.name.clone(),
            role: sub.role().map(str::to_string),
            digests: sub
                .digest
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    let recipe = p.recipe.as_ref();
    let device_kind = p.budget.as_ref().and_then(|b| b.device_kind.clone());
    Identity {
        recipe: recipe.map(|r| r.name.clone()),
        recipe_sha256: recipe.map(|r| r.sha256.clone()),
        created: Some(p.created.clone()),
        crambench_version: Some(p.crambench_version.clone()),
        hardware_class: Some(record.hardware_class().to_string()).filter(|h| !h.is_empty()),
        hardware_words: p.fingerprint.get("hardware").and_then(hardware_words),
        precision: match device_kind.as_deref() {
            Some("cpu") => Some("fp32 (CPU: no autocast)".into()),
            _ => recipe
                .and_then(|r| r.resolved_value("train", "precision"))
                .and_then(s),
        },
        device_kind,
        devices: p.budget.as_ref().and_then(|b| b.devices).map(u64::from),
        master_seed: Some(p.seeds.master),
        signatures: record.envelope.as_ref().map_or(0, |e| e.signatures.len()),
        subjects,
    }
}

fn budget(b: Option<&BudgetSection>) -> Budget {
    Budget {
        allowed_device_hours: b.map(|b| b.allowed_device_hours),
        used_device_hours: b.map(|b| b.used_device_hours),
        counted: b.map(|b| b.counted_phases.clone()).unwrap_or_default(),
        uncounted: b.map(|b| b.uncounted_phases.clone()).unwrap_or_default(),
        phase_seconds: b
            .map(|b| {
                b.phase_seconds
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn pretraining(t: Option<&PretrainingSection>) -> Pretraining {
    Pretraining {
        steps: t.map(|t| t.optimizer_steps),
        micro_steps: t.and_then(|t| t.micro_steps),
        tokens_seen: t.map(|t| t.tokens_seen),
        initial_mlm_loss: t.and_then(|t| t.initial_mlm_loss),
        final_mlm_loss: t.and_then(|t| t.final_mlm_loss),
        final_loss_window: t.map(|t| t.final_loss_window_micro_steps),
        tokens_per_second: t.map(|t| t.tokens_per_second),
    }
}

/// The fingerprint's devices in words: the GPUs by name and count, else the CPU model and its
/// physical cores.
fn hardware_words(h: &Value) -> Option<String> {
    let gpus: Vec<&str> = h["gpus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    if !gpus.is_empty() {
        let mut names: Vec<(String, usize)> = Vec::new();
        for g in gpus {
            match names.iter_mut().find(|(n, _)| n == g) {
                Some((_, c)) => *c += 1,
                None => names.push((g.to_string(), 1)),
            }
        }
        return Some(
            names
                .iter()
                .map(|(n, c)| format!("{c} × {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let model = h["cpu"]["model"].as_str()?;
    Some(match h["cpu"]["physical_cores"].as_u64() {
        Some(c) => format!("{model}, {c} physical cores"),
        None => model.to_string(),
    })
}

fn glue(p: &Predicate, reference: &ReferenceRow) -> Glue {
    let g = p.glue.as_ref();
    let uncertainty = g.and_then(|g| g.uncertainty.as_ref());
    let controls = g.and_then(|g| g.controls.as_ref()).map(|c| c.controls());
    let shown = controls.as_ref().map(|c| match &c.no_pretraining {
        Some(np) => ("no-pretraining", np),
        None => ("constant", &c.constant),
    });
    let columns = &crate::reference::table().columns;
    let pct = |v: Option<&f64>| v.map(|x| 100.0 * x);
    let mut rows = Vec::new();
    if let Some(g) = g {
        for (set, t) in &g.tasks {
            for (metric, median) in &t.metrics {
                let cell = if columns.get(set) == Some(metric) {
                    reference.cells.get(set).copied().flatten()
                } else {
                    None
                };
                let median = pct(Some(median));
                let ctl = shown.and_then(|(_, c)| c.tasks.get(set));
                rows.push(GlueRow {
                    ci95: uncertainty
                        .and_then(|u| u.tasks.get(set)?.ci95.get(metric).copied())
                        .map(|i| crate::glue::controls::Interval {
                            lo: 100.0 * i.lo,
                            hi: 100.0 * i.hi,
                        }),
                    control: ctl.and_then(|c| c.metrics.get(metric)).map(|v| 100.0 * v),
                    above_control: ctl.and_then(|c| c.above.get(metric).copied()),
                    set: set.clone(),
                    metric: metric.clone(),
                    median,
                    trials: t
                        .trials
                        .iter()
                        .map(|tr| pct(tr.metrics.get(metric)))
                        .collect(),
                    reference: cell,
                    delta: median.zip(cell).map(|(m, r)| m - r),
                });
            }
        }
    }
    let evaluated = |set: &str| rows.iter().any(|r| r.set == set);
    let not_evaluated = reference
        .cells
        .iter()
        .filter(|(set, cell)| cell.is_some() && !evaluated(set))
        .map(|(set, _)| set.clone())
        .collect();
    let aggregate = g.map(|g| {
        let (rule, value) = (g.aggregate.rule.as_str(), g.aggregate.value);
        AggregateLine {
            rule: rule.to_string(),
            value,
            reference: if rule == crate::glue::aggregate::Rule::Demo.name() {
                AggregateReference::Demo
            } else if let Some(r) = reference.glue.get(rule) {
                AggregateReference::Compared {
                    value: *r,
                    delta: value - r,
                }
            } else {
                AggregateReference::NotPublished(reference.glue.keys().cloned().collect())
            },
        }
    });
    Glue {
        present: g.is_some(),
        protocol_differences: match g {
            Some(g) => crate::reference::protocol_differences(reference, g),
            None => Vec::new(),
        },
        protocol: g.map(|g| g.protocol.clone()),
        epochs: p
            .recipe
            .as_ref()
            .and_then(|r| r.resolved_value("glue", "epochs"))
            .and_then(Value::as_f64),
        rows,
        aggregate,
        not_evaluated,
        aggregate_ci95: uncertainty.and_then(|u| u.aggregate),
        control: shown.map(|(name, c)| ControlLine {
            name: name.to_string(),
            description: c.description.clone(),
            aggregate: c.aggregate.as_ref().map(|a| a.value),
            above: c.above,
            constant_aggregate: controls
                .as_ref()
                .and_then(|c| c.constant.aggregate.as_ref())
                .map(|a| a.value),
        }),
    }
}

impl Glue {
    /// The run against its control in one sentence ("X ± Y points above the no-pretraining
    /// control (…)"), when recorded.
    pub fn above_control(&self) -> Option<String> {
        let c = self.control.as_ref()?;
        let d = c.above.as_ref()?;
        let value = c
            .aggregate
            .map(|v| format!(" ({})", format::pct(v)))
            .unwrap_or_default();
        Some(crate::glue::controls::above_text(
            d,
            &format!("the {} control{value}", c.name),
        ))
    }
}
