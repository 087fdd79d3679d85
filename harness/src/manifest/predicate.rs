//! The sections of the crambench predicate as Rust types: filled by the stages, serialised
//! into the manifest, and read back once (by [`crate::record::RunRecord`]) for every tool after
//! a run — report, compare, gate, leaderboard, audit.
//!
//! Versions. `https://crambench.dev/manifest/v0.2` ([`super::statement::PREDICATE_TYPE`]) is
//! written now; `v0.1` manifests (written before these types) still verify and render: the
//! renamed fields take their old names as serde aliases, and the schema a statement is checked
//! against is the one its `predicateType` names ([`super::schema`]). Renames in v0.2:
//!
//! | v0.1 | v0.2 | why |
//! |---|---|---|
//! | `predicate.run` | `predicate.pipeline` | `run` named the manifest kind, the command and this section |
//! | `pretraining.steps` | `pretraining.optimizer_steps` | micro-steps and optimizer steps differ under accumulation |
//! | `pretraining.final_loss_window` | `pretraining.final_loss_window_micro_steps` | its unit |
//!
//! and v0.2 adds `pretraining.micro_steps` and `pretraining.initial_mlm_loss` (computed by the
//! trainer and dropped in v0.1). Every field's unit is in its description in
//! `manifests/schema/crambench-manifest-v0.2.schema.json`; a test checks the schema against
//! these types.
use crate::glue::controls::{Control, Controls, Uncertainty};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `predicate.recipe`: the recipe as resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeSection {
    /// The recipe's name.
    pub name: String,
    /// The recipe file as given on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// sha256 (hex) of the resolved recipe's canonical JSON.
    pub sha256: String,
    /// The fully resolved recipe (every table, `extends` applied).
    pub resolved: Value,
}

impl RecipeSection {
    /// `resolved.<table>.<key>`.
    pub fn resolved_value(&self, table: &str, key: &str) -> Option<&Value> {
        self.resolved.get(table)?.get(key)
    }
}

/// `predicate.budget`: device time allowed and used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSection {
    /// The budget, device-hours (wall hours × devices).
    pub allowed_device_hours: f64,
    /// Device-hours the counted phases used.
    pub used_device_hours: f64,
    /// Devices pretraining ran on (a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<u32>,
    /// `cpu`, or the CUDA device's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_kind: Option<String>,
    /// Phases counted against the budget.
    #[serde(default)]
    pub counted_phases: Vec<String>,
    /// Phases the rules leave out of the budget.
    #[serde(default)]
    pub uncounted_phases: Vec<String>,
    /// Wall seconds per phase.
    #[serde(default)]
    pub phase_seconds: BTreeMap<String, f64>,
    /// GPU energy per phase (absent in manifests made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<EnergySection>,
}

/// `predicate.budget.energy`: GPU energy per phase from NVML's total energy counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergySection {
    /// Whether any phase was measured.
    pub available: bool,
    /// Where the numbers come from (`nvml:total_energy_consumption`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The measured GPU's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Energy per phase, kWh.
    #[serde(default)]
    pub kwh: BTreeMap<String, f64>,
    /// Why a phase was not measured (on a CPU, or without NVML), one line per phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// `predicate.pretraining`: what pretraining did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainingSection {
    /// Optimizer steps (parameter updates; one per accumulated batch). v0.1: `steps`.
    #[serde(alias = "steps")]
    pub optimizer_steps: u64,
    /// Micro-steps (forward and backward passes of one micro-batch). Absent in v0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_steps: Option<u64>,
    /// Tokens seen by pretraining (a count).
    pub tokens_seen: u64,
    /// Mean MLM loss (nats per predicted token) over the first micro-steps (up to 20). Absent
    /// in v0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_mlm_loss: Option<f64>,
    /// Mean MLM loss (nats per predicted token) over the last
    /// `final_loss_window_micro_steps` micro-steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_mlm_loss: Option<f64>,
    /// Micro-steps the final loss is averaged over. v0.1: `final_loss_window`.
    #[serde(alias = "final_loss_window", default)]
    pub final_loss_window_micro_steps: u64,
    /// Pretraining throughput, tokens per second of counted time.
    pub tokens_per_second: f64,
    /// What `tokens_per_second` covers when not the last process alone (a resumed run: the
    /// whole pretraining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second_basis: Option<String>,
    /// The attention backend pretraining ran with (`auto` when the recipe leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
}

