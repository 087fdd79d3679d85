//! `crambench report`: writes report.md and report.html into the run directory (or --out),
//! prints their paths (JSON with --json), and exits 2 on unusable input.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use common::run_in;
use std::path::Path;

fn fake(dir: &Path) -> std::path::PathBuf {
    let (key, _) = keypair(dir, "k");
    let run = dir.join("run");
    write_fake_run(&run, &FakeRun::default(), &key);
    run
}

#[test]
fn writes_into_the_run_directory_and_prints_paths() {
    let d = tempfile::tempdir().unwrap();
    let run = fake(d.path());
    let (code, out, err) = run_in(d.path(), &["report", "run"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["run/report.md", "run/report.html"], "{out}");
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    // The demo recipe's default reference row.
    assert!(
        md.contains("the reference is `crammed-bert-v2-best-of-5`"),
        "{md}"
    );
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "three curves and the GLUE chart"
    );
}

#[test]
fn json_output_reference_choice_and_out_dir() {
    let d = tempfile::tempdir().unwrap();
    let run = fake(d.path());
    let out = d.path().join("elsewhere");
    let (code, stdout, err) = run_in(
        d.path(),
        &[
            "report",
            run.to_str().unwrap(),
            "--reference",
            "bert-base",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["reference"], "bert-base");
    assert_eq!(v["markdown"], out.join("report.md").to_str().unwrap());
    assert_eq!(v["html"], out.join("report.html").to_str().unwrap());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("`bert-base`"));
    assert!(
        !run.join("report.md").exists(),
        "wrote into the run dir despite --out"
    );
}

#[test]
fn unusable_input_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let run = fake(d.path());
    std::fs::create_dir(d.path().join("empty")).unwrap();
    for args in [
        vec!["report", "does-not-exist"],
        vec!["report", "empty"],
        vec!["report", "run/glue/glue.json"],
        vec!["report", "run", "--reference", "no-such-row"],
    ] {
        let (code, _, err) = run_in(d.path(), &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.is_empty(), "{args:?}: no message");
    }
    assert!(!run.join("report.md").exists());
    // A corrupt envelope is unusable input too.
    std::fs::write(run.join("manifest.dsse.json"), "{not json").unwrap();
    let (code, _, err) = run_in(d.path(), &["report", "run"]);
    assert_eq!(code, 2, "{err}");
}

/// The status `crambench verify --json` gives the metrics-log subject (`None`: not a subject).
fn metrics_log_status(dir: &Path, run: &str, public: &str) -> Option<String> {
    let (_, out, err) = run_in(dir, &["verify", run, "--key", public, "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    v["artifacts"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "subject" && i["role"] == "metrics-log")
        .map(|i| {
            assert_eq!(i["name"], "pretrain/metrics.jsonl");
            i["status"].as_str().unwrap().to_string()
        })
}

#[test]
fn an_edited_metrics_log_fails_verify_where_it_is_a_subject() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keypair(d.path(), "k");
    let run = d.path().join("run");
    let spec = FakeRun {
        metrics_subject: true,
        ..FakeRun::default()
    };
    write_fake_run(&run, &spec, &key);
    let public = public.to_str().unwrap();
    assert_eq!(
        metrics_log_status(d.path(), "run", public).as_deref(),
        Some("verified")
    );
    // One loss value changed: the signature is still valid, the subject is not (and a
    // mismatch is what `verify` exits 1 for).
    let log = run.join("pretrain/metrics.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"loss\":8", "\"loss\":1", 1)).unwrap();
    assert_eq!(
        metrics_log_status(d.path(), "run", public).as_deref(),
        Some("mismatch")
    );
    // A run made before the log was a subject has no such item (and nothing to fail).
    let old = d.path().join("old");
    write_fake_run(&old, &FakeRun::default(), &key);
    assert_eq!(metrics_log_status(d.path(), "old", public), None);
}
