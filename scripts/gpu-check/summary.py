"""One JSON summary of a scripts/gpu-check.sh run: `python summary.py OUTDIR > summary.json`.

Reads the step table (steps.tsv: name, exit status, milliseconds) and each step's stdout
(NAME.out, JSON from crambench --json), stderr (NAME.log) and GPU memory samples
(NAME.memory, MiB, from nvidia-smi). Exit status 0 when every step that ran exited 0 and
conformance passed, else 1. Standard library only.
"""
import json
import os
import re
import sys

OUT = sys.argv[1]
# libtorch's C++ warnings ("[W1201 12:00:00.000 123 file.cpp:42] Warning: ..."), Python's
# ("UserWarning: ..."), and anything else that calls itself a warning.
WARNING = re.compile(r"^\[W\d{4} |Warning:|warning:|UserWarning|FutureWarning|DeprecationWarning")


def path(name):
    return os.path.join(OUT, name)


def read_json(name):
    try:
        with open(path(name)) as f:
            text = f.read()
        return json.loads(text)
    except (OSError, ValueError):
        return None


def read_text(name, limit=4000):
    try:
        with open(path(name), errors="replace") as f:
            return f.read()[:limit]
    except OSError:
        return None


def warning_lines(name):
    try:
        with open(path(name), errors="replace") as f:
            return sum(1 for line in f if WARNING.search(line))
    except OSError:
        return None


def memory_peak_mib(name):
    try:
        with open(path(name)) as f:
            values = [float(x) for line in f for x in line.split(",") if x.strip()]
        return max(values) if values else None
    except (OSError, ValueError):
        return None


def steps():
    out = {}
    try:
        with open(path("steps.tsv")) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    name, rc, ms = parts
                    out[name] = {
                        "exit": None if rc == "skipped" else int(rc),
                        "skipped": rc == "skipped",
                        "seconds": int(ms) / 1000.0,
                    }
    except OSError:
        pass
    return out


def fingerprint():
    fp = read_json("fingerprint.json")
    if fp is None:
        return None
    sw = fp.get("software", {})
    gpu_fields = [
        "index", "name", "uuid", "architecture", "compute_capability", "multiprocessors",
        "total_memory_bytes", "power_limit_w", "power_limit_default_w", "sm_clock_mhz",
        "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz", "ecc_enabled", "mig_enabled",
        "persistence_mode", "compute_mode", "pcie_link_gen", "pcie_link_width",
        "nvlink_active_links", "vbios_version",
    ]
    return {
        "hardware_class": fp.get("hardware_class"),
        "cuda_backend": sw.get("cuda_backend"),
        "libtorch": sw.get("libtorch"),
        "gpu_driver": sw.get("gpu_driver"),
        "gpus": [{k: g.get(k) for k in gpu_fields} for g in fp.get("hardware", {}).get("gpus", [])],
        "notes": fp.get("notes"),
    }


def conformance():
    c = read_json("conformance.out")
    if c is None:
        return None
    worst = {}
    for case in c.get("cases", []):
        if case.get("status") != "pass":
            continue
        for what, err in case.get("errors", []):
            key = "%s/%s/%s" % (case["ran"], case["attention"], what)
            worst[key] = max(worst.get(key, 0.0), err)
    return {
        "gpu": c.get("gpu"),
        "pass": c.get("pass"),
        "passed": c.get("passed"),
        "failed": c.get("failed"),
        "unsupported": c.get("unsupported"),
        "worst_relative_error": worst,
        "failures": [
            {k: case.get(k) for k in ("golden", "attention", "ran", "masked", "errors", "reason")}
            for case in c.get("cases", []) if case.get("status") == "fail"
        ],
        "unsupported_cases": sorted({
            "%s/%s%s" % (case["attention"], case["ran"], "/mask" if case["masked"] else "")
            for case in c.get("cases", []) if case.get("status") == "unsupported"
        }),
    }


def flops_per_token_and_peak():
    """From bench train-step (same architecture, micro-batch and sequence length)."""
    for name in ("bench.out",):
        b = read_json(name)
        if b and b.get("train_step_flops") and b.get("micro_batch") and b.get("seq_len"):
            return b["train_step_flops"] / (b["micro_batch"] * b["seq_len"]), b.get("peak_flops")
    return None, None


