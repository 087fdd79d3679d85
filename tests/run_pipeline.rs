//! `crambench run` end to end on the micro recipe (`tests/fixtures/recipes/micro.toml`: the demo
//! corpus, 15 s of pretraining, 1 epoch × 2 trials on the demo tasks), and everything after it:
//! verify → compare → gate (passes against itself, fails on a deliberately worse candidate) →
//! submit → leaderboard build (accepts the good entry, rejects a tampered one). The worse
//! candidate's run also goes through simulated full disks (checkpoint, manifest) and resumes.
mod common;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn micro() -> PathBuf {
    common::repo_root().join("tests/fixtures/recipes/micro.toml")
}

/// Run crambench in `dir` with extra environment; returns (code, stdout, stderr).
fn cb(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    common::run_in_env(dir, env, args)
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".crambench-") || name.starts_with(".tmp-") {
                found.push(p.clone());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found
}

fn state(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap()
}

fn stages(run: &Path) -> Vec<String> {
    state(run)["stages"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn a_run_directory_is_pinned_to_recipe_seed_and_machine() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let recipe = micro();
    let recipe = recipe.to_str().unwrap();
    let cfg = w.join("cfg");
    let env = [("CRAMBENCH_CONFIG_DIR", cfg.to_str().unwrap())];
    // A full disk at the first file: exit 3, run.json written, nothing half-written.
    let mut fault = env.to_vec();
    fault.push(("CRAMBENCH_FAULT_ENOSPC", "fingerprint.json"));
    let (code, _, err) = cb(
        w,
        &fault,
        &[
            "run",
            recipe,
            "--out",
            "o",
            "--seed",
            "1",
            "--data-dir",
            "dc",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("No space left"), "{err}");
    let run = w.join("o/micro");
    assert!(stages(&run).is_empty());
    assert!(!run.join("fingerprint.json").exists());
    assert!(temp_files(&run).is_empty(), "{:?}", temp_files(&run));
    // Another budget is another recipe.
    let (code, _, err) = cb(
        w,
        &env,
        &[
            "run",
            recipe,
            "--out",
            "o",
            "--budget",
            "5s",
            "--data-dir",
            "dc",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("recipe") && err.contains("--force"), "{err}");
    // Another seed.
    let (code, _, err) = cb(
        w,
        &env,
        &[
            "run",
            recipe,
            "--out",
            "o",
            "--seed",
            "2",
            "--data-dir",
            "dc",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("seed"), "{err}");
    // Another machine class.
    let mut st = state(&run);
    st["hardware_class"] = "gpu-nvidia-h100-80gb-1x".into();
    std::fs::write(run.join("run.json"), serde_json::to_vec(&st).unwrap()).unwrap();
    let (code, _, err) = cb(w, &env, &["run", recipe, "--out", "o", "--data-dir", "dc"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("hardware class"), "{err}");
    // A directory that is not a run.
    std::fs::create_dir_all(w.join("p/micro")).unwrap();
    std::fs::write(w.join("p/micro/notes.txt"), "mine").unwrap();
    let (code, _, err) = cb(w, &env, &["run", recipe, "--out", "p", "--data-dir", "dc"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(
        std::fs::read_to_string(w.join("p/micro/notes.txt")).unwrap(),
        "mine"
    );
    // Damaged run.json: exit 2 naming it.
    std::fs::write(run.join("run.json"), "{").unwrap();
    let (code, _, err) = cb(w, &env, &["run", recipe, "--out", "o", "--data-dir", "dc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("run.json"), "{err}");
}

#[test]
fn micro_recipe_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let recipe = micro();
    let recipe = recipe.to_str().unwrap();
    let cfg = w.join("cfg");
    let env = [("CRAMBENCH_CONFIG_DIR", cfg.to_str().unwrap())];
    let (code, out, err) = cb(w, &[], &["keygen", "--out", "keys", "--name", "alice"]);
    assert_eq!(code, 0, "{out}{err}");

    // 1. The good run, signed with alice's key.
    let (code, out, err) = cb(
        w,
        &env,
        &[
            "run",
            recipe,
            "--out",
            "good",
            "--seed",
            "11",
            "--key",
            "keys/alice.key",
            "--data-dir",
            "dc",
            "--device",
            "cpu",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let o: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(o["complete"], true);
    // The summary carries the aggregate's interval and one line per control and set.
    assert!(o["aggregate_ci95"]["lo"].is_number(), "{o:#}");
    let lines: Vec<&str> = o["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for set in ["demo-sentiment", "demo-next-sentence"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{set} accuracy: "))
                    && l.contains("the no-pretraining control")),
            "{lines:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("aggregate demo: ")),
        "{lines:?}"
    );
    let good = w.join("good/micro");
    for f in [
        "run.json",
        "fingerprint.json",
        "recipe.resolved.json",
        "manifest.json",
        "manifest.dsse.json",
        "report.md",
        "report.html",
        "glue/glue.json",
        "pretrain/summary.json",
        "pretrain/metrics.jsonl",
    ] {
        assert!(good.join(f).is_file(), "{f} missing");
    }
    let m: Value =
        serde_json::from_slice(&std::fs::read(good.join("manifest.json")).unwrap()).unwrap();
    let p = &m["predicate"];
    assert_eq!(p["kind"], "run");
    assert_eq!(p["recipe"]["name"], "micro");
    assert_eq!(p["seeds"]["master"], 11);
    assert!(p["seeds"]["derived"]["finetune/demo-sentiment/1"].is_u64());
    assert_eq!(p["glue"]["aggregate"]["rule"], "demo");
    assert_eq!(
        p["glue"]["tasks"]["demo-sentiment"]["trials"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(p["pretraining"]["final_mlm_loss"].as_f64().unwrap() < 8.0);
    assert!(p["budget"]["uncounted_phases"].to_string().contains("GLUE"));
    // GPU energy per phase (#15 item 9): a CPU run records it as unavailable, with reasons.
    let energy = &p["budget"]["energy"];
    assert_eq!(energy["available"], false, "{energy}");
    assert_eq!(energy["source"], "nvml:total_energy_consumption");
    assert!(energy["kwh"].as_object().unwrap().is_empty());
    let why = energy["unavailable"].to_string();
    assert!(
        why.contains("pretraining: ") && why.contains("not a GPU"),
        "{why}"
    );
    // The attention backends that ran.
    assert_eq!(p["pretraining"]["attention"], "auto");
    assert_eq!(p["glue"]["attention"], "auto");
    let roles: Vec<&str> = m["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["annotations"]["role"].as_str().unwrap())
        .collect();
    // The demo tasks run the no-pretraining control by default: its predictions are signed.
    assert_eq!(
        roles,
        [
            "checkpoint",
            "checkpoint-oms",
            "tokenizer",
            "dataset",
            "predictions",
            "control-predictions",
            "metrics-log"
        ]
    );
    let g = &p["glue"];
    for set in ["demo-sentiment", "demo-next-sentence"] {
        let np = &g["controls"]["no_pretraining"];
        assert!(np["tasks"][set]["metrics"]["accuracy"].is_number(), "{g:#}");
        assert_eq!(
            np["trials"][set].as_array().unwrap().len(),
            g["tasks"][set]["trials"].as_array().unwrap().len()
        );
        assert!(g["controls"]["constant"]["tasks"][set]["above"]["accuracy"]["delta"].is_number());
        let ci = &g["uncertainty"]["tasks"][set]["ci95"]["accuracy"];
        assert!(ci["lo"].as_f64().unwrap() <= ci["hi"].as_f64().unwrap());
    }
    assert!(g["controls"]["no_pretraining"]["above"]["ci95"]["lo"].is_number());
    // The subjects' digests are what `crambench hash` computes now.
    let ck = m["subject"][0]["name"].as_str().unwrap();
    let (code, out, _) = cb(&good, &[], &["hash", ck, "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains(m["subject"][0]["digest"]["dirHash"].as_str().unwrap()));
    let html = std::fs::read_to_string(good.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 3);
    // The final checkpoint's OpenSSF model signature (alice's key is P-256, the default), which
    // model_signing accepts and `crambench verify` of the run checks.
    assert!(good.join("model.sig").is_file(), "model.sig missing");
    let (code, out, err) = cb(
        w,
        &[],
        &["verify", "good/micro", "--key", "keys/alice.pub", "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["model_signature"]["ok"], true, "{out}");
    if let Some(py) = common::interop_python() {
        let tool = py.parent().unwrap().join("model_signing");
        let o = std::process::Command::new(tool)
            .current_dir(&good)
            .args([
                "verify",
                "key",
                ck,
                "--signature",
                "model.sig",
                "--public_key",
            ])
            .arg(w.join("keys/alice.pub"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // the SLSA provenance parses as SLSA v1 (in-toto's own protobuf definitions)
        let o = std::process::Command::new(&py)
            .arg(common::repo_root().join("reference/interop/slsa_check.py"))
            .arg(good.join("provenance.slsa.dsse.json"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let (code, out, err) = cb(
        w,
        &[],
        &[
            "verify",
            "good/micro/provenance.slsa.dsse.json",
            "--key",
            "keys/alice.pub",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // 2. Rerun: every stage reused, nothing rewritten.
    let before = std::fs::read(good.join("manifest.dsse.json")).unwrap();
    let (code, out, err) = cb(
        w,
        &env,
        &[
            "run",
            recipe,
            "--out",
            "good",
            "--key",
            "keys/alice.key",
            "--data-dir",
            "dc",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let o: Value = serde_json::from_str(&out).unwrap();
    assert!(
        o["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "reused"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(good.join("manifest.dsse.json")).unwrap(),
        before
    );

    // 3. Verify offline.
    let (code, out, err) = cb(
        w,
        &[],
        &[
            "verify",
            "good/micro/manifest.dsse.json",
            "--key",
            "keys/alice.pub",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // The metrics log is a signed subject: a copy of the run with one logged loss edited fails
    // verification (exit 1) although the signature is valid.
    copy_dir(&good, &w.join("edited-log"));
    let log = w.join("edited-log/pretrain/metrics.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let edited = text.replacen("\"loss\":", "\"loss\":0.5,\"was\":", 1);
    assert_ne!(edited, text);
    std::fs::write(&log, edited).unwrap();
    let (code, out, err) = cb(w, &[], &["verify", "edited-log", "--key", "keys/alice.pub"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("pretrain/metrics.jsonl") && l.contains("mismatch")),
        "{out}"
    );

    // 4. The worse candidate: 5 s of pretraining, signed with the default key (created on first
    //    use). Its run meets a full disk while checkpointing, a SIGTERM in pretraining and a full
    //    disk while writing the manifest, and resumes each time.
    let mut fault = env.to_vec();
    fault.push(("CRAMBENCH_FAULT_ENOSPC", "checkpoints/ckpt-"));
    let worse_args = [
        "run",
        recipe,
        "--out",
        "worse",
        "--seed",
        "12",
        "--budget",
        "5s",
        "--data-dir",
        "dc",
        "--device",
        "cpu",
    ];
    let (code, _, err) = cb(w, &fault, &worse_args);
    assert_eq!(code, 3, "full disk while checkpointing: {err}");
    assert!(err.contains("No space left"), "{err}");
    let worse = w.join("worse/micro");
    assert_eq!(stages(&worse), ["data", "fingerprint"]);
    assert!(!worse.join("pretrain/checkpoints/latest").exists());
    // SIGTERM during pretraining: a checkpoint, exit 0, "stopped"; the rerun continues from it.
    let mut child = common::crambench()
        .current_dir(w)
        .args(worse_args)
        .env("CRAMBENCH_CONFIG_DIR", &cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = worse.join("pretrain/metrics.jsonl");
    let t0 = std::time::Instant::now();
    loop {
        // The first attempt's log is moved aside when pretraining starts again.
        let moved = worse.join("pretrain.abandoned-1").is_dir();
        let steps = std::fs::read_to_string(&log)
            .ok()
            .filter(|_| moved)
            .map(|t| t.matches("\"kind\":\"step\"").count())
            .unwrap_or(0);
        if steps >= 10 {
            break;
        }
        assert!(t0.elapsed().as_secs() < 300, "pretraining never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the signal"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stopped"), "{stdout}");
    assert!(worse.join("pretrain/checkpoints/latest").is_file());
    assert_eq!(stages(&worse), ["data", "fingerprint"]);
    fault[1] = ("CRAMBENCH_FAULT_ENOSPC", "manifest.json");
    let (code, _, err) = cb(w, &fault, &worse_args);
    assert_eq!(code, 3, "full disk while writing the manifest: {err}");
    assert_eq!(stages(&worse), ["data", "fingerprint", "glue", "pretrain"]);
    assert!(!worse.join("manifest.json").exists());
    assert!(
        worse.join("pretrain.abandoned-1").is_dir(),
        "the first attempt is kept aside"
    );
    assert!(temp_files(&worse)
        .iter()
        .all(|p| p.to_string_lossy().contains("abandoned")));
    let glue_before = std::fs::read(worse.join("glue/glue.json")).unwrap();
    let (code, out, err) = cb(w, &env, &worse_args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("glue") && out.contains("reused"), "{out}");
    assert_eq!(
        std::fs::read(worse.join("glue/glue.json")).unwrap(),
        glue_before
    );
    assert!(err.contains("created your signing key"), "{err}");
    assert!(cfg.join("keys/default.key").is_file());
    // The budget survived the interruption: pretraining resumed from the signal's checkpoint,
    // and the device time before and after adds up to the 5 s budget (plus the last step).
    let wm: Value =
        serde_json::from_slice(&std::fs::read(worse.join("manifest.json")).unwrap()).unwrap();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(worse.join("pretrain/summary.json")).unwrap())
            .unwrap();
    assert!(summary["resumed_from"].is_string(), "{summary}");
    let used_s = wm["predicate"]["budget"]["used_device_hours"]
        .as_f64()
        .unwrap()
        * 3600.0;
    assert!((5.0..40.0).contains(&used_s), "{used_s}");
    // Throughput of the whole pretraining, not of the resumed process alone.
    let pre = &wm["predicate"]["pretraining"];
    let tps = pre["tokens_per_second"].as_f64().unwrap();
    let whole = pre["tokens_seen"].as_f64().unwrap()
        / wm["predicate"]["budget"]["phase_seconds"]["pretraining"]
            .as_f64()
            .unwrap();
    assert!((tps - whole).abs() < 1e-6 * whole, "{tps} vs {whole}");
    assert_eq!(
        pre["tokens_per_second_basis"],
        "whole pretraining (resumed)"
    );
    assert_eq!(
        wm["predicate"]["run"]["invocations"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // 5. A completed stage whose output changed is caught.
    let wm = worse.join("pretrain/summary.json");
    let text = std::fs::read_to_string(&wm).unwrap();
    std::fs::write(&wm, text.replacen("\"steps\"", "\"steps\" ", 1)).unwrap();
    let (code, _, err) = cb(w, &env, &worse_args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pretrain/summary.json"), "{err}");
    std::fs::write(&wm, text).unwrap();

    // 6. compare: side by side, the first column is the baseline.
    let (code, out, err) = cb(w, &[], &["compare", "good/micro", "worse/micro", "--json"]);
    assert_eq!(code, 0, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    assert!(c.to_string().contains("demo-sentiment"), "{out}");

    // 7. gate: passes against itself, fails on the worse candidate (its loss is higher).
    let thresholds = common::repo_root().join("CI/gate-thresholds.toml");
    let thresholds = thresholds.to_str().unwrap();
    let (code, out, err) = cb(
        w,
        &env,
        &[
            "gate",
            "--baseline",
            "good/micro",
            "--candidate",
            "good/micro",
            "--out",
            "gate-self",
            "--key",
            "keys/alice.key",
            "--thresholds",
            thresholds,
        ],
    );
    assert_eq!(code, 0, "gate against itself: {out}{err}");
    let (code, out, err) = cb(
        w,
        &env,
        &[
            "gate",
            "--baseline",
            "good/micro",
            "--candidate",
            "worse/micro",
            "--out",
            "gate-worse",
            "--key",
            "keys/alice.key",
            "--thresholds",
            thresholds,
        ],
    );
    assert_eq!(code, 1, "gate on a worse candidate: {out}{err}");
    assert!(out.contains("loss") || err.contains("loss"), "{out}{err}");
    let (code, out, err) = cb(
        w,
        &[],
        &[
            "verify",
            "gate-worse/gate.dsse.json",
            "--key",
            "keys/alice.pub",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // 8. submit, then the leaderboard: the good entry is accepted, a tampered copy rejected.
    let (code, out, err) = cb(w, &[], &["submit", "good/micro", "--out", "entries/alice"]);
    assert_eq!(code, 0, "{out}{err}");
    copy_dir(&w.join("entries/alice"), &w.join("entries/mallory"));
    let env_path = w.join("entries/mallory/manifest.dsse.json");
    let mut e: Value = serde_json::from_slice(&std::fs::read(&env_path).unwrap()).unwrap();
    let payload = base64_decode(e["payload"].as_str().unwrap());
    let agg = p["glue"]["aggregate"]["value"].as_f64().unwrap();
    let tampered = String::from_utf8(payload)
        .unwrap()
        .replace(&format!("\"value\":{}", ryu_like(agg)), "\"value\":99.5");
    assert!(
        tampered.contains("\"value\":99.5"),
        "the tamper must change the payload"
    );
    e["payload"] = base64_encode(tampered.as_bytes()).into();
    std::fs::write(&env_path, serde_json::to_vec(&e).unwrap()).unwrap();
    std::fs::create_dir_all(w.join("trusted")).unwrap();
    std::fs::copy(w.join("keys/alice.pub"), w.join("trusted/alice.pub")).unwrap();
    let (code, out, err) = cb(
        w,
        &[],
        &[
            "leaderboard",
            "build",
            "entries",
            "--keys",
            "trusted",
            "--out",
            "site",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let lb: Value = serde_json::from_str(&out).unwrap();
    let rejected: Vec<(&str, String)> = lb["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["reasons"].to_string()))
        .collect();
    assert_eq!(rejected.len(), 1, "{out}");
    assert_eq!(rejected[0].0, "mallory", "{out}");
    assert!(rejected[0].1.contains("signature"), "{out}");
    let demo = lb["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["track"]["name"] == "demo-cpu")
        .unwrap();
    assert!(demo.to_string().contains("alice"), "{out}");
    let md = std::fs::read_to_string(w.join("site/leaderboard.md")).unwrap();
    assert!(md.contains("alice") && md.contains("mallory"), "{md}");
    assert!(w.join("site/index.html").is_file());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    crambench::manifest::dsse::b64_decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    crambench::manifest::dsse::b64_encode(b)
}

/// The aggregate as RFC 8785 writes it (shortest round-trip decimal).
fn ryu_like(v: f64) -> String {
    let bytes = crambench::manifest::jcs::to_vec(&serde_json::json!(v)).unwrap();
    String::from_utf8(bytes).unwrap()
}
