//! `crambench glue score` and `crambench glue pin` end to end.
mod common;
#[path = "fixtures/glue/gen.rs"]
mod gen;

use common::run_in;

#[test]
fn score_uses_the_gold_column_or_a_gold_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mrpc.tsv");
    // MRPC dev fixture gold: 1, 0, 0. Predictions 1, 1, 0: accuracy 2/3, F1 = 2/(2+1) = 2/3.
    std::fs::write(&p, "idx\tprediction\tgold\n0\t1\t1\n1\t1\t0\n2\t0\t0\n").unwrap();
    let pp = p.to_str().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "mrpc",
            "--predictions",
            pp,
            "--any-size",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["task"], "mrpc");
    assert!((v["metrics"]["accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-15);
    assert!((v["metrics"]["f1"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-15);
    let gold = gen::tsv_root().join("MRPC/dev.tsv");
    let (code, out2, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "mrpc",
            "--predictions",
            pp,
            "--gold",
            gold.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v2: serde_json::Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(v["metrics"], v2["metrics"]);
    // A gold column that disagrees with the gold file is an error.
    std::fs::write(&p, "idx\tprediction\tgold\n0\t1\t0\n1\t1\t0\n2\t0\t0\n").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "mrpc",
            "--predictions",
            pp,
            "--gold",
            gold.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("idx 0") && err.contains("disagrees"), "{err}");
    // A missing prediction for a gold example is an error.
    std::fs::write(&p, "idx\tprediction\tgold\n0\t1\t\n1\t1\t\n").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "mrpc",
            "--predictions",
            pp,
            "--gold",
            gold.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no prediction for idx 2"), "{err}");
    // Without --gold, every row needs a gold label.
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "mrpc",
            "--predictions",
            pp,
            "--any-size",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no gold label"), "{err}");
}

/// A predictions file must cover the task's dev set: a demo file (600 rows) is not SST-2 (872).
#[test]
fn score_refuses_a_file_of_another_size_and_lists_valid_sets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("demo.tsv");
    let mut text = String::from("idx\tprediction\tgold\n");
    for i in 0..600 {
        text += &format!("{i}\t{}\t{}\n", i % 2, (i / 2) % 2);
    }
    std::fs::write(&p, &text).unwrap();
    let pp = p.to_str().unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &["glue", "score", "--task", "sst2", "--predictions", pp],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("600 prediction rows") && err.contains("872"),
        "{err}"
    );
    // Its own task scores it.
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "demo-sentiment",
            "--predictions",
            pp,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accuracy"), "{out}");
    // An unknown id lists the valid ones.
    let (code, _, err) = run_in(
        dir.path(),
        &["glue", "score", "--task", "sst3", "--predictions", pp],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("valid:") && err.contains("mnli-mm") && err.contains("demo-sentiment"),
        "{err}"
    );
}

/// The dev sizes `glue score` checks against are the sizes of the data crambench loads.
#[test]
fn dev_sizes_match_the_demo_data_and_the_fixtures() {
    use crambench::glue::{demo, tasks::Task};
    for t in Task::DEMO {
        let d = demo::load(t).unwrap();
        for (set, ex) in &d.dev {
            assert_eq!(ex.len(), set.dev_examples(), "{}", set.id);
        }
    }
}

#[test]
fn score_regression_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stsb.tsv");
    std::fs::write(
        &p,
        "idx\tprediction\tgold\n0\t1.5\t1.0\n1\t2.5\t2.0\n2\t3.5\t3.0\n",
    )
    .unwrap();
    let pp = p.to_str().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "stsb",
            "--predictions",
            pp,
            "--any-size",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pearson   1.000000") && out.contains("spearman  1.000000"),
        "{out}"
    );
    // STS-B gold scores lie in [0, 5]: 5.5 is not a label (a prediction may be).
    std::fs::write(&p, "idx\tprediction\tgold\n0\t5.5\t5.0\n1\t-0.5\t5.5\n").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "stsb",
            "--predictions",
            pp,
            "--any-size",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stsb.tsv:3") && err.contains("`5.5` is not a stsb label"),
        "{err}"
    );
    std::fs::write(&p, "idx\tprediction\tgold\n0\tnan\t1.0\n").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &["glue", "score", "--task", "stsb", "--predictions", pp],
    );
    assert_eq!(code, 2);
    assert!(err.contains("stsb.tsv:2"), "{err}");
    std::fs::write(&p, "idx\tprediction\tgold\n0\t1\t1\n0\t1\t1\n").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &["glue", "score", "--task", "sst2", "--predictions", pp],
    );
    assert_eq!(code, 2);
    assert!(err.contains("stsb.tsv:3") && err.contains("twice"), "{err}");
    let (code, _, err) = run_in(
        dir.path(),
        &["glue", "score", "--task", "mnli", "--predictions", pp],
    );
    assert_eq!(code, 2);
    assert!(err.contains("mnli-m or mnli-mm"), "{err}");
    // MNLI-m against its parquet dev file, with class names accepted as predictions.
    let pq = dir.path().join("pq");
    gen::write_parquet_layout(&pq, &gen::tsv_root());
    std::fs::write(
        &p,
        "idx\tprediction\tgold\n0\tneutral\t\n1\t2\t\n2\tneutral\t\n",
    )
    .unwrap();
    let gold = pq.join("mnli/validation_matched-00000-of-00001.parquet");
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "glue",
            "score",
            "--task",
            "mnli-m",
            "--predictions",
            pp,
            "--gold",
            gold.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        (v["metrics"]["accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-15,
        "{out}"
    );
}

#[test]
fn pin_prints_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = gen::tsv_root();
    let (code, out, err) = run_in(dir.path(), &["glue", "pin", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("[glue.pins]\n"));
    assert_eq!(out.lines().count(), 20, "{out}");
    let table: toml::Table = out.parse().unwrap();
    let pins = table["glue"]["pins"].as_table().unwrap();
    let sha = crambench::provenance::hash::sha256_hex(
        &std::fs::read(root.join("QQP/train.tsv")).unwrap(),
    );
    assert_eq!(
        pins["QQP/train.tsv"].as_str().unwrap(),
        format!("sha256:{sha}")
    );
    let (code, _, _) = run_in(dir.path(), &["glue", "pin", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
}