def pretrain(name, per_token, peak):
    s = read_json(name + ".out")
    r = {
        "warning_lines": warning_lines(name + ".log"),
        "memory_peak_mib": memory_peak_mib(name + ".memory"),
    }
    if s is None:
        r["error"] = (read_text(name + ".log") or "")[-1500:]
        return r
    tps = s.get("tokens_per_second")
    for k in ("stop_reason", "steps", "micro_steps", "tokens_seen", "initial_mlm_loss",
              "final_mlm_loss", "skipped_steps", "resumed_from", "device", "precision", "energy"):
        if k in s:
            r[k] = s[k]
    r["tokens_per_second"] = tps
    r["mfu"] = tps * per_token / peak if (tps and per_token and peak) else None
    return r


def glue(name):
    g = read_json(name + ".out")
    if g is None:
        return {"error": (read_text(name + ".log") or "")[-1500:]}
    out = {"attention": g.get("attention"), "bucket_batches": g.get("config", {}).get("bucket_batches", 0), "sets": {}}
    for set_id, res in g.get("tasks", {}).items():
        for t in res.get("trials", []):
            secs = t.get("finetune_seconds") or 0
            out["sets"][set_id] = {
                "metrics": t.get("metrics"),
                "optimizer_steps": t.get("optimizer_steps"),
                "finetune_seconds": secs,
                "steps_per_second": t["optimizer_steps"] / secs if secs else None,
                "examples_per_second": t.get("finetune_examples_per_second"),
                "eval_examples_per_second": t.get("eval_examples_per_second"),
            }
    out["warning_lines"] = warning_lines(name + ".log")
    return out


def bench(name):
    """bench train-step: tch and each PyTorch reference (eager, compile), timed in one run."""
    b = read_json(name + ".out")
    if b is None:
        return {"error": (read_text(name + ".log") or "")[-1500:]}
    pick = ("median_s", "spread", "tokens_per_s", "mfu")
    t = b.get("tch") or {}
    out = {
        "gpu": b.get("gpu"),
        "micro_batch": b.get("micro_batch"),
        "dtype": b.get("dtype"),
        "tch": {k: t.get(k) for k in pick},
    }
    for r in b.get("references") or []:
        out[r["mode"]] = dict(
            {k: r.get(k) for k in pick},
            info=r.get("info"),
            tokens_per_s_tch_over_reference=(t["tokens_per_s"] / r["tokens_per_s"])
            if t.get("tokens_per_s") and r.get("tokens_per_s") else None,
        )
    return out


def optim(name):
    """bench optim: the flat AdamW step against the per-parameter one on the GPU."""
    b = read_json(name + ".out")
    if b is None:
        return {"error": (read_text(name + ".log") or "")[-1500:]}
    return {
        "kernel": b.get("kernel"),
        "flat_median_s": (b.get("flat") or {}).get("median_s"),
        "per_parameter_median_s": (b.get("per_parameter") or {}).get("median_s"),
        "speedup_median": b.get("speedup_median"),
    }


def main():
    st = steps()
    per_token, peak = flops_per_token_and_peak()
    summary = {
        "schema": "crambench.gpu-check/v2",
        "steps": st,
        "seconds": sum(s["seconds"] for s in st.values()),
        "torch": (read_text("torch.out") or "").strip(),
        "ldd_not_found": [l.strip() for l in (read_text("ldd.out") or "").splitlines() if "not found" in l],
        "nvidia_smi": (read_text("nvidia-smi.out") or "").strip(),
        "fingerprint": fingerprint(),
        "conformance": conformance(),
        "peak_flops": peak,
        "train_flops_per_token": per_token,
        "pretrain": pretrain("pretrain", per_token, peak),
        "resume": pretrain("resume", per_token, peak),
        "fp16": pretrain("fp16", per_token, peak),
        "glue": glue("glue"),
        "glue_bucketed": glue("glue-bucketed"),
        "bench": bench("bench"),
        "optim": optim("optim"),
    }
    conf = summary["conformance"] or {}
    ok = all(s["exit"] == 0 for s in st.values() if not s["skipped"]) and conf.get("pass") is True
    summary["pass"] = ok
    json.dump(summary, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
