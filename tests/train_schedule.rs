//! Learning-rate schedules and the batch-size ramp against upstream's formulas (`cramming/backend/optimizers/schedulers.py` and `cramming/config/train/`, JonasGeiping/cramming 196c991; v1 at Last1.13release), at
//! budget fractions 0, .25, .5, .75, 1, and against Python's own arithmetic for the ramp.
mod common;

use crambench::train::budget::parse_budget;
use crambench::train::schedule::{
    fake_step, py_floordiv, schedule_step, warmup_steps, BatchRamp, LrSchedule, SchedulerKind,
};

const FRACTIONS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

fn sched(kind: SchedulerKind, base_lr: f64, steps: u64, warmup: u64) -> LrSchedule {
    LrSchedule {
        kind,
        base_lr,
        steps,
        warmup,
        lr_end: 1e-7,
        power: 1.0,
    }
}

/// lr at budget fraction `f` of a 24 h budget.
fn lr_at(s: &LrSchedule, f: f64) -> f64 {
    s.lr(123, f * 24.0 * 3600.0, 24.0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 + 1e-12 * b.abs()
}

#[test]
fn fake_step_is_truncated_time_fraction() {
    let h = 3600.0;
    assert_eq!(fake_step(0.0, 24.0, 900_000), 0);
    assert_eq!(fake_step(6.0 * h, 24.0, 900_000), 225_000);
    assert_eq!(fake_step((12.0 + 1e-9) * h, 24.0, 900_000), 450_000);
    assert_eq!(fake_step(24.0 * h, 24.0, 900_000), 900_000);
    // int() truncates: 1 s into 24 h is fake step 10 (10.416…).
    assert_eq!(fake_step(1.0, 24.0, 900_000), 10);
    // The schedulers' step is 0 while their own counter is (`_get_fake_step`).
    assert_eq!(schedule_step(0, 1.0, 24.0, 900_000), 0);
    assert_eq!(schedule_step(1, 1.0, 24.0, 900_000), 10);
}

#[test]
fn budget_triangle2_matches_recipe_formula() {
    // lr(p) = 1e-3 · min(0.25 + p, 4·(1 − p)): 0.25e-3, 0.5e-3, 0.75e-3, peak 1e-3 at p=.75, 0 at 1.
    let s = sched(SchedulerKind::BudgetTriangle2, 1e-3, 900_000, 0);
    let expected = [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 0.0];
    for (f, e) in FRACTIONS.iter().zip(expected) {
        assert!(close(lr_at(&s, *f), e), "p={f}: {} vs {e}", lr_at(&s, *f));
    }
    // Between the knots it is linear: p = 0.875 → 4·0.125 = 0.5.
    assert!(close(lr_at(&s, 0.875), 0.5e-3));
}

#[test]
fn budget_one_cycle_matches_recipe_formula() {
    // 0 → peak at 50% → 0.
    let s = sched(SchedulerKind::BudgetOneCycle, 1e-3, 900_000, 0);
    let expected = [0.0, 0.5e-3, 1e-3, 0.5e-3, 0.0];
    for (f, e) in FRACTIONS.iter().zip(expected) {
        assert!(close(lr_at(&s, *f), e), "p={f}: {} vs {e}", lr_at(&s, *f));
    }
}

#[test]
fn budget_linear_with_warmup_matches_recipe_formula() {
    // bert-izsak: lr 2e-3, warmup 0.06 → int(0.06·900000) = 54000 fake steps, then
    // max(0, (N − fake)/(N − w)).
    let n = 900_000u64;
    let w = warmup_steps(0.06, n);
    assert_eq!(w, 54_000);
    let s = sched(SchedulerKind::BudgetLinear, 2e-3, n, w);
    for f in FRACTIONS {
        let fake = (f * n as f64) as u64;
        let e = if fake < w {
            fake as f64 / w as f64
        } else {
            ((n - fake) as f64 / (n - w) as f64).max(0.0)
        };
        assert!(close(lr_at(&s, f), 2e-3 * e), "p={f}");
    }
    assert_eq!(lr_at(&s, 0.0), 0.0);
    assert!(close(lr_at(&s, 0.03), 2e-3 * 0.5)); // half-way through warm-up
    assert!(close(lr_at(&s, 0.5), 2e-3 * 450_000.0 / 846_000.0));
    assert_eq!(lr_at(&s, 1.0), 0.0);
}

#[test]
fn budget_cosine_decay_matches_recipe_formula() {
    // Linear warm-up, then 0.5·(1 + cos(π·progress)).
    let n = 900_000u64;
    let w = warmup_steps(0.06, n);
    let s = sched(SchedulerKind::BudgetCosineDecay, 5e-4, n, w);
    for f in FRACTIONS {
        let fake = (f * n as f64) as u64;
        let e = if fake < w {
            fake as f64 / w as f64
        } else {
            let progress = (fake - w) as f64 / (n - w) as f64;
            0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        };
        assert!(close(lr_at(&s, f), 5e-4 * e), "p={f}");
    }
    // No warm-up: 1, ~0.854, 0.5, ~0.146, 0 at the quarters.
    let s0 = sched(SchedulerKind::BudgetCosineDecay, 1.0, n, 0);
    let expected = [
        1.0,
        0.853_553_390_593_273_7,
        0.5,
        0.146_446_609_406_726_24,
        0.0,
    ];
    for (f, e) in FRACTIONS.iter().zip(expected) {
        assert!(
            (lr_at(&s0, *f) - e).abs() < 1e-12,
            "p={f}: {}",
            lr_at(&s0, *f)
        );
    }
}

#[test]
fn polynomial_decay_is_step_based_hf_formula() {
    // bert-original: lr 1e-4, warm-up 80k, total 8M micro-steps, power 1, lr_end 1e-7. Time
    // does not matter, only the micro-step counter.
    let s = sched(SchedulerKind::PolynomialDecay, 1e-4, 8_000_000, 80_000);
    assert_eq!(s.lr(0, 23.0, 24.0), 0.0);
    assert!(close(s.lr(40_000, 0.0, 24.0), 0.5e-4));
    assert!(close(s.lr(80_000, 0.0, 24.0), 1e-4));
    let at = |step: u64| {
        let pct_remaining = 1.0 - (step - 80_000) as f64 / (8_000_000 - 80_000) as f64;
        (1e-4 - 1e-7) * pct_remaining + 1e-7
    };
    for f in FRACTIONS {
        let step = 80_000 + (f * (8_000_000 - 80_000) as f64) as u64;
        assert!(close(s.lr(step, 0.0, 24.0), at(step)), "fraction {f}");
    }
    assert!(close(s.lr(8_000_000, 0.0, 24.0), 1e-7));
    assert!(close(s.lr(9_000_000, 0.0, 24.0), 1e-7));
}

#[test]
fn batch_ramp_time_fraction_worked_values() {
    // upstream `cramming/config/train/bert-o4.yaml` (JonasGeiping/cramming 196c991), mbs 512: p = 0 → 512, 0.1 → 1536, 0.3 → 4608, 0.5 → 7168, ≥ 0.59 → 8192.
    let r = BatchRamp {
        batch_size: 8192,
        microbatch_size: 512,
        ramp: 0.6,
        steps: 900_000,
    };
    for (p, bs) in [
        (0.0, 512),
        (0.1, 1536),
        (0.3, 4608),
        (0.5, 7168),
        (0.59, 8192),
        (0.6, 8192),
        (1.0, 8192),
    ] {
        let fake = fake_step(p * 24.0 * 3600.0, 24.0, 900_000);
        assert_eq!(r.batch_size(0, fake), bs, "p={p}");
        assert_eq!(r.accumulation_steps(bs), bs / 512);
    }
}

#[test]
fn batch_ramp_step_based() {
    // bert-o3: ramp 300000 micro-steps to 4096 with mbs 128; target afterwards.
    let r = BatchRamp {
        batch_size: 4096,
        microbatch_size: 128,
        ramp: 300_000.0,
        steps: 600_000,
    };
    assert_eq!(r.batch_size(0, 0), 128);
    assert_eq!(r.batch_size(150_000, 0), (2048 / 128 + 1) * 128);
    assert_eq!(r.batch_size(299_999, 0), 4096);
    assert_eq!(r.batch_size(300_000, 0), 4096);
    let none = BatchRamp {
        batch_size: 512,
        microbatch_size: 256,
        ramp: 0.0,
        steps: 8_000_000,
    };
    assert_eq!(none.batch_size(0, 0), 512);
    assert_eq!(none.accumulation_steps(512), 2);
}

#[test]
fn batch_ramp_matches_python_arithmetic() {
    // Compare a sweep with Python evaluating the reference expression itself.
    let Some(py) = common::interop_python() else {
        return;
    };
    let code = r#"
import sys
out = []
for (bs, mbs, ramp, steps) in [(8192, 512, 0.6, 900000), (8192, 128, 0.6, 900000), (4032, 96, 0.6, 600000), (64, 16, 0.6, 900000)]:
    for i in range(0, 1001):
        fake = int(i / 1000 * steps)
        step = bs / (steps * ramp)
        out.append(min(int(fake * step // mbs + 1) * mbs, bs))
for (bs, mbs, ramp) in [(4096, 128, 300000), (4032, 96, 300000)]:
    for s in range(0, 310000, 997):
        if s < ramp:
            out.append(int(s * (bs / ramp) // mbs + 1) * mbs)
        else:
            out.append(bs)
print(" ".join(map(str, out)))
"#;
    let o = std::process::Command::new(py)
        .args(["-c", code])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want: Vec<u64> = String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut got = Vec::new();
    for (bs, mbs, ramp, steps) in [
        (8192, 512, 0.6, 900_000u64),
        (8192, 128, 0.6, 900_000),
        (4032, 96, 0.6, 600_000),
        (64, 16, 0.6, 900_000),
    ] {
        let r = BatchRamp {
            batch_size: bs,
            microbatch_size: mbs,
            ramp,
            steps,
        };
        for i in 0..=1000u64 {
            let fake = (i as f64 / 1000.0 * steps as f64) as u64;
            got.push(r.batch_size(0, fake));
        }
    }
    for (bs, mbs, ramp) in [(4096, 128, 300_000.0), (4032, 96, 300_000.0)] {
        let r = BatchRamp {
            batch_size: bs,
            microbatch_size: mbs,
            ramp,
            steps: 600_000,
        };
        for s in (0..310_000u64).step_by(997) {
            got.push(r.batch_size(s, 0));
        }
    }
    assert_eq!(got, want);
}

#[test]
fn python_floor_division() {
    assert_eq!(py_floordiv(7.0, 2.0), 3.0);
    assert_eq!(py_floordiv(-7.0, 2.0), -4.0);
    assert_eq!(py_floordiv(4096.0, 512.0), 8.0);
    assert_eq!(py_floordiv(0.0, 512.0), 0.0);
}

#[test]
fn budgets_parse() {
    assert_eq!(parse_budget("24h").unwrap(), 24.0);
    assert_eq!(parse_budget("90m").unwrap(), 1.5);
    assert_eq!(parse_budget("2.5h").unwrap(), 2.5);
    assert!((parse_budget("2m").unwrap() - 1.0 / 30.0).abs() < 1e-15);
    assert!(parse_budget("1d").is_err());
}
