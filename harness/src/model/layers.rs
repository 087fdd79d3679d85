//! Building blocks shared by the architectures: Linear, LayerNorm, embeddings, fused-QKV
//! self-attention, the (GLU) FFN and one transformer block. Variable names are the reference's
//! state-dict names (recipe.md §1.1); initialisation follows its `_init_module`.
use super::config::{ArchConfig, Nonlin, NormScheme, Positions, QkvLayout};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// `y = x Wᵀ + b`; weight `[out, in]` ~ N(0, init_std), bias zeros.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(p: &Path, in_dim: i64, out_dim: i64, bias: bool, init_std: f64) -> Self {
        let weight = p.var("weight", &[out_dim, in_dim], normal(init_std));
        let bias = bias.then(|| p.var("bias", &[out_dim], Init::Const(0.0)));
        Linear { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// LayerNorm over the last dimension, affine with bias (weight 1, bias 0 at init).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(p: &Path, dim: i64, eps: f64) -> Self {
        LayerNorm {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            bias: p.var("bias", &[dim], Init::Const(0.0)),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = *x
            .size()
            .last()
            .expect("LayerNorm input has a last dimension");
        x.layer_norm([last], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

pub(crate) fn normal(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

/// The fixed interleaved sinusoid table: `pe[p, 2i] = sin(p·w_i)`, `pe[p, 2i+1] = cos(p·w_i)`,
/// `w_i = exp(-2i·ln(10000)/dim)`; shape `[max_len, dim]`, f32.
pub fn sinusoid_table(max_len: i64, dim: i64) -> Tensor {
    let opts = (Kind::Float, tch::Device::Cpu);
    let position = Tensor::arange(max_len, opts).unsqueeze(1); // [L, 1]
    let two_i = Tensor::arange_start_step(0, dim, 2, opts); // [dim/2]
    let w = (two_i * (-(10000f64.ln()) / dim as f64)).exp();
    let angle = position * w.unsqueeze(0); // [L, dim/2]
                                           // stack on a new last axis then flatten: column 2i = sin, column 2i+1 = cos
    Tensor::stack(&[angle.sin(), angle.cos()], 2).reshape([max_len, dim])
}

/// `encoder.embedding`: word (+ token type) + position, then LayerNorm and dropout.
#[derive(Debug)]
pub struct Embedding {
    pub word: Tensor,
    /// Row 0 of the token-type table (BERT's segment A), if the arch has one.
    pub token_type: Option<Tensor>,
    pub positions: PositionEmbedding,
    pub norm: Option<LayerNorm>,
    pub dropout: f64,
    /// `padding_idx` for the word embedding's gradient (-1: none).
    pub padding_idx: i64,
}

#[derive(Debug)]
pub enum PositionEmbedding {
    /// `pos_embedding.embedding.weight` `[max_seq_len, hidden]`.
    Learned(Tensor),
    /// Fixed table (not a variable) times `pos_embedding.scale_factor` `[1]`.
    ScaledSinusoidal { table: Tensor, scale: Tensor },
}

impl Embedding {
    /// `p` is `encoder.embedding`. `zero_pad_row`: zero the padding row at init (the reference
    /// does, then a tied decoder re-initialises the whole matrix — recipe.md §1.1).
    pub fn new(p: &Path, cfg: &ArchConfig, zero_pad_row: bool) -> Self {
        let word = (p / "word_embedding").var(
            "weight",
            &[cfg.vocab_size, cfg.hidden],
            normal(cfg.init_std),
        );
        if let (Some(pad), true) = (cfg.pad_token_id, zero_pad_row) {
            tch::no_grad(|| {
                let _ = word.get(pad).zero_();
            });
        }
        let positions = match cfg.positions {
            Positions::Learned => {
                PositionEmbedding::Learned((p / "pos_embedding" / "embedding").var(
                    "weight",
                    &[cfg.max_seq_len, cfg.hidden],
                    normal(cfg.init_std),
                ))
            }
            Positions::ScaledSinusoidal => PositionEmbedding::ScaledSinusoidal {
                table: sinusoid_table(cfg.max_seq_len, cfg.hidden).to_device(p.device()),
                scale: (p / "pos_embedding").var(
                    "scale_factor",
                    &[1],
                    Init::Const(1.0 / (cfg.hidden as f64).sqrt()),
                ),
            },
        };
        let token_type = (cfg.type_vocab_size > 0).then(|| {
            (p / "token_type_embedding").var(
                "weight",
                &[cfg.type_vocab_size, cfg.hidden],
                normal(cfg.init_std),
            )
        });
        Embedding {
            word,
            token_type,
            positions,
            norm: cfg
                .embedding_norm
                .then(|| LayerNorm::new(&(p / "norm"), cfg.hidden, cfg.norm_eps)),
            dropout: cfg.embedding_dropout,
            padding_idx: cfg.pad_token_id.unwrap_or(-1),
        }
    }

    /// `[B, S]` ids → `[B, S, H]`.
    pub fn forward(&self, input_ids: &Tensor, train: bool) -> Tensor {
        let seq_len = input_ids.size()[1];
        let tokens = Tensor::embedding(&self.word, input_ids, self.padding_idx, false, false);
        let pos = match &self.positions {
            PositionEmbedding::Learned(table) => table.narrow(0, 0, seq_len),
            PositionEmbedding::ScaledSinusoidal { table, scale } => {
                table.narrow(0, 0, seq_len).to_kind(scale.kind()) * scale
            }
        };
        let x = match &self.token_type {
            Some(tt) => tokens + pos.unsqueeze(0) + tt.get(0), // every position is segment 0
            None => tokens + pos.unsqueeze(0),
        };
        let x = match &self.norm {
            Some(norm) => norm.forward(&x),
            None => x,
        };
        x.dropout(self.dropout, train)
    }
}

/// `attn`: fused QKV projection, scaled dot-product attention, output projection.
#[derive(Debug)]
pub struct SelfAttention {
    /// `attn.self_attention.query_key_value` `[3H, H]`.
    pub qkv: Linear,
    /// `attn.dense` `[H, H]`.
    pub dense: Linear,
    pub heads: i64,
    pub layout: QkvLayout,
    pub dropout: f64,
}

impl SelfAttention {
    pub fn new(p: &Path, cfg: &ArchConfig) -> Self {
        let sa = p / "self_attention";
        let h = cfg.hidden;
        let qkv = Linear::new(
            &(&sa / "query_key_value"),
            h,
            3 * h,
            cfg.qkv_bias,
            cfg.init_std,
        );
        // The reference keeps 1/sqrt(head_dim) as a persistent buffer; keep it in the checkpoint
        // (non-trainable) so state dicts match. The forward pass uses the same value.
        let norm_factor = sa.zeros_no_train("norm_factor", &[]);
        tch::no_grad(|| {
            let _ = norm_factor
                .shallow_clone()
                .fill_(1.0 / (cfg.head_dim() as f64).sqrt());
        });
        SelfAttention {
            qkv,
            dense: Linear::new(&(p / "dense"), h, h, cfg.attn_out_bias, cfg.init_std),
            heads: cfg.heads,
            layout: cfg.qkv_layout,
            dropout: cfg.attention_dropout,
        }
    }

    /// `x` `[B, S, H]`; `additive_mask` `[B, 1, 1, S]` (0 for real keys, -10000 for padding).
    pub fn forward(&self, x: &Tensor, additive_mask: Option<&Tensor>, train: bool) -> Tensor {
        let (b, s, h) = x.size3().expect("attention input is [B, S, H]");
        let head_dim = h / self.heads;
        let qkv = self.qkv.forward(x);
        // Split the fused projection into [B, heads, S, head_dim] each.
        let (q, k, v) = match self.layout {
            QkvLayout::PerHead => {
                // feature f = head*3*head_dim + {q | k | v}*head_dim + d
                let t = qkv.view([b, s, self.heads, 3 * head_dim]);
                let parts = t.split(head_dim, 3);
                (
                    parts[0].shallow_clone(),
                    parts[1].shallow_clone(),
                    parts[2].shallow_clone(),
                )
            }
            QkvLayout::Blocks => {
                // feature f = {q | k | v}*H + head*head_dim + d
                let t = qkv.view([b, s, 3, self.heads, head_dim]);
                (t.select(2, 0), t.select(2, 1), t.select(2, 2))
            }
        };
        let (q, k, v) = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
        let softmax_scale = 1.0 / (head_dim as f64).sqrt();
        let dropout_p = if train { self.dropout } else { 0.0 };
        // Through the one attention call of the models (the backend is libtorch's switches,
        // checked by `attention::check` before a phase starts).
        let y = super::attention::attend(&q, &k, &v, additive_mask, dropout_p, softmax_scale)
            .unwrap_or_else(|e| panic!("scaled_dot_product_attention failed: {e}"));
        // [B, heads, S, head_dim] → [B, S, H], heads concatenated.
        let y = y.transpose(1, 2).reshape([b, s, h]);
        self.dense.forward(&y)
    }
}

/// `ffn`: `dense_in` → GELU (or GELU-GLU) → `dense_out`.
#[derive(Debug)]
pub struct Ffn {
    pub dense_in: Linear,
    pub dense_out: Linear,
    pub nonlin: Nonlin,
}

impl Ffn {
    pub fn new(p: &Path, cfg: &ArchConfig) -> Self {
        Ffn {
            dense_in: Linear::new(
                &(p / "dense_in"),
                cfg.hidden,
                cfg.intermediate,
                cfg.ffn_bias,
                cfg.init_std,
            ),
            dense_out: Linear::new(
                &(p / "dense_out"),
                cfg.ffn_out_in(),
                cfg.hidden,
                cfg.ffn_bias,
                cfg.init_std,
            ),
            nonlin: cfg.nonlin,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let u = self.dense_in.forward(x);
        let y = match self.nonlin {
            Nonlin::Gelu => u.gelu("none"),
            Nonlin::GeluGlu => {
                // first half `a` is the linear gate input, second half `g` goes through GELU
                let halves = u.chunk(2, -1);
                halves[1].gelu("none") * &halves[0]
            }
        };
        self.dense_out.forward(&y)
    }
}

/// `encoder.layers.{i}`: attention and FFN sublayers with pre- or post-LN residuals.
#[derive(Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: SelfAttention,
    pub norm2: LayerNorm,
    pub ffn: Ffn,
    pub scheme: NormScheme,
    pub dropout: f64,
}

impl Block {
    pub fn new(p: &Path, cfg: &ArchConfig) -> Self {
        Block {
            norm1: LayerNorm::new(&(p / "norm1"), cfg.hidden, cfg.norm_eps),
            attn: SelfAttention::new(&(p / "attn"), cfg),
            norm2: LayerNorm::new(&(p / "norm2"), cfg.hidden, cfg.norm_eps),
            ffn: Ffn::new(&(p / "ffn"), cfg),
            scheme: cfg.norm,
            dropout: cfg.hidden_dropout,
        }
    }

    pub fn forward(&self, x: &Tensor, additive_mask: Option<&Tensor>, train: bool) -> Tensor {
        let p = self.dropout;
        match self.scheme {
            NormScheme::Pre => {
                let x = x + self
                    .attn
                    .forward(&self.norm1.forward(x), additive_mask, train)
                    .dropout(p, train);
                &x + self.ffn.forward(&self.norm2.forward(&x)).dropout(p, train)
            }
            NormScheme::Post => {
                let x = self
                    .norm1
                    .forward(&(x + self.attn.forward(x, additive_mask, train).dropout(p, train)));
                self.norm2
                    .forward(&(&x + self.ffn.forward(&x).dropout(p, train)))
            }
        }
    }
}