/// `predicate.glue.aggregate`: the headline number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateSection {
    /// The averaging rule (`cramming`, `bert-paper`, `glue-official`, `demo`).
    pub rule: String,
    /// The aggregate, percent points.
    pub value: f64,
}

/// One fine-tuning trial of an evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSection {
    /// Trial index (0-based).
    pub trial: u32,
    /// The trial's fine-tuning seed.
    pub seed: u64,
    /// Dev metrics of the last epoch, fractions (0..1; Pearson/Spearman/MCC in -1..1).
    pub metrics: BTreeMap<String, f64>,
    /// Predictions file, relative to the run's `glue/` directory.
    pub predictions: String,
    /// sha256 (hex) of the predictions file.
    pub predictions_sha256: String,
    /// Dev examples evaluated (a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_examples: Option<u64>,
    /// Training examples (a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_examples: Option<u64>,
    /// Fine-tuning optimizer steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_steps: Option<u64>,
    /// Warm-up optimizer steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// Mean training loss of the last epoch (nats per example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_epoch_loss: Option<f64>,
    /// Wall seconds of fine-tuning (all epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune_seconds: Option<f64>,
    /// Wall seconds of evaluating this set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_seconds: Option<f64>,
    /// Fine-tuning throughput, examples per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune_examples_per_second: Option<f64>,
    /// Evaluation throughput, examples per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_examples_per_second: Option<f64>,
}

/// One evaluation set: per-metric medians over trials, and every trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSection {
    /// Per-metric median over trials, fractions.
    pub metrics: BTreeMap<String, f64>,
    /// Every trial.
    pub trials: Vec<TrialSection>,
}

/// A control with its trials (the no-pretraining control records them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlSection {
    #[serde(flatten)]
    pub control: Control,
    /// The control's trials per set (predictions under `glue/controls/`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trials: BTreeMap<String, Vec<TrialSection>>,
}

/// `predicate.glue.controls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlsSection {
    /// Majority class / mean training score (always).
    pub constant: ControlSection,
    /// The untrained architecture fine-tuned with the same trial seeds (when run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_pretraining: Option<ControlSection>,
}

impl ControlsSection {
    /// The controls without their trials.
    pub fn controls(&self) -> Controls {
        Controls {
            constant: self.constant.control.clone(),
            no_pretraining: self.no_pretraining.as_ref().map(|c| c.control.clone()),
        }
    }
}

/// `predicate.glue.settings`: what `compare` and `report` check against a reference row.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GlueSettings {
    /// Whether every task reused the first task's warm-up step count (the reference's shared warm-up; false: each task warmed up for its own fraction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_warmup: Option<bool>,
    /// Whether the encoder was given the batches' key-padding mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_padding_mask: Option<bool>,
    /// Fine-tuning epochs per trial (a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    /// Trials (seeds) per task (a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<u32>,
}

/// `predicate.glue`: GLUE-dev results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlueSection {
    /// `glue-sane` or `glue-bert`.
    pub protocol: String,
    /// The fine-tuning settings (absent in manifests made before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<GlueSettings>,
    /// The attention backend fine-tuning and evaluation ran with (absent before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<crate::model::attention::AttentionBackend>,
    /// Per evaluation set (`cola`, …, `mnli-m`, `mnli-mm`, …).
    pub tasks: BTreeMap<String, SetSection>,
    /// The headline aggregate under its rule.
    pub aggregate: AggregateSection,
    /// Bootstrap intervals and trial spread (absent in manifests made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<Uncertainty>,
    /// The controls (absent in manifests made before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controls: Option<ControlsSection>,
}

/// One invocation of `crambench run` on the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// RFC 3339 UTC start time.
    pub started: String,
    /// The machine's hardware class.
    pub hardware_class: String,
    /// crambench version of that invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crambench_version: Option<String>,
    /// How it was launched: `kind` (local, torchrun, kubeflow, env, slurm, mpi), Slurm job and
    /// array ids, the launcher's restart count (absent before launchers were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<Value>,
}

/// One stage of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSection {
    /// Wall seconds the stage took.
    pub seconds: f64,
    /// RFC 3339 UTC time it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
}

