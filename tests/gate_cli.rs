//! `crambench gate` end to end on fake runs (tests/common/fake_run.rs): passes against itself,
//! fails on a worse candidate for each check, refuses unusable input, and signs an attestation
//! that `crambench verify` accepts.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use common::run_in;
use serde_json::Value;
use std::path::{Path, PathBuf};

struct Env {
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
    thresholds: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "ci");
    Env {
        key,
        public,
        thresholds: common::repo_root().join("CI/gate-thresholds.toml"),
        dir,
    }
}

impl Env {
    fn run(&self, name: &str, spec: &FakeRun) -> PathBuf {
        let d = self.dir.path().join(name);
        write_fake_run(&d, spec, &self.key);
        d
    }

    /// `crambench gate` with the shipped thresholds, signing with the test key, output in
    /// `<tmp>/<out>`. Returns (code, stdout JSON or Null, stderr).
    fn gate(&self, base: &Path, cand: &Path, out: &str, extra: &[&str]) -> (i32, Value, String) {
        let out_dir = self.dir.path().join(out);
        let mut args = vec![
            "gate",
            "--baseline",
            base.to_str().unwrap(),
            "--candidate",
            cand.to_str().unwrap(),
            "--thresholds",
            self.thresholds.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run_in(self.dir.path(), &args);
        let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (code, v, stderr)
    }

    fn statement(&self, out: &str) -> Value {
        let env: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join(out).join("gate.dsse.json")).unwrap(),
        )
        .unwrap();
        let payload =
            crambench::manifest::dsse::b64_decode(env["payload"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&payload).unwrap()
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// Trials of 200 examples of a binary set where trial k gets `errors[k]` examples wrong.
fn trials(errors: &[usize]) -> Vec<Vec<(usize, usize)>> {
    errors
        .iter()
        .map(|&e| {
            (0..200)
                .map(|i| {
                    let gold = (i * 7 + 3) % 2;
                    (if i < e { 1 - gold } else { gold }, gold)
                })
                .collect()
        })
        .collect()
}

#[test]
fn passes_against_itself_and_the_attestation_verifies() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let summary = e.dir.path().join("step-summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let out_dir = e.dir.path().join("out");
    let out = common::crambench()
        .current_dir(e.dir.path())
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_REPOSITORY", "me/crambench")
        .env("GITHUB_RUN_ID", "42")
        .args(["gate", "--baseline"])
        .arg(&base)
        .arg("--candidate")
        .arg(&base)
        .arg("--thresholds")
        .arg(&e.thresholds)
        .arg("--key")
        .arg(&e.key)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("gate: PASSED"), "{stdout}");

    // The step summary was appended to, and equals gate-summary.md after the earlier text.
    let md = std::fs::read_to_string(out_dir.join("gate-summary.md")).unwrap();
    assert!(md.starts_with("## crambench gate: ✅ PASSED"), "{md}");
    assert!(md.contains("| glue/aggregate/demo | passed |"), "{md}");
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        format!("earlier step\n{md}")
    );

    // `crambench verify` accepts the attestation with the public key, and not with another.
    let env_path = out_dir.join("gate.dsse.json");
    let (code, so, se) = run_in(
        e.dir.path(),
        &[
            "verify",
            env_path.to_str().unwrap(),
            "--key",
            e.public.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    let (_, other) = keypair(e.dir.path(), "other");
    let (code, _, _) = run_in(
        e.dir.path(),
        &[
            "verify",
            env_path.to_str().unwrap(),
            "--key",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);

    // Structure of the statement: in-toto v1, test-result predicate, JCS payload.
    let env: Value = serde_json::from_slice(&std::fs::read(&env_path).unwrap()).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let payload = crambench::manifest::dsse::b64_decode(env["payload"].as_str().unwrap()).unwrap();
    let st: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(crambench::manifest::jcs::to_vec(&st).unwrap(), payload);
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        st["predicateType"],
        "https://in-toto.io/attestation/test-result/v0.1"
    );
    let manifest_sha = crambench::provenance::hash::sha256_hex(
        &std::fs::read(base.join("manifest.json")).unwrap(),
    );
    assert_eq!(st["subject"][0]["digest"]["sha256"], manifest_sha.as_str());
    let p = &st["predicate"];
    assert_eq!(p["result"], "PASSED");
    assert_eq!(p["url"], "https://github.com/me/crambench/actions/runs/42");
    let conf = p["configuration"].as_array().unwrap();
    assert_eq!(conf.len(), 3);
    let thresholds_sha =
        crambench::provenance::hash::sha256_hex(&std::fs::read(&e.thresholds).unwrap());
    assert_eq!(conf[0]["digest"]["sha256"], thresholds_sha.as_str());
    assert_eq!(conf[1]["digest"]["sha256"], manifest_sha.as_str());
    assert_eq!(conf[2]["digest"]["sha256"], manifest_sha.as_str());
    for c in conf {
        assert!(c["name"].is_string());
    }
    let passed = names(&p["passedTests"]);
    for t in [
        "hardware-class",
        "throughput",
        "mlm-loss",
        "glue/demo-sentiment/accuracy",
        "glue/demo-next-sentence/accuracy",
        "glue/aggregate/demo",
    ] {
        assert!(passed.contains(&t.to_string()), "{t} not in {passed:?}");
    }
    assert!(names(&p["failedTests"]).is_empty());
    assert!(names(&p["warnedTests"]).is_empty());
    let allowed = [
        "result",
        "configuration",
        "url",
        "passedTests",
        "warnedTests",
        "failedTests",
    ];
    for k in p.as_object().unwrap().keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "unexpected predicate field {k}"
        );
    }
}

