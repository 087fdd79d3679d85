//! GLUE metrics and aggregates against independent references: scikit-learn / scipy (run from
//! `.venv-interop`) on random and degenerate inputs, hand-known values, and the published
//! averages of the paper rows in `reference/glue_reference.json`.
mod common;

use crambench::glue::aggregate::{aggregate, Rule};
use crambench::glue::metrics;
use crambench::glue::tasks::{self, Metrics, Target, Task};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// splitmix64: a tiny deterministic generator for test inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Case {
    Class(Vec<usize>, Vec<usize>),
    Reg(Vec<f64>, Vec<f64>),
}

fn cases() -> Vec<Case> {
    let mut r = Rng(20260128);
    let mut out = Vec::new();
    // Degenerate classification inputs.
    let fixed: &[(&[usize], &[usize])] = &[
        (&[1], &[1]),
        (&[0], &[1]),
        (&[0], &[0]),
        (&[1, 0], &[1, 0]),
        (&[1, 1], &[1, 0]),
        (&[0, 0], &[0, 0]),
        (&[1, 1, 1, 1], &[1, 1, 1, 1]),
        (&[0, 0, 0, 0], &[1, 0, 1, 0]),
        (&[1, 1, 1, 1], &[1, 0, 1, 0]),
        (&[1, 0, 1, 0], &[0, 0, 0, 0]),
        (&[1, 0, 1, 0], &[1, 1, 1, 1]),
        (&[0, 1, 2], &[2, 1, 0]),
        (&[2, 2, 2], &[0, 1, 2]),
        (&[0, 0, 1, 1, 2, 2], &[0, 1, 1, 2, 2, 0]),
    ];
    for (p, g) in fixed {
        out.push(Case::Class(p.to_vec(), g.to_vec()));
    }
    // Random classification: sizes, class counts and skews.
    for &n in &[1usize, 2, 3, 5, 8, 17, 100, 1000, 5000] {
        for &k in &[2u64, 3] {
            for skew in [0.5, 0.9, 0.99] {
                let draw = |r: &mut Rng| -> usize {
                    if r.unit() < skew {
                        0
                    } else {
                        1 + r.below(k - 1) as usize
                    }
                };
                let g: Vec<usize> = (0..n).map(|_| draw(&mut r)).collect();
                // Predictions agree with gold 70% of the time.
                let p: Vec<usize> = g
                    .iter()
                    .map(|&x| {
                        if r.unit() < 0.7 {
                            x
                        } else {
                            r.below(k) as usize
                        }
                    })
                    .collect();
                out.push(Case::Class(p, g));
            }
        }
    }
    // Degenerate regression inputs.
    let fixed_reg: &[(&[f64], &[f64])] = &[
        (&[1.0], &[2.0]),
        (&[1.0, 2.0], &[1.0, 3.0]),
        (&[2.0, 1.0], &[1.0, 3.0]),
        (&[1.0, 1.0], &[1.0, 3.0]),
        (&[3.0, 3.0, 3.0], &[1.0, 2.0, 3.0]),
        (&[1.0, 2.0, 3.0], &[0.5, 0.5, 0.5]),
        (&[1.0, 1.0, 2.0, 2.0], &[1.0, 2.0, 2.0, 3.0]),
        (&[1e-12, 2e-12, 4e-12], &[1e12, 3e12, 2e12]),
        (&[5.0, 4.0, 3.0, 2.0, 1.0], &[1.0, 2.0, 3.0, 4.0, 5.0]),
    ];
    for (p, g) in fixed_reg {
        out.push(Case::Reg(p.to_vec(), g.to_vec()));
    }
    // Random regression, with and without ties (STS-B style 0.2 steps).
    for &n in &[2usize, 3, 4, 10, 100, 1500, 5000] {
        for ties in [false, true] {
            let g: Vec<f64> = (0..n)
                .map(|_| {
                    let v = 5.0 * r.unit();
                    if ties {
                        (v * 5.0).round() / 5.0
                    } else {
                        v
                    }
                })
                .collect();
            let p: Vec<f64> = g
                .iter()
                .map(|x| {
                    let v = x + 1.5 * (r.unit() - 0.5);
                    if ties {
                        (v * 2.0).round() / 2.0
                    } else {
                        v
                    }
                })
                .collect();
            out.push(Case::Reg(p, g));
        }
    }
    out
}

