"""A small PyTorch reference of the crammed-BERT family, written from recipe.md §1.

Used only by tests (goldens, checkpoint interop) and benchmarks (bench_step.py); never by the
harness itself. It follows the upstream code's structure (github.com/JonasGeiping/cramming):
sequence-first attention with an explicit softmax and the additive -10000 mask, `_init_module`
style initialisation, the `argsort(labels != -100)[-n:]` sparse-prediction trick. Parameter and
buffer names are the upstream state-dict names (recipe.md §1.1).

Architectures are configured by a dict with the same keys as crambench's `[arch]` table
(`harness/src/model/config.rs`); see `PRESETS` below.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

# recipe.md §1.1 (crammed-bert, v2)
CRAMMED_BERT = dict(
    kind="crammed-bert", vocab_size=32768, hidden=768, layers=16, heads=12, intermediate=3072,
    max_seq_len=128, norm="pre", norm_eps=1e-12, qkv_bias=False, attn_out_bias=False,
    ffn_bias=False, head_bias=False, decoder_bias=False, nonlin="gelu-glu",
    positions="scaled-sinusoidal", type_vocab_size=0, embedding_norm=True, final_norm=True,
    head="none", tie_weights=True, sparse_prediction=0.25, sparse_static=True,
    qkv_layout="per-head", hidden_dropout=0.1, attention_dropout=0.1, embedding_dropout=0.1,
    init_std=0.02, pad_token_id=0,
)
PRESETS = {
    "crammed-bert": CRAMMED_BERT,
    # recipe.md §1.2: v1 keeps a bias-free 768x768 prediction head, FlashMHA's (three h d)
    # Wqkv layout and dynamic sparse prediction on exactly the masked tokens.
    "bert-c5": dict(CRAMMED_BERT, kind="bert-c5", head="linear", sparse_prediction=0.15,
                    sparse_static=False, qkv_layout="blocks"),
    # recipe.md §1.4: post-LN BERT-base, everything biased, learned positions 512, BERT head,
    # full logits; token-type table of 2 as HF BertForMaskedLM.
    "bert-original": dict(CRAMMED_BERT, kind="bert-original", layers=12, max_seq_len=512,
                          norm="post", qkv_bias=True, attn_out_bias=True, ffn_bias=True,
                          head_bias=True, decoder_bias=True, nonlin="gelu", positions="learned",
                          type_vocab_size=2, final_norm=False, head="bert",
                          sparse_prediction=False, sparse_static=False),
    # recipe.md §1.4: Izsak et al. 24 x 1024, pre-LN eps 1e-6, no final norm.
    "izsak": dict(CRAMMED_BERT, kind="izsak", hidden=1024, layers=24, heads=16,
                  intermediate=4096, norm_eps=1e-6, qkv_bias=True, attn_out_bias=True,
                  ffn_bias=True, head_bias=True, decoder_bias=True, nonlin="gelu",
                  positions="learned", final_norm=False, head="bert", sparse_prediction=0.15,
                  sparse_static=True),
}


def preset(name):
    """A named preset; `<kind>-tiny` shrinks it for CPU tests."""
    if name.endswith("-tiny"):
        return dict(PRESETS[name[:-5]], vocab_size=128, hidden=64, layers=2, heads=4,
                    intermediate=256, max_seq_len=64)
    return dict(PRESETS[name])


class ScaledSinosoidal(nn.Module):
    """Fixed sin/cos table (interleaved: even columns sin, odd cos) times a learned scalar."""

    def __init__(self, dim, max_len):
        super().__init__()
        self.scale_factor = nn.Parameter(torch.tensor([1.0 / dim ** 0.5]))
        pe = torch.zeros(max_len, dim)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, seq_len):
        return self.pe[:seq_len] * self.scale_factor


class LearnablePositional(nn.Module):
    def __init__(self, dim, max_len):
        super().__init__()
        self.embedding = nn.Embedding(max_len, dim)

    def forward(self, seq_len):
        return self.embedding.weight[:seq_len]


class EmbeddingComponent(nn.Module):
    def __init__(self, c):
        super().__init__()
        pad = c["pad_token_id"] if c["pad_token_id"] is not False else None
        self.word_embedding = nn.Embedding(c["vocab_size"], c["hidden"], padding_idx=pad)
        if c["positions"] == "scaled-sinusoidal":
            self.pos_embedding = ScaledSinosoidal(c["hidden"], c["max_seq_len"])
        else:
            self.pos_embedding = LearnablePositional(c["hidden"], c["max_seq_len"])
        if c["type_vocab_size"] > 0:
            self.token_type_embedding = nn.Embedding(c["type_vocab_size"], c["hidden"])
        else:
            self.token_type_embedding = None
        self.norm = nn.LayerNorm(c["hidden"], eps=c["norm_eps"]) if c["embedding_norm"] else nn.Identity()
        self.dropout = nn.Dropout(c["embedding_dropout"])

    def forward(self, input_ids):
        x = self.word_embedding(input_ids) + self.pos_embedding(input_ids.shape[1])
        if self.token_type_embedding is not None:
            x = x + self.token_type_embedding(torch.zeros_like(input_ids))
        return self.dropout(self.norm(x))


class SeqFirstSelfAttention(nn.Module):
    """Fused QKV on [S, B, H] inputs; explicit softmax with the additive -10000 padding mask.
    Set the class attribute `use_sdpa` to use F.scaled_dot_product_attention instead (bench)."""

    use_sdpa = False

    def __init__(self, c):
        super().__init__()
        self.heads = c["heads"]
        self.head_dim = c["hidden"] // c["heads"]
        self.layout = c["qkv_layout"]
        self.query_key_value = nn.Linear(c["hidden"], 3 * c["hidden"], bias=c["qkv_bias"])
        self.register_buffer("norm_factor", torch.tensor(self.head_dim).rsqrt())
        # The same f32 value as a Python float, so that the SDPA path reads no tensor on the host
        # (`.item()` in forward is a device synchronisation on CUDA and breaks torch.compile).
        self.sdpa_scale = float(torch.tensor(self.head_dim).rsqrt())
        self.dropout = nn.Dropout(c["attention_dropout"])

    def forward(self, x, attention_mask=None):
        S, B, _ = x.shape
        mixed = self.query_key_value(x)
        if self.layout == "per-head":
            mixed = mixed.view(S, B, self.heads, 3 * self.head_dim)
            q, k, v = torch.split(mixed, [self.head_dim] * 3, dim=3)
        else:  # "(three h d)"
            q, k, v = mixed.view(S, B, 3, self.heads, self.head_dim).unbind(2)
        if self.use_sdpa:  # benchmarks: the fused kernel, same mathematics
            q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # [B, h, S, d]
            mask = None
            if attention_mask is not None:
                mask = (1.0 - attention_mask[:, None, None, :].to(q.dtype)) * -10000.0
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.sdpa_scale,
                                                 dropout_p=self.dropout.p if self.training else 0.0)
            return ctx.permute(2, 0, 1, 3).reshape(S, B, self.heads * self.head_dim)
        # [S, B, h, d] -> [B*h, S, d]
        q, k, v = (t.permute(1, 2, 0, 3).reshape(B * self.heads, S, self.head_dim) for t in (q, k, v))
        scores = torch.bmm(q, k.transpose(1, 2)) * self.norm_factor
        scores = scores.view(B, self.heads, S, S)
        if attention_mask is not None:
            scores = scores + (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * -10000.0
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v.view(B, self.heads, S, self.head_dim))  # [B, h, S, d]
        return ctx.permute(2, 0, 1, 3).reshape(S, B, self.heads * self.head_dim)


class AttentionComponent(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attention = SeqFirstSelfAttention(c)
        self.dense = nn.Linear(c["hidden"], c["hidden"], bias=c["attn_out_bias"])

    def forward(self, x, attention_mask=None):
        return self.dense(self.self_attention(x, attention_mask))


class FFNComponent(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.glu = c["nonlin"] == "gelu-glu"
        out_in = c["intermediate"] // 2 if self.glu else c["intermediate"]
        self.dense_in = nn.Linear(c["hidden"], c["intermediate"], bias=c["ffn_bias"])
        self.dense_out = nn.Linear(out_in, c["hidden"], bias=c["ffn_bias"])

    def forward(self, x):
        x = self.dense_in(x)
        if self.glu:
            x, gate = x.chunk(2, dim=-1)  # GELUglu: GELU(second half) * first half
            x = F.gelu(gate) * x
        else:
            x = F.gelu(x)
        return self.dense_out(x)


class TransformerLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pre = c["norm"] == "pre"
        self.norm1 = nn.LayerNorm(c["hidden"], eps=c["norm_eps"])
        self.attn = AttentionComponent(c)
        self.norm2 = nn.LayerNorm(c["hidden"], eps=c["norm_eps"])
        self.ffn = FFNComponent(c)
        self.dropout = nn.Dropout(c["hidden_dropout"])

    def forward(self, x, attention_mask=None):
        if self.pre:
            x = x + self.dropout(self.attn(self.norm1(x), attention_mask))
            x = x + self.dropout(self.ffn(self.norm2(x)))
        else:
            x = self.norm1(x + self.dropout(self.attn(x, attention_mask)))
            x = self.norm2(x + self.dropout(self.ffn(x)))
        return x


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embedding = EmbeddingComponent(c)
        self.layers = nn.ModuleList([TransformerLayer(c) for _ in range(c["layers"])])
        self.final_norm = nn.LayerNorm(c["hidden"], eps=c["norm_eps"]) if c["final_norm"] else nn.Identity()

    def forward(self, input_ids, attention_mask=None):
        x = self.embedding(input_ids).transpose(0, 1).contiguous()  # sequence first
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.final_norm(x).transpose(0, 1)  # [B, S, H]


class BertHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden"], c["hidden"], bias=c["head_bias"])
        self.norm = nn.LayerNorm(c["hidden"], eps=c["norm_eps"])

    def forward(self, x):
        return self.norm(F.gelu(self.dense(x)))


class CrammedMLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfg = dict(c)
        self.encoder = Encoder(c)
        if c["head"] == "none":
            self.prediction_head = nn.Identity()
        elif c["head"] == "linear":
            self.prediction_head = nn.Linear(c["hidden"], c["hidden"], bias=c["head_bias"])
        else:
            self.prediction_head = BertHead(c)
        self.decoder = nn.Linear(c["hidden"], c["vocab_size"], bias=c["decoder_bias"])
        if c["tie_weights"]:
            self.decoder.weight = self.encoder.embedding.word_embedding.weight
        self.loss_fn = nn.CrossEntropyLoss()  # ignore_index=-100, mean
        for m in self.modules():  # module order: the tied decoder comes after the embedding
            _init_module(m, c["init_std"])

    def select(self, h, labels):
        """Flattened states and labels of the rows the loss is computed on."""
        h = h.reshape(-1, h.shape[-1])
        labels = labels.reshape(-1)
        p = self.cfg["sparse_prediction"]
        if p is False or p is None:
            return h, labels
        if self.cfg["sparse_static"]:
            n = round(p * labels.shape[0])
            idx = torch.argsort((labels != -100).int(), stable=True)[-n:]
            return h[idx], labels[idx]
        keep = labels != -100
        return h[keep], labels[keep]

    def forward(self, input_ids, labels):
        h, sel = self.select(self.encoder(input_ids), labels)
        logits = self.decoder(self.prediction_head(h))
        return logits, sel, self.loss_fn(logits, sel)


def _init_module(m, std):
    if isinstance(m, nn.Linear):
        m.weight.data.normal_(mean=0.0, std=std)
        if m.bias is not None:
            m.bias.data.zero_()
    elif isinstance(m, nn.Embedding):
        m.weight.data.normal_(mean=0.0, std=std)
        if m.padding_idx is not None:
            m.weight.data[m.padding_idx].zero_()
    elif isinstance(m, nn.LayerNorm):
        m.weight.data.fill_(1.0)
        m.bias.data.zero_()
