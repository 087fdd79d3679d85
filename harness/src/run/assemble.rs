//! The run manifest: an in-toto Statement whose crambench predicate (`kind = "run"`) gathers
//! what every stage recorded in `run.json`.
//!
//! Subjects (what the manifest is about), each with `annotations.role`:
//! * `checkpoint` — the final pretraining checkpoint directory (dirHash), named by its path in
//!   the run directory;
//! * `checkpoint-oms` — the same directory's OpenSSF model-signing root digest (sha256 over its
//!   files as `model_signing` serialises them), the digest the run's `model.sig` signs;
//! * `tokenizer` — the dataset's `tokenizer.json` (sha256), named `dataset/<name>/tokenizer.json`;
//! * `dataset` — the dataset's `dataset.json` (sha256), which lists every shard's digest and the
//!   root digest the reader checks, named `dataset/<name>/dataset.json`;
//! * `predictions` — `glue/predictions` (dirHash), every per-example prediction of every trial.
//! * `control-predictions` — `glue/controls` (dirHash), the no-pretraining control's
//!   predictions and kept trials, when that control ran.
//! * `metrics-log` — `pretrain/metrics.jsonl` (sha256), the per-step log the report's curves
//!   are drawn from, so the curves are as signed as the numbers. Manifests made before it was a
//!   subject lack it; they still verify (the audit checks the subjects a manifest has).
//!
//! Materials include the lock file of the hub sources (`role = "lock"`), whose content is
//! recorded as `predicate.data.lock`.
//!
//! Budget accounting extends pretraining's own (`counted_phases` = pretraining) with the
//! phases the rules leave out: data preparation and GLUE fine-tuning/evaluation, with their
//! wall seconds, and the GPU energy of each phase in kWh (`budget.energy`; unavailable, with
//! the reason, on a CPU or without NVML).
use super::state::{RunState, Stage};
use crate::error::Error;
use crate::glue::{config::GlueConfig, tasks::Task};
use crate::manifest::predicate::{
    BudgetSection, PipelineSection, PretrainingSection, RecipeSection, StageSection,
};
use crate::manifest::statement::{Material, ResourceDescriptor, Statement};
use crate::provenance::{hash, seeds::Seeds};
use crate::recipe::Recipe;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// What the statement is made from.
pub struct Inputs<'a> {
    pub dir: &'a Path,
    pub recipe: &'a Recipe,
    pub resolved: &'a Value,
    pub recipe_sha256: &'a str,
    pub state: &'a RunState,
}

fn info(st: &RunState, stage: Stage) -> Result<&Value> {
    st.stage(stage)
        .map(|r| &r.info)
        .with_context(|| format!("run.json: stage `{stage}` has not run"))
}

/// A section of run.json's stage records as its manifest type (`what` names it in errors).
fn section<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T> {
    serde_path_to_error::deserialize(v)
        .map_err(|e| Error::input(format!("run.json: {what}.{}", e.path()), e.inner()).into())
}

fn subject(name: &str, path: &Path, role: &str) -> Result<ResourceDescriptor> {
    let d = hash::hash_path(path, &|_| {})?;
    Ok(ResourceDescriptor {
        name: name.into(),
        digest: d.digest_set(),
        media_type: None,
        annotations: Some(json!({ "role": role })),
    })
}

/// The `checkpoint-oms` subject: the checkpoint's OMS root digest, with the ignore paths
/// `model.sig` in the run directory gives.
fn oms_subject(run_dir: &Path, ckpt_rel: &str) -> Result<ResourceDescriptor> {
    use crate::manifest::oms;
    let dir = run_dir.join(ckpt_rel);
    let sig = run_dir.join(oms::SIGNATURE_FILE);
    let resources = oms::hash_model(&dir, &oms::default_ignore_paths(&dir, &sig))?;
    let mut digest = std::collections::BTreeMap::new();
    digest.insert("sha256".to_string(), oms::root_digest(&resources)?);
    Ok(ResourceDescriptor {
        name: ckpt_rel.into(),
        digest,
        media_type: None,
        annotations: Some(json!({ "role": oms::SUBJECT_ROLE })),
    })
}

/// GPU energy per phase (`budget.energy`, kWh from NVML's energy counter, as cramming records
/// it; [`crate::provenance::energy`]) from the stages' records: `available` when at least
/// one phase was measured, the reasons for any that was not.
fn energy(st: &RunState) -> Value {
    let mut kwh = serde_json::Map::new();
    let mut unavailable = Vec::new();
    let mut device = Value::Null;
    for (stage, phase) in [
        (Stage::Data, "data_preparation"),
        (Stage::Pretrain, "pretraining"),
        (Stage::Glue, "glue_finetuning_and_evaluation"),
    ] {
        let e = st.stage(stage).map(|r| &r.info["energy"]);
        match e.and_then(|e| e["kwh"].as_f64()) {
            Some(k) => {
                kwh.insert(phase.into(), json!(k));
                if device.is_null() {
                    device = e.map(|e| e["device"].clone()).unwrap_or_default();
                }
            }
            None => unavailable.push(format!(
                "{phase}: {}",
                e.and_then(|e| e["unavailable"].as_str())
                    .unwrap_or("not measured")
            )),
        }
    }
    let mut v = json!({
        "available": !kwh.is_empty(),
        "source": "nvml:total_energy_consumption",
        "kwh": kwh,
    });
    if !device.is_null() {
        v["device"] = device;
    }
    if !unavailable.is_empty() {
        v["unavailable"] = json!(unavailable);
    }
    v
}