#[test]
fn identical_runs_use_the_paired_bootstrap_with_p_one() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let cand = e.run("cand", &FakeRun::default());
    let (code, r, err) = e.gate(&base, &cand, "out", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["result"], "PASSED");
    let c = check(&r, "glue/demo-sentiment/accuracy");
    assert_eq!(c["method"], "paired-bootstrap");
    assert_eq!(c["p_value"], 1.0);
    assert_eq!(
        check(&r, "glue/aggregate/demo")["method"],
        "paired-bootstrap"
    );
}

#[test]
fn slower_throughput_fails_the_throughput_check() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let cand = e.run(
        "cand",
        &FakeRun {
            tokens_per_second: 44_000.0, // 12% below 50,000; the limit is 10%
            ..FakeRun::default()
        },
    );
    let (code, r, _) = e.gate(&base, &cand, "out", &[]);
    assert_eq!(code, 1);
    assert_eq!(r["result"], "FAILED");
    assert_eq!(check(&r, "throughput")["status"], "failed");
    let st = e.statement("out");
    assert_eq!(st["predicate"]["result"], "FAILED");
    assert_eq!(names(&st["predicate"]["failedTests"]), ["throughput"]);
    // 8% below is within the limit.
    let ok = e.run(
        "ok",
        &FakeRun {
            tokens_per_second: 46_000.0,
            ..FakeRun::default()
        },
    );
    let (code, r, _) = e.gate(&base, &ok, "out2", &[]);
    assert_eq!(code, 0, "{r:#}");
}

#[test]
fn higher_loss_fails_the_loss_check() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let cand = e.run(
        "cand",
        &FakeRun {
            final_mlm_loss: 5.56, // +0.06 > 0.05
            ..FakeRun::default()
        },
    );
    let (code, r, _) = e.gate(&base, &cand, "out", &[]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "mlm-loss")["status"], "failed");
    assert_eq!(
        names(&e.statement("out")["predicate"]["failedTests"]),
        ["mlm-loss"]
    );
}

#[test]
fn more_prediction_errors_fail_the_glue_checks_by_paired_bootstrap() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let mut worse = FakeRun::default();
    // 80% → 70% accuracy on demo-sentiment (60 instead of 40 errors of 200 in every trial).
    worse
        .sets
        .insert("demo-sentiment".into(), trials(&[60, 60, 60]));
    let cand = e.run("cand", &worse);
    let (code, r, _) = e.gate(&base, &cand, "out", &[]);
    assert_eq!(code, 1, "{r:#}");
    let c = check(&r, "glue/demo-sentiment/accuracy");
    assert_eq!(c["status"], "failed");
    assert_eq!(c["method"], "paired-bootstrap");
    assert!(c["p_value"].as_f64().unwrap() < 0.05);
    assert!((c["delta"].as_f64().unwrap() - -10.0).abs() < 1e-9);
    assert_eq!(
        check(&r, "glue/demo-next-sentence/accuracy")["status"],
        "passed"
    );
    let failed = names(&e.statement("out")["predicate"]["failedTests"]);
    assert_eq!(
        failed,
        ["glue/demo-sentiment/accuracy", "glue/aggregate/demo"]
    );

    // One more error (−0.5 points) stays within the 1-point margin.
    let mut slightly = FakeRun::default();
    slightly
        .sets
        .insert("demo-sentiment".into(), trials(&[41, 41, 41]));
    // The default fake run has 40 errors per trial, but at different examples; compare with
    // a baseline built the same way so only the one extra error differs.
    let mut base2 = FakeRun::default();
    base2
        .sets
        .insert("demo-sentiment".into(), trials(&[40, 40, 40]));
    let b2 = e.run("base2", &base2);
    let c2 = e.run("cand2", &slightly);
    let (code, r, _) = e.gate(&b2, &c2, "out2", &[]);
    assert_eq!(code, 0, "{r:#}");
    let c = check(&r, "glue/demo-sentiment/accuracy");
    assert_eq!(c["status"], "passed");
    assert!(c["detail"].as_str().unwrap().contains("margin"), "{c:#}");
}

