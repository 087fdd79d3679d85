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
//! Budget accounting extends pretraining's own (`counted_phases` = pretraining) with the
//! phases the rules leave out: data preparation and GLUE fine-tuning/evaluation, with their
//! wall seconds, and the GPU energy of each phase in kWh (`budget.energy`; unavailable, with
//! the reason, on a CPU or without NVML).
use super::state::RunState;
use crate::error::Error;
use crate::glue::{config::GlueConfig, tasks::Task};
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

fn info<'a>(st: &'a RunState, stage: &str) -> Result<&'a Value> {
    st.stage(stage)
        .map(|r| &r.info)
        .with_context(|| format!("run.json: stage `{stage}` has not run"))
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
        ("data", "data_preparation"),
        ("pretrain", "pretraining"),
        ("glue", "glue_finetuning_and_evaluation"),
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
    let pre = info(st, "pretrain")?;
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
        info(st, "data")?["dir"]
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
    let glue_info = info(st, "glue")?;
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
    let data = dataset.predicate_data();
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
    let glue = info(st, "glue")?;
    for m in glue["materials"].as_array().into_iter().flatten() {
        s.predicate
            .materials
            .push(serde_json::from_value(m.clone()).context("run.json: glue.materials")?);
    }

    // Budget: pretraining's own accounting plus the uncounted phases of the run.
    let mut budget = pre["budget"].clone();
    let seconds = |stage: &str| st.stage(stage).map(|r| r.seconds).unwrap_or(0.0);
    budget["phase_seconds"]["data_preparation"] = json!(seconds("data"));
    budget["phase_seconds"]["glue_finetuning_and_evaluation"] = json!(seconds("glue"));
    budget["energy"] = energy(st);
    if let Some(u) = budget["uncounted_phases"].as_array_mut() {
        u.push(json!("data preparation (tokenizer, packing)"));
        u.push(json!("GLUE fine-tuning and evaluation"));
    }

    s.predicate.recipe = Some(json!({
        "name": inp.recipe.name(),
        "path": inp.recipe.path.display().to_string(),
        "sha256": inp.recipe_sha256,
        "resolved": inp.resolved,
    }));
    s.predicate.data = Some(data);
    s.predicate.budget = Some(budget);
    s.predicate.pretraining = Some(pre["pretraining"].clone());
    s.predicate.glue = Some(glue["glue"].clone());
    let stages: serde_json::Map<String, Value> = st
        .stages
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                json!({"seconds": r.seconds, "completed": r.completed}),
            )
        })
        .collect();
    s.predicate.run = Some(json!({
        "invocations": st.invocations,
        "stages": stages,
        "forced": st.forced,
    }));
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