fn close(ours: Option<f64>, theirs: &Value, what: &str) {
    match (ours, theirs.as_f64()) {
        (None, None) => {}
        (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9, "{what}: ours {a}, reference {b}"),
        (a, _) => panic!("{what}: ours {a:?}, reference {theirs}"),
    }
}

#[test]
fn metrics_match_sklearn_and_scipy() {
    let Some(py) = common::interop_python() else {
        return;
    };
    let cases = cases();
    let payload: Vec<Value> = cases
        .iter()
        .map(|c| match c {
            Case::Class(p, g) => json!({"kind": "class", "pred": p, "gold": g}),
            Case::Reg(p, g) => json!({"kind": "reg", "pred": p, "gold": g}),
        })
        .collect();
    let script = common::repo_root().join("tests/fixtures/glue/metrics_reference.py");
    let mut child = Command::new(py)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&payload).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reference.len(), cases.len());
    let (mut nclass, mut nreg, mut undefined) = (0, 0, 0);
    for (i, (c, want)) in cases.iter().zip(&reference).enumerate() {
        match c {
            Case::Class(p, g) => {
                nclass += 1;
                close(
                    metrics::accuracy(p, g),
                    &want["accuracy"],
                    &format!("case {i} accuracy"),
                );
                close(
                    metrics::matthews(p, g),
                    &want["mcc"],
                    &format!("case {i} mcc"),
                );
                if want.get("f1").is_some() {
                    close(
                        metrics::f1_positive(p, g),
                        &want["f1"],
                        &format!("case {i} f1"),
                    );
                }
            }
            Case::Reg(p, g) => {
                nreg += 1;
                let (pr, sr) = (metrics::pearson(p, g), metrics::spearman(p, g));
                undefined += pr.is_none() as usize;
                close(pr, &want["pearson"], &format!("case {i} pearson"));
                close(sr, &want["spearman"], &format!("case {i} spearman"));
            }
        }
    }
    assert!(
        nclass > 50 && nreg > 20 && undefined >= 3,
        "{nclass} {nreg} {undefined}"
    );
}

#[test]
fn task_scores_name_their_metrics() {
    let set = |id: &str| tasks::eval_set(id).unwrap();
    let c = |v: &[usize]| v.iter().map(|&x| Target::Class(x)).collect::<Vec<_>>();
    let m = tasks::score(&set("mrpc"), &c(&[1, 1, 0, 0]), &c(&[1, 0, 0, 0])).unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), ["accuracy", "f1"]);
    assert_eq!(m["accuracy"], 0.75);
    assert!((m["f1"] - 2.0 / 3.0).abs() < 1e-15);
    let m = tasks::score(&set("cola"), &c(&[1, 1, 1]), &c(&[0, 1, 0])).unwrap();
    assert_eq!(m["mcc"], 0.0);
    // Constant regression output: undefined correlation recorded as 0.
    let s = |v: &[f64]| v.iter().map(|&x| Target::Score(x)).collect::<Vec<_>>();
    let m = tasks::score(&set("stsb"), &s(&[2.0, 2.0, 2.0]), &s(&[1.0, 2.0, 3.0])).unwrap();
    assert_eq!((m["pearson"], m["spearman"]), (0.0, 0.0));
    assert!(tasks::score(&set("sst2"), &c(&[1]), &c(&[1, 0])).is_err());
    assert!(tasks::score(&set("sst2"), &c(&[2]), &c(&[1])).is_err());
    assert!(tasks::eval_set("mnli").is_err());
    assert_eq!(
        Task::Mnli
            .eval_sets()
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        ["mnli-m", "mnli-mm"]
    );
}

