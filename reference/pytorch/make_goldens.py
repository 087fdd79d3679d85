"""Write the conformance goldens under tests/golden/ from the PyTorch reference (crammed.py).

For each tiny architecture: `<name>.json` (the `[arch]` config in crambench's key names, the
reference state-dict keys, versions) and `<name>.safetensors` with
  param.<n>          weights (perturbed away from the 1/0 LayerNorm init, block weights scaled
                     up, so every term matters to the logits)
  grad.<n>           d loss / d param
  input_ids, labels  one batch [B, S] int64 (token 0 = padding occurs, to exercise padding_idx)
  logits, selected_labels, loss   the MLM head's output rows, their labels, mean CE
  attention_mask, encoded_masked  a key-padding mask [B, S] and encoder output with it
  labels_undercount, loss_undercount   (static sparse prediction only) fewer masked positions
                                       than round(p·B·S): the selection then includes ignored rows
All in fp32 on CPU, dropout off (eval mode, as crammed pretraining). Run:
  .venv-torch/bin/python reference/pytorch/make_goldens.py [--out tests/golden]
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crammed  # noqa: E402

TINY = dict(vocab_size=64, hidden=32, layers=2, heads=4, intermediate=64, max_seq_len=16)
BATCH, SEQ = 2, 16

GOLDENS = {
    "crammed-bert": dict(crammed.PRESETS["crammed-bert"], **TINY),
    "crammed-bert-untied": dict(crammed.PRESETS["crammed-bert"], **TINY, tie_weights=False),
    "bert-c5": dict(crammed.PRESETS["bert-c5"], **TINY),
    "bert-original": dict(crammed.PRESETS["bert-original"], **TINY),
    "izsak": dict(crammed.PRESETS["izsak"], **TINY),
}


def make_labels(gen, ids, count):
    """Labels with exactly `count` target positions spread over the batch; others -100."""
    labels = torch.full_like(ids, -100)
    flat = torch.randperm(ids.numel(), generator=gen)[:count]
    labels.view(-1)[flat] = torch.randint(0, int(ids.max()) + 1, (count,), generator=gen)
    return labels


def make_golden(name, cfg, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = crammed.CrammedMLM(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname and pname.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            elif pname.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            elif pname.endswith("scale_factor"):
                p.mul_(1.5)
            elif "layers" in pname or "prediction_head" in pname:
                p.mul_(4.0)  # std 0.08: make every block matter to the logits at this tiny size
    ids = torch.randint(1, cfg["vocab_size"], (BATCH, SEQ), generator=gen)
    ids[0, 3] = 0  # padding token inside a packed sequence: only the decoder may update row 0
    ids[1, 7] = 0
    p = cfg["sparse_prediction"]
    n_static = round(p * BATCH * SEQ) if p is not False else None
    count = n_static if (p is not False and cfg["sparse_static"]) else 7
    labels = make_labels(gen, ids, count)
    labels[0, 3] = 0  # predict the padding token too (gradient into row 0 through the decoder)

    logits, selected, loss = model(ids, labels)
    model.zero_grad()
    loss.backward()

    out = {"input_ids": ids, "labels": labels, "logits": logits.detach(),
           "selected_labels": selected, "loss": loss.detach()}
    for pname, prm in model.named_parameters():
        out["param." + pname] = prm.detach().clone()
        out["grad." + pname] = prm.grad.detach().clone()

    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[1, SEQ - 5:] = 0  # the second sequence ends in 5 padding positions
    with torch.no_grad():
        out["attention_mask"] = mask
        out["encoded_masked"] = model.encoder(ids, mask)
        if p is not False and cfg["sparse_static"]:
            under = make_labels(gen, ids, n_static - 2)
            out["labels_undercount"] = under
            out["loss_undercount"] = model(ids, under)[2]

    out = {k: v.detach().clone().contiguous() for k, v in out.items()}
    meta = {
        "arch": cfg,
        "state_dict_keys": list(model.state_dict().keys()),
        "batch": BATCH, "seq": SEQ, "seed": seed,
        "torch": torch.__version__,
        "generated_by": "reference/pytorch/make_goldens.py",
    }
    return out, meta


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "golden"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    for i, (name, cfg) in enumerate(GOLDENS.items()):
        tensors, meta = make_golden(name, cfg, seed=1234 + i)
        path = os.path.join(args.out, name + ".safetensors")
        save_file(tensors, path + ".tmp")
        os.replace(path + ".tmp", path)
        with open(os.path.join(args.out, name + ".json") + ".tmp", "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        os.replace(os.path.join(args.out, name + ".json") + ".tmp", os.path.join(args.out, name + ".json"))
        print(f"{name}: loss {tensors['loss'].item():.6f}, logits {tuple(tensors['logits'].shape)}, "
              f"{os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
