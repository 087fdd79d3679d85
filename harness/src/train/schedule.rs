//! Learning-rate schedules and the batch-size ramp, as pure functions.
//!
//! The budget-aware schedules of the reference (JonasGeiping/cramming
//! `cramming/backend/optimizers/schedulers.py` at 196c991, the same formulas at tag
//! `Last1.13release`) do not look at the step counter except for its first value: on every
//! micro-batch step they compute
//!
//! ```text
//! elapsed_hours = elapsed_s / 60 / 60
//! fake_step = 0 if current_step == 0 else int(elapsed_hours / budget_hours * steps)
//! ```
//!
//! (`steps` = train.steps, e.g. 900k) and evaluate a step-based schedule at `fake_step`. So the
//! learning rate is a function of the fraction of the wall-clock budget used, and `steps` is only
//! a resolution. The step-based `polynomial-decay` (HF's `get_polynomial_decay_schedule_with_warmup`,
//! used by bert-original) uses the real micro-batch step counter instead. The batch-size ramp
//! (`schedule_batch_size` in `cramming/backend/torch_default.py` at 196c991) is evaluated after
//! each optimizer step, by time fraction (`0 < batch_size_ramp < 1`, the same fake step without
//! the `current_step == 0` rule) or by micro-step count (`batch_size_ramp >= 1`).
//!
//! Every expression below keeps the reference's order of floating-point operations (Python
//! evaluates left to right; `min`/`max` keep the first argument on ties), so values match
//! Python's bit for bit: `tests/train_schedule_golden.rs` checks 10^5 random points and 10^5
//! fake-step boundaries per recipe against
//! `reference/schedules/upstream_schedules.py`.
use serde::{Deserialize, Serialize};

/// Which learning-rate schedule (`train.scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// `base · min(0.25 + p, 4·(1 − p))`: from 25% up to the peak at 75% of the budget, then
    /// linearly down to 0 (bert-o3, bert-o4).
    BudgetTriangle2,
    /// 0 → peak at 50% of the budget → 0, and below 0 past the budget (the reference does not
    /// clamp it).
    BudgetOneCycle,
    /// Linear warm-up over `warmup_steps`, then linear decay to 0 at the budget (bert-izsak).
    BudgetLinear,
    /// Linear warm-up, then half a cosine to 0 at the budget (bert-base ablation).
    BudgetCosineDecay,
    /// Step-based linear warm-up, then polynomial decay to `lr_end` at `steps` (bert-original).
    PolynomialDecay,
    /// The base learning rate throughout.
    Constant,
}

impl SchedulerKind {
    /// Whether the schedule is driven by the budget fraction (`fake_step`) rather than by the
    /// micro-step counter.
    pub fn budget_aware(self) -> bool {
        matches!(
            self,
            SchedulerKind::BudgetTriangle2
                | SchedulerKind::BudgetOneCycle
                | SchedulerKind::BudgetLinear
                | SchedulerKind::BudgetCosineDecay
        )
    }
}

/// The reference's wall-clock step, `int(elapsed_s / 60 / 60 / budget_hours * steps)` (the
/// batch-size ramp's `fake_step`; the schedules add the `current_step == 0` rule, see
/// [`schedule_step`]). Non-finite or negative values give 0.
pub fn fake_step(elapsed_s: f64, budget_hours: f64, steps: u64) -> u64 {
    let elapsed_hours = elapsed_s / 60.0 / 60.0;
    let f = elapsed_hours / budget_hours * steps as f64;
    if f.is_finite() && f > 0.0 {
        f as u64
    } else {
        0
    }
}

/// `_get_fake_step` of the reference's schedulers: 0 while the scheduler's step counter
/// (`current_step`, micro-batch steps taken) is 0, else [`fake_step`].
pub fn schedule_step(current_step: u64, elapsed_s: f64, budget_hours: f64, steps: u64) -> u64 {
    if current_step == 0 {
        0
    } else {
        fake_step(elapsed_s, budget_hours, steps)
    }
}

/// Python's `min(a, b)`: `b` only if it is strictly smaller.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// Python's `max(a, b)`: `b` only if it is strictly larger.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// `train.warmup_steps` as the reference reads it: a value in (0, 1) is a fraction of `steps`
/// (`int(0.06 · steps)`), anything else a step count.
pub fn warmup_steps(warmup: f64, steps: u64) -> u64 {
    if warmup > 0.0 && warmup < 1.0 {
        (warmup * steps as f64) as u64
    } else {
        warmup.max(0.0) as u64
    }
}

/// A learning-rate schedule: base learning rate times a factor of the step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LrSchedule {
    pub kind: SchedulerKind,
    /// Peak (base) learning rate, `train.lr`.
    pub base_lr: f64,
    /// `train.steps`: the schedule's length in (fake or real) micro-batch steps.
    pub steps: u64,
    /// Warm-up length in steps (already resolved with [`warmup_steps`]).
    pub warmup: u64,
    /// Final learning rate of `polynomial-decay` (HF `lr_end`, 1e-7).
    pub lr_end: f64,
    /// Power of `polynomial-decay` (1 = linear).
    pub power: f64,
}