#[test]
fn without_predictions_the_glue_checks_use_welch_over_trials_or_are_skipped() {
    let e = env();
    let mut b = FakeRun::default();
    b.sets
        .insert("demo-sentiment".into(), trials(&[38, 40, 42, 40, 39]));
    b.sets
        .insert("demo-next-sentence".into(), trials(&[60, 62, 61, 63, 60]));
    let mut c = b.clone();
    c.sets
        .insert("demo-sentiment".into(), trials(&[56, 60, 58, 61, 57]));
    let base = e.run("base", &b);
    let cand = e.run("cand", &c);
    // Lone envelopes: no predictions beside them.
    let (code, r, err) = e.gate(
        &base.join("manifest.dsse.json"),
        &cand.join("manifest.dsse.json"),
        "out",
        &[],
    );
    assert_eq!(code, 1, "{err}");
    let ch = check(&r, "glue/demo-sentiment/accuracy");
    assert_eq!(ch["method"], "welch-t");
    assert_eq!(ch["status"], "failed");
    // scipy.stats.ttest_ind(c + 1, b, equal_var=False, alternative="less") on the accuracies
    // in percent: c = [72, 70, 71, 69.5, 71.5], b = [81, 80, 79, 80, 80.5].
    let want = crambench::gate::ttest::welch_less(
        &[72.0, 70.0, 71.0, 69.5, 71.5],
        &[81.0, 80.0, 79.0, 80.0, 80.5],
        1.0,
    )
    .unwrap();
    assert!((ch["p_value"].as_f64().unwrap() - want.p_value).abs() < 1e-12);
    assert_eq!(
        check(&r, "glue/demo-next-sentence/accuracy")["status"],
        "passed"
    );
    assert_eq!(check(&r, "glue/aggregate/demo")["method"], "welch-t");

    // One trial each and no predictions: skipped, reported as a warning, exit 0.
    let mut one = FakeRun::default();
    one.sets.insert("demo-sentiment".into(), trials(&[40]));
    one.sets.insert("demo-next-sentence".into(), trials(&[60]));
    let single = e.run("single", &one);
    let s = single.join("manifest.dsse.json");
    let (code, r, _) = e.gate(&s, &s, "out2", &[]);
    assert_eq!(code, 0);
    assert_eq!(r["result"], "WARNED");
    let ch = check(&r, "glue/demo-sentiment/accuracy");
    assert_eq!(ch["status"], "skipped");
    assert!(
        ch["detail"]
            .as_str()
            .unwrap()
            .contains("fewer than 2 trials"),
        "{ch:#}"
    );
    let st = e.statement("out2");
    assert_eq!(st["predicate"]["result"], "WARNED");
    assert!(names(&st["predicate"]["warnedTests"]).contains(&"glue/aggregate/demo".to_string()));
}

#[test]
fn hardware_mismatch_is_refused_unless_allowed() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let cand = e.run(
        "cand",
        &FakeRun {
            hardware_class: "gpu-h100-80g-1".into(),
            ..FakeRun::default()
        },
    );
    let (code, _, err) = e.gate(&base, &cand, "out", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hardware class") && err.contains("--allow-hardware-mismatch"),
        "{err}"
    );
    assert!(!e.dir.path().join("out/gate.dsse.json").exists());
    let (code, r, _) = e.gate(&base, &cand, "out", &["--allow-hardware-mismatch"]);
    assert_eq!(code, 0);
    assert_eq!(r["result"], "WARNED");
    assert_eq!(
        names(&e.statement("out")["predicate"]["warnedTests"]),
        ["hardware-class"]
    );
}

