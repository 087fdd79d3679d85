#!/usr/bin/env python3
"""Golden of torch.nn.utils.clip_grad_norm_ for tests/train_optim.rs (issue 13, D12).

Upstream cramming clips with `torch.nn.utils.clip_grad_norm_(model.parameters(),
cfg_train.gradient_clipping, norm_type=2.0)` after `scaler.unscale_` (`optimizer_step` in
`cramming/backend/torch_default.py`, JonasGeiping/cramming at 196c991). torch computes the clip
coefficient as an f32 tensor, `max_norm / (total_norm + 1e-6)` clamped at 1, so the factor
each gradient is multiplied by is rounded to f32 at every operation, not computed in f64.

Writes tests/golden/clip_grad_norm.safetensors: for case k, three f32 gradient tensors
`case{k}.in.{0,1,2}` (random normal, scaled so about half of the cases are clipped), the
clipped gradients `case{k}.out.{0,1,2}`, and the returned norm `case{k}.norm`; `max_norm` is
0.5 (the crammed recipes'). Run with the torch of scripts/torchenv.sh:

    .venv-torch/bin/python reference/pytorch/clip_golden.py
"""

import argparse

import torch
from safetensors.torch import save_file

CASES = 200
MAX_NORM = 0.5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/clip_grad_norm.safetensors")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(13)
    tensors = {}
    for k in range(CASES):
        scale = float(torch.exp(torch.empty(()).uniform_(-5.0, 0.0, generator=gen)))
        shapes = [(7,), (3, 5), (11,)]
        grads = [(torch.randn(s, generator=gen) * scale).float() for s in shapes]
        params = []
        for i, g in enumerate(grads):
            p = torch.nn.Parameter(torch.zeros_like(g))
            p.grad = g.clone()
            params.append(p)
            tensors[f"case{k}.in.{i}"] = g.contiguous()
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM, norm_type=2.0)
        for i, p in enumerate(params):
            tensors[f"case{k}.out.{i}"] = p.grad.detach().contiguous()
        tensors[f"case{k}.norm"] = norm.detach().reshape(1).float()
    save_file(tensors, args.out, metadata={"torch": torch.__version__, "max_norm": str(MAX_NORM), "cases": str(CASES), "generated_by": "reference/pytorch/clip_golden.py"})


if __name__ == "__main__":
    main()
