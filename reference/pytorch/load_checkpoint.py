"""Load a crambench checkpoint (`VarStore::save` → model.safetensors) into the PyTorch reference
model and print the MLM loss of a batch, as JSON. Used by tests/model_checkpoint.rs.

  python load_checkpoint.py ARCH.json MODEL.safetensors BATCH.safetensors

ARCH.json is the `[arch]` table as crambench serialises it; BATCH holds input_ids and labels.
Fails unless every reference parameter and buffer is in the checkpoint, except `decoder.weight`
of a tied model (the reference loader takes it from the embedding), and nothing else is.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crammed  # noqa: E402


def main():
    cfg = json.load(open(sys.argv[1]))
    state = load_file(sys.argv[2])
    batch = load_file(sys.argv[3])
    model = crammed.CrammedMLM(cfg).eval()
    result = model.load_state_dict(state, strict=False)
    allowed_missing = {"decoder.weight"} if cfg["tie_weights"] else set()
    if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
        sys.exit(f"state dict mismatch: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    with torch.no_grad():
        _, _, loss = model(batch["input_ids"], batch["labels"])
    print(json.dumps({"loss": loss.item(), "keys": len(state)}))


if __name__ == "__main__":
    main()
