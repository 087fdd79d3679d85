//! A schema-valid, signed run directory written directly (no training), for testing the tools
//! that read runs (`compare`, `gate`, `submit`, `leaderboard`, `report`) in seconds. The real
//! thing comes from `crambench run` and is covered by the end-to-end test.
//!
//! Layout as `crambench run` writes it (see `crambench::record`): `manifest.json`,
//! `manifest.dsse.json` (signed by `key`), `pretrain/metrics.jsonl`,
//! `glue/predictions/<set>/trial-<k>.tsv` and `glue/glue.json`.
use crambench::manifest::{dsse, jcs, keys};
use crambench::provenance::hash;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to fake.
#[derive(Debug, Clone)]
pub struct FakeRun {
    pub recipe: String,
    pub hardware_class: String,
    /// Final MLM loss and throughput (tokens/s).
    pub final_mlm_loss: f64,
    pub tokens_per_second: f64,
    pub allowed_device_hours: f64,
    pub used_device_hours: f64,
    /// Per evaluation set (`demo-sentiment`, `sst2`, …): per trial, rows of (prediction, gold)
    /// class indices. Accuracy is the only metric written (so use accuracy-only sets).
    pub sets: BTreeMap<String, Vec<Vec<(usize, usize)>>>,
    /// Aggregate rule written (`demo` for demo sets).
    pub rule: String,
    pub protocol: String,
    pub epochs: u32,
    pub dataset_root_digest: String,
    /// Write the run's predictions again as a no-pretraining control under `glue/controls/`
    /// (a signed `control-predictions` subject), as `glue run` does for the demo tasks.
    pub control_files: bool,
    /// Sign `pretrain/metrics.jsonl` as a `metrics-log` subject, as `crambench run` does since
    /// the curves became signed (older manifests lack it).
    pub metrics_subject: bool,
    /// The manifest's `glue.settings` (fine-tuning settings), when given.
    pub glue_settings: Option<Value>,
}

impl Default for FakeRun {
    fn default() -> Self {
        // 200 dev examples per set, 3 trials, about 80% / 70% correct.
        let mk = |period: usize, trials: usize| -> Vec<Vec<(usize, usize)>> {
            (0..trials)
                .map(|t| {
                    (0..200)
                        .map(|i| {
                            let gold = (i * 7 + 3) % 2;
                            let wrong = (i + t) % period == 0;
                            (if wrong { 1 - gold } else { gold }, gold)
                        })
                        .collect()
                })
                .collect()
        };
        let mut sets = BTreeMap::new();
        sets.insert("demo-sentiment".to_string(), mk(5, 3));
        sets.insert("demo-next-sentence".to_string(), mk(3, 3));
        FakeRun {
            recipe: "demo-cpu".into(),
            hardware_class: "cpu-x86-64-2c".into(),
            final_mlm_loss: 5.5,
            tokens_per_second: 50_000.0,
            allowed_device_hours: 0.025,
            used_device_hours: 0.025,
            sets,
            rule: "demo".into(),
            protocol: "glue-sane (demo tasks)".into(),
            epochs: 5,
            dataset_root_digest: "ab".repeat(32),
            control_files: false,
            metrics_subject: false,
            glue_settings: None,
        }
    }
}

