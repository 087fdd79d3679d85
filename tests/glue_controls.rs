//! Controls and bootstrap intervals of `glue run` against independent references: a numpy
//! computation (run from `.venv-interop`) with its own splitmix64 drawing the same resampling
//! indices, and exact small cases.
mod common;

use crambench::glue::aggregate::Rule;
use crambench::glue::bootstrap::{self, Paired};
use crambench::glue::controls::{self, SetInput};
use crambench::glue::predictions::Row;
use crambench::glue::tasks::{self, Target};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

/// A tiny deterministic generator for test inputs (not the one under test).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn rows(pred: &[usize], gold: &[usize]) -> Vec<Row> {
    pred.iter()
        .zip(gold)
        .enumerate()
        .map(|(i, (p, g))| Row {
            idx: 10 + 3 * i as u64,
            prediction: Target::Class(*p),
            gold: Some(Target::Class(*g)),
        })
        .collect()
}

/// numpy reference: splitmix64 with rejection (`below`) written out again, the trial-median
/// accuracy per resample, `np.percentile` at 2.5/97.5 (linear), the demo rule's mean, and the
/// paired differences to each control.
const REFERENCE: &str = r#"
import json, sys
import numpy as np
M = (1 << 64) - 1
def stream(seed):
    s = seed
    while True:
        s = (s + 0x9E3779B97F4A7C15) & M
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        yield z ^ (z >> 31)
def below(g, n):
    zone = (1 << 64) - ((1 << 64) % n)
    while True:
        x = next(g)
        if x < zone:
            return x % n
inp = json.load(sys.stdin)
B = inp["resamples"]
per_set = {}
for s in inp["sets"]:
    gold = np.array(s["gold"])
    sides = [np.array(t) for t in s["sides"]]  # side -> [trials, n]
    n = len(gold)
    g = stream(s["seed"])
    draws = np.zeros((B, len(sides)))
    idx_all = []
    for b in range(B):
        idx = np.array([below(g, n) for _ in range(n)])
        idx_all.append(idx.tolist())
        for k, side in enumerate(sides):
            draws[b, k] = np.median((side[:, idx] == gold[idx]).mean(axis=1))
    obs = [float(np.median((side == gold).mean(axis=1))) for side in sides]
    per_set[s["id"]] = {"draws": draws, "obs": obs, "first_idx": idx_all[0]}
def ci(v):
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [float(lo), float(hi)]
out = {"sets": {}}
for k, v in per_set.items():
    d = v["draws"]
    out["sets"][k] = {
        "first_idx": v["first_idx"],
        "ci": [ci(d[:, j]) for j in range(d.shape[1])],
        "above": [ci(100 * (d[:, 0] - d[:, j])) for j in range(d.shape[1])],
        "obs": v["obs"],
    }
agg = 100 * np.mean([v["draws"] for v in per_set.values()], axis=0)  # [B, sides]
out["agg_ci"] = [ci(agg[:, j]) for j in range(agg.shape[1])]
out["agg_above"] = [ci(agg[:, 0] - agg[:, j]) for j in range(agg.shape[1])]
print(json.dumps(out))
"#;

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: crambench {a}, numpy {b}");
}

