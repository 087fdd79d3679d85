//! `scripts/gpu-check.sh OUTDIR --dry-run`, the device check's dry run: it prints every command
//! it would run, checks its inputs exist and that every crambench command line parses. On a
//! CPU machine that is all of it that can run; the test fails when an input the script needs is
//! missing from the repository or a command line is malformed (a flag crambench does not have).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Python with torch (the script's inputs include one), or None (skipped unless
/// CRAMBENCH_REQUIRE_TORCH=1, as `make test` sets).
fn torch_python() -> Option<PathBuf> {
    let py = common::repo_root().join(".venv-torch/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import torch"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    if std::env::var("CRAMBENCH_REQUIRE_TORCH").as_deref() == Ok("1") {
        panic!(
            "{} with torch is missing: run scripts/torchenv.sh",
            py.display()
        );
    }
    eprintln!("SKIPPED: no .venv-torch with torch; run scripts/torchenv.sh");
    None
}

/// Run `script OUT --dry-run` from the repository root; (exit code, stdout, stderr).
fn dry_run(script: &Path, out: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .arg(out)
        .arg("--dry-run")
        .current_dir(common::repo_root())
        .env("CRAMBENCH_BIN", env!("CARGO_BIN_EXE_crambench"))
        .env("GPU_CHECK_ROOT", common::repo_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run bash");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn script() -> PathBuf {
    common::repo_root().join("scripts/gpu-check.sh")
}

#[test]
fn dry_run_lists_every_step_and_every_command_parses() {
    let Some(py) = torch_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let py = py.display().to_string();
    let (code, out, err) = dry_run(&script(), d.path(), &[("PYTHON", &py)]);
    assert_eq!(code, 0, "dry run failed:\n{out}\n{err}");
    for step in [
        "[torch]",
        "[fingerprint]",
        "[conformance]",
        "[data]",
        "[pretrain]",
        "[resume]",
        "[fp16]",
        "[glue]",
        "[glue-bucketed]",
        "[bench]",
        "[optim]",
        "[summary]",
    ] {
        assert!(out.contains(step), "no {step} step in:\n{out}");
    }
    // What the issue asks of the runs.
    for needle in [
        "bench conformance --device cuda",
        "--budget 75s",
        "timeout -s INT 60s",
        "--resume",
        "crammed-bert-sotu-fp16.toml",
        "--budget 30s",
        "--micro-batch 512",
        "--python-modes eager\\,compile",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    // Nothing ran: no step table, no logs.
    assert!(!d.path().join("steps.tsv").exists());
    assert!(!d.path().join("pretrain.log").exists());
}

#[test]
fn a_missing_binary_fails_the_dry_run_by_name() {
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = dry_run(
        &script(),
        d.path(),
        &[("CRAMBENCH_BIN", "/nonexistent/crambench")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("missing input: /nonexistent/crambench"),
        "{err}"
    );
}

#[test]
fn a_malformed_command_fails_the_dry_run() {
    let Some(py) = torch_python() else { return };
    let d = tempfile::tempdir().unwrap();
    // The script with one flag crambench does not have.
    let text = std::fs::read_to_string(script()).unwrap();
    let bad = text.replacen("--budget 30s", "--budgett 30s", 1);
    assert_ne!(bad, text);
    let copy = d.path().join("gpu-check.sh");
    std::fs::write(&copy, bad).unwrap();
    let out = d.path().join("out");
    let py = py.display().to_string();
    let (code, stdout, err) = dry_run(&copy, &out, &[("PYTHON", &py)]);
    assert_eq!(code, 2, "{stdout}\n{err}");
    assert!(err.contains("[fp16] malformed command"), "{err}");
    assert!(err.contains("--budgett"), "{err}");
}

/// The check's recipes resolve: full-size crammed-bert, micro-batch 512, bf16 (fp16 for the
/// loss-scaling run), data from the embedded corpus, one GLUE demo task and trial.
#[test]
fn the_checks_recipes_resolve() {
    use crambench::recipe::Recipe;
    let dir = common::repo_root().join("scripts/gpu-check");
    for (file, precision) in [
        ("crammed-bert-sotu.toml", "bf16"),
        ("crammed-bert-sotu-fp16.toml", "fp16"),
    ] {
        let r = Recipe::load(&dir.join(file)).unwrap();
        let data: crambench::data::config::DataConfig = r.section("data").unwrap();
        assert_eq!((data.vocab_size, data.seq_len), (32768, 128));
        assert_eq!(
            serde_json::to_value(&data.sources).unwrap()[0]["embedded"],
            "sotu"
        );
        let (arch, train, _) =
            crambench::train::run::resolved(&r, Some("75s"), Some((128, 32768, "dataset.json: ")))
                .unwrap();
        let full = crambench::model::ArchConfig::preset("crammed-bert").unwrap();
        assert_eq!(
            (arch.hidden, arch.layers, arch.heads),
            (full.hidden, full.layers, full.heads)
        );
        assert_eq!(train.microbatch_size, 512);
        assert_eq!(serde_json::to_value(train.precision).unwrap(), precision);
        let g = crambench::glue::config::GlueConfig::from_recipe(&r).unwrap();
        assert_eq!(g.tasks, vec!["demo-sentiment".to_string()]);
        assert_eq!(g.trials, 1);
        assert!(!g.runs_no_pretraining(false));
    }
}

/// The summary reads what the binary writes: a real `bench train-step --json` (tch against the
/// eager PyTorch reference on a tiny model, when torch is here) and `bench optim --json` go through
/// `scripts/gpu-check/summary.py` as the script's `bench` and `optim` steps, and the summary carries tch's
/// tokens/s, each reference's ratio and the optimizer speed-up.
#[test]
fn the_summary_reads_the_benchs_json() {
    let Some(py) = torch_python() else { return };
    let root = common::repo_root();
    let d = tempfile::tempdir().unwrap();
    let recipe = root.join("baselines/crammed-bert-tiny.toml");
    let (code, stdout, stderr) = common::run_in(
        &root,
        &[
            "bench",
            "train-step",
            "--recipe",
            recipe.to_str().unwrap(),
            "--micro-batch",
            "2",
            "--seq-len",
            "16",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--seed",
            "3",
            "--json",
            "--compare-python",
            "--python-modes",
            "eager",
            "--python",
            py.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(d.path().join("bench.out"), &stdout).unwrap();
    let (code, optim_out, stderr) = common::run_in(
        &root,
        &[
            "bench",
            "optim",
            "--arch",
            "crammed-bert-tiny",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(d.path().join("optim.out"), &optim_out).unwrap();
    std::fs::write(d.path().join("steps.tsv"), "bench\t0\t1234\noptim\t0\t50\n").unwrap();
    let s = Command::new("python3")
        .arg(root.join("scripts/gpu-check/summary.py"))
        .arg(d.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&s.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&s.stderr)));
    let bench: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let b = &v["bench"];
    assert_eq!(
        b["tch"]["tokens_per_s"], bench["tch"]["tokens_per_s"],
        "{v}"
    );
    let ratio = b["eager"]["tokens_per_s_tch_over_reference"]
        .as_f64()
        .unwrap();
    let want = bench["tch"]["tokens_per_s"].as_f64().unwrap()
        / bench["references"][0]["tokens_per_s"].as_f64().unwrap();
    assert!((ratio - want).abs() < 1e-9 * want, "{v}");
    assert_eq!(v["steps"]["bench"]["seconds"], 1.234);
    let optim: serde_json::Value = serde_json::from_str(&optim_out).unwrap();
    assert_eq!(v["optim"]["speedup_median"], optim["speedup_median"], "{v}");
    assert_eq!(v["optim"]["kernel"], "fused");
    assert_eq!(v["pass"], false, "no conformance step ran: not a pass");
}
