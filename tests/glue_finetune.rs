//! `crambench glue run` end to end on a tiny checkpoint made here (model::build with a tiny
//! ArchConfig, a WordPiece tokenizer trained in-test with the fixed special ids), on the GLUE
//! fixtures in both layouts; predictions re-scored by `crambench glue score`.
mod common;
#[path = "fixtures/glue/gen.rs"]
mod gen;

/// Run crambench with one libtorch thread: the tests run in parallel on few cores, where
/// OpenMP's spinning threads oversubscribe the CPU.
fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::crambench()
        .current_dir(dir)
        .env("OMP_NUM_THREADS", "1")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
use crambench::glue::config::Schedule;
use crambench::glue::config::{GlueConfig, Protocol};
use crambench::glue::finetune::{encode, lr_factor, trial_optimizer};
use crambench::glue::tasks::{Example, Task};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A tiny pretrained checkpoint (random weights, real tokenizer), made once per test binary
/// and shared read-only by the tests.
fn tiny_checkpoint(_dir: &Path) -> PathBuf {
    static CK: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CK.get_or_init(|| {
        // Under cargo's scratch directory for integration tests, replaced on every run.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("glue-tiny-checkpoint");
        let _ = std::fs::remove_dir_all(&dir);
        make_checkpoint(&dir)
    })
    .clone()
}

fn make_checkpoint(dir: &Path) -> PathBuf {
    let ck = dir.join("ckpt");
    std::fs::create_dir_all(&ck).unwrap();
    let text = String::from_utf8(crambench::glue::demo::SENTIMENT_TSV.to_vec()).unwrap();
    let mut texts: Vec<String> = text
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect();
    for t in Task::ALL_GLUE {
        let d = crambench::glue::data::load(&gen::tsv_root(), t, None).unwrap();
        for e in d.train.iter().chain(d.dev.iter().flat_map(|x| x.1.iter())) {
            texts.push(e.text_a.clone());
            texts.extend(e.text_b.clone());
        }
    }
    let tok = crambench::data::tokenizer::train(texts.iter(), 512, Default::default()).unwrap();
    crambench::data::tokenizer::save(&tok, &ck.join("tokenizer.json")).unwrap();
    let mut arch = crambench::model::ArchConfig::preset("crammed-bert-tiny").unwrap();
    arch.vocab_size = 512;
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = crambench::model::build(&vs.root(), &arch).unwrap();
    vs.save(ck.join("model.safetensors")).unwrap();
    std::fs::write(
        ck.join("arch.json"),
        serde_json::to_vec_pretty(&arch).unwrap(),
    )
    .unwrap();
    crambench::train::checkpoint::seal(&ck, 0).unwrap();
    ck
}

const RECIPE: &str = "name = \"glue-test\"\n[glue]\nprotocol = \"glue-sane\"\nbatch_size = 2\nepochs = 2\nhead_dim = 32\nmax_seq_len = 48\n";

fn run_glue(dir: &Path, ck: &Path, data: &Path, out: &str, seed: &str) -> Value {
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out_dir = dir.join(out);
    let args = [
        "glue",
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--tasks",
        "all",
        "--data",
        data.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--trials",
        "2",
        "--seed",
        seed,
        "--device",
        "cpu",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ];
    let (code, stdout, stderr) = run_in(dir, &args);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("glue.json")).unwrap()).unwrap();
    assert_eq!(v, on_disk);
    v
}

