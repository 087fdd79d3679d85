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
    assert!(v["pytorch"].is_null());
}

#[test]
fn train_step_bench_rejects_bad_input() {
    let root = common::repo_root();
    for args in [
        &["bench", "train-step", "--arch", "gpt-5", "--steps", "1"][..],
        &[
            "bench",
            "train-step",
            "--arch",
            "crammed-bert-tiny",
            "--seq-len",
            "4096",
        ][..],
        &[
            "bench",
            "train-step",
            "--arch",
            "crammed-bert-tiny",
            "--dtype",
            "fp8",
        ][..],
    ] {
        let (code, _, err) = common::run_in(&root, args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
}
