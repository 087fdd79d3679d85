//! The learning-rate schedules and the batch-size ramp bit for bit against upstream cramming's
//! formulas (issue 13, D9/D10): `tests/golden/schedules_upstream.json` was written by
//! `reference/schedules/upstream_schedules.py`, an independent Python restatement of
//! `cramming/backend/optimizers/schedulers.py` and `schedule_batch_size` in
//! `cramming/backend/torch_default.py` (JonasGeiping/cramming at 196c991; the same formulas at
//! tag Last1.13release). For each recipe's schedule, 10^5 random points over 110% of the budget
//! and 10^5 points at exact fake-step boundaries (where the order of operations decides) are
//! recomputed here and every value is compared through a SHA-256 of its bits, plus every
//! 1000th point value by value (which locates a mismatch).
mod common;

use crambench::train::schedule::{
    fake_step, schedule_step, warmup_steps, BatchRamp, LrSchedule, SchedulerKind,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

fn bits(v: &Value) -> f64 {
    f64::from_bits(u64::from_str_radix(v.as_str().expect("hex string"), 16).expect("16 hex digits"))
}

fn golden() -> Value {
    let p = common::repo_root().join("tests/golden/schedules_upstream.json");
    serde_json::from_slice(&std::fs::read(&p).expect("golden present")).expect("golden parses")
}

const KINDS: [(&str, SchedulerKind); 5] = [
    ("budget-triangle2", SchedulerKind::BudgetTriangle2),
    ("budget-one-cycle", SchedulerKind::BudgetOneCycle),
    ("budget-linear", SchedulerKind::BudgetLinear),
    ("budget-cosine-decay", SchedulerKind::BudgetCosineDecay),
    ("polynomial-decay", SchedulerKind::PolynomialDecay),
];

/// One point's values, as the golden's samples write them.
#[derive(Debug, PartialEq)]
struct Point {
    elapsed_s: u64,
    fake_step: u64,
    ramp_fake_step: u64,
    ramp_batch_size: u64,
    polynomial_step: u64,
    lr: BTreeMap<String, u64>,
}

#[test]
fn schedules_equal_upstream_formulas_bit_for_bit() {
    let g = golden();
    let n_points = g["points"]["random"].as_u64().unwrap();
    assert_eq!(n_points, 100_000);
    assert_eq!(g["points"]["grid"].as_u64().unwrap(), n_points);
    let seed = g["seed"].as_u64().unwrap();
    let lr_end = bits(&g["lr_end"]);
    let power = bits(&g["power"]);
    let ramp = &g["ramp"];
    let configs = g["configs"].as_array().unwrap();
    assert!(configs.len() >= 5);
    for c in configs {
        let name = c["name"].as_str().unwrap();
        let budget_hours = bits(&c["budget_hours"]);
        let steps = c["steps"].as_u64().unwrap();
        let warmup = warmup_steps(bits(&c["warmup"]), steps);
        assert_eq!(
            warmup,
            c["warmup_steps"].as_u64().unwrap(),
            "{name}: warmup"
        );
        let base_lr = bits(&c["lr"]);
        let scheds: Vec<(&str, LrSchedule)> = KINDS
            .iter()
            .map(|(k, kind)| {
                (
                    *k,
                    LrSchedule {
                        kind: *kind,
                        base_lr,
                        steps,
                        warmup,
                        lr_end,
                        power,
                    },
                )
            })
            .collect();
        let br = BatchRamp {
            batch_size: ramp["batch_size"].as_u64().unwrap(),
            microbatch_size: ramp["microbatch_size"].as_u64().unwrap(),
            ramp: ramp["ramp"].as_f64().unwrap(),
            steps,
        };
        let mut hashes: BTreeMap<&str, Sha256> = ["fake_step", "ramp_fake_step", "ramp_batch_size"]
            .into_iter()
            .chain(KINDS.iter().map(|(k, _)| *k))
            .map(|k| (k, Sha256::new()))
            .collect();
        let mut samples = BTreeMap::new();
        let span = budget_hours * 3600.0 * 1.1;
        let mut state = seed;
        for i in 0..2 * n_points {
            // Random points, then the grid of exact fake-step boundaries (see the script).
            let (elapsed_s, current_step, poly_step) = if i < n_points {
                let x = crambench::rng::splitmix64(&mut state);
                let u = (x >> 11) as f64 / 9007199254740992.0;
                (u * span, i, (u * (steps as f64 * 1.1)) as u64)
            } else {
                let g = i - n_points;
                let j = (g as u128 * (steps as u128 * 11) / (10 * n_points as u128)) as u64;
                (j as f64 * (budget_hours * 3600.0) / steps as f64, g + 1, j)
            };
            let s = schedule_step(current_step, elapsed_s, budget_hours, steps);
            let rs = fake_step(elapsed_s, budget_hours, steps);
            let bs = br.batch_size(0, rs);
            hashes.get_mut("fake_step").unwrap().update(s.to_be_bytes());
            hashes
                .get_mut("ramp_fake_step")
                .unwrap()
                .update(rs.to_be_bytes());
            hashes
                .get_mut("ramp_batch_size")
                .unwrap()
                .update(bs.to_be_bytes());
            let mut lrs = BTreeMap::new();
            for (k, sch) in &scheds {
                let lr = if sch.kind.budget_aware() {
                    sch.lr(current_step, elapsed_s, budget_hours)
                } else {
                    sch.lr(poly_step, elapsed_s, budget_hours)
                };
                hashes
                    .get_mut(k)
                    .unwrap()
                    .update(lr.to_bits().to_be_bytes());
                lrs.insert(k.to_string(), lr.to_bits());
            }
            if i % 1000 == 0 || i == 2 * n_points - 1 {
                samples.insert(
                    i,
                    Point {
                        elapsed_s: elapsed_s.to_bits(),
                        fake_step: s,
                        ramp_fake_step: rs,
                        ramp_batch_size: bs,
                        polynomial_step: poly_step,
                        lr: lrs,
                    },
                );
            }
        }
        // Value by value at the sampled points first: a mismatch names the point.
        for sample in c["samples"].as_array().unwrap() {
            let i = sample["index"].as_u64().unwrap();
            let hex = |v: &Value| u64::from_str_radix(v.as_str().unwrap(), 16).unwrap();
            let expected = Point {
                elapsed_s: hex(&sample["elapsed_s"]),
                fake_step: sample["fake_step"].as_u64().unwrap(),
                ramp_fake_step: sample["ramp_fake_step"].as_u64().unwrap(),
                ramp_batch_size: sample["ramp_batch_size"].as_u64().unwrap(),
                polynomial_step: sample["polynomial_step"].as_u64().unwrap(),
                lr: sample["lr"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), hex(v)))
                    .collect(),
            };
            assert_eq!(samples[&i], expected, "{name}: point {i}");
        }
        for (k, h) in hashes {
            let got = hex::encode(h.finalize());
            assert_eq!(
                got,
                c["sha256"][k].as_str().unwrap(),
                "{name}: the {k} series differs from upstream's formulas"
            );
        }
    }
}

/// D10: past the budget the reference's one-cycle keeps falling below 0 (it is not clamped).
#[test]
fn budget_one_cycle_is_not_clamped_past_the_budget() {
    let s = LrSchedule {
        kind: SchedulerKind::BudgetOneCycle,
        base_lr: 1e-3,
        steps: 900_000,
        warmup: 0,
        lr_end: 1e-7,
        power: 1.0,
    };
    // 10% past the budget: fake step 990000 → 2 - 990000/450000 = -0.2.
    let lr = s.lr(5, 24.0 * 1.1 * 3600.0, 24.0);
    assert!(lr < 0.0, "{lr}");
    assert_eq!(s.factor(990_000), 2.0 - 990_000.0 / 450_000.0);
}
