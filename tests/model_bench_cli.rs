//! `crambench bench train-step` runs on CPU from a recipe or a preset and reports sane numbers;
//! bad arguments are input errors (exit 2). (Speed targets are benchmarks, not tests.)
mod common;

#[test]
fn train_step_bench_reports_json() {
    let root = common::repo_root();
    let recipe = root.join("baselines/crammed-bert-tiny.toml");
    let (code, out, err) = common::run_in(
        &root,
        &[
            "bench",
            "train-step",
            "--recipe",
            recipe.to_str().unwrap(),
            "--micro-batch",
            "2",
            "--seq-len",
            "32",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["micro_batch"], 2);
    assert_eq!(v["seq_len"], 32);
    assert_eq!(v["tch"]["times_s"].as_array().unwrap().len(), 3);
    let median = v["tch"]["median_s"].as_f64().unwrap();
    assert!(median > 0.0);
    let tps = v["tch"]["tokens_per_s"].as_f64().unwrap();
    assert!((tps - 64.0 / median).abs() < 1e-6 * tps);
    assert!(v["tch"]["mfu"].is_null(), "no MFU on CPU");
    assert_eq!(v["references"], serde_json::json!([]));
}

#[test]
fn train_step_bench_rejects_bad_input() {
    let root = common::repo_root();
    let tiny = ["bench", "train-step", "--arch", "crammed-bert-tiny"];
    for tail in [
        &["--seq-len", "4096"][..],
        &["--dtype", "fp8"][..],
        // A reference mode without --compare-python, one named twice, an unknown one.
        &["--python-modes", "compile"][..],
        &["--compare-python", "--python-modes", "eager,eager"][..],
        &["--compare-python", "--python-modes", "jit"][..],
    ] {
        let args: Vec<&str> = tiny.iter().chain(tail).copied().collect();
        let (code, _, err) = common::run_in(&root, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let (code, _, err) = common::run_in(&root, &["bench", "train-step", "--arch", "gpt-5"]);
    assert_eq!(code, 2, "an unknown preset: {err}");
}

/// The benchmark times the trainer's own step (issue 15 item 6): the recipe's precision (bf16
/// autocast) and `--accumulation` micro-batches per timed step; with PyTorch available, the
/// reference runs the same accumulation, autocast and recipe AdamW.
#[test]
fn train_step_bench_times_the_trainers_step() {
    let root = common::repo_root();
    let recipe = root.join("baselines/crammed-bert-tiny.toml");
    let torch = root.join(".venv-torch/bin/python");
    let mut args = vec![
        "bench",
        "train-step",
        "--recipe",
        recipe.to_str().unwrap(),
        "--micro-batch",
        "2",
        "--seq-len",
        "32",
        "--accumulation",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
    ];
    let with_python = torch.exists() || std::env::var_os("CRAMBENCH_REQUIRE_TORCH").is_some();
    if with_python {
        args.extend(["--compare-python", "--python-modes", "eager,compile"]);
    }
    let (code, out, err) = common::run_in(&root, &args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dtype"], "bf16", "the recipe's precision");
    assert_eq!(v["accumulation"], 2);
    let median = v["tch"]["median_s"].as_f64().unwrap();
    let tps = v["tch"]["tokens_per_s"].as_f64().unwrap();
    assert!((tps - 128.0 / median).abs() < 1e-6 * tps);
    if with_python {
        let refs = v["references"].as_array().unwrap();
        let modes: Vec<&str> = refs.iter().map(|r| r["mode"].as_str().unwrap()).collect();
        assert_eq!(modes, ["eager", "compile"], "{out}");
        for r in refs {
            assert_eq!(r["info"]["accumulation"], 2, "{out}");
            assert_eq!(r["info"]["dtype"], "bf16", "{out}");
            assert_eq!(r["info"]["compile"], r["mode"] == "compile", "{out}");
            assert_eq!(r["times_s"].as_array().unwrap().len(), 2);
            let ratio = r["step_time_ratio_tch_over_reference"].as_f64().unwrap();
            assert!((ratio - median / r["median_s"].as_f64().unwrap()).abs() < 1e-9);
        }
    }
}

#[test]
fn optim_bench_reports_both_optimizers() {
    let root = common::repo_root();
    let (code, out, err) = common::run_in(
        &root,
        &[
            "bench",
            "optim",
            "--arch",
            "crammed-bert-tiny",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["per_parameter"]["times_s"].as_array().unwrap().len(), 3);
    assert_eq!(v["flat"]["times_s"].as_array().unwrap().len(), 3);
    assert_eq!(v["flat_groups"], 2);
    assert_eq!(v["kernel"], "fused");
    assert!(v["speedup_median"].as_f64().unwrap() > 0.0);
}