#[test]
fn glue_run_on_both_layouts_and_rescore() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let tsv = gen::tsv_root();
    let v = run_glue(dir.path(), &ck, &tsv, "out-tsv", "7");
    let sets: Vec<&str> = v["tasks"]
        .as_object()
        .unwrap()
        .keys()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        sets,
        ["cola", "mnli-m", "mnli-mm", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]
    );
    assert_eq!(v["protocol"], "glue-sane");
    assert_eq!(v["aggregate"]["rule"], "cramming");
    assert_eq!(v["data"]["qqp"]["skipped_rows"], 2);
    assert_eq!(v["config"]["batch_size"], 2);
    // Every trial: its seed is the derived one, predictions re-score to the same metrics.
    for (set, r) in v["tasks"].as_object().unwrap() {
        let trials = r["trials"].as_array().unwrap();
        assert_eq!(trials.len(), 2);
        for t in trials {
            let task = if set.starts_with("mnli") {
                "mnli"
            } else {
                set.as_str()
            };
            let want =
                crambench::provenance::seeds::derive(7, &format!("finetune/{task}/{}", t["trial"]));
            assert_eq!(t["seed"].as_u64(), Some(want));
            let p = dir
                .path()
                .join("out-tsv")
                .join(t["predictions"].as_str().unwrap());
            let sha = crambench::provenance::hash::sha256_hex(&std::fs::read(&p).unwrap());
            assert_eq!(t["predictions_sha256"].as_str(), Some(sha.as_str()));
            let (code, out, err) = run_in(
                dir.path(),
                &[
                    "glue",
                    "score",
                    "--task",
                    set,
                    "--predictions",
                    p.to_str().unwrap(),
                    "--any-size",
                    "--json",
                ],
            );
            assert_eq!(code, 0, "{err}");
            let s: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(s["metrics"], t["metrics"], "{set}");
            assert!(t["finetune_seconds"].as_f64().unwrap() > 0.0);
        }
        // The reported value is the per-metric median of the trials (mean of 2 here).
        for (m, med) in r["metrics"].as_object().unwrap() {
            let vals: Vec<f64> = trials
                .iter()
                .map(|t| t["metrics"][m].as_f64().unwrap())
                .collect();
            assert!((med.as_f64().unwrap() - (vals[0] + vals[1]) / 2.0).abs() < 1e-15);
        }
    }
    // The headline value is the cramming mean of the medians.
    let m = |s: &str, k: &str| v["tasks"][s]["metrics"][k].as_f64().unwrap();
    let want = 100.0
        * (m("mnli-m", "accuracy")
            + m("mnli-mm", "accuracy")
            + m("sst2", "accuracy")
            + m("stsb", "pearson")
            + m("rte", "accuracy")
            + m("qnli", "accuracy")
            + m("qqp", "f1")
            + m("mrpc", "f1")
            + m("cola", "mcc"))
        / 9.0;
    assert!((v["aggregate"]["value"].as_f64().unwrap() - want).abs() < 1e-9);

    // Same seed, same data: identical predictions. Parquet layout: same examples, so the same
    // results for every task but STS-B (float32 labels on disk).
    let pq = dir.path().join("pq");
    gen::write_parquet_layout(&pq, &tsv);
    let w = run_glue(dir.path(), &ck, &pq, "out-pq", "7");
    for (set, r) in v["tasks"].as_object().unwrap() {
        if set != "stsb" {
            for (a, b) in r["trials"]
                .as_array()
                .unwrap()
                .iter()
                .zip(w["tasks"][set]["trials"].as_array().unwrap())
            {
                assert_eq!(a["predictions_sha256"], b["predictions_sha256"], "{set}");
            }
        }
    }
    assert_eq!(w["data"]["cola"]["layout"], "hf-parquet");
    // The manifest object matches the published schema's `$defs/glue`.
    let schema: Value = serde_json::from_slice(
        &std::fs::read(
            common::repo_root().join("manifests/schema/crambench-manifest-v0.1.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema["$defs"]["glue"]).unwrap();
    let obj = serde_json::json!({"protocol": v["protocol"], "tasks": v["tasks"], "aggregate": v["aggregate"]});
    assert!(validator.is_valid(&obj));
    assert!(!validator.is_valid(&serde_json::json!({"protocol": "x", "tasks": {}, "aggregate": {"rule": "mean", "value": 1}})));
    assert_eq!(v["data"]["cola"]["layout"], "glue-tsv");
}

#[test]
fn refusals_and_bad_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, "[glue]\nepochs = 6\n").unwrap();
    let tsv = gen::tsv_root();
    let base = [
        "glue",
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--tasks",
        "rte",
        "--data",
        tsv.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let mut args = base.to_vec();
    args.extend(["--recipe", recipe.to_str().unwrap()]);
    let (code, _, err) = run_in(dir.path(), &args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("r.toml: glue") && err.contains("epochs = 6") && err.contains("refused"),
        "{err}"
    );
    std::fs::write(&recipe, "[glue]\nbatchsize = 2\n").unwrap();
    let (code, _, err) = run_in(dir.path(), &args);
    assert_eq!(code, 2);
    assert!(err.contains("batchsize"), "{err}");
    // Default batch 16 with 3 RTE training rows: not one batch.
    let (code, _, err) = run_in(dir.path(), &base);
    assert_eq!(code, 2);
    assert!(err.contains("fewer than one batch"), "{err}");
    // A checkpoint whose encoder weights are missing is refused.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["arch.json", "tokenizer.json"] {
        std::fs::copy(ck.join(f), bad.join(f)).unwrap();
    }
    let t = tch::Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("unrelated", &t)], bad.join("model.safetensors")).unwrap();
    crambench::train::checkpoint::seal(&bad, 0).unwrap();
    std::fs::write(&recipe, "[glue]\nbatch_size = 1\nepochs = 1\ntrials = 1\n").unwrap();
    let mut args = vec![
        "glue",
        "run",
        "--checkpoint",
        bad.to_str().unwrap(),
        "--tasks",
        "rte",
        "--data",
        tsv.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let o = dir.path().join("o");
    args.extend([
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        o.to_str().unwrap(),
    ]);
    let (code, _, err) = run_in(dir.path(), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("encoder weights missing"), "{err}");
    // One flipped bit in the weights: refused before fine-tuning (exit 1, the file named); a
    // checkpoint without meta.json is not a complete checkpoint (exit 2).
    let flipped = dir.path().join("flipped");
    std::fs::create_dir_all(&flipped).unwrap();
    for f in [
        "arch.json",
        "tokenizer.json",
        "model.safetensors",
        "meta.json",
    ] {
        std::fs::copy(ck.join(f), flipped.join(f)).unwrap();
    }
    let w = flipped.join("model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    args[3] = flipped.to_str().unwrap();
    let (code, _, err) = run_in(dir.path(), &args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("model.safetensors does not match meta.json"),
        "{err}"
    );
    std::fs::remove_file(flipped.join("meta.json")).unwrap();
    let (code, _, err) = run_in(dir.path(), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a complete checkpoint"), "{err}");
}

#[test]
fn inputs_are_cls_a_sep_b_sep_truncated_longest_first() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let tok = crambench::data::tokenizer::load_tokenizer(&ck.join("tokenizer.json")).unwrap();
    let ex = |a: &str, b: Option<&str>| Example {
        idx: 0,
        text_a: a.into(),
        text_b: b.map(Into::into),
        label: None,
    };
    let long = "the movie was great and the food was bad and the service was slow ".repeat(4);
    let n_long = tok.encode(long.as_str(), false).unwrap().get_ids().len();
    let n_short = tok
        .encode("the food was bad", false)
        .unwrap()
        .get_ids()
        .len();
    assert!(n_long > 40 && n_short < 10);
    let enc = encode(
        &tok,
        &[
            ex(&long, Some("the food was bad")),
            ex("the food was bad", None),
        ],
        32,
    )
    .unwrap();
    // Pair: the long side is cut until A+B fit 32-3; the short side is kept whole.
    let ids = &enc[0].ids;
    assert_eq!(ids.len(), 32);
    assert_eq!((ids[0], ids[31]), (4, 5));
    assert_eq!(ids.iter().filter(|&&t| t == 5).count(), 2);
    assert_eq!(ids[30 - n_short], 5, "separator after the truncated A");
    assert!(ids[1..30 - n_short].iter().all(|&t| t > 6));
    // Single sentence: <cls> A <sep> <sep>.
    let s = &enc[1].ids;
    assert_eq!(s.len(), n_short + 3);
    assert_eq!((s[0], s[s.len() - 2], s[s.len() - 1]), (4, 5, 5));
    // Both long: equal halves.
    let enc = encode(&tok, &[ex(&long, Some(&long))], 33).unwrap();
    let first_sep = enc[0].ids.iter().position(|&t| t == 5).unwrap();
    assert_eq!(first_sep, 1 + 15);
}

#[test]
fn schedules_match_the_hf_formulas() {
    // get_cosine_schedule_with_warmup(warmup=10, total=100): step 5 → 0.5; step 10 → 1;
    // step 55 → 0.5 (half way through the decay); step 100 → 0.
    assert_eq!(lr_factor(Schedule::Cosine, 5, 10, 100), 0.5);
    assert_eq!(lr_factor(Schedule::Cosine, 10, 10, 100), 1.0);
    assert!((lr_factor(Schedule::Cosine, 55, 10, 100) - 0.5).abs() < 1e-15);
    assert!(lr_factor(Schedule::Cosine, 100, 10, 100).abs() < 1e-15);
    assert_eq!(lr_factor(Schedule::Constant, 0, 0, 100), 1.0);
    assert_eq!(lr_factor(Schedule::Constant, 3, 4, 100), 0.75);
}

#[test]
fn demo_tasks_are_deterministic_and_balanced() {
    let s = crambench::glue::demo::load(Task::DemoSentiment).unwrap();
    assert_eq!((s.train.len(), s.dev[0].1.len()), (2400, 600));
    let pos = s.dev[0]
        .1
        .iter()
        .filter(|e| e.label == Some(crambench::glue::tasks::Target::Class(1)))
        .count();
    assert!((250..350).contains(&pos), "{pos}");
    assert_eq!(
        s.train[0].text_a,
        "So there is no way for me to plug it in here in the US unless I go by a converter."
    );
    let n = crambench::glue::demo::load(Task::DemoNextSentence).unwrap();
    let n2 = crambench::glue::demo::load(Task::DemoNextSentence).unwrap();
    assert_eq!(n.train, n2.train);
    assert_eq!((n.train.len(), n.dev[0].1.len()), (2400, 600));
    let pos = n
        .train
        .iter()
        .filter(|e| e.label == Some(crambench::glue::tasks::Target::Class(1)))
        .count();
    assert_eq!(pos, 1200);
    // Dev sentences come from other addresses than training sentences.
    let train_a: std::collections::HashSet<&str> =
        n.train.iter().map(|e| e.text_a.as_str()).collect();
    assert!(n.dev[0]
        .1
        .iter()
        .all(|e| !train_a.contains(e.text_a.as_str())));
    assert_eq!(
        crambench::glue::demo::sentences("A b. C d!  E?f g"),
        ["A b.", "C d!", "E?f g"]
    );
}

#[test]
fn frozen_warmup_quirk_reuses_the_first_tasks_warmup() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let tsv = gen::tsv_root();
    let warmups = |quirk: bool| -> (u64, u64) {
        let recipe = dir.path().join("q.toml");
        std::fs::write(
            &recipe,
            format!("[glue]\nbatch_size = 1\nepochs = 5\ntrials = 1\nhead_dim = 16\nfrozen_warmup = {quirk}\n"),
        )
        .unwrap();
        let out = dir.path().join(format!("q-{quirk}"));
        // RTE named first: with the quirk, CoLA still runs first (the reference's order).
        let (code, stdout, err) = run_in(
            dir.path(),
            &[
                "glue",
                "run",
                "--checkpoint",
                ck.to_str().unwrap(),
                "--tasks",
                "rte,cola",
                "--data",
                tsv.to_str().unwrap(),
                "--recipe",
                recipe.to_str().unwrap(),
                "--seed",
                "3",
                "--device",
                "cpu",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&stdout).unwrap();
        assert!(
            v.get("aggregate").is_none(),
            "a subset of tasks has no aggregate"
        );
        let w = |s: &str| v["tasks"][s]["trials"][0]["warmup_steps"].as_u64().unwrap();
        (w("cola"), w("rte"))
    };
    // CoLA: 4 rows x 5 epochs = 20 steps -> int(0.1*20) = 2; RTE: 3 x 5 = 15 -> 1.
    assert_eq!(warmups(false), (2, 1));
    assert_eq!(warmups(true), (2, 2));
}

/// `glue run` checks every task's data before the first trial: a task whose files are missing
/// is found in seconds, not after the tasks before it were fine-tuned.
#[test]
fn glue_run_checks_every_tasks_data_before_the_first_trial() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let only_sst2 = dir.path().join("glue");
    std::fs::create_dir_all(only_sst2.join("SST-2")).unwrap();
    for f in ["train.tsv", "dev.tsv"] {
        std::fs::copy(
            gen::tsv_root().join("SST-2").join(f),
            only_sst2.join("SST-2").join(f),
        )
        .unwrap();
    }
    let base = [
        "glue",
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        "o",
    ];
    let mut args = base.to_vec();
    args.extend(["--tasks", "sst2,rte", "--data", only_sst2.to_str().unwrap()]);
    let (code, _, err) = run_in(dir.path(), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("RTE") || err.contains("rte"), "{err}");
    assert!(!dir.path().join("o/predictions").exists(), "no trial ran");
    let mut args = base.to_vec();
    args.extend(["--tasks", "sst2"]);
    let (code, _, err) = run_in(dir.path(), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pass --glue-data DIR"), "{err}");
}

#[test]
fn controls_and_intervals_are_recorded_beside_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let tsv = gen::tsv_root();
    let go = |out: &str, control: bool| -> Value {
        let out_dir = dir.path().join(out);
        let mut args = vec![
            "glue",
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--tasks",
            "mrpc,stsb",
            "--data",
            tsv.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
            "--trials",
            "2",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ];
        if control {
            args.push("--control");
        }
        let (code, stdout, stderr) = run_in(dir.path(), &args);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let plain = go("plain", false);
    let v = go("ctl", true);
    // Rerun into the same directory: every trial, the control's included, is kept and reused,
    // with the same results.
    let out_dir = dir.path().join("ctl");
    let (code, stdout, stderr) = run_in(
        dir.path(),
        &[
            "glue",
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--tasks",
            "mrpc,stsb",
            "--data",
            tsv.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
            "--trials",
            "2",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
            "--control",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr
            .matches("(no pretraining): kept from the stopped run")
            .count(),
        4,
        "{stderr}"
    );
    let again: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(again["controls"], v["controls"]);
    assert_eq!(again["control_trials"], v["control_trials"]);
    assert_eq!(again["uncertainty"], v["uncertainty"]);
    // GLUE tasks: the no-pretraining control only when asked for.
    assert!(plain["controls"].get("no_pretraining").is_none());
    assert!(plain.get("control_trials").is_none());
    // The control does not change the run's own trials or numbers.
    for set in ["mrpc", "stsb"] {
        for (a, b) in v["tasks"][set]["trials"]
            .as_array()
            .unwrap()
            .iter()
            .zip(plain["tasks"][set]["trials"].as_array().unwrap())
        {
            assert_eq!(a["predictions_sha256"], b["predictions_sha256"], "{set}");
        }
    }
    assert_eq!(v["uncertainty"], plain["uncertainty"]);
    let read = |p: &Path| -> Vec<(String, String)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[1].to_string(), f[2].to_string())
            })
            .collect()
    };
    for set in ["mrpc", "stsb"] {
        // Constant control: one prediction for every dev example, scored like any predictions.
        let c = &v["controls"]["constant"]["tasks"][set];
        let pred = c["prediction"].as_f64().unwrap();
        let run_rows = read(
            &dir.path().join("ctl").join(
                v["tasks"][set]["trials"][0]["predictions"]
                    .as_str()
                    .unwrap(),
            ),
        );
        if set == "mrpc" {
            let gold: Vec<f64> = run_rows.iter().map(|(_, g)| g.parse().unwrap()).collect();
            let acc = gold.iter().filter(|g| **g == pred).count() as f64 / gold.len() as f64;
            assert!((c["metrics"]["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12);
        } else {
            // A constant has no correlation: scipy's NaN, reported as 0 like every undefined metric.
            assert_eq!(c["metrics"]["pearson"], 0.0);
        }
        // No-pretraining control: the run's trial seeds, its own predictions files, its median
        // equal to the re-scored files' median.
        let np = &v["controls"]["no_pretraining"];
        let trials = np["trials"][set]
            .as_array()
            .or(v["control_trials"][set].as_array())
            .unwrap();
        assert_eq!(trials.len(), 2);
        let mut scores = Vec::new();
        for (t, r) in trials
            .iter()
            .zip(v["tasks"][set]["trials"].as_array().unwrap())
        {
            assert_eq!(t["seed"], r["seed"]);
            let rel = t["predictions"].as_str().unwrap();
            assert!(
                rel.starts_with("controls/no-pretraining/predictions/"),
                "{rel}"
            );
            if set == "stsb" {
                // Scores (not classes, which a tiny model may collapse to one) tell the
                // untrained initialisation from the checkpoint.
                assert_ne!(
                    t["predictions_sha256"], r["predictions_sha256"],
                    "the control loaded the pretrained weights"
                );
            }
            let p = dir.path().join("ctl").join(rel);
            let (code, out, err) = run_in(
                dir.path(),
                &[
                    "glue",
                    "score",
                    "--task",
                    set,
                    "--predictions",
                    p.to_str().unwrap(),
                    "--any-size",
                    "--json",
                ],
            );
            assert_eq!(code, 0, "{err}");
            let s: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(s["metrics"], t["metrics"]);
            scores.push(s["metrics"].clone());
        }
        for (m, med) in np["tasks"][set]["metrics"].as_object().unwrap() {
            let a = scores[0][m].as_f64().unwrap();
            let b = scores[1][m].as_f64().unwrap();
            assert!(
                (med.as_f64().unwrap() - (a + b) / 2.0).abs() < 1e-12,
                "{set} {m}"
            );
            // Above the control: the run's median minus the control's, in points.
            let d = np["tasks"][set]["above"][m]["delta"].as_f64().unwrap();
            let run = v["tasks"][set]["metrics"][m].as_f64().unwrap();
            assert!((d - 100.0 * (run - med.as_f64().unwrap())).abs() < 1e-9);
        }
        // Every median of the run has an interval, and the median lies in it unless the
        // trials disagree more than resampling moves them.
        for (m, _) in v["tasks"][set]["metrics"].as_object().unwrap() {
            let ci = &v["uncertainty"]["tasks"][set]["ci95"][m];
            assert!(
                ci["lo"].as_f64().unwrap() <= ci["hi"].as_f64().unwrap(),
                "{set} {m}"
            );
            assert_eq!(v["uncertainty"]["tasks"][set]["trials"][m]["n"], 2);
        }
    }
    // The manifest object, controls and intervals included, matches the schema; a control
    // with a malformed interval does not.
    let schema: Value = serde_json::from_slice(
        &std::fs::read(
            common::repo_root().join("manifests/schema/crambench-manifest-v0.1.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema["$defs"]["glue"]).unwrap();
    let mut controls = v["controls"].clone();
    controls["no_pretraining"]["trials"] = v["control_trials"].clone();
    let obj = serde_json::json!({"protocol": v["protocol"], "tasks": v["tasks"],
        "aggregate": {"rule": "cramming", "value": 1.0},
        "uncertainty": v["uncertainty"], "controls": controls});
    let errors: Vec<String> = validator.iter_errors(&obj).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = obj.clone();
    bad["controls"]["constant"]["tasks"]["mrpc"]["ci95"]["accuracy"] =
        serde_json::json!({"lo": "x"});
    assert!(!validator.is_valid(&bad));
}

/// `--attention` and `--bucket-batches` (issue #15 items 7 and 8): a backend the device cannot
/// run is refused by name before the first trial; a supported one runs and is recorded, with
/// the bucketing pool, in glue.json; bucketed runs are reproducible.
#[test]
fn attention_backend_and_length_bucketing() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let tsv = gen::tsv_root();
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "glue",
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--tasks",
            "rte",
            "--glue-data",
            tsv.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
            "--trials",
            "1",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--out",
            out,
            "--json",
        ];
        args.extend_from_slice(extra);
        run_in(dir.path(), &args)
    };
    // The memory-efficient and cuDNN kernels are CUDA-only.
    for b in ["efficient", "cudnn"] {
        let (code, _, err) = run(b, &["--attention", b]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("attention backend `{b}` cannot run on the CPU")),
            "{err}"
        );
        assert!(
            !dir.path().join(b).join("predictions").exists(),
            "no trial ran"
        );
    }
    let (code, _, err) = run("bad", &["--attention", "fast"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("auto, flash, efficient, cudnn, math"), "{err}");
    // math runs; it and the pool are recorded.
    let (code, out, err) = run("math", &["--attention", "math", "--bucket-batches", "3"]);
    assert_eq!(code, 0, "{err}");
    let math: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(math["attention"], "math");
    assert_eq!(math["config"]["attention"], "math");
    assert_eq!(math["config"]["bucket_batches"], 3);
    // The default records auto and leaves the keys out of the resolved configuration.
    let (code, out, err) = run("auto", &[]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["attention"], "auto");
    assert!(v["config"].get("attention").is_none() && v["config"].get("bucket_batches").is_none());
    // Bucketed runs with the same seed give the same predictions and losses.
    let (code, out2, err) = run("math2", &["--attention", "math", "--bucket-batches", "3"]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out2).unwrap();
    let t = |v: &Value, k: &str| v["tasks"]["rte"]["trials"][0][k].clone();
    assert_eq!(t(&math, "predictions_sha256"), t(&b, "predictions_sha256"));
    assert_eq!(t(&math, "last_epoch_loss"), t(&b, "last_epoch_loss"));
}

/// The fine-tuning optimizer (crambench's flat AdamW) takes the steps libtorch's own
/// `torch::optim::AdamW` takes (the implementation `torch.optim.AdamW`, upstream's eval
/// optimizer, mirrors) with the `[glue]` betas, eps and weight decay, under a changing learning
/// rate, within fp32 rounding: a wrong hyperparameter mapping or a missing tensor fails it.
#[test]
fn trial_optimizer_steps_like_libtorchs_adamw() {
    use tch::nn::{Module, OptimizerConfig};
    use tch::{nn, Device, Kind, Tensor};
    let mut cfg = GlueConfig::for_protocol(Protocol::GlueSane);
    cfg.weight_decay = 0.01; // exercise the decoupled decay (glue-sane's is 0)
    cfg.no_decay = Some(Vec::new()); // libtorch's AdamW has one group: decay everything
    cfg.betas = [0.85, 0.97];
    cfg.eps = 1e-5;
    let build = |vs: &nn::VarStore| {
        let root = vs.root();
        let a = nn::linear(&root / "a", 7, 5, Default::default());
        let b = nn::linear(&root / "b", 5, 3, Default::default());
        move |x: &Tensor| b.forward(&a.forward(x).tanh())
    };
    tch::manual_seed(11);
    let ours_vs = nn::VarStore::new(Device::Cpu);
    let ours_net = build(&ours_vs);
    let mut theirs_vs = nn::VarStore::new(Device::Cpu);
    let theirs_net = build(&theirs_vs);
    theirs_vs.copy(&ours_vs).unwrap();
    let mut ours = trial_optimizer(&ours_vs, &cfg).unwrap();
    let mut theirs = nn::AdamW {
        beta1: cfg.betas[0],
        beta2: cfg.betas[1],
        wd: cfg.weight_decay,
        eps: cfg.eps,
        amsgrad: false,
    }
    .build(&theirs_vs, cfg.lr)
    .unwrap();
    for step in 0..6 {
        let x = Tensor::randn([4, 7], (Kind::Float, Device::Cpu));
        let lr = 1e-2 * (1.0 + step as f64) / 3.0;
        ours.zero_grad();
        ours_net(&x).square().sum(Kind::Float).backward();
        ours.step_unchecked(lr); // what a trial in fp32/bf16 takes
        theirs.zero_grad();
        theirs_net(&x).square().sum(Kind::Float).backward();
        theirs.set_lr(lr);
        theirs.step();
    }
    let theirs_vars = theirs_vs.variables();
    let vars = ours_vs.variables();
    assert_eq!(vars.len(), 4);
    for (name, ours_t) in vars {
        let theirs_t = &theirs_vars[&name];
        let start = Vec::<f32>::try_from(theirs_t.flatten(0, -1)).unwrap();
        let diff = (&ours_t - theirs_t).abs().max().double_value(&[]);
        let scale = start.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        assert!(
            diff <= 1e-6 * scale.max(1.0),
            "{name}: flat AdamW differs from libtorch's by {diff}"
        );
    }
}

/// Weight decay spares what upstream's `limited_decay_keys` name (`glue-sane`: bias,
/// LayerNorm.bias, LayerNorm.weight, norm), matched as substrings of the variable names; a
/// recipe's `no_decay` replaces the list.
#[test]
fn trial_optimizer_exempts_upstreams_limited_decay_keys() {
    use tch::{nn, Device};
    // Sorted names of the decayed and the spared variables of a head Linear and a LayerNorm.
    let groups = |cfg: &GlueConfig| -> (Vec<String>, Vec<String>) {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let _dense = nn::linear(&root / "head" / "dense", 4, 4, Default::default());
        let _norm = nn::layer_norm(&root / "encoder" / "norm1", vec![4], Default::default());
        let opt = trial_optimizer(&vs, cfg).unwrap();
        let (decay, spared) = opt.groups();
        let sorted = |v: Vec<&str>| {
            let mut v: Vec<String> = v.into_iter().map(String::from).collect();
            v.sort();
            v
        };
        (sorted(decay), sorted(spared))
    };
    let mut cfg = GlueConfig::for_protocol(Protocol::GlueSane);
    cfg.weight_decay = 0.01;
    let (decay, spared) = groups(&cfg);
    assert_eq!(decay, ["head.dense.weight"]);
    assert_eq!(
        spared,
        [
            "encoder.norm1.bias",
            "encoder.norm1.weight",
            "head.dense.bias"
        ]
    );
    // glue-bert's list has no `norm`: the norm's weight is decayed.
    let mut bert = GlueConfig::for_protocol(Protocol::GlueBert);
    bert.weight_decay = 0.01;
    assert_eq!(
        bert.no_decay_keys(),
        ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    );
    assert_eq!(
        groups(&bert).0,
        ["encoder.norm1.weight", "head.dense.weight"]
    );
    // A recipe's own list replaces the protocol's.
    let mut own = cfg.clone();
    own.no_decay = Some(vec!["dense".into()]);
    assert_eq!(
        groups(&own).0,
        ["encoder.norm1.bias", "encoder.norm1.weight"]
    );
}

/// The fp16 path of a trial: the loss scale and the inf check on the device. A gradient with an
/// inf skips the step (parameters unchanged) and halves the scale; a finite one then takes the
/// unscaled step, equal to the plain step on the unscaled gradient.
#[test]
fn fp16_trials_skip_inf_steps_and_back_off_the_scale_on_the_device() {
    use crambench::train::amp::{DeviceScaler, LossScaler};
    use crambench::train::optim::StepOptions;
    use tch::{nn, Device, Kind, Tensor};
    let cfg = GlueConfig::for_protocol(Protocol::GlueSane);
    let make = || {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(&vs.root() / "head", 3, 2, Default::default());
        (vs, lin)
    };
    let (vs, lin) = make();
    let (plain_vs, plain_lin) = make();
    let mut opt = trial_optimizer(&vs, &cfg).unwrap();
    let mut plain = trial_optimizer(&plain_vs, &cfg).unwrap();
    let mut scaler = DeviceScaler::from_host(&LossScaler::new(true), Device::Cpu);
    let state = |s: &DeviceScaler| Vec::<f64>::try_from(s.state()).unwrap();
    let scale0 = state(&scaler)[0];
    let before = lin.ws.copy();
    // An inf in the input: every weight gradient of its column is inf.
    let x = Tensor::from_slice(&[1.0f32, f32::INFINITY, 2.0]).view([1, 3]);
    let loss = tch::nn::Module::forward(&lin, &x).sum(Kind::Float);
    opt.zero_grad();
    scaler.scale_loss(&loss).backward();
    let inv = scaler.inverse_scale();
    let out = opt.step(
        1e-3,
        &StepOptions {
            inv_scale: inv.as_ref(),
            max_norm: None,
        },
    );
    assert!(bool::try_from(&out.found_inf).unwrap());
    scaler.update(&out.found_inf);
    assert_eq!(lin.ws, before, "a skipped step leaves the weights alone");
    let s = state(&scaler);
    assert_eq!(
        (s[0], s[2]),
        (scale0 * 0.5, 1.0),
        "scale halved, one step skipped"
    );
    // A finite loss: the scaled step equals the plain step on the unscaled loss.
    let x = Tensor::from_slice(&[1.0f32, -1.0, 0.5]).view([1, 3]);
    opt.zero_grad();
    let loss = tch::nn::Module::forward(&lin, &x).sum(Kind::Float);
    scaler.scale_loss(&loss).backward();
    let inv = scaler.inverse_scale();
    let out = opt.step(
        1e-3,
        &StepOptions {
            inv_scale: inv.as_ref(),
            max_norm: None,
        },
    );
    assert!(!bool::try_from(&out.found_inf).unwrap());
    plain.zero_grad();
    tch::nn::Module::forward(&plain_lin, &x)
        .sum(Kind::Float)
        .backward();
    plain.step_unchecked(1e-3);
    let diff = (&lin.ws - &plain_lin.ws).abs().max().double_value(&[]);
    assert!(diff < 1e-7, "scaled and plain steps differ by {diff}");
    assert_ne!(lin.ws, before, "the finite step moved the weights");
}
