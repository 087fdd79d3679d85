"""Checkpoint fixtures for `crambench checkpoint import` (tests/checkpoint_transfer.rs), made by
upstream cramming's own code and by `transformers` (issue #13).

  .venv-torch/bin/python reference/upstream/make_fixtures.py --upstream /work/upstream-v2   # v2 local + hub
  .venv-torch/bin/python reference/upstream/make_fixtures.py --upstream /work/upstream-v1   # v1 hub (legacy)
  .venv-torch/bin/python reference/upstream/make_fixtures.py --hf                           # BertForMaskedLM

Each fixture directory under tests/fixtures/checkpoints/ is a tiny checkpoint in one published
layout, plus `expected.json` (the commit or library version that made it, the upstream loss) and
`batch.safetensors` (input_ids, labels in the SOURCE tokenizer's ids):

  upstream-v2-local/   what `save_final_model` (cramming/backend/torch_default.py) writes:
                       tokenizer.save_pretrained, safetensors save_file of the state dict,
                       model_config.json = OmegaConf.to_container(cfg_arch, resolve=True)
  upstream-v2-hub/     `model.save_pretrained(safe_serialization=True)` of upstream's
                       ScriptableLMForPreTraining (config.json: model_type crammedBERT + arch),
                       as JonasGeiping/crammed-bert is published
  upstream-v1-hub/     the same with v1's bert-c5 (as crammed-bert-legacy)
  hf-bert/             transformers BertForMaskedLM + BertTokenizerFast (bert-base-uncased
                       layout: config.json, model.safetensors, vocab.txt, tokenizer.json, ...)

The tokenizers are upstream's `_construct_tokenizer` (cramming/data/tokenizer_preparation.py),
whose special tokens land at hash-random ids 0-6, and BERT's [PAD]/[UNK]/[CLS]/[SEP]/[MASK] at
0/100-103-like positions, so the importer's special-token remap is exercised.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "checkpoints")
SEQ = 16
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a crammed language model trains on one gpu in one day",
    "pack my box with five dozen liquor jugs",
    "how vexingly quick daft zebras jump",
]
CORPUS = TEXTS * 3 + [
    "sphinx of black quartz judge my vow", "the five boxing wizards jump quickly",
    "bright vixens jump dozy fowl quack", "waltz bad nymph for quick jigs vex",
]


class _Rows:
    """The minimal `datasets.Dataset` surface `_construct_tokenizer` reads."""

    def __init__(self, texts):
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, s):
        return {"text": self.texts[s]}


def perturb(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            elif "layer" in name or "prediction" in name:
                p.mul_(4.0)


def batch(tokenizer, n_targets, seed, cls_first):
    """Encode TEXTS to [B, SEQ] (padded), replace n_targets non-pad positions by the mask token."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in TEXTS:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        ids = ([tokenizer.cls_token_id] if cls_first else []) + ids[: SEQ - 2] + [tokenizer.sep_token_id]
        rows.append(ids + [tokenizer.pad_token_id] * (SEQ - len(ids)))
    ids = torch.tensor(rows, dtype=torch.int64)
    labels = torch.full_like(ids, -100)
    real = (ids != tokenizer.pad_token_id).view(-1).nonzero().squeeze(1)
    pick = real[torch.randperm(real.numel(), generator=gen)[:n_targets]]
    labels.view(-1)[pick] = ids.view(-1)[pick]
    ids.view(-1)[pick] = tokenizer.mask_token_id
    return ids, labels


def write_expected(d, ids, labels, loss, made_by, extra=None):
    save_file({"input_ids": ids.contiguous(), "labels": labels.contiguous()}, os.path.join(d, "batch.safetensors"))
    meta = {"made_by": made_by, "loss": loss, "seq": SEQ, "texts": TEXTS,
            "torch": torch.__version__, "generated_by": "reference/upstream/make_fixtures.py"}
    meta.update(extra or {})
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{d}: loss {loss:.6f}")