/// A check overridden with `--force`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forced {
    /// What was overridden.
    pub what: String,
    /// What run.json recorded.
    pub recorded: String,
    /// What this invocation found.
    pub now: String,
    /// RFC 3339 UTC time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `predicate.pipeline` (v0.1: `predicate.run`): how `crambench run` produced the manifest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PipelineSection {
    /// Every invocation on the run directory (a resumed run has several).
    #[serde(default)]
    pub invocations: Vec<Invocation>,
    /// The stages with their wall seconds.
    #[serde(default)]
    pub stages: BTreeMap<String, StageSection>,
    /// Checks overridden with `--force`.
    #[serde(default)]
    pub forced: Vec<Forced>,
    /// Count of invocations after the first (resumes after a stop, a crash, a requeue).
    #[serde(default)]
    pub restarts: u64,
    /// Data-parallel pretraining (`train::dist`): world size, the collective backend, each
    /// rank's device and host, the launcher, any forced change of world size on resume.
    /// Absent for a single-process run made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dist: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        serde_json::from_str(super::super::schema::SCHEMA_V0_2).unwrap()
    }

    /// The object schema at a path of `$defs` and property steps (`[]` = items,
    /// `*` = additionalProperties).
    fn at<'a>(s: &'a Value, path: &[&str]) -> &'a Value {
        let mut v = &s["$defs"][path[0]];
        for p in &path[1..] {
            v = match *p {
                "[]" => &v["items"],
                "*" => &v["additionalProperties"],
                k => &v["properties"][k],
            };
        }
        v
    }

    /// Words that state a unit or say what is counted.
    const UNITS: &[&str] = &[
        "seconds",
        "device-hours",
        "tokens",
        "steps",
        "micro-steps",
        "count",
        "fraction",
        "percent points",
        "nats",
        "index",
        "examples per second",
        "seed",
        "sha256",
        "rfc 3339",
    ];

    /// `value`'s keys are exactly the schema object's properties, and every property has a
    /// description; a number's description states its unit.
    fn check(value: &Value, object: &Value, what: &str) {
        let props = object["properties"].as_object().unwrap_or_else(|| {
            panic!("{what}: no properties in the schema");
        });
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        let mut names: Vec<&String> = props.keys().collect();
        names.sort();
        let mut ks = keys.clone();
        ks.sort();
        assert_eq!(
            ks, names,
            "{what}: fields of the type vs properties of the schema"
        );
        for (k, p) in props {
            let d = p["description"].as_str().unwrap_or_else(|| {
                panic!("{what}.{k}: no description in the schema");
            });
            assert!(!d.is_empty(), "{what}.{k}");
            let numeric = value[k].is_number();
            if numeric {
                let lower = d.to_lowercase();
                assert!(
                    UNITS.iter().any(|u| lower.contains(u)),
                    "{what}.{k}: the description {d:?} states no unit"
                );
            }
        }
    }

    fn trial() -> TrialSection {
        TrialSection {
            trial: 0,
            seed: 1,
            metrics: [("accuracy".to_string(), 0.5)].into(),
            predictions: "predictions/sst2/trial-0.tsv".into(),
            predictions_sha256: "ab".repeat(32),
            dev_examples: Some(872),
            train_examples: Some(67349),
            optimizer_steps: Some(100),
            warmup_steps: Some(10),
            last_epoch_loss: Some(0.3),
            finetune_seconds: Some(1.0),
            eval_seconds: Some(0.5),
            finetune_examples_per_second: Some(10.0),
            eval_examples_per_second: Some(20.0),
        }
    }

    #[test]
    fn the_published_schema_describes_every_field_of_the_types() {
        let s = schema();
        let recipe = RecipeSection {
            name: "r".into(),
            path: Some("r.toml".into()),
            sha256: "cd".repeat(32),
            resolved: json!({}),
        };
        check(&json!(recipe), at(&s, &["recipe"]), "recipe");
        let budget = BudgetSection {
            allowed_device_hours: 1.0,
            used_device_hours: 0.5,
            devices: Some(1),
            device_kind: Some("cpu".into()),
            counted_phases: vec![],
            uncounted_phases: vec![],
            phase_seconds: BTreeMap::new(),
            energy: Some(EnergySection {
                available: true,
                source: Some("nvml".into()),
                device: Some("NVIDIA H200".into()),
                kwh: BTreeMap::new(),
                unavailable: vec!["glue: no NVML".into()],
            }),
        };
        check(&json!(budget), at(&s, &["budget"]), "budget");
        check(
            &json!(budget.energy),
            at(&s, &["budget", "energy"]),
            "budget.energy",
        );
        let pre = PretrainingSection {
            optimizer_steps: 10,
            micro_steps: Some(40),
            tokens_seen: 1000,
            initial_mlm_loss: Some(10.4),
            final_mlm_loss: Some(5.0),
            final_loss_window_micro_steps: 20,
            tokens_per_second: 100.0,
            tokens_per_second_basis: Some("whole".into()),
            attention: Some("sdpa".into()),
        };
        check(&json!(pre), at(&s, &["pretraining"]), "pretraining");
        check(
            &json!(trial()),
            at(&s, &["glue", "tasks", "*", "trials", "[]"]),
            "glue trial",
        );
        let set = SetSection {
            metrics: BTreeMap::new(),
            trials: vec![],
        };
        check(&json!(set), at(&s, &["glue", "tasks", "*"]), "glue set");
        let agg = AggregateSection {
            rule: "demo".into(),
            value: 80.0,
        };
        check(
            &json!(agg),
            at(&s, &["glue", "aggregate"]),
            "glue aggregate",
        );
        let inv = Invocation {
            started: "2026-01-01T00:00:00Z".into(),
            hardware_class: "cpu".into(),
            crambench_version: Some("0.1.0".into()),
            launcher: Some(json!({"kind": "local"})),
        };
        check(
            &json!(inv),
            at(&s, &["pipeline", "invocations", "[]"]),
            "invocation",
        );
        let stage = StageSection {
            seconds: 1.0,
            completed: Some("2026-01-01T00:00:00Z".into()),
        };
        check(&json!(stage), at(&s, &["pipeline", "stages", "*"]), "stage");
        let forced = Forced {
            what: "recipe".into(),
            recorded: "a".into(),
            now: "b".into(),
            at: Some("2026-01-01T00:00:00Z".into()),
        };
        check(
            &json!(forced),
            at(&s, &["pipeline", "forced", "[]"]),
            "forced",
        );
        check(
            &json!(PipelineSection {
                dist: Some(json!({"world_size": 1, "backend": "single", "devices": ["cpu"]})),
                ..PipelineSection::default()
            }),
            at(&s, &["pipeline"]),
            "pipeline",
        );
        // The predicate names the pipeline section by its v0.2 name.
        let props = s["$defs"]["predicate"]["properties"].as_object().unwrap();
        assert!(props.contains_key("pipeline") && !props.contains_key("run"));
    }

    #[test]
    fn a_glue_trial_keeps_every_field_the_fine_tuning_records() {
        // If glue::finetune::TrialRecord gains a field, this fails to compile or to match:
        // add the field to TrialSection (and the schema), or the manifest drops it.
        let r = crate::glue::finetune::TrialRecord {
            trial: 0,
            seed: 1,
            metrics: [("accuracy".to_string(), 0.5)].into(),
            predictions: "predictions/sst2/trial-0.tsv".into(),
            predictions_sha256: "ab".repeat(32),
            train_examples: 67349,
            optimizer_steps: 100,
            warmup_steps: 10,
            last_epoch_loss: 0.3,
            finetune_seconds: 1.0,
            eval_seconds: 0.5,
            finetune_examples_per_second: 10.0,
            eval_examples_per_second: 20.0,
            dev_examples: 872,
        };
        let v = serde_json::to_value(&r).unwrap();
        let t: TrialSection = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        assert_eq!(t, trial());
    }

    #[test]
    fn a_budget_keeps_every_field_the_trainer_records() {
        let b = crate::train::trainer::BudgetSummary {
            allowed_device_hours: 1.0,
            used_device_hours: 0.5,
            devices: 1,
            device_kind: "cpu".into(),
            counted_phases: vec!["pretraining".into()],
            uncounted_phases: vec!["evaluation".into()],
            phase_seconds: [("pretraining".to_string(), 1800.0)].into(),
        };
        let v = serde_json::to_value(&b).unwrap();
        let s: BudgetSection = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
    }

    #[test]
    fn v0_1_names_read_into_the_v0_2_types() {
        let p: PretrainingSection = serde_json::from_value(json!({
            "steps": 50, "tokens_seen": 51200, "final_mlm_loss": 5.5,
            "final_loss_window": 10, "tokens_per_second": 5e4,
        }))
        .unwrap();
        assert_eq!(p.optimizer_steps, 50);
        assert_eq!(p.final_loss_window_micro_steps, 10);
        assert_eq!((p.micro_steps, p.initial_mlm_loss), (None, None));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["optimizer_steps"], 50);
        assert!(v.get("steps").is_none(), "written under the v0.2 name only");
    }
}
