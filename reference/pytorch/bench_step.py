"""Time training steps of the PyTorch reference model (crammed.py) in eager mode, the same
model, weights and batch as `crambench bench train-step` times in tch.

One step = zero_grad, forward (MLM loss), backward, AdamW update (torch.optim.AdamW with the
defaults tch's nn::AdamW uses: betas 0.9/0.999, eps 1e-8, weight decay 0.01).

  python bench_step.py --arch-json A.json --batch B.safetensors [--weights W.safetensors]
                       [--threads N] [--device cpu|cuda] [--dtype fp32|bf16]
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
    model.to(device)
    if args.dtype == "bf16":
        model.to(torch.bfloat16)
    batch = load_file(args.batch)
    ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01)
    fwd = torch.compile(model) if args.compile else model

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, _, loss = fwd(ids, labels)
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t0, loss.item()

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "dtype": args.dtype, "attention": args.attention, "compile": args.compile}
    if args.serve:
        _, loss = step()
        print(json.dumps(dict(info, ready=True, first_loss=loss)), flush=True)
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
    print(json.dumps(dict(info, times_s=times, losses=losses)))


if __name__ == "__main__":
    main()