fn accuracy(rows: &[(usize, usize)]) -> f64 {
    rows.iter().filter(|(p, g)| p == g).count() as f64 / rows.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Write the fake run into `dir` (created) and sign it with the private key `key`
/// (`crambench keygen` output). Returns the statement.
pub fn write_fake_run(dir: &Path, spec: &FakeRun, key: &Path) -> Value {
    std::fs::create_dir_all(dir.join("glue/predictions")).unwrap();
    std::fs::create_dir_all(dir.join("pretrain")).unwrap();
    let mut tasks = serde_json::Map::new();
    let mut set_medians = Vec::new();
    for (set, trials) in &spec.sets {
        std::fs::create_dir_all(dir.join("glue/predictions").join(set)).unwrap();
        let mut records = Vec::new();
        let mut accs = Vec::new();
        for (k, rows) in trials.iter().enumerate() {
            let mut text = String::from("idx\tprediction\tgold\n");
            for (i, (p, g)) in rows.iter().enumerate() {
                text += &format!("{i}\t{p}\t{g}\n");
            }
            let rel = format!("predictions/{set}/trial-{k}.tsv");
            std::fs::write(dir.join("glue").join(&rel), &text).unwrap();
            let acc = accuracy(rows);
            accs.push(acc);
            records.push(json!({
                "trial": k, "seed": k + 1, "metrics": {"accuracy": acc},
                "predictions": rel, "predictions_sha256": hash::sha256_hex(text.as_bytes()),
                "dev_examples": rows.len(),
            }));
        }
        let m = median(accs);
        set_medians.push(m);
        tasks.insert(
            set.clone(),
            json!({"metrics": {"accuracy": m}, "trials": records}),
        );
    }
    let aggregate = 100.0 * set_medians.iter().sum::<f64>() / set_medians.len() as f64;
    let mut glue = json!({
        "protocol": spec.protocol,
        "tasks": tasks,
        "aggregate": {"rule": spec.rule, "value": aggregate},
    });
    if let Some(st) = &spec.glue_settings {
        glue["settings"] = st.clone();
    }
    std::fs::write(
        dir.join("glue/glue.json"),
        serde_json::to_vec_pretty(&glue).unwrap(),
    )
    .unwrap();
    // A short loss curve ending at the final loss.
    let mut log = String::new();
    log += &format!(
        "{}\n",
        json!({"kind": "start", "time_ms": 0, "recipe": spec.recipe, "elapsed_s": 0.0, "micro_step": 0})
    );
    for s in 1..=50u64 {
        let loss = spec.final_mlm_loss + 3.0 * (-(s as f64) / 10.0).exp();
        log += &format!(
            "{}\n",
            json!({"kind": "step", "micro_step": s, "optimizer_step": s, "elapsed_s": s as f64,
                   "loss": loss, "lr": 1e-3 * (s as f64 / 50.0), "tokens_per_second": spec.tokens_per_second,
                   "tokens_seen": s * 1024, "batch_size": 16, "budget_fraction": s as f64 / 50.0})
        );
    }
    std::fs::write(dir.join("pretrain/metrics.jsonl"), &log).unwrap();
    let predictions = hash::hash_path(&dir.join("glue/predictions"), &|_| {}).unwrap();
    let mut subjects = vec![
        json!({"name": "glue/predictions", "digest": predictions.digest_set(),
                     "annotations": {"role": "predictions"}}),
    ];
    if spec.control_files {
        for (set, trials) in &spec.sets {
            let d = dir
                .join("glue/controls/no-pretraining/predictions")
                .join(set);
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..trials.len() {
                let from = dir.join(format!("glue/predictions/{set}/trial-{k}.tsv"));
                std::fs::copy(from, d.join(format!("trial-{k}.tsv"))).unwrap();
            }
        }
        let c = hash::hash_path(&dir.join("glue/controls"), &|_| {}).unwrap();
        subjects.push(json!({"name": "glue/controls", "digest": c.digest_set(),
                             "annotations": {"role": "control-predictions"}}));
    }
    if spec.metrics_subject {
        let d = hash::hash_path(&dir.join("pretrain/metrics.jsonl"), &|_| {}).unwrap();
        subjects.push(
            json!({"name": "pretrain/metrics.jsonl", "digest": d.digest_set(),
                             "annotations": {"role": "metrics-log"}}),
        );
    }
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": "https://crambench.dev/manifest/v0.1",
        "predicate": {
            "crambench_version": crambench::VERSION,
            "created": "2026-11-28T12:00:00Z",
            "kind": "run",
            "fingerprint": {"schema": "crambench.fingerprint/v1", "hardware_class": spec.hardware_class,
                            "hardware": {"cpu": {}, "memory": {}, "gpus": []}, "software": {}, "environment": {}},
            "seeds": {"master": 7, "master_from_os": false, "derivation": "crambench/seed/v1", "derived": {}},
            "materials": [],
            "recipe": {"name": spec.recipe, "sha256": "cd".repeat(32), "resolved": {"name": spec.recipe,
                       "glue": {"epochs": spec.epochs}}},
            "data": {"root_digest": spec.dataset_root_digest},
            "budget": {"allowed_device_hours": spec.allowed_device_hours,
                       "used_device_hours": spec.used_device_hours, "devices": 1, "device_kind": "cpu",
                       "counted_phases": ["pretrain"], "uncounted_phases": ["data", "glue"],
                       "phase_seconds": {"pretrain": spec.used_device_hours * 3600.0}},
            "pretraining": {"steps": 50, "tokens_seen": 51200, "final_mlm_loss": spec.final_mlm_loss,
                            "final_loss_window": 10, "tokens_per_second": spec.tokens_per_second},
            "glue": glue,
        }
    });
    let bytes = jcs::to_vec(&statement).unwrap();
    std::fs::write(dir.join("manifest.json"), &bytes).unwrap();
    let mut env = dsse::Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, &bytes);
    let sk = keys::load_signing_key(key).unwrap();
    env.sign(&sk, "fake").unwrap();
    std::fs::write(dir.join("manifest.dsse.json"), env.to_json()).unwrap();
    statement
}

/// A key pair in `dir` named `name`: (private, public).
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let k = keys::generate(dir, name).unwrap();
    (k.private_key, k.public_key)
}
