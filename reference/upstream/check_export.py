"""Load a `crambench checkpoint export` directory on the Python side and print the MLM loss of a
batch as JSON (tests/checkpoint_transfer.rs compares it with crambench's loss).

  check_export.py hf-bert  DIR BATCH.safetensors
        transformers: AutoTokenizer + BertForMaskedLM.from_pretrained(DIR)
  check_export.py cramming DIR BATCH.safetensors --reference ARCH.json
        the project's own reference (reference/pytorch/crammed.py) on DIR/model.safetensors,
        plus AutoTokenizer.from_pretrained(DIR) (used on a fresh clone: no upstream code)
  check_export.py cramming DIR BATCH.safetensors --upstream CHECKOUT [--full-import]
        upstream's code: import upstream's crammed_bert module (which registers crammedBERT
        with the Auto classes), then AutoModelForMaskedLM.from_pretrained(DIR); with
        --full-import, a plain `import cramming` from CHECKOUT (needs all of upstream's
        requirements: datasets, evaluate, pynvml, psutil, multiprocess, ...)

BATCH holds input_ids and labels in crambench's token ids. Every case also checks that the
tokenizer files name crambench's special tokens at their fixed ids.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIALS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "unk_token_id": 3,
            "cls_token_id": 4, "sep_token_id": 5, "mask_token_id": 6}


def check_tokenizer(d):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    got = {k: getattr(tok, k) for k in SPECIALS}
    if got != SPECIALS:
        sys.exit(f"special token ids {got}, expected {SPECIALS}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("format", choices=["hf-bert", "cramming"])
    ap.add_argument("dir")
    ap.add_argument("batch")
    ap.add_argument("--reference", help="crambench arch.json: check with reference/pytorch/crammed.py")
    ap.add_argument("--upstream", help="upstream cramming checkout: check with upstream's code")
    ap.add_argument("--full-import", action="store_true", help="`import cramming` (the whole package)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    batch = load_file(a.batch)
    ids, labels = batch["input_ids"], batch["labels"]
    check_tokenizer(a.dir)
    if a.format == "hf-bert":
        from transformers import BertForMaskedLM

        model = BertForMaskedLM.from_pretrained(a.dir).eval()
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()
        how = "transformers BertForMaskedLM"
    elif a.upstream:
        sys.path.insert(0, HERE)
        import upstream_loader
        from transformers import AutoModelForMaskedLM

        if a.full_import:
            sys.path.insert(0, os.path.abspath(a.upstream))
            import cramming  # noqa: F401  (registers crammedBERT with the Auto classes)

            version = upstream_loader.version_of(a.upstream) + " (import cramming)"
            commit = upstream_loader.checkout_commit(a.upstream)[0]
        else:
            version, _, commit, _ = upstream_loader.load(a.upstream)
        model = AutoModelForMaskedLM.from_pretrained(a.dir).eval()
        with torch.no_grad():
            loss = model(ids, labels=labels)["loss"].item()
        how = f"upstream {version} {commit[:7]} AutoModelForMaskedLM"
    else:
        sys.path.insert(0, os.path.join(HERE, "..", "pytorch"))
        import crammed

        cfg = json.load(open(a.reference))
        state = load_file(os.path.join(a.dir, "model.safetensors"))
        model = crammed.CrammedMLM(cfg).eval()
        result = model.load_state_dict(state, strict=False)
        extra = set(result.unexpected_keys) - {"encoder.embedding.pos_embedding.position_ids"}
        if result.missing_keys or extra:
            sys.exit(f"state dict mismatch: missing {result.missing_keys}, unexpected {sorted(extra)}")
        with torch.no_grad():
            loss = model(ids, labels)[2].item()
        how = "reference/pytorch/crammed.py"
    print(json.dumps({"loss": loss, "loaded_by": how}))


if __name__ == "__main__":
    main()
