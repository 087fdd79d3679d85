//! `[arch]`: every architecture switch of upstream `cramming/config/arch/` (JonasGeiping/cramming 196c991; v1 at Last1.13release), with presets for the four recipes.
//!
//! A recipe's `[arch]` table names a `kind` (default `crammed-bert`); every other key overrides
//! that kind's preset. So `kind = "bert-original"` alone gives post-LN BERT-base, and the tiny
//! CPU variants write `kind = "crammed-bert"` plus `hidden`, `layers`, … . Serialising an
//! [`ArchConfig`] writes every field (the resolved recipe), and that reads back unchanged.
use crate::error::Error;
use serde::{Deserialize, Serialize};

/// Architecture family; selects the preset that the other `[arch]` keys override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchKind {
    /// v2 `cramming/config/arch/crammed-bert.yaml` (JonasGeiping/cramming 196c991).
    CrammedBert,
    /// v1 `cramming/config/arch/bert-c5.yaml` (JonasGeiping/cramming Last1.13release).
    BertC5,
    /// v1 `cramming/config/arch/bert-original.yaml` (JonasGeiping/cramming Last1.13release): post-LN BERT-base MLM.
    BertOriginal,
    /// v1 `cramming/config/arch/bert-large-izsak.yaml` (JonasGeiping/cramming Last1.13release): 24 × 1024 pre-LN.
    Izsak,
}

/// Where the LayerNorms sit in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormScheme {
    /// `x + f(LN(x))` (crammed-bert, izsak).
    Pre,
    /// `LN(x + f(x))` (original BERT).
    Post,
}

/// The FFN nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nonlin {
    /// Exact (erf) GELU between the two FFN matrices.
    Gelu,
    /// `GELU(second half) * first half` of the `intermediate`-wide projection, which halves the
    /// width going into `dense_out` (no compensation, as the reference).
    GeluGlu,
}

/// Position information added to the token embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// A learned `[max_seq_len, hidden]` table.
    Learned,
    /// Fixed interleaved sin/cos table times one learnable scalar initialised to 1/sqrt(hidden).
    ScaledSinusoidal,
}

/// What sits between the encoder output and the decoder (`prediction_head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadTransform {
    /// Identity (crammed-bert's `skip_head_transform`).
    None,
    /// A hidden×hidden Linear, no nonlinearity or norm (bert-c5: v1 still builds it).
    Linear,
    /// BERT's Linear + GELU + LayerNorm.
    Bert,
}

/// Feature layout of the fused QKV projection's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QkvLayout {
    /// `f = head*3*head_dim + {q: 0.., k: head_dim.., v: 2*head_dim..}` (v2 `SeqFirstSelfAttention`).
    PerHead,
    /// `(three heads head_dim)`: all q, then all k, then all v (v1 FlashMHA `Wqkv`).
    Blocks,
}