/// Build the statement.
pub fn statement(inp: &Inputs) -> Result<Statement> {
    let st = inp.state;
    let fp_path = inp.dir.join("fingerprint.json");
    let fingerprint: Value = serde_json::from_slice(&crate::io::read_limited(&fp_path, 16 << 20)?)
        .map_err(|e| Error::input(fp_path.display(), format!("not JSON: {e}")))?;

    // Every seed the run used, re-derived from the master seed.
    let mut seeds = Seeds::new(st.master_seed)?;
    seeds.master_from_os = st.master_from_os;
    let pre = info(st, Stage::Pretrain)?;
    if let Some(m) = pre["seeds"].as_object() {
        for label in m.keys() {
            seeds.get(label)?;
        }
    }
    let glue_cfg = GlueConfig::from_recipe(inp.recipe)?;
    for task in Task::parse_list(&glue_cfg.tasks.join(","))? {
        for trial in 0..glue_cfg.trials {
            seeds.get(&format!("finetune/{}/{trial}", task.id()))?;
        }
        // The bootstrap behind the recorded intervals (crate::glue::controls).
        for set in task.eval_sets() {
            seeds.get(&format!("glue/bootstrap/{}", set.id))?;
        }
    }

    let mut s = Statement::new("run", fingerprint, seeds);

    // Subjects.
    let ckpt_rel = pre["checkpoint"]
        .as_str()
        .context("run.json: pretrain.checkpoint")?;
    s.subject
        .push(subject(ckpt_rel, &inp.dir.join(ckpt_rel), "checkpoint")?);
    // The same checkpoint as OpenSSF model signing serialises it (the root digest over its
    // files that `model.sig` signs and `model_signing verify key` checks): the link between
    // this manifest and the checkpoint's model signature.
    s.subject.push(oms_subject(inp.dir, ckpt_rel)?);
    let dataset = super::dataset_of(st)?;
    let ds_name = dataset.manifest().name.clone();
    let ds_dir = Path::new(
        info(st, Stage::Data)?["dir"]
            .as_str()
            .context("run.json: data.dir")?,
    );
    s.subject.push(subject(
        &format!("dataset/{ds_name}/tokenizer.json"),
        &dataset.tokenizer_path(),
        "tokenizer",
    )?);
    s.subject.push(subject(
        &format!("dataset/{ds_name}/{}", crate::data::reader::MANIFEST_FILE),
        &ds_dir.join(crate::data::reader::MANIFEST_FILE),
        "dataset",
    )?);
    s.subject.push(subject(
        "glue/predictions",
        &inp.dir.join("glue/predictions"),
        "predictions",
    )?);
    // Only when the control ran (an earlier, stopped attempt may have left an emptied
    // directory behind).
    let controls = inp.dir.join("glue/controls");
    let glue_info = info(st, Stage::Glue)?;
    if glue_info["glue"]["controls"]["no_pretraining"].is_object() && controls.is_dir() {
        s.subject
            .push(subject("glue/controls", &controls, "control-predictions")?);
    }
    let log = inp.dir.join(crate::record::METRICS_LOG);
    if log.is_file() {
        s.subject.push(subject(
            crate::record::METRICS_LOG,
            &log,
            crate::record::METRICS_LOG_ROLE,
        )?);
    }

    // Materials: the recipe files, the corpus and tokenizer, the GLUE data files.
    for f in &inp.recipe.chain {
        let d = hash::hash_path(f, &|_| {})?;
        s.predicate.materials.push(Material::from_digest(
            &f.display().to_string(),
            Some("recipe"),
            &d,
        ));
    }
    let mut data = dataset.predicate_data();
    // The lock file the hub sources were resolved through: a material, and its content.
    let lock = &info(st, Stage::Data)?["lock"];
    if lock.is_object() {
        let sha = lock["sha256"]
            .as_str()
            .context("run.json: data.lock.sha256")?;
        s.predicate.materials.push(Material {
            name: lock["path"].as_str().unwrap_or("lock").to_string(),
            role: Some("lock".into()),
            digest: std::collections::BTreeMap::from([("sha256".to_string(), sha.to_string())]),
            size: lock["size"].as_u64().unwrap_or(0),
            files: None,
        });
        data["lock"] = lock.clone();
    }
    for src in data["sources"].as_array().into_iter().flatten() {
        let mut m: Material = serde_json::from_value(src.clone())
            .context("dataset.json: a source is not a material")?;
        m.role.get_or_insert_with(|| "corpus".into());
        s.predicate.materials.push(m);
    }
    if let Ok(mut m) = serde_json::from_value::<Material>(data["tokenizer"].clone()) {
        m.role.get_or_insert_with(|| "tokenizer".into());
        s.predicate.materials.push(m);
    }
    let glue = info(st, Stage::Glue)?;
    for m in glue["materials"].as_array().into_iter().flatten() {
        s.predicate
            .materials
            .push(serde_json::from_value(m.clone()).context("run.json: glue.materials")?);
    }

    // Budget: pretraining's own accounting plus the uncounted phases of the run.
    let mut budget: BudgetSection = section(&pre["budget"], "pretrain.budget")?;
    let seconds = |stage: Stage| st.stage(stage).map(|r| r.seconds).unwrap_or(0.0);
    budget
        .phase_seconds
        .insert("data_preparation".into(), seconds(Stage::Data));
    budget.phase_seconds.insert(
        "glue_finetuning_and_evaluation".into(),
        seconds(Stage::Glue),
    );
    budget.energy = Some(section(&energy(st), "energy")?);
    budget
        .uncounted_phases
        .push("data preparation (tokenizer, packing)".into());
    budget
        .uncounted_phases
        .push("GLUE fine-tuning and evaluation".into());

    s.predicate.recipe = Some(RecipeSection {
        name: inp.recipe.name(),
        path: Some(inp.recipe.path.display().to_string()),
        sha256: inp.recipe_sha256.to_string(),
        resolved: inp.resolved.clone(),
    });
    s.predicate.data = Some(data);
    s.predicate.budget = Some(budget);
    let mut pretraining: PretrainingSection = section(&pre["pretraining"], "pretrain.pretraining")?;
    // run.json of a run begun before the section kept the initial loss beside it.
    if pretraining.initial_mlm_loss.is_none() {
        pretraining.initial_mlm_loss = pre["initial_mlm_loss"].as_f64();
    }
    s.predicate.pretraining = Some(pretraining);
    s.predicate.glue = Some(section(&glue["glue"], "glue.glue")?);
    s.predicate.pipeline = Some(PipelineSection {
        invocations: st
            .invocations
            .iter()
            .map(|i| section(&json!(i), "invocations"))
            .collect::<Result<_>>()?,
        stages: st
            .stages
            .iter()
            .map(|(k, r)| {
                (
                    k.clone(),
                    StageSection {
                        seconds: r.seconds,
                        completed: Some(r.completed.clone()),
                    },
                )
            })
            .collect(),
        forced: st
            .forced
            .iter()
            .map(|f| section(&json!(f), "forced"))
            .collect::<Result<_>>()?,
        restarts: st.invocations.len().saturating_sub(1) as u64,
        // Data parallel (#18): world size, each rank's device, the backend and launcher.
        dist: (!pre["dist"].is_null()).then(|| pre["dist"].clone()),
    });
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::state::StageRecord;

    fn state(infos: &[(&str, Value)]) -> RunState {
        let mut st: RunState = serde_json::from_value(json!({
            "schema": "x", "recipe_name": "r", "recipe_path": "r.toml", "recipe_sha256": "0",
            "hardware_class": "h", "master_seed": 1, "master_from_os": false, "created": "t",
            "invocations": [], "stages": {}
        }))
        .unwrap();
        for (stage, info) in infos {
            st.stages.insert(
                stage.to_string(),
                StageRecord {
                    completed: "t".into(),
                    seconds: 1.0,
                    outputs: Default::default(),
                    info: info.clone(),
                },
            );
        }
        st
    }

    #[test]
    fn energy_per_phase_from_the_stages() {
        let st = state(&[
            (
                "data",
                json!({"energy": {"kwh": 0.001, "device": "NVIDIA H200"}}),
            ),
            (
                "pretrain",
                json!({"energy": {"kwh": 0.25, "device": "NVIDIA H200"}}),
            ),
            (
                "glue",
                json!({"energy": {"unavailable": "glue: NVML: GPU lost"}}),
            ),
        ]);
        let e = energy(&st);
        assert_eq!(e["available"], true);
        assert_eq!(e["device"], "NVIDIA H200");
        assert_eq!(
            e["kwh"],
            json!({"data_preparation": 0.001, "pretraining": 0.25})
        );
        assert_eq!(
            e["unavailable"],
            json!(["glue_finetuning_and_evaluation: glue: NVML: GPU lost"])
        );
        // A CPU run (and stages recorded before energy was): unavailable, with reasons.
        let st = state(&[("pretrain", json!({"energy": {"unavailable": "not a GPU"}}))]);
        let e = energy(&st);
        assert_eq!(e["available"], false);
        assert!(e.get("device").is_none());
        assert_eq!(e["unavailable"].as_array().unwrap().len(), 3);
        // The schema's budget.energy accepts both.
        let schema: Value = serde_json::from_str(crate::manifest::schema::SCHEMA_V0_1).unwrap();
        let def = &schema["$defs"]["budget"]["properties"]["energy"];
        let v = jsonschema::validator_for(def).unwrap();
        assert!(v.is_valid(&e), "{e}");
        assert!(v.is_valid(&energy(&state(&[(
            "pretrain",
            json!({"energy": {"kwh": 0.5, "device": "g"}})
        )]))));
        assert!(!v.is_valid(&json!({"available": "no", "kwh": {}})));
    }
}
