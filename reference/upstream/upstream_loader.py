"""Import upstream cramming's architecture modules from a checkout, and nothing else of it.

`cramming/__init__.py` (and `cramming/architectures/__init__.py`, `cramming/data/__init__.py`)
pull in the whole training stack (datasets, evaluate, pynvml, hydra launchers). The model code
itself needs only torch, transformers, omegaconf and einops, so the packages `cramming`,
`cramming.architectures` and `cramming.data` are registered as bare packages pointing at the
checkout's folders: importing `cramming.architectures.crammed_bert` (v2) or
`cramming.architectures.scriptable_bert` (v1) then executes exactly upstream's module files and
the files they import, unmodified. Nothing of upstream is copied into this project.

v1's bert-c5 uses `flash_attn.flash_attention.FlashMHA` (a CUDA kernel package, not upstream
code). On CPU it is replaced by `cpu_flash_attn`: the same module structure (`Wqkv`,
`inner_attn`, `out_proj`, `num_heads`, `causal`) and exact softmax attention, which is what the
kernel computes; like the kernel as upstream calls it, it never sees a key-padding mask.
"""
import os
import subprocess
import sys
import types

import torch


def checkout_commit(checkout):
    """(commit, describe) of the upstream checkout."""
    git = ["git", "-C", checkout]
    commit = subprocess.check_output(git + ["rev-parse", "HEAD"], text=True).strip()
    describe = subprocess.run(git + ["describe", "--tags", "--always"], text=True,
                              capture_output=True).stdout.strip()
    return commit, describe


def version_of(checkout):
    arch = os.path.join(checkout, "cramming", "architectures")
    if os.path.isfile(os.path.join(arch, "crammed_bert.py")):
        return "v2"
    if os.path.isfile(os.path.join(arch, "scriptable_bert.py")):
        return "v1"
    raise SystemExit(f"{checkout}: not an upstream cramming checkout (no cramming/architectures/"
                     "crammed_bert.py or scriptable_bert.py)")


class _FlashAttention(torch.nn.Module):
    """flash_attn 0.2 `FlashAttention` semantics: qkv [B, S, 3, H, D] -> context [B, S, H, D]."""

    def __init__(self, softmax_scale=None, attention_dropout=0.0):
        super().__init__()
        self.softmax_scale = softmax_scale
        self.dropout_p = attention_dropout

    def forward(self, qkv, key_padding_mask=None, causal=False, cu_seqlens=None, max_s=None,
                need_weights=False):
        q, k, v = qkv.unbind(dim=2)  # [B, S, H, D]
        scale = self.softmax_scale or q.shape[-1] ** -0.5
        scores = torch.einsum("bshd,bthd->bhst", q, k) * scale
        if causal:
            raise NotImplementedError("causal attention is not used by any crambench arch")
        probs = torch.softmax(scores, dim=-1)
        probs = torch.nn.functional.dropout(probs, self.dropout_p if self.training else 0.0)
        return torch.einsum("bhst,bthd->bshd", probs, v), None


class _FlashMHA(torch.nn.Module):
    """flash_attn 0.2 `FlashMHA` structure (parameter names are what upstream's state dict has)."""

    def __init__(self, embed_dim, num_heads, bias=True, batch_first=True, attention_dropout=0.0,
                 causal=False, device=None, dtype=None, **kwargs):
        super().__init__()
        assert batch_first
        self.embed_dim = embed_dim
        self.causal = causal
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.Wqkv = torch.nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.inner_attn = _FlashAttention(attention_dropout=attention_dropout)
        self.out_proj = torch.nn.Linear(embed_dim, embed_dim, bias=bias)


def _install_cpu_flash_attn():
    pkg = types.ModuleType("flash_attn")
    pkg.__path__ = []
    mod = types.ModuleType("flash_attn.flash_attention")
    mod.FlashMHA = _FlashMHA
    mod.FlashAttention = _FlashAttention
    pkg.flash_attention = mod
    sys.modules["flash_attn"] = pkg
    sys.modules["flash_attn.flash_attention"] = mod


def load(checkout):
    """Import upstream's architecture module; returns (version, module, commit, describe)."""
    checkout = os.path.abspath(checkout)
    version = version_of(checkout)
    root = os.path.join(checkout, "cramming")
    for name, sub in [("cramming", ""), ("cramming.architectures", "architectures"),
                      ("cramming.data", "data")]:
        if name in sys.modules:
            raise SystemExit("upstream cramming is already imported in this process")
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, sub) if sub else root]
        sys.modules[name] = m
    if version == "v1":
        # transformers probes for flash_attn on import: let it see the real environment first.
        import transformers.modeling_utils  # noqa: F401
        import transformers.models.bert.modeling_bert  # noqa: F401

        _install_cpu_flash_attn()
        import importlib
        module = importlib.import_module("cramming.architectures.scriptable_bert")
    else:
        import importlib
        module = importlib.import_module("cramming.architectures.crammed_bert")
    commit, describe = checkout_commit(checkout)
    return version, module, commit, describe


def arch_config(checkout, yaml_name, overrides, mlm_probability):
    """Upstream's `arch/<yaml_name>.yaml`, tiny overrides merged, interpolations resolved (what
    upstream's `model_config.json` records: `OmegaConf.to_container(cfg_arch, resolve=True)`)."""
    from omegaconf import OmegaConf

    arch = OmegaConf.load(os.path.join(checkout, "cramming", "config", "arch", yaml_name + ".yaml"))
    root = OmegaConf.create({"arch": arch, "train": {"objective": {"mlm_probability": mlm_probability}}})
    root.arch = OmegaConf.merge(root.arch, OmegaConf.create(overrides))
    return root.arch