/// The `[arch]` recipe table, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ArchOverrides")]
pub struct ArchConfig {
    /// Architecture family (names the preset the recipe started from).
    pub kind: ArchKind,
    /// Token vocabulary (from the tokenizer; 32768 for the Pile/C4 WordPiece builds).
    pub vocab_size: i64,
    /// Model width (embedding dim = hidden).
    pub hidden: i64,
    /// Number of transformer blocks.
    pub layers: i64,
    /// Attention heads; head_dim = hidden / heads.
    pub heads: i64,
    /// Width of the FFN's first projection (GELU-GLU halves it for the second).
    pub intermediate: i64,
    /// Longest sequence (size of the position table).
    pub max_seq_len: i64,
    /// Pre-LN or post-LN blocks.
    pub norm: NormScheme,
    /// LayerNorm epsilon (all LayerNorms of the model).
    pub norm_eps: f64,
    /// Bias on the fused QKV projection.
    pub qkv_bias: bool,
    /// Bias on the attention output projection (`attn.dense`).
    pub attn_out_bias: bool,
    /// Biases on both FFN projections.
    pub ffn_bias: bool,
    /// Bias on the prediction-head Linear (`linear` / `bert` head transform).
    pub head_bias: bool,
    /// Bias on the decoder (vocabulary projection).
    pub decoder_bias: bool,
    /// FFN nonlinearity.
    pub nonlin: Nonlin,
    /// Positional embedding.
    pub positions: Positions,
    /// Token-type embedding rows (BERT's segment embedding; 0 = none). Token type 0 is added
    /// to every position (the MLM inputs have one segment).
    pub type_vocab_size: i64,
    /// LayerNorm after the embedding sum.
    pub embedding_norm: bool,
    /// LayerNorm after the last block.
    pub final_norm: bool,
    /// Prediction-head transform before the decoder.
    pub head: HeadTransform,
    /// Decoder weight is the word embedding (no second variable).
    pub tie_weights: bool,
    /// Fraction of positions the loss is computed on (`None`: full logits, CE ignoring -100).
    /// Written as `false` when off (TOML has no null).
    #[serde(serialize_with = "opt_or_false")]
    pub sparse_prediction: Option<f64>,
    /// With `sparse_prediction`: select exactly `round(p·B·S)` positions (v2 argsort trick,
    /// static shapes) instead of exactly the masked ones (v1 `outputs[labels != -100]`).
    pub sparse_static: bool,
    /// Fused QKV feature layout.
    pub qkv_layout: QkvLayout,
    /// Dropout on residual branches (training only).
    pub hidden_dropout: f64,
    /// Dropout on attention probabilities (training only).
    pub attention_dropout: f64,
    /// Dropout after the embedding (LayerNorm) (training only).
    pub embedding_dropout: f64,
    /// Std of the N(0, std) init of every Linear and Embedding weight.
    pub init_std: f64,
    /// Padding token: its embedding row gets no input-side gradient (`padding_idx`) and is zeroed
    /// at init unless the tied decoder re-initialises it (upstream `cramming/architectures/crammed_bert.py`, JonasGeiping/cramming 196c991). `None` (written
    /// `false`): no padding row.
    #[serde(serialize_with = "opt_or_false")]
    pub pad_token_id: Option<i64>,
}

/// Serialise `None` as `false`, `Some(v)` as `v`.
fn opt_or_false<T: Serialize, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) => x.serialize(s),
        None => s.serialize_bool(false),
    }
}

impl Default for ArchConfig {
    /// The crammed-bert v2 architecture.
    fn default() -> Self {
        ArchConfig::for_kind(ArchKind::CrammedBert)
    }
}

/// Names accepted by [`ArchConfig::preset`].
pub const PRESETS: &[&str] = &[
    "crammed-bert",
    "bert-c5",
    "bert-original",
    "izsak",
    "crammed-bert-tiny",
    "bert-c5-tiny",
    "bert-original-tiny",
    "izsak-tiny",
];

impl ArchConfig {
    /// The full-size preset of a kind (the upstream `cramming/config/arch/` files named on [`ArchKind`]).
    pub fn for_kind(kind: ArchKind) -> Self {
        let crammed = ArchConfig {
            kind,
            vocab_size: 32768,
            hidden: 768,
            layers: 16,
            heads: 12,
            intermediate: 3072,
            max_seq_len: 128,
            norm: NormScheme::Pre,
            norm_eps: 1e-12,
            qkv_bias: false,
            attn_out_bias: false,
            ffn_bias: false,
            head_bias: false,
            decoder_bias: false,
            nonlin: Nonlin::GeluGlu,
            positions: Positions::ScaledSinusoidal,
            type_vocab_size: 0,
            embedding_norm: true,
            final_norm: true,
            head: HeadTransform::None,
            tie_weights: true,
            sparse_prediction: Some(0.25),
            sparse_static: true,
            qkv_layout: QkvLayout::PerHead,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            embedding_dropout: 0.1,
            init_std: 0.02,
            pad_token_id: Some(crate::data::tokenizer::special::PAD as i64),
        };
        match kind {
            ArchKind::CrammedBert => crammed,
            ArchKind::BertC5 => ArchConfig {
                head: HeadTransform::Linear,
                sparse_prediction: Some(0.15),
                sparse_static: false,
                qkv_layout: QkvLayout::Blocks,
                ..crammed
            },
            ArchKind::BertOriginal => ArchConfig {
                layers: 12,
                max_seq_len: 512,
                norm: NormScheme::Post,
                qkv_bias: true,
                attn_out_bias: true,
                ffn_bias: true,
                head_bias: true,
                decoder_bias: true,
                nonlin: Nonlin::Gelu,
                positions: Positions::Learned,
                type_vocab_size: 2,
                final_norm: false,
                head: HeadTransform::Bert,
                sparse_prediction: None,
                sparse_static: false,
                ..crammed
            },
            ArchKind::Izsak => ArchConfig {
                hidden: 1024,
                layers: 24,
                heads: 16,
                intermediate: 4096,
                norm_eps: 1e-6,
                qkv_bias: true,
                attn_out_bias: true,
                ffn_bias: true,
                head_bias: true,
                decoder_bias: true,
                nonlin: Nonlin::Gelu,
                positions: Positions::Learned,
                final_norm: false,
                head: HeadTransform::Bert,
                // v1's `ScriptableMaskedLM._forward_dynamic` (`cramming/architectures/
                // scriptable_bert.py` at Last1.13release) decodes exactly the masked positions;
                // the preset follows v1 (`arch/bert-large-izsak.yaml`, v1 masking and no-decay
                // list in the izsak-2021 recipe). A static row count is only exact with v2's
                // exact-count masking (v2's `crammed-large-izsak.yaml`).
                sparse_prediction: Some(0.15),
                sparse_static: false,
                ..crammed
            },
        }
    }

