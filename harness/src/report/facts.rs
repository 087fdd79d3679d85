//! What a report says, pulled out of a run record and a reference row once, so the Markdown
//! and HTML renderings cannot disagree. Numbers are taken from the signed statement as they
//! are; a field the statement lacks stays `None` and is shown empty, never filled in.
//!
//! GLUE metrics in the manifest are fractions; here they are percent points (× 100), like the
//! reference rows. The reference cell of an evaluation set is placed beside the metric that
//! the reference table's column reports for that set (`stsb` → Pearson, `qqp` → F1, …) and
//! beside no other metric.
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
    pub steps: Option<u64>,
    pub tokens_seen: Option<u64>,
    pub final_mlm_loss: Option<f64>,
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

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(s).collect())
        .unwrap_or_default()
}

impl Facts {
    /// Gather the facts of `record` (a `kind = "run"` record) against `reference`.
    pub fn gather(record: &RunRecord, reference: &ReferenceRow) -> Facts {
        let p = record.predicate();
        let identity = identity(record);
        let metrics = metrics_log::read(record.metrics_log().as_deref());
        Facts {
            recipe_panel: panels::recipe(&p["recipe"]["resolved"]),
            data: panels::data(&p["data"], p["pretraining"]["tokens_seen"].as_u64()),
            inputs: panels::inputs(identity.signatures, &identity.subjects, &metrics),
            identity,
            budget: budget(&p["budget"]),
            pretraining: pretraining(&p["pretraining"]),
            glue: glue(p, reference),
            reference: reference.clone(),
            metrics,
        }
    }
}

fn identity(record: &RunRecord) -> Identity {
    let p = record.predicate();
    let subjects = record.statement["subject"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|sub| Subject {
                    name: s(&sub["name"]).unwrap_or_default(),
                    role: s(&sub["annotations"]["role"]),
                    digests: sub["digest"]
                        .as_object()
                        .map(|d| {
                            d.iter()
                                .map(|(k, v)| (k.clone(), s(v).unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Identity {
        recipe: s(&p["recipe"]["name"]),
        recipe_sha256: s(&p["recipe"]["sha256"]),
        created: s(&p["created"]),
        crambench_version: s(&p["crambench_version"]),
        hardware_class: s(&p["fingerprint"]["hardware_class"]),
        hardware_words: hardware_words(&p["fingerprint"]["hardware"]),
        precision: match p["budget"]["device_kind"].as_str() {
            Some("cpu") => Some("fp32 (CPU: no autocast)".into()),
            _ => s(&p["recipe"]["resolved"]["train"]["precision"]),
        },
        device_kind: s(&p["budget"]["device_kind"]),
        devices: p["budget"]["devices"].as_u64(),
        master_seed: p["seeds"]["master"].as_u64(),
        signatures: record.envelope.as_ref().map_or(0, |e| e.signatures.len()),
        subjects,
    }
}

fn budget(b: &Value) -> Budget {
    Budget {
        allowed_device_hours: b["allowed_device_hours"].as_f64(),
        used_device_hours: b["used_device_hours"].as_f64(),
        counted: strings(&b["counted_phases"]),
        uncounted: strings(&b["uncounted_phases"]),
        phase_seconds: b["phase_seconds"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn pretraining(t: &Value) -> Pretraining {
    Pretraining {
        steps: t["steps"].as_u64(),
        tokens_seen: t["tokens_seen"].as_u64(),
        final_mlm_loss: t["final_mlm_loss"].as_f64(),
        final_loss_window: t["final_loss_window"].as_u64(),
        tokens_per_second: t["tokens_per_second"].as_f64(),
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

fn glue(p: &Value, reference: &ReferenceRow) -> Glue {
    let g = &p["glue"];
    let uncertainty: Option<crate::glue::controls::Uncertainty> =
        serde_json::from_value(g["uncertainty"].clone()).ok();
    let controls: Option<crate::glue::controls::Controls> =
        serde_json::from_value(g["controls"].clone()).ok();
    let shown = controls.as_ref().map(|c| match &c.no_pretraining {
        Some(np) => ("no-pretraining", np),
        None => ("constant", &c.constant),
    });
    let columns = &crate::reference::table().columns;
    let pct = |v: &Value| v.as_f64().map(|x| 100.0 * x);
    let mut rows = Vec::new();
    if let Some(tasks) = g["tasks"].as_object() {
        for (set, t) in tasks {
            let Some(metrics) = t["metrics"].as_object() else {
                continue;
            };
            let trials = t["trials"].as_array().cloned().unwrap_or_default();
            for (metric, median) in metrics {
                let cell = if columns.get(set) == Some(metric) {
                    reference.cells.get(set).copied().flatten()
                } else {
                    None
                };
                let median = pct(median);
                let ctl = shown.and_then(|(_, c)| c.tasks.get(set));
                rows.push(GlueRow {
                    ci95: uncertainty
                        .as_ref()
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
                    trials: trials
                        .iter()
                        .map(|tr| pct(&tr["metrics"][metric]))
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
    let aggregate = match (
        g["aggregate"]["rule"].as_str(),
        g["aggregate"]["value"].as_f64(),
    ) {
        (Some(rule), Some(value)) => Some(AggregateLine {
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
        }),
        _ => None,
    };
    Glue {
        present: g.is_object(),
        protocol_differences: if g.is_object() {
            crate::reference::protocol_differences(reference, g)
        } else {
            Vec::new()
        },
        protocol: s(&g["protocol"]),
        epochs: p["recipe"]["resolved"]["glue"]["epochs"].as_f64(),
        rows,
        aggregate,
        not_evaluated,
        aggregate_ci95: uncertainty.as_ref().and_then(|u| u.aggregate),
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