#[test]
fn intervals_match_numpy_with_the_same_indices() {
    let Some(py) = common::interop_python() else {
        return;
    };
    let mut r = Lcg(7);
    let resamples = 300u32;
    let mut sets_json = Vec::new();
    // Per set: the set, the run's trials, the control's trials, the constant class.
    type SetCase = (tasks::EvalSet, Vec<Vec<Row>>, Vec<Vec<Row>>, usize);
    let mut owned: Vec<SetCase> = Vec::new();
    for (id, n, seed) in [
        ("demo-sentiment", 57usize, 11u64),
        ("demo-next-sentence", 41, 12),
    ] {
        let set = tasks::eval_set(id).unwrap();
        let gold: Vec<usize> = (0..n).map(|_| r.below(2) as usize).collect();
        // The run: right ~75% of the time; the control: ~55%.
        let trial = |r: &mut Lcg, p: u64| -> Vec<usize> {
            gold.iter()
                .map(|&g| if r.below(100) < p { g } else { 1 - g })
                .collect()
        };
        let run: Vec<Vec<usize>> = (0..3).map(|_| trial(&mut r, 75)).collect();
        let np: Vec<Vec<usize>> = (0..3).map(|_| trial(&mut r, 55)).collect();
        let ones = gold.iter().filter(|g| **g == 1).count();
        let constant = usize::from(2 * ones > n);
        sets_json.push(json!({
            "id": id, "seed": seed, "gold": gold,
            "sides": [run, [vec![constant; n]], np],
        }));
        owned.push((
            set,
            run.iter().map(|p| rows(p, &gold)).collect(),
            np.iter().map(|p| rows(p, &gold)).collect(),
            constant,
        ));
    }
    let inputs: Vec<SetInput> = owned
        .iter()
        .map(|(set, run, np, c)| SetInput {
            set: *set,
            run,
            constant: Target::Class(*c),
            no_pretraining: Some(np),
        })
        .collect();
    let seed_of = |id: &str| if id == "demo-sentiment" { 11 } else { 12 };
    let (unc, ctl) = controls::analyse(&inputs, Some(Rule::Demo), resamples, &seed_of).unwrap();

    let mut child = Command::new(&py)
        .args(["-c", REFERENCE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({"resamples": resamples, "sets": sets_json});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference failed");
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();

    let np_ctl = ctl.no_pretraining.as_ref().expect("the control was given");
    for (set, _, _, _) in &owned {
        let id = set.id;
        let rf = &reference["sets"][id];
        // The index streams agree before anything else is compared.
        let n = rf["first_idx"].as_array().unwrap().len();
        let idx = bootstrap::indices(n, 1, seed_of(id));
        let want: Vec<usize> = serde_json::from_value(rf["first_idx"].clone()).unwrap();
        assert_eq!(idx[0], want, "{id}: resampling indices");
        let f = |v: &Value| v.as_f64().unwrap();
        let run_ci = unc.tasks[id].ci95["accuracy"];
        close(run_ci.lo, f(&rf["ci"][0][0]), &format!("{id} run lo"));
        close(run_ci.hi, f(&rf["ci"][0][1]), &format!("{id} run hi"));
        for (k, c) in [(1, &ctl.constant), (2, np_ctl)] {
            let cs = &c.tasks[id];
            close(
                cs.metrics["accuracy"],
                f(&rf["obs"][k]),
                &format!("{id} control {k} median"),
            );
            close(
                cs.ci95["accuracy"].lo,
                f(&rf["ci"][k][0]),
                &format!("{id} control {k} lo"),
            );
            close(
                cs.ci95["accuracy"].hi,
                f(&rf["ci"][k][1]),
                &format!("{id} control {k} hi"),
            );
            let a = cs.above["accuracy"];
            close(
                a.delta,
                100.0 * (f(&rf["obs"][0]) - f(&rf["obs"][k])),
                "delta",
            );
            close(
                a.ci95.lo,
                f(&rf["above"][k][0]),
                &format!("{id} above {k} lo"),
            );
            close(
                a.ci95.hi,
                f(&rf["above"][k][1]),
                &format!("{id} above {k} hi"),
            );
        }
    }
    let agg = unc.aggregate.unwrap();
    close(
        agg.lo,
        reference["agg_ci"][0][0].as_f64().unwrap(),
        "agg lo",
    );
    close(
        agg.hi,
        reference["agg_ci"][0][1].as_f64().unwrap(),
        "agg hi",
    );
    for (k, c) in [(1, &ctl.constant), (2, np_ctl)] {
        let a = c.above.unwrap();
        close(
            a.ci95.lo,
            reference["agg_above"][k][0].as_f64().unwrap(),
            "agg above lo",
        );
        close(
            a.ci95.hi,
            reference["agg_above"][k][1].as_f64().unwrap(),
            "agg above hi",
        );
        let ci = c.aggregate_ci95.unwrap();
        close(
            ci.lo,
            reference["agg_ci"][k][0].as_f64().unwrap(),
            "control agg lo",
        );
        close(
            ci.hi,
            reference["agg_ci"][k][1].as_f64().unwrap(),
            "control agg hi",
        );
    }
}

#[test]
fn exact_small_cases() {
    // numpy.percentile([1, 2, 3, 4, 5], [25, 75]) = [2, 4]; [10, 20] at 95%: 10.25, 19.75.
    assert_eq!(
        bootstrap::percentile_interval(&[5.0, 1.0, 4.0, 2.0, 3.0], 0.5),
        Some((2.0, 4.0))
    );
    let (lo, hi) = bootstrap::percentile_interval(&[20.0, 10.0], 0.95).unwrap();
    assert!((lo - 10.25).abs() < 1e-12 && (hi - 19.75).abs() < 1e-12);
    assert_eq!(bootstrap::percentile_interval(&[f64::NAN], 0.95), None);
    // One dev example: every resample is that example, so the interval is the point.
    let set = tasks::eval_set("demo-sentiment").unwrap();
    let run = vec![rows(&[1], &[1]), rows(&[0], &[1])];
    let p = Paired::of_sides(set, &[&run]).unwrap();
    let d = bootstrap::resample_sides(&p, &["accuracy".into()], 20, 3).unwrap();
    assert!(d.iter().all(|r| r[0]["accuracy"] == 0.5));
    // A constant control that is always right on a one-class dev set: the run (half right)
    // is 50 points below it, exactly, with a zero-width interval.
    let input = [SetInput {
        set,
        run: &run,
        constant: Target::Class(1),
        no_pretraining: None,
    }];
    let (unc, ctl) = controls::analyse(&input, None, 50, &|_| 9).unwrap();
    assert!(ctl.no_pretraining.is_none() && ctl.constant.above.is_none());
    let a = ctl.constant.tasks["demo-sentiment"].above["accuracy"];
    assert_eq!((a.delta, a.ci95.lo, a.ci95.hi), (-50.0, -50.0, -50.0));
    assert_eq!(unc.tasks["demo-sentiment"].trials["accuracy"].min, 0.0);
    assert!(unc.aggregate.is_none());
}
