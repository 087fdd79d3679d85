#!/usr/bin/env python3
"""Golden values of the learning-rate schedules, written from upstream cramming's formulas.

This is an independent restatement (plain Python floats, no torch, no transformers) of the
formulas in JonasGeiping/cramming `cramming/backend/optimizers/schedulers.py` at 196c991 (v2,
HEAD) — identical for these schedules at tag Last1.13release (4a5e300, v1) — and of the
batch-size ramp in `cramming/backend/torch_default.py` (`schedule_batch_size`) at 196c991.
The polynomial decay is transformers' `get_polynomial_decay_schedule_with_warmup`, which
upstream's `polynomial-decay` scheduler calls.

What matters is Python's order of floating-point operations:

* the wall-clock "fake step" is `int(((t / 60) / 60) / budget_hours * steps)`, and 0 when the
  scheduler's own step counter is 0 (the ramp has no such rule);
* budget-triangle2 (base 0.25, falloff 0.25) is
  `min(0.25 + s * 0.75 / 0.75 / steps, 1 / 0.25 - s / (steps * 0.25))`, evaluated left to
  right; `min` keeps the first argument unless the second is strictly smaller;
* budget-one-cycle is `s / (steps / 2)` below the peak and `2 - s / (steps / 2)` after it,
  *not* clamped at 0 past the budget.

Points, for each configuration (2·N in all, 10% of them past the budget):

* random: N draws of SplitMix64 (seed below) give u in [0, 1) as `(x >> 11) / 2**53`; elapsed
  seconds are `u * (budget_hours * 3600.0 * 1.1)`, the scheduler's step counter is the point's
  index (index 0 tests the `current_step == 0` rule), and the step-based polynomial decay is
  evaluated at `int(u * (steps * 1.1))`;
* on the grid: for i in 0..N, j = (i * steps * 11) // (10 * N) and elapsed seconds
  `j * (budget_hours * 3600.0) / steps`, the time at which the exact fake step is j: here the
  rounding of each operation decides between j and j - 1, so the order of operations matters.
  The step counter is i + 1 and the polynomial decay is evaluated at j.

Output (tests/golden/schedules_upstream.json): per configuration, the SHA-256 of every value
(8-byte big-endian: u64 for integers, IEEE-754 bits for floats, in point order) of each series,
and every 1000th point written out (floats as 16-hex-digit bit patterns) to locate a mismatch.
tests/train_schedule_golden.rs recomputes the same points with crambench and compares bit for
bit.

Usage: python3 reference/schedules/upstream_schedules.py [--out tests/golden/schedules_upstream.json]
"""

import argparse
import hashlib
import json
import math
import struct
import sys

UPSTREAM = {
    "repository": "https://github.com/JonasGeiping/cramming",
    "v2_commit": "196c9912d8c5b06a05e9a58edd1521e3d38f7c0c",
    "v1_commit": "4a5e3008a5ec05ed68f9d096e4875f8dddadcf81 (tag Last1.13release)",
    "files": [
        "cramming/backend/optimizers/schedulers.py (_get_fake_step, get_budget_triangle, "
        "get_budget_one_cycle, get_budget_linear_schedule_with_warmup, "
        "get_budget_cosine_schedule_with_warmup, get_schedule_fn's warmup conversion)",
        "cramming/backend/torch_default.py (schedule_batch_size)",
        "transformers get_polynomial_decay_schedule_with_warmup (upstream 'polynomial-decay')",
    ],
}

N_POINTS = 100_000
SEED = 0x5EED_C0DE_2023_0001
SAMPLE_EVERY = 1000
MASK64 = (1 << 64) - 1

# The recipes' schedules (baselines/*.toml). budget_hours as crambench parses "24h" / "10m".
CONFIGS = [
    {"name": "crammed-bert", "budget_hours": 24.0, "steps": 900_000, "warmup": 0.0, "lr": 1e-3},
    {"name": "crammed-bert-v1", "budget_hours": 24.0, "steps": 600_000, "warmup": 0.0, "lr": 1e-3},
    {"name": "izsak-2021", "budget_hours": 24.0, "steps": 900_000, "warmup": 0.06, "lr": 2e-3},
    {"name": "bert-original", "budget_hours": 24.0, "steps": 8_000_000, "warmup": 80_000.0, "lr": 1e-4},
    {"name": "tiny-10m", "budget_hours": 10.0 / 60.0, "steps": 2000, "warmup": 20.0, "lr": 1e-3},
]
LR_END = 1e-7
POWER = 1.0
# Ramp of crammed-bert: 8192 sequences, micro-batch 512, over 60% of the budget.
RAMP = {"batch_size": 8192, "microbatch_size": 512, "ramp": 0.6}


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def warmup_steps(warmup, steps):
    # get_schedule_fn: a value in (0, 1) is a fraction, converted with int(); else a count.
    if 0 < warmup < 1:
        return int(warmup * steps)
    return int(warmup)


def clock_step(elapsed_s, budget_hours, steps):
    elapsed_hours = elapsed_s / 60 / 60
    return int(elapsed_hours / budget_hours * steps)


