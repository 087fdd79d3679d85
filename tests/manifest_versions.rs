//! Manifests written before the typed predicate (`predicateType` v0.1: `pretraining.steps`,
//! `pretraining.final_loss_window`, `predicate.run`) still read, verify and render through the
//! readers of the v0.2 types; and a statement claiming v0.2 is checked against the v0.2 schema.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use crambench::manifest::{dsse, jcs, keys, schema, statement};
use crambench::record::RunRecord;
use serde_json::json;

/// A signed v0.1 run directory with a `run` section, as crambench 0.1 wrote it.
fn old_run(w: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, public) = keypair(w, "k");
    let run = w.join("run");
    let mut st = write_fake_run(&run, &FakeRun::default(), &key);
    assert_eq!(st["predicateType"], statement::PREDICATE_TYPE_V0_1);
    st["predicate"]["run"] = json!({
        "invocations": [{"started": "2026-11-28T11:00:00Z", "hardware_class": "cpu-x86-64-2c",
                         "crambench_version": "0.1.0"}],
        "stages": {"pretrain": {"seconds": 12.5, "completed": "2026-11-28T11:30:00Z"}},
        "forced": [],
    });
    let bytes = jcs::to_vec(&st).unwrap();
    std::fs::write(run.join("manifest.json"), &bytes).unwrap();
    let mut env = dsse::Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, &bytes);
    env.sign(&keys::load_signing_key(&key).unwrap(), "old")
        .unwrap();
    std::fs::write(run.join("manifest.dsse.json"), env.to_json()).unwrap();
    (run, public)
}

#[test]
fn a_v0_1_manifest_reads_into_the_typed_predicate() {
    let d = tempfile::tempdir().unwrap();
    let (run, _) = old_run(d.path());
    let r = RunRecord::open(&run).unwrap();
    let p = r.predicate.pretraining.as_ref().unwrap();
    assert_eq!(p.optimizer_steps, 50, "v0.1 `steps`");
    assert_eq!(
        p.final_loss_window_micro_steps, 10,
        "v0.1 `final_loss_window`"
    );
    assert_eq!(p.micro_steps, None);
    assert_eq!(p.final_mlm_loss, Some(5.5));
    let pipe = r.predicate.pipeline.as_ref().expect("v0.1 `run` section");
    assert_eq!(pipe.stages["pretrain"].seconds, 12.5);
    assert_eq!(pipe.invocations[0].hardware_class, "cpu-x86-64-2c");
    assert_eq!(r.aggregate().map(|(rule, _)| rule), Some("demo"));
    assert_eq!(r.trials("demo-sentiment").len(), 3);
    assert_eq!(
        r.predicate.budget.as_ref().unwrap().device_kind.as_deref(),
        Some("cpu")
    );
}

#[test]
fn a_v0_1_run_verifies_renders_and_compares() {
    let d = tempfile::tempdir().unwrap();
    let (run, public) = old_run(d.path());
    let run_s = run.to_str().unwrap();
    let (code, out, err) = common::run_in(
        d.path(),
        &[
            "verify",
            run_s,
            "--trust",
            public.to_str().unwrap(),
            "--json",
        ],
    );
    // The signature is valid and every signed digest is checked; the fake's predictions carry
    // their own gold column, which the embedded demo dev sets do not share (exit 1 for that).
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signatures"][0]["status"], "valid", "{out}");
    let items = v["artifacts"]["items"].as_array().unwrap();
    let subject = items
        .iter()
        .find(|i| i["name"] == "glue/predictions")
        .unwrap();
    assert_eq!(subject["status"], "verified", "{out}");
    assert!(
        items
            .iter()
            .filter(|i| i["status"] == "mismatch")
            .all(|i| i["detail"].as_str().unwrap().contains("re-scored")),
        "only the re-scoring against the embedded gold differs: {out}"
    );
    let (code, _, err) = common::run_in(d.path(), &["report", run_s]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("Optimizer steps"), "{md}");
    let (code, out, err) = common::run_in(d.path(), &["compare", run_s, run_s, "--json"]);
    assert_eq!(code, 0, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["runs"][0]["tokens_per_second"], 50_000.0);
    let (code, out, err) = common::run_in(d.path(), &["manifest", "validate", run_s]);
    // `manifest validate` takes a file.
    assert_ne!(code, 0, "{out}{err}");
    let (code, out, err) = common::run_in(
        d.path(),
        &[
            "manifest",
            "validate",
            run.join("manifest.json").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn v0_2_statements_use_the_v0_2_schema() {
    let d = tempfile::tempdir().unwrap();
    let (run, _) = old_run(d.path());
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert!(schema::validate_statement(&st).is_empty());
    // The same statement relabelled v0.2 is checked against v0.2, which requires
    // `pretraining.optimizer_steps`.
    st["predicateType"] = json!(statement::PREDICATE_TYPE);
    let problems = schema::validate_statement(&st);
    assert!(
        problems.iter().any(|p| p.at == "/predicate/pretraining"),
        "{problems:?}"
    );
    let pre = st["predicate"]["pretraining"].as_object_mut().unwrap();
    let steps = pre.remove("steps").unwrap();
    pre.insert("optimizer_steps".into(), steps);
    let w = pre.remove("final_loss_window").unwrap();
    pre.insert("final_loss_window_micro_steps".into(), w);
    let pipeline = st["predicate"]
        .as_object_mut()
        .unwrap()
        .remove("run")
        .unwrap();
    st["predicate"]["pipeline"] = pipeline;
    assert_eq!(schema::validate_statement(&st), vec![]);
    let typed: statement::Statement = serde_json::from_value(st).unwrap();
    assert_eq!(typed.predicate.pretraining.unwrap().optimizer_steps, 50);
}