fn reference() -> Value {
    let p = common::repo_root().join("reference/glue_reference.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Per-set metrics (fractions) from a reference row's percent cells.
fn row_metrics(reference: &Value, row: &Value) -> Option<BTreeMap<String, Metrics>> {
    let mut sets = BTreeMap::new();
    for (set, metric) in reference["columns"].as_object().unwrap() {
        let v = row["cells"][set].as_f64()?;
        sets.entry(set.clone())
            .or_insert_with(Metrics::new)
            .insert(metric.as_str().unwrap().to_string(), v / 100.0);
    }
    Some(sets)
}

#[test]
fn published_averages_are_reproduced() {
    let reference = reference();
    let rows = reference["rows"].as_array().unwrap();
    let find = |name: &str| {
        rows.iter()
            .find(|r| r["model"].as_str().unwrap().starts_with(name))
            .unwrap()
    };
    // The paper rows (reference/glue_reference.json): BERT-base 728.5/9 = 80.9; crammed v1 707.4/9 = 78.6.
    for (name, want) in [
        ("BERT-base (fully trained", 80.9),
        ("crammed BERT v1", 78.6),
    ] {
        let row = find(name);
        let got = aggregate(Rule::Cramming, &row_metrics(&reference, row).unwrap()).unwrap();
        assert_eq!(got.rule, Rule::Cramming);
        assert_eq!(
            format!("{:.1}", got.value),
            format!("{want:.1}"),
            "{name}: {}",
            got.value
        );
        assert_eq!(row["glue"]["cramming"].as_f64(), Some(want));
    }
    // Every complete row's published average is within rounding (truncation) of the mean.
    let mut complete = 0;
    for row in rows {
        if let Some(sets) = row_metrics(&reference, row) {
            complete += 1;
            let got = aggregate(Rule::Cramming, &sets).unwrap().value;
            let published = row["glue"]["cramming"].as_f64().unwrap();
            assert!(
                (got - published).abs() < 0.1 + 1e-9,
                "{}: {got} vs {published}",
                row["model"]
            );
            // The reference rows give neither Spearman nor MRPC/QQP accuracy: other rules
            // cannot be computed and must say so rather than guess.
            assert!(aggregate(Rule::BertPaper, &sets).is_err());
            assert!(aggregate(Rule::GlueOfficial, &sets).is_err());
        }
    }
    assert_eq!(complete, 5);
}

#[test]
fn rules_differ_as_documented() {
    let mut sets: BTreeMap<String, Metrics> = BTreeMap::new();
    let mut put = |s: &str, m: &str, v: f64| {
        sets.entry(s.into()).or_default().insert(m.into(), v);
    };
    for s in ["mnli-m", "mnli-mm", "sst2", "rte", "qnli", "wnli"] {
        put(s, "accuracy", 0.8);
    }
    put("mrpc", "f1", 0.9);
    put("mrpc", "accuracy", 0.7);
    put("qqp", "f1", 0.9);
    put("qqp", "accuracy", 0.7);
    put("stsb", "pearson", 0.9);
    put("stsb", "spearman", 0.45);
    put("cola", "mcc", 0.5);
    let cr = aggregate(Rule::Cramming, &sets).unwrap().value;
    let bp = aggregate(Rule::BertPaper, &sets).unwrap().value;
    let go = aggregate(Rule::GlueOfficial, &sets).unwrap().value;
    // cramming: (0.8*5 + 0.9 + 0.9 + 0.9 + 0.5)/9
    assert!((cr - 100.0 * (4.0 + 3.2) / 9.0).abs() < 1e-9, "{cr}");
    assert!((bp - 100.0 * (4.0 + 2.75) / 9.0).abs() < 1e-9, "{bp}");
    // official: cola .5, sst2 .8, mrpc .8, stsb .675, qqp .8, mnli .8, qnli .8, rte .8, wnli .8
    assert!(
        (go - 100.0 * (0.5 + 0.8 * 7.0 + 0.675) / 9.0).abs() < 1e-9,
        "{go}"
    );
}