def upstream_fixtures(checkout):
    import upstream_loader
    from omegaconf import OmegaConf
    import transformers

    version, module, commit, describe = upstream_loader.load(checkout)
    import importlib
    tp = importlib.import_module("cramming.data.tokenizer_preparation")
    vocab = 96
    cfg_data = OmegaConf.create({
        "tokenizer": "WordPiece", "vocab_size": vocab, "seq_length": SEQ, "use_type_ids": False,
        "include_cls_token_in_corpus": False, "include_sep_token_in_corpus": True,
        "max_entries_in_dataset": len(CORPUS),
        "normalizer": {"force_lowercase": True, "strip_accents": True, "force_english_keyboard": True,
                       "whitespace_escape": False},
    })
    tokenizer = tp._construct_tokenizer(_Rows(CORPUS), cfg_data)
    made_by = {"repository": "https://github.com/JonasGeiping/cramming", "commit": commit,
               "describe": describe, "version": version, "transformers": transformers.__version__}
    tiny = {"num_transformer_layers": 2, "hidden_size": 32, "intermed_size": 64,
            "attention": {"num_attention_heads": 4}, "embedding": {"max_seq_length": SEQ}}
    if version == "v2":
        cfg_arch = upstream_loader.arch_config(checkout, "crammed-bert", tiny, 0.25)
        model = module.construct_crammed_bert(cfg_arch, tokenizer.vocab_size).eval()
        layouts = ["upstream-v2-local", "upstream-v2-hub"]
        n_targets = round(0.25 * len(TEXTS) * SEQ)  # v2 masking: exactly round(p·B·S)
    else:
        cfg_arch = upstream_loader.arch_config(checkout, "bert-c5", tiny, 0.15)
        model = module.construct_scriptable_bert(cfg_arch, tokenizer.vocab_size).eval()
        layouts = ["upstream-v1-hub"]
        n_targets = 9
    perturb(model, 99)
    ids, labels = batch(tokenizer, n_targets, 5, cls_first=False)
    with torch.no_grad():
        loss = model(ids, labels=labels)["loss"].item()
    for layout in layouts:
        d = os.path.join(OUT, layout)
        os.makedirs(d, exist_ok=True)
        tokenizer.save_pretrained(d)
        if layout.endswith("-local"):
            # torch_default.py save_final_model: state dict clones, safetensors, model_config.json
            state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
            save_file(state, os.path.join(d, "model.safetensors"))
            with open(os.path.join(d, "model_config.json"), "w") as f:
                json.dump(OmegaConf.to_container(cfg_arch, resolve=True), f)
        else:
            # torch_default.py push_to_hub: save_pretrained with the cloned state dict
            state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
            model.save_pretrained(d, max_shard_size="10GB", safe_serialization=True, state_dict=state)
        write_expected(d, ids, labels, loss, made_by,
                       {"specials": {t: tokenizer.convert_tokens_to_ids(t) for t in
                                     ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"]}})


def hf_fixture():
    import transformers
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    d = os.path.join(OUT, "hf-bert")
    os.makedirs(d, exist_ok=True)
    words = sorted(set(" ".join(CORPUS).split()))
    letters = sorted(set("".join(words)))
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(4)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += letters + ["##" + c for c in letters] + [w for w in words if w not in letters]
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=os.path.join(d, "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(d)
    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=SEQ, type_vocab_size=2)
    model = BertForMaskedLM(cfg).eval()
    perturb(model, 98)
    model.save_pretrained(d, safe_serialization=True)
    ids, labels = batch(tok, 12, 6, cls_first=True)
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss.item()
    write_expected(d, ids, labels, loss, {"transformers": transformers.__version__})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", help="upstream cramming checkout (v2 HEAD or v1 Last1.13release)")
    ap.add_argument("--hf", action="store_true", help="write the transformers BertForMaskedLM fixture")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.upstream:
        upstream_fixtures(args.upstream)
    if args.hf:
        hf_fixture()


if __name__ == "__main__":
    main()