    /// A named preset: a kind (`crammed-bert`, `bert-c5`, `bert-original`, `izsak`) or its
    /// `-tiny` CPU variant (vocab 128, hidden 64, 2 layers, 4 heads, FFN 256, 64 positions).
    pub fn preset(name: &str) -> anyhow::Result<Self> {
        let (base, tiny) = match name.strip_suffix("-tiny") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let kind: ArchKind = serde_json::from_value(serde_json::Value::String(base.into()))
            .map_err(|_| {
                Error::input(
                    "arch preset",
                    format!(
                        "unknown preset {name:?} (expected one of {})",
                        PRESETS.join(", ")
                    ),
                )
            })?;
        let mut cfg = ArchConfig::for_kind(kind);
        if tiny {
            cfg.vocab_size = 128;
            cfg.hidden = 64;
            cfg.layers = 2;
            cfg.heads = 4;
            cfg.intermediate = 256;
            cfg.max_seq_len = 64;
        }
        Ok(cfg)
    }

    /// Head width (hidden / heads).
    pub fn head_dim(&self) -> i64 {
        self.hidden / self.heads
    }

    /// Width entering the FFN's output projection.
    pub fn ffn_out_in(&self) -> i64 {
        match self.nonlin {
            Nonlin::Gelu => self.intermediate,
            Nonlin::GeluGlu => self.intermediate / 2,
        }
    }

    /// An upper estimate of the number of parameters (embeddings, blocks, head and decoder),
    /// in floating point so that no product of untrusted sizes overflows.
    pub fn parameter_estimate(&self) -> f64 {
        let (v, h, l, i, s, t) = (
            self.vocab_size as f64,
            self.hidden as f64,
            self.layers as f64,
            self.intermediate as f64,
            self.max_seq_len as f64,
            self.type_vocab_size as f64,
        );
        let embeddings = (v + s + t) * h;
        // QKV, attention output, two FFN projections, norms and biases.
        let block = 4.0 * h * h + 2.0 * h * i + 10.0 * h + i;
        let head = h * h + 4.0 * h + if self.tie_weights { 0.0 } else { v * h } + v;
        embeddings + l * block + head
    }