impl LrSchedule {
    /// The multiplier of the base learning rate at step `s` (`lr_lambda` of the reference),
    /// where `s` is `fake_step` for budget-aware schedules and the micro-step counter otherwise.
    pub fn factor(&self, s: u64) -> f64 {
        // Python ints: exact in f64 below 2^53 (every step count here).
        let n = self.steps as f64;
        let w = self.warmup;
        let sf = s as f64;
        // `max(1, a - b)` of Python ints.
        let max1_diff = |a: u64, b: u64| ((a as i128 - b as i128).max(1)) as f64;
        match self.kind {
            SchedulerKind::Constant => 1.0,
            SchedulerKind::BudgetTriangle2 => {
                // get_budget_triangle(base_percentage=0.25, falloff=0.25):
                // min(base + s * (1 - base) / (1 - falloff) / n, 1 / falloff - s / (n * falloff))
                let falloff = 0.25;
                let base_percentage = 0.25;
                let rising = base_percentage + sf * (1.0 - base_percentage) / (1.0 - falloff) / n;
                let falling = 1.0 / falloff - sf / (n * falloff);
                py_min(rising, falling)
            }
            SchedulerKind::BudgetOneCycle => {
                // get_budget_one_cycle: not clamped, so negative past the budget.
                if sf < n / 2.0 {
                    sf / (n / 2.0)
                } else {
                    2.0 - sf / (n / 2.0)
                }
            }
            SchedulerKind::BudgetLinear => {
                if s < w {
                    sf / (w.max(1) as f64)
                } else {
                    py_max(
                        0.0,
                        (self.steps as i128 - s as i128) as f64 / max1_diff(self.steps, w),
                    )
                }
            }
            SchedulerKind::BudgetCosineDecay => {
                if s < w {
                    sf / (w.max(1) as f64)
                } else {
                    let num_cycles = 0.5;
                    let progress = (s - w) as f64 / max1_diff(self.steps, w);
                    py_max(
                        0.0,
                        0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos()),
                    )
                }
            }
            SchedulerKind::PolynomialDecay => {
                let lr_init = self.base_lr;
                if s < w {
                    sf / (w.max(1) as f64)
                } else if s > self.steps {
                    self.lr_end / lr_init
                } else {
                    let lr_range = lr_init - self.lr_end;
                    let decay_steps = (self.steps - w) as f64;
                    let pct_remaining = 1.0 - (s - w) as f64 / decay_steps;
                    let decay = lr_range * pct_remaining.powf(self.power) + self.lr_end;
                    decay / lr_init
                }
            }
        }
    }

    /// The learning rate in effect after `current_step` micro-batch steps (the reference's
    /// `LambdaLR` counter), with `elapsed_s` wall seconds of the `budget_hours` (wall hours)
    /// used: `base_lr · factor(step)`, where `step` is [`schedule_step`] for budget-aware
    /// schedules and `current_step` otherwise.
    pub fn lr(&self, current_step: u64, elapsed_s: f64, budget_hours: f64) -> f64 {
        let s = if self.kind.budget_aware() {
            schedule_step(current_step, elapsed_s, budget_hours, self.steps)
        } else {
            current_step
        };
        self.base_lr * self.factor(s)
    }
}

/// The batch-size ramp (`_schedule_batch_size` of the reference).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRamp {
    /// Target batch size in sequences (`train.batch_size`).
    pub batch_size: u64,
    /// Micro-batch size (`impl.microbatch_size`).
    pub microbatch_size: u64,
    /// `train.batch_size_ramp`: 0 = none; in (0, 1) = fraction of the budget; ≥ 1 = micro-steps.
    pub ramp: f64,
    /// `train.steps`, the resolution of the time fraction.
    pub steps: u64,
}

impl BatchRamp {
    /// The batch size after an optimizer step, with `micro_step` micro-batch steps done and
    /// `fake_step` the current [`fake_step`]. The result is a multiple of the micro-batch size
    /// (capped at the target).
    pub fn batch_size(&self, micro_step: u64, fake_step: u64) -> u64 {
        let bs = self.batch_size as f64;
        let mbs = self.microbatch_size as f64;
        if self.ramp > 0.0 && self.ramp < 1.0 {
            // new_bs = min(int(fake_step * bs / (steps * ramp) // mbs + 1) * mbs, bs)
            let batch_size_step = bs / (self.steps as f64 * self.ramp);
            let n = py_floordiv(fake_step as f64 * batch_size_step, mbs) + 1.0;
            ((n as u64) * self.microbatch_size).min(self.batch_size)
        } else if (micro_step as f64) < self.ramp {
            let batch_size_step = bs / self.ramp;
            let n = py_floordiv(micro_step as f64 * batch_size_step, mbs) + 1.0;
            ((n as u64) * self.microbatch_size).min(self.batch_size)
        } else {
            self.batch_size
        }
    }

    /// Micro-batches per optimizer step at batch size `bs`: `bs // mbs` (at least 1).
    pub fn accumulation_steps(&self, bs: u64) -> u64 {
        (bs / self.microbatch_size).max(1)
    }
}

/// Python's float floor division `a // b` (CPython `float_floor_div`), which can differ from
/// `floor(a / b)` when `a / b` rounds up to an integer.
pub fn py_floordiv(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0f64.copysign(a / b)
    }
}
