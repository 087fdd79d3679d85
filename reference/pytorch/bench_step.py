"""Time training steps of the PyTorch reference model (crammed.py), the same model, weights,
batch shape and optimizer settings as `crambench bench train-step` times in tch (the trainer's
own step).

One step = `--accumulation` micro-batches of forward (MLM loss; under torch.autocast in bf16 with
fp32 weights when --dtype bf16, as the trainer runs) and backward of loss / accumulation, then
clip_grad_norm_ (when the recipe clips), the AdamW update (torch.optim.AdamW with the recipe's
lr, betas, eps, weight decay and no-decay groups, given as --optim-json; fused=True on CUDA,
PyTorch's fastest eager AdamW) and zero_grad. Nothing is read back to the host inside a step
(no .item()); the device is synchronised at its end.

  python bench_step.py --arch-json A.json --batch B.safetensors [--weights W.safetensors]
                       [--threads N] [--device cpu|cuda] [--dtype fp32|bf16]
                       [--optim-json J] [--accumulation K]
                       [--attention sdpa|math] [--compile] [--dropout]
                       (--steps N [--warmup K] | --serve)

Without --serve: prints one JSON object {"times_s": [...], ...} after K warm-up steps.
With --serve (used by crambench to alternate with its own steps): after one warm-up step prints
{"ready": true, ...}, then answers each stdin line `run N` with {"times_s": [...]} and exits on
`quit` or end of input.
"""
import argparse
import json
import os
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crammed  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch-json", required=True)
    ap.add_argument("--batch", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "math"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--dropout", action="store_true", help="train mode (dropout on)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--optim-json", default=None,
                    help='{"lr", "betas", "eps", "weight_decay", "no_decay", "max_norm"}')
    ap.add_argument("--accumulation", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    crammed.SeqFirstSelfAttention.use_sdpa = args.attention == "sdpa"
    device = torch.device(args.device)
    cfg = json.load(open(args.arch_json))
    model = crammed.CrammedMLM(cfg)
    if args.weights:
        res = model.load_state_dict(load_file(args.weights), strict=False)
        if set(res.missing_keys) - {"decoder.weight"} or res.unexpected_keys:
            sys.exit(f"weights do not fit: {res}")
    model.train(args.dropout)
    model.to(device)  # weights stay fp32: bf16 is autocast, as in the trainer
    batch = load_file(args.batch)
    ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    o = json.loads(args.optim_json) if args.optim_json else {
        "lr": args.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
        "no_decay": [], "max_norm": None}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if any(k in name for k in o["no_decay"]) else decay).append(p)
    groups = [{"params": decay, "weight_decay": o["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                            fused=device.type == "cuda")
    fwd = torch.compile(model) if args.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    accumulation = max(1, args.accumulation)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        t0 = time.perf_counter()
        for _ in range(accumulation):
            with autocast:
                _, _, loss = fwd(ids, labels)
            (loss / accumulation).backward()
        if o.get("max_norm"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), o["max_norm"])
        opt.step()
        opt.zero_grad(set_to_none=False)
        sync()
        return time.perf_counter() - t0, loss.detach()

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "dtype": args.dtype, "attention": args.attention, "compile": args.compile,
            "accumulation": accumulation, "fused_adamw": device.type == "cuda"}
    if args.serve:
        _, loss = step()
        print(json.dumps(dict(info, ready=True, first_loss=loss.item())), flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            n = int(cmd[1])
            times = [step()[0] for _ in range(n)]
            print(json.dumps({"times_s": times}), flush=True)
        return
    for _ in range(args.warmup):
        step()
    times, losses = [], []
    for _ in range(args.steps):
        t, loss = step()
        times.append(t)
        losses.append(loss)
    print(json.dumps(dict(info, times_s=times, losses=[x.item() for x in losses])))


if __name__ == "__main__":
    main()