    /// Reject configurations the model cannot build, or that are larger than any model
    /// crambench trains ([`MAX_DIMS`], [`MAX_PARAMETERS`]): sizes from a recipe or a checkpoint's
    /// `arch.json` are bounded here, before anything allocates them.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, MAX_DIMS.vocab_size),
            ("hidden", self.hidden, MAX_DIMS.hidden),
            ("layers", self.layers, MAX_DIMS.layers),
            ("heads", self.heads, MAX_DIMS.heads),
            ("intermediate", self.intermediate, MAX_DIMS.intermediate),
            ("max_seq_len", self.max_seq_len, MAX_DIMS.max_seq_len),
            (
                "type_vocab_size",
                self.type_vocab_size,
                MAX_DIMS.type_vocab_size,
            ),
        ] {
            if v > max {
                return Err(format!("{name} = {v} is larger than the limit {max}"));
            }
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("intermediate", self.intermediate),
            ("max_seq_len", self.max_seq_len),
        ];
        for (name, v) in positive {
            if v <= 0 {
                return Err(format!("{name} must be positive, got {v}"));
            }
        }
        if self.hidden % self.heads != 0 {
            return Err(format!(
                "hidden ({}) must be a multiple of heads ({})",
                self.hidden, self.heads
            ));
        }
        if self.nonlin == Nonlin::GeluGlu && self.intermediate % 2 != 0 {
            return Err(format!(
                "gelu-glu needs an even intermediate, got {}",
                self.intermediate
            ));
        }
        if self.positions == Positions::ScaledSinusoidal && self.hidden % 2 != 0 {
            return Err(format!(
                "scaled-sinusoidal positions need an even hidden, got {}",
                self.hidden
            ));
        }
        if self.type_vocab_size < 0 {
            return Err("type_vocab_size must be >= 0".into());
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(format!("norm_eps must be positive, got {}", self.norm_eps));
        }
        if !(self.init_std >= 0.0 && self.init_std.is_finite()) {
            return Err(format!("init_std must be >= 0, got {}", self.init_std));
        }
        if let Some(p) = self.sparse_prediction {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("sparse_prediction must be in (0, 1], got {p}"));
            }
        }
        for (name, p) in [
            ("hidden_dropout", self.hidden_dropout),
            ("attention_dropout", self.attention_dropout),
            ("embedding_dropout", self.embedding_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        if let Some(pad) = self.pad_token_id {
            if pad < 0 || pad >= self.vocab_size {
                return Err(format!(
                    "pad_token_id {pad} is outside the vocabulary (size {})",
                    self.vocab_size
                ));
            }
        }
        let params = self.parameter_estimate();
        if params > MAX_PARAMETERS {
            return Err(format!(
                "about {params:.3e} parameters (vocab_size {}, hidden {}, layers {}, intermediate {}); \
                 the limit is {MAX_PARAMETERS:.3e}",
                self.vocab_size, self.hidden, self.layers, self.intermediate
            ));
        }
        Ok(())
    }
}

/// Largest value of each size of [`ArchConfig`].
pub struct MaxDims {
    pub vocab_size: i64,
    pub hidden: i64,
    pub layers: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub max_seq_len: i64,
    pub type_vocab_size: i64,
}

/// The bounds [`ArchConfig::validate`] enforces: far above every recipe of the paper (BERT-large
/// is 1024 wide, 24 deep), far below what would overflow a shape or an allocation size.
pub const MAX_DIMS: MaxDims = MaxDims {
    vocab_size: 1 << 24,
    hidden: 1 << 14,
    layers: 1 << 10,
    heads: 1 << 10,
    intermediate: 1 << 16,
    max_seq_len: 1 << 16,
    type_vocab_size: 1 << 10,
};

/// Largest model accepted, in parameters (≈ 4.3e9; BERT-large has 3.4e8).
pub const MAX_PARAMETERS: f64 = (1u64 << 32) as f64;

/// The `[arch]` table as written: `kind` plus overrides of its preset. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchOverrides {
    kind: Option<ArchKind>,
    vocab_size: Option<i64>,
    hidden: Option<i64>,
    layers: Option<i64>,
    heads: Option<i64>,
    intermediate: Option<i64>,
    max_seq_len: Option<i64>,
    norm: Option<NormScheme>,
    norm_eps: Option<f64>,
    qkv_bias: Option<bool>,
    attn_out_bias: Option<bool>,
    ffn_bias: Option<bool>,
    head_bias: Option<bool>,
    decoder_bias: Option<bool>,
    nonlin: Option<Nonlin>,
    positions: Option<Positions>,
    type_vocab_size: Option<i64>,
    embedding_norm: Option<bool>,
    final_norm: Option<bool>,
    head: Option<HeadTransform>,
    tie_weights: Option<bool>,
    /// `false` or absent-from-preset means none; a number is the fraction.
    sparse_prediction: Option<SparseSetting>,
    sparse_static: Option<bool>,
    qkv_layout: Option<QkvLayout>,
    hidden_dropout: Option<f64>,
    attention_dropout: Option<f64>,
    embedding_dropout: Option<f64>,
    init_std: Option<f64>,
    pad_token_id: Option<PadSetting>,
}

/// `sparse_prediction = 0.25` or `false` (TOML has no null).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SparseSetting {
    Off(bool),
    Fraction(f64),
}

/// `pad_token_id = 0` or `false` (no padding row).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PadSetting {
    Off(bool),
    Id(i64),
}