#[test]
fn different_rules_or_protocols_are_refused() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let other_rule = e.run(
        "rule",
        &FakeRun {
            rule: "cramming".into(),
            ..FakeRun::default()
        },
    );
    let (code, r, err) = e.gate(&base, &other_rule, "out", &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(r["result"], "REFUSED");
    assert_eq!(check(&r, "glue/aggregate/demo")["status"], "refused");
    assert!(err.contains("aggregate rules differ"), "{err}");
    assert!(e.dir.path().join("out/gate-summary.md").exists());
    assert!(!e.dir.path().join("out/gate.dsse.json").exists());

    let other_protocol = e.run(
        "protocol",
        &FakeRun {
            protocol: "glue-bert".into(),
            ..FakeRun::default()
        },
    );
    let (code, r, err) = e.gate(&base, &other_protocol, "out2", &[]);
    assert_eq!(code, 2);
    assert_eq!(check(&r, "glue")["status"], "refused");
    assert!(err.contains("protocols differ"), "{err}");
}

#[test]
fn unusable_input_exits_2() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    // A truncated envelope.
    let bad = e.dir.path().join("bad.dsse.json");
    let bytes = std::fs::read(base.join("manifest.dsse.json")).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = e.gate(&base, &bad, "out", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.dsse.json"), "{err}");

    // An unknown key in the thresholds file names the file and the key.
    let t = e.dir.path().join("t.toml");
    let text = std::fs::read_to_string(&e.thresholds).unwrap();
    std::fs::write(&t, format!("{text}\nthroughput_max_drop_pct = 5\n")).unwrap();
    let (code, _, err) = run_in(
        e.dir.path(),
        &[
            "gate",
            "--baseline",
            base.to_str().unwrap(),
            "--candidate",
            base.to_str().unwrap(),
            "--thresholds",
            t.to_str().unwrap(),
            "--key",
            e.key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("t.toml") && err.contains("throughput_max_drop_pct"),
        "{err}"
    );

    // No thresholds file at the default path (CI/gate-thresholds.toml in the working dir):
    // the built-in thresholds, named as such in the summary.
    let (code, out, err) = run_in(
        e.dir.path(),
        &[
            "gate",
            "--baseline",
            base.to_str().unwrap(),
            "--candidate",
            base.to_str().unwrap(),
            "--out",
            "builtin-out",
            "--key",
            e.key.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["thresholds_file"]["name"], "(built-in thresholds)",
        "{out}"
    );
    assert_eq!(
        v["thresholds"]["bootstrap_resamples"],
        crambench::gate::thresholds::Thresholds::built_in().bootstrap_resamples
    );

    // A predictions file changed after the manifest was signed.
    let cand = e.run("cand", &FakeRun::default());
    let p = cand.join("glue/predictions/demo-sentiment/trial-0.tsv");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("\t1\t", "\t0\t", 1);
    std::fs::write(&p, text).unwrap();
    let (code, _, err) = e.gate(&base, &cand, "out", &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("trial-0.tsv") && err.contains("predictions_sha256"),
        "{err}"
    );
}

#[test]
fn a_new_default_key_is_announced() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let config = e.dir.path().join("config");
    let out = common::crambench()
        .current_dir(e.dir.path())
        .env("CRAMBENCH_CONFIG_DIR", &config)
        .env_remove("GITHUB_STEP_SUMMARY")
        .args(["gate", "--baseline"])
        .arg(&base)
        .arg("--candidate")
        .arg(&base)
        .arg("--thresholds")
        .arg(&e.thresholds)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("created your signing key"), "{err}");
    // Default output directory: ./gate-out/.
    let env_path = e.dir.path().join("gate-out/gate.dsse.json");
    let (code, _, se) = run_in(
        e.dir.path(),
        &[
            "verify",
            env_path.to_str().unwrap(),
            "--key",
            config.join("keys/default.pub").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{se}");
}

#[test]
fn trusted_keys_are_required_of_both_runs_when_given() {
    let e = env();
    let base = e.run("base", &FakeRun::default());
    let cand = e.run("cand", &FakeRun::default());
    let public = e.public.to_str().unwrap();
    let (code, v, err) = e.gate(&base, &cand, "trusted", &["--trust", public]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["result"], "PASSED", "{v}");
    // A key that signed neither run.
    let (_, other) = keypair(&e.dir.path().join("other"), "other");
    let (code, _, err) = e.gate(
        &base,
        &cand,
        "untrusted",
        &["--trust", other.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--baseline") && err.contains("signature"),
        "{err}"
    );
    assert!(!e.dir.path().join("untrusted/gate.dsse.json").exists());
    // A bare, unsigned statement as the candidate.
    let bare = cand.join("manifest.json");
    let (code, _, err) = e.gate(&base, &bare, "bare", &["--trust", public]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--candidate") && err.contains("not signed"),
        "{err}"
    );
}
