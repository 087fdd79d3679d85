//! Data-parallel pretraining on CPU through the trainer's one code path: two ranks (two
//! processes on this machine, `--devices 2`, the TCP transport behind the collective
//! interface) with micro-batch m compute what one process computes with micro-batch 2m.
mod common;
use std::path::{Path, PathBuf};

/// A tiny recipe with step-based schedules (the budget-based ones depend on wall time), no
/// batch-size ramp, 8 micro-steps of global micro-batch 8 in batches of 16, in fp32 (CPU bf16
/// autocast rounds differently per batch shape, and the claim is equality within fp32 rounding).
fn recipe(dir: &Path, micro_batch: u32) -> PathBuf {
    let p = dir.join(format!("dp-mb{micro_batch}.toml"));
    std::fs::write(
        &p,
        format!(
            "extends = {:?}\nname = \"dp-mb{micro_batch}\"\n[train]\nbudget = \"1h\"\nsteps = 8\n\
             batch_size = 16\nmicrobatch_size = {micro_batch}\nbatch_size_ramp = 0\n\
             scheduler = \"constant\"\ncheckpoint_every_minutes = 0\nprecision = \"fp32\"\n",
            common::repo_root()
                .join("baselines/crammed-bert-tiny.toml")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    p
}

fn pretrain(dir: &Path, recipe: &Path, out: &str, extra: &[&str]) -> serde_json::Value {
    let r = recipe.to_str().unwrap();
    let mut args = vec![
        "pretrain",
        r,
        "--synthetic",
        "--out",
        out,
        "--seed",
        "5",
        "--device",
        "cpu",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = common::run_in(dir, &args);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn weights(dir: &Path) -> Vec<(String, tch::Tensor)> {
    let mut v = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn two_ranks_with_micro_batch_m_equal_one_with_2m() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let one = pretrain(w, &recipe(w, 8), "one", &[]);
    let two = pretrain(w, &recipe(w, 4), "two", &["--devices", "2"]);
    for k in ["steps", "micro_steps", "sequences_seen", "tokens_seen"] {
        assert_eq!(one[k], two[k], "{k}");
    }
    assert_eq!(one["budget"]["devices"], 1);
    assert_eq!(two["budget"]["devices"], 2);
    let (l1, l2) = (
        one["final_mlm_loss"].as_f64().unwrap(),
        two["final_mlm_loss"].as_f64().unwrap(),
    );
    assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
    // The trained weights agree within fp32 rounding (the ranks' halves are added in another
    // order than one micro-batch's rows).
    let a = weights(&w.join(one["checkpoint"].as_str().unwrap()));
    let b = weights(&w.join(two["checkpoint"].as_str().unwrap()));
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        let scale = ta.abs().max().double_value(&[]).max(1.0);
        worst = worst.max(diff / scale);
    }
    assert!(worst < 1e-5, "largest relative difference {worst}");
    // The same two ranks started the way torchrun starts them: every rank runs the same
    // command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let r4 = recipe(w, 4);
    let ranks: Vec<std::process::Child> = (0..2)
        .map(|rank| {
            common::crambench()
                .current_dir(w)
                .args([
                    "pretrain",
                    r4.to_str().unwrap(),
                    "--synthetic",
                    "--out",
                    "torchrun",
                    "--seed",
                    "5",
                    "--device",
                    "cpu",
                    "--json",
                ])
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("TORCHELASTIC_RUN_ID", "test")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<std::process::Output> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(outs[1].stdout.is_empty(), "rank 1 prints nothing");
    let tr: serde_json::Value = serde_json::from_slice(&outs[0].stdout).unwrap();
    assert_eq!(tr["budget"]["devices"], 2);
    let c = weights(&w.join(tr["checkpoint"].as_str().unwrap()));
    for ((_, tb), (_, tc)) in b.iter().zip(&c) {
        let diff = (tb - tc).abs().max().double_value(&[]);
        assert!(
            diff < 1e-6,
            "torchrun-style ranks differ from --devices 2 by {diff}"
        );
    }

    // Rank 0 alone wrote the run: one checkpoint directory, one metrics log, the world size.
    let out = w.join("two");
    let dist: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dist.json")).unwrap()).unwrap();
    assert_eq!(dist["world_size"], 2);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"kind\":\"start\""))
            .count(),
        1
    );

    // Resuming with another world size is refused (exit 4) and names both sizes.
    let r = recipe(w, 4);
    let (code, _, err) = common::run_in(
        w,
        &[
            "pretrain",
            r.to_str().unwrap(),
            "--synthetic",
            "--out",
            "two",
            "--device",
            "cpu",
            "--resume",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("world size 2, not 1"), "{err}");
}

#[test]
fn one_rank_with_micro_batch_m_is_not_two() {
    // The comparison above can fail: one process with micro-batch m and the same batch size
    // accumulates twice as many micro-batches of other data rows and masks.
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let one = pretrain(w, &recipe(w, 8), "one", &[]);
    let small = pretrain(w, &recipe(w, 4), "small", &[]);
    let a = weights(&w.join(one["checkpoint"].as_str().unwrap()));
    let b = weights(&w.join(small["checkpoint"].as_str().unwrap()));
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(diff > 1e-4, "{diff}");
}