impl TryFrom<ArchOverrides> for ArchConfig {
    type Error = String;
    fn try_from(o: ArchOverrides) -> Result<Self, String> {
        let mut c = ArchConfig::for_kind(o.kind.unwrap_or(ArchKind::CrammedBert));
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = o.$f { c.$f = v; } )* };
        }
        set!(
            vocab_size,
            hidden,
            layers,
            heads,
            intermediate,
            max_seq_len,
            norm,
            norm_eps,
            qkv_bias,
            attn_out_bias,
            ffn_bias,
            head_bias,
            decoder_bias,
            nonlin,
            positions,
            type_vocab_size,
            embedding_norm,
            final_norm,
            head,
            tie_weights,
            sparse_static,
            qkv_layout,
            hidden_dropout,
            attention_dropout,
            embedding_dropout,
            init_std
        );
        match o.sparse_prediction {
            None => {}
            Some(SparseSetting::Off(false)) => c.sparse_prediction = None,
            Some(SparseSetting::Off(true)) => {
                return Err("sparse_prediction: give the fraction (e.g. 0.25) or false".into())
            }
            Some(SparseSetting::Fraction(p)) => c.sparse_prediction = Some(p),
        }
        match o.pad_token_id {
            None => {}
            Some(PadSetting::Off(false)) => c.pad_token_id = None,
            Some(PadSetting::Off(true)) => return Err("pad_token_id: give the id or false".into()),
            Some(PadSetting::Id(id)) => c.pad_token_id = Some(id),
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_read_back_from_their_json() {
        let mut all: Vec<ArchConfig> = PRESETS
            .iter()
            .map(|n| ArchConfig::preset(n).unwrap())
            .collect();
        all.push(ArchConfig {
            sparse_prediction: None,
            pad_token_id: None,
            ..ArchConfig::default()
        });
        for c in all {
            let name = c.kind;
            let v = serde_json::to_value(&c).unwrap();
            let back: ArchConfig = serde_json::from_value(v).unwrap();
            assert_eq!(back, c, "{name:?}");
            let t = toml::to_string(&c).unwrap();
            let back: ArchConfig = toml::from_str(&t).unwrap();
            assert_eq!(back, c, "{name:?} via TOML");
        }
    }

    #[test]
    fn kind_selects_preset_and_keys_override() {
        let c: ArchConfig =
            toml::from_str("kind = \"bert-original\"\nlayers = 2\nsparse_prediction = false")
                .unwrap();
        assert_eq!(c.norm, NormScheme::Post);
        assert_eq!(c.layers, 2);
        assert_eq!(c.sparse_prediction, None);
        let d: ArchConfig = toml::from_str("").unwrap();
        assert_eq!(d, ArchConfig::for_kind(ArchKind::CrammedBert));
        let e: ArchConfig =
            toml::from_str("sparse_prediction = 0.15\npad_token_id = false").unwrap();
        assert_eq!(e.sparse_prediction, Some(0.15));
        assert_eq!(e.pad_token_id, None);
    }

    #[test]
    fn unknown_and_invalid_keys_are_errors() {
        let err = toml::from_str::<ArchConfig>("hiden = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hiden"), "{err}");
        assert!(toml::from_str::<ArchConfig>("hidden = 100\nheads = 12").is_err());
        assert!(toml::from_str::<ArchConfig>("sparse_prediction = 1.5").is_err());
        assert!(toml::from_str::<ArchConfig>("norm = \"middle\"").is_err());
        assert!(ArchConfig::preset("gpt2").is_err());
    }

    #[test]
    fn sizes_are_bounded_before_anything_allocates() {
        for (text, field) in [
            (
                "hidden = 1000000000
heads = 1",
                "hidden",
            ),
            ("vocab_size = 9223372036854775807", "vocab_size"),
            ("layers = 100000", "layers"),
            ("intermediate = 1000000000", "intermediate"),
            ("max_seq_len = 1000000000", "max_seq_len"),
            ("type_vocab_size = 1000000000", "type_vocab_size"),
            // Every size within its bound, the product beyond the parameter limit.
            (
                "hidden = 16384
heads = 16
layers = 1024",
                "parameters",
            ),
        ] {
            let e = toml::from_str::<ArchConfig>(text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("limit"), "{text}: {e}");
            // The same bound applies to a checkpoint's arch.json.
            let mut v = serde_json::to_value(ArchConfig::default()).unwrap();
            for line in text.lines() {
                let (k, n) = line.split_once(" = ").unwrap();
                v[k] = serde_json::Value::from(n.parse::<i64>().unwrap());
            }
            let e = serde_json::from_value::<ArchConfig>(v)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(field) && e.contains("limit"),
                "{text} (json): {e}"
            );
        }
        for name in PRESETS {
            let c = ArchConfig::preset(name).unwrap();
            assert!(c.parameter_estimate() < MAX_PARAMETERS / 10.0, "{name}");
        }
    }
}