def sched_step(current_step, elapsed_s, budget_hours, steps):
    if current_step == 0:
        return 0
    return clock_step(elapsed_s, budget_hours, steps)


def triangle(s, n, base=0.25, falloff=0.25):
    rising = base + s * (1 - base) / (1 - falloff) / n
    falling = float(1 / falloff - s / (n * falloff))
    return min(rising, falling)


def one_cycle(s, n):
    if s < n / 2:
        return float(s / (n / 2))
    return float(2 - s / (n / 2))


def linear(s, n, w):
    if s < w:
        return float(s) / float(max(1, w))
    return max(0.0, float(n - s) / float(max(1, n - w)))


def cosine(s, n, w, cycles=0.5):
    if s < w:
        return float(s) / float(max(1, w))
    progress = float(s - w) / float(max(1, n - w))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(cycles) * 2.0 * progress)))


def polynomial(step, n, w, lr_init, lr_end=LR_END, power=POWER):
    if step < w:
        return float(step) / float(max(1, w))
    if step > n:
        return lr_end / lr_init
    lr_range = lr_init - lr_end
    decay_steps = n - w
    pct_remaining = 1 - (step - w) / decay_steps
    decay = lr_range * pct_remaining**power + lr_end
    return decay / lr_init


def ramp_batch_size(s, steps, batch_size, mbs, ramp):
    step = batch_size / (steps * ramp)
    return min(int(s * step // mbs + 1) * mbs, batch_size)


def f64_bits(x):
    return struct.unpack(">Q", struct.pack(">d", x))[0]


class Series:
    def __init__(self):
        self.h = hashlib.sha256()

    def add_int(self, v):
        self.h.update(struct.pack(">Q", v))

    def add_float(self, v):
        self.h.update(struct.pack(">d", v))


BUDGET_KINDS = ["budget-triangle2", "budget-one-cycle", "budget-linear", "budget-cosine-decay"]


def run_config(cfg):
    n = cfg["steps"]
    w = warmup_steps(cfg["warmup"], n)
    lr = cfg["lr"]
    span = cfg["budget_hours"] * 3600.0 * 1.1
    series = {k: Series() for k in ["fake_step", "ramp_fake_step", "ramp_batch_size", "polynomial-decay", *BUDGET_KINDS]}
    samples = []
    state = SEED
    for i in range(2 * N_POINTS):
        if i < N_POINTS:
            state, x = splitmix64(state)
            u = (x >> 11) / 9007199254740992.0
            elapsed_s = u * span
            current_step = i
            poly_step = int(u * (n * 1.1))
        else:
            g = i - N_POINTS
            j = (g * (n * 11)) // (10 * N_POINTS)
            elapsed_s = j * (cfg["budget_hours"] * 3600.0) / n
            current_step = g + 1
            poly_step = j
        s = sched_step(current_step, elapsed_s, cfg["budget_hours"], n)
        rs = clock_step(elapsed_s, cfg["budget_hours"], n)
        # LambdaLR: lr = base_lr * lambda(step).
        lrs = {
            "budget-triangle2": lr * triangle(s, n),
            "budget-one-cycle": lr * one_cycle(s, n),
            "budget-linear": lr * linear(s, n, w),
            "budget-cosine-decay": lr * cosine(s, n, w),
            "polynomial-decay": lr * polynomial(poly_step, n, w, lr),
        }
        bs = ramp_batch_size(rs, n, RAMP["batch_size"], RAMP["microbatch_size"], RAMP["ramp"])
        series["fake_step"].add_int(s)
        series["ramp_fake_step"].add_int(rs)
        series["ramp_batch_size"].add_int(bs)
        for k, v in lrs.items():
            series[k].add_float(v)
        if i % SAMPLE_EVERY == 0 or i == 2 * N_POINTS - 1:
            samples.append(
                {
                    "index": i,
                    "elapsed_s": f"{f64_bits(elapsed_s):016x}",
                    "fake_step": s,
                    "ramp_fake_step": rs,
                    "ramp_batch_size": bs,
                    "polynomial_step": poly_step,
                    "lr": {k: f"{f64_bits(v):016x}" for k, v in lrs.items()},
                }
            )
    return {
        "name": cfg["name"],
        "budget_hours": f"{f64_bits(cfg['budget_hours']):016x}",
        "steps": n,
        "warmup": f"{f64_bits(cfg['warmup']):016x}",
        "warmup_steps": w,
        "lr": f"{f64_bits(lr):016x}",
        "sha256": {k: v.h.hexdigest() for k, v in series.items()},
        "samples": samples,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/golden/schedules_upstream.json")
    args = ap.parse_args()
    doc = {
        "generated_by": "reference/schedules/upstream_schedules.py",
        "python": sys.version.split()[0],
        "upstream": UPSTREAM,
        "points": {"random": N_POINTS, "grid": N_POINTS},
        "seed": SEED,
        "span": "elapsed_s = u * (budget_hours * 3600.0 * 1.1)",
        "lr_end": f"{f64_bits(LR_END):016x}",
        "power": f"{f64_bits(POWER):016x}",
        "ramp": RAMP,
        "configs": [run_config(c) for c in CONFIGS],
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
