"""Conformance goldens from upstream cramming's own model code (issue #13).

Run once per upstream checkout (v2 = HEAD 196c991, v1 = tag Last1.13release), each made outside
this project, e.g.

  git --git-dir=/work/.mirror/JonasGeiping+cramming/repo worktree add /work/upstream-v2 HEAD
  git --git-dir=/work/.mirror/JonasGeiping+cramming/repo worktree add /work/upstream-v1 Last1.13release
  .venv-torch/bin/python reference/upstream/make_goldens.py /work/upstream-v2
  .venv-torch/bin/python reference/upstream/make_goldens.py /work/upstream-v1

For every architecture kind of crambench, `tests/golden/upstream/<name>.{json,safetensors}`:

  v2 (cramming/architectures/crammed_bert.py)    crammed-bert (arch/crammed-bert.yaml),
                                                 izsak-v2 (arch/crammed-large-izsak.yaml)
  v1 (cramming/architectures/scriptable_bert.py) bert-c5, bert-original, izsak
                                                 (arch/bert-c5.yaml, bert-original.yaml,
                                                 bert-large-izsak.yaml)

The model is built by upstream's constructor from upstream's yaml with tiny sizes (vocab 64,
hidden 32, 2 layers, 4 heads, FFN 64, 16 positions), weights perturbed away from the init so
every term matters, then one batch [2, 16] is run through upstream's forward and backward, fp32
on CPU, eval mode (dropout off). The json holds `upstream_arch` (what upstream's
`model_config.json` records), the upstream commit, the state-dict keys; the safetensors holds
  param.<upstream name>, grad.<upstream name>   weights and d loss / d weight
  input_ids, labels, loss                       the batch and upstream's loss
  logits, selected_labels                       the decoder's output rows and the labels the
                                                loss function received (forward hooks)
  attention_mask, encoded_masked                upstream's encoder output with a key-padding mask
  labels_undercount, loss_undercount            (v2 static sparse prediction) fewer targets
Static sparse prediction (v2) batches have exactly round(p·B·S) targets, as upstream's masking
guarantees. tests/model_conformance.rs loads these through crambench's importer translation
(`crambench::model::upstream`) and compares.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import upstream_loader  # noqa: E402

TINY = {
    "num_transformer_layers": 2,
    "hidden_size": 32,
    "intermed_size": 64,
    "attention": {"num_attention_heads": 4},
    "embedding": {"max_seq_length": 16},
}
VOCAB = 64
BATCH, SEQ = 2, 16

GOLDENS = {
    "v2": {
        "crammed-bert": ("crammed-bert", 0.25),
        "izsak-v2": ("crammed-large-izsak", 0.25),
    },
    "v1": {
        "bert-c5": ("bert-c5", 0.15),
        "bert-original": ("bert-original", 0.15),
        "izsak": ("bert-large-izsak", 0.15),
    },
}


def construct(version, module, cfg_arch):
    if version == "v2":
        return module.construct_crammed_bert(cfg_arch, VOCAB)
    return module.construct_scriptable_bert(cfg_arch, VOCAB)


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            elif name.endswith("scale_factor"):
                p.mul_(1.5)
            elif "layers" in name or "prediction_head" in name:
                p.mul_(4.0)


def make_labels(gen, ids, count, with_pad_target=False):
    """Exactly `count` targets; with `with_pad_target`, one of them predicts the padding token at
    [0, 3] (gradient into row 0 through the decoder)."""
    labels = torch.full_like(ids, -100)
    flat = torch.randperm(ids.numel(), generator=gen)
    if with_pad_target:
        flat = torch.cat([torch.tensor([3]), flat[flat != 3]])
    flat = flat[:count]
    labels.view(-1)[flat] = torch.randint(0, VOCAB, (count,), generator=gen)
    if with_pad_target:
        labels[0, 3] = 0
    return labels


def sparse_static(version, cfg_arch):
    return version == "v2" and bool(cfg_arch.sparse_prediction)


def make_golden(version, module, checkout, yaml_name, p, seed):
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg_arch = upstream_loader.arch_config(checkout, yaml_name, TINY, p)
    model = construct(version, module, cfg_arch).eval()
    perturb(model, gen)

    ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=gen)
    ids[0, 3] = 0
    ids[1, 7] = 0
    n_static = round(p * BATCH * SEQ)
    count = n_static if (sparse_static(version, cfg_arch) or version == "v1") else 7
    labels = make_labels(gen, ids, count, with_pad_target=True)

    seen = {}
    model.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("logits", o.detach().clone()))
    model.loss_fn.register_forward_hook(lambda m, i, o: seen.__setitem__("selected", i[1].detach().clone()))
    out = model(ids, labels=labels)
    loss = out["loss"]
    model.zero_grad()
    loss.backward()

    t = {"input_ids": ids, "labels": labels, "logits": seen["logits"],
         "selected_labels": seen["selected"], "loss": loss.detach()}
    for name, prm in model.named_parameters():
        t["param." + name] = prm.detach().clone()
        t["grad." + name] = prm.grad.detach().clone()

    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[1, SEQ - 5:] = 0
    with torch.no_grad():
        t["attention_mask"] = mask
        t["encoded_masked"] = model.encoder(ids, mask)
        if sparse_static(version, cfg_arch):
            under = make_labels(gen, ids, n_static - 2)
            t["labels_undercount"] = under
            t["loss_undercount"] = model(ids, labels=under)["loss"]
    t = {k: v.detach().clone().contiguous() for k, v in t.items()}
    container = OmegaConf.to_container(cfg_arch, resolve=True)
    container["embedding"]["vocab_size"] = VOCAB
    return t, container, list(model.state_dict().keys())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", help="path of an upstream cramming checkout (v2 HEAD or v1 Last1.13release)")
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "golden", "upstream"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    version, module, commit, describe = upstream_loader.load(args.checkout)
    os.makedirs(args.out, exist_ok=True)
    import transformers

    for i, (name, (yaml_name, p)) in enumerate(GOLDENS[version].items()):
        seed = 4321 + 10 * i + (0 if version == "v2" else 100)
        t, container, keys = make_golden(version, module, args.checkout, yaml_name, p, seed)
        path = os.path.join(args.out, name + ".safetensors")
        save_file(t, path + ".tmp")
        os.replace(path + ".tmp", path)
        meta = {
            "upstream": {
                "repository": "https://github.com/JonasGeiping/cramming",
                "commit": commit,
                "describe": describe,
                "version": version,
                "module": module.__name__.replace(".", "/") + ".py",
                "arch_yaml": f"cramming/config/arch/{yaml_name}.yaml",
                "mlm_probability": p,
                "cpu_flash_attn": version == "v1" and container["attention"]["type"] == "flash-attention-impl",
            },
            "upstream_arch": container,
            "state_dict_keys": keys,
            "batch": BATCH, "seq": SEQ, "seed": seed,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "generated_by": "reference/upstream/make_goldens.py",
        }
        jpath = os.path.join(args.out, name + ".json")
        with open(jpath + ".tmp", "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        os.replace(jpath + ".tmp", jpath)
        print(f"{name} ({version} {commit[:7]}): loss {t['loss'].item():.6f}, "
              f"{t['selected_labels'].numel()} rows, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
