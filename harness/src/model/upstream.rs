//! Translation between crambench's `[arch]` / variable names and the two other layouts a
//! checkpoint of the paper's models comes in:
//!
//! * upstream cramming (JonasGeiping/cramming): the resolved `cfg_arch` container that
//!   `model_config.json` (a local save, `cramming/backend/torch_default.py::save_final_model` at
//!   196c991) or the `arch` block of a hub `config.json` (`model_type: crammedBERT`,
//!   `crammedBertConfig` in `cramming/architectures/crammed_bert.py`) holds. v2 (HEAD 196c991,
//!   `architectures: [ScriptableCrammedBERT]`, `crammed_bert.py`) and v1 (tag Last1.13release,
//!   `[ScriptableMaskedLM]`, `scriptable_bert.py`) differ in what the code does with the same
//!   keys: v2 always ties the decoder, always uses pre-LN, selects a static round(p·B·S) rows;
//!   v1 honours `tie_weights` and `norm_scheme` and decodes exactly the masked rows.
//! * Hugging Face `BertForMaskedLM` (`config.json` with `model_type: bert`).
//!
//! Every key of the source config that changes the MLM model is either translated or an error
//! naming it ([`Untranslatable`]); keys that only concern training or downstream heads are
//! listed in [`UPSTREAM_IGNORED`] / [`HF_IGNORED`].
use super::config::{
    ArchConfig, ArchKind, HeadTransform, Nonlin, NormScheme, Positions, QkvLayout,
};
use serde_json::{json, Map, Value};

/// Which code a checkpoint's weights were made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// upstream cramming v2 (`ScriptableCrammedBERT`, HEAD 196c991).
    UpstreamV2,
    /// upstream cramming v1 (`ScriptableMaskedLM`, tag Last1.13release).
    UpstreamV1,
    /// Hugging Face `BertForMaskedLM`.
    HfBert,
}

/// A config key that cannot be represented by crambench's model: `field` is its dotted path in
/// the source config (e.g. `arch.attention.rotary_embedding`).
#[derive(Debug, Clone, PartialEq)]
pub struct Untranslatable {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

type R<T> = Result<T, Untranslatable>;

fn err<T>(field: &str, message: impl Into<String>) -> R<T> {
    Err(Untranslatable {
        field: field.into(),
        message: message.into(),
    })
}

/// Upstream `cfg_arch` keys that do not change the MLM model's function (training-time
/// switches, fusion/compilation hints, the downstream classification head).
pub const UPSTREAM_IGNORED: &[&str] = &[
    "architectures",
    "gradient_checkpointing",
    "layer_fusion",
    "num_labels",
    "classification_head",
    "attention.seq_op_in_fp32",
    "attention.high_level_fusion",
    "attention.low_level_fusion",
    "attention.hybrid_layers",
    "embedding.stable_low_precision",
    "init.type",
];

/// Hugging Face `BertConfig` keys that do not change the MLM forward pass.
pub const HF_IGNORED: &[&str] = &[
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "gradient_checkpointing",
    "use_cache",
    "classifier_dropout",
    "bos_token_id",
    "eos_token_id",
    "_name_or_path",
    "id2label",
    "label2id",
    "problem_type",
    "num_labels",
];

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn req<'a>(v: &'a Value, path: &str) -> R<&'a Value> {
    match get(v, path) {
        Some(x) if !x.is_null() => Ok(x),
        _ => err(&format!("arch.{path}"), "missing"),
    }
}

fn int(v: &Value, path: &str) -> R<i64> {
    req(v, path)?.as_i64().ok_or_else(|| Untranslatable {
        field: format!("arch.{path}"),
        message: "not an integer".into(),
    })
}

fn num(v: &Value, path: &str) -> R<f64> {
    req(v, path)?.as_f64().ok_or_else(|| Untranslatable {
        field: format!("arch.{path}"),
        message: "not a number".into(),
    })
}

fn boolean(v: &Value, path: &str) -> R<bool> {
    req(v, path)?.as_bool().ok_or_else(|| Untranslatable {
        field: format!("arch.{path}"),
        message: "not true/false".into(),
    })
}

fn string<'a>(v: &'a Value, path: &str) -> R<&'a str> {
    req(v, path)?.as_str().ok_or_else(|| Untranslatable {
        field: format!("arch.{path}"),
        message: "not a string".into(),
    })
}

/// `key` must be absent, null, or equal `want` (a switch crambench has no other setting of).
fn must_be(v: &Value, path: &str, want: &Value, why: &str) -> R<()> {
    match get(v, path) {
        None | Some(Value::Null) => Ok(()),
        Some(x) if x == want => Ok(()),
        Some(x) => err(
            &format!("arch.{path}"),
            format!("{x} cannot be translated (crambench supports only {want}: {why})"),
        ),
    }
}

/// Which upstream version a `cfg_arch` container is for (its `architectures` list).
pub fn upstream_version(arch: &Value) -> R<SourceKind> {
    let names: Vec<&str> = req(arch, "architectures")?
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if names.contains(&"ScriptableCrammedBERT") {
        Ok(SourceKind::UpstreamV2)
    } else if names.contains(&"ScriptableMaskedLM") {
        Ok(SourceKind::UpstreamV1)
    } else {
        err(
            "arch.architectures",
            format!(
                "{names:?}: only ScriptableCrammedBERT (v2) and ScriptableMaskedLM (v1) are \
                 crammed BERT models crambench can load"
            ),
        )
    }
}

/// Translate upstream's `cfg_arch` container into an [`ArchConfig`].
pub fn arch_from_upstream(arch: &Value) -> R<(SourceKind, ArchConfig)> {
    let version = upstream_version(arch)?;
    let v2 = version == SourceKind::UpstreamV2;
    check_keys(arch)?;
    check_expressible(arch)?;
    let hidden = int(arch, "hidden_size")?;
    let emb_dim = int(arch, "embedding.embedding_dim")?;
    if emb_dim != hidden {
        return err(
            "arch.embedding.embedding_dim",
            format!(
                "{emb_dim} differs from hidden_size {hidden} (no input projection in crambench)"
            ),
        );
    }
    let norm = norm_scheme(arch, v2)?;
    let nonlin = match string(arch, "nonlin")? {
        "GELUglu" => Nonlin::GeluGlu,
        "GELU" => Nonlin::Gelu,
        other => return err("arch.nonlin", format!("{other:?}: only GELU and GELUglu")),
    };
    let positions = match string(arch, "embedding.pos_embedding")? {
        "scaled-sinusoidal" => Positions::ScaledSinusoidal,
        "learned" => Positions::Learned,
        other => {
            return err(
                "arch.embedding.pos_embedding",
                format!("{other:?}: only learned and scaled-sinusoidal"),
            )
        }
    };
    let qkv_layout = match string(arch, "attention.type")? {
        "self-attention" => QkvLayout::PerHead,
        "flash-attention-impl" if !v2 => QkvLayout::Blocks,
        other => {
            return err(
                "arch.attention.type",
                format!("{other:?}: only self-attention (and v1 flash-attention-impl)"),
            )
        }
    };
    let use_bias = boolean(arch, "use_bias")?;
    let skip_head = boolean(arch, "skip_head_transform")?;
    let head = match (skip_head, v2) {
        (true, true) => HeadTransform::None,
        // v1 replaces the skipped transform by a Linear (scriptable_bert.py).
        (true, false) => HeadTransform::Linear,
        (false, _) => HeadTransform::Bert,
    };
    let tie_weights = if v2 {
        true // v2 ties unconditionally (crammed_bert.py ScriptableLMForPreTraining)
    } else {
        boolean(arch, "tie_weights")?
    };
    let (sparse_prediction, sparse_static) = sparse_prediction(arch, v2)?;
    let kind = match (norm, qkv_layout, nonlin) {
        (NormScheme::Post, _, _) => ArchKind::BertOriginal,
        (_, QkvLayout::Blocks, _) => ArchKind::BertC5,
        (_, _, Nonlin::Gelu) => ArchKind::Izsak,
        _ if !v2 => ArchKind::BertC5,
        _ => ArchKind::CrammedBert,
    };
    let pad = match get(arch, "embedding.pad_token_id") {
        None | Some(Value::Null) => None,
        // The padding row moves to crambench's <pad> id 0 with the special-token remap.
        Some(_) => Some(0),
    };
    let cfg = ArchConfig {
        kind,
        vocab_size: int(arch, "embedding.vocab_size")?,
        hidden,
        layers: int(arch, "num_transformer_layers")?,
        heads: int(arch, "attention.num_attention_heads")?,
        intermediate: int(arch, "intermed_size")?,
        max_seq_len: int(arch, "embedding.max_seq_length")?,
        norm,
        norm_eps: num(arch, "norm_eps")?,
        qkv_bias: boolean(arch, "attention.qkv_bias")?,
        attn_out_bias: use_bias,
        ffn_bias: use_bias,
        head_bias: use_bias,
        decoder_bias: boolean(arch, "decoder_bias")?,
        nonlin,
        positions,
        type_vocab_size: 0,
        embedding_norm: boolean(arch, "embedding.normalization")?,
        final_norm: boolean(arch, "final_norm")?,
        head,
        tie_weights,
        sparse_prediction,
        sparse_static,
        qkv_layout,
        hidden_dropout: num(arch, "hidden_dropout_prob")?,
        attention_dropout: num(arch, "attention.dropout_prob")?,
        embedding_dropout: num(arch, "embedding.dropout_prob")?,
        init_std: num(arch, "init.std")?,
        pad_token_id: pad,
    };
    cfg.validate().map_err(|m| Untranslatable {
        field: "arch".into(),
        message: m,
    })?;
    Ok((version, cfg))
}

/// Keys of an upstream `arch` block that crambench reads (or checks); any other key that is
/// not in [`UPSTREAM_IGNORED`] is refused.
const KNOWN_KEYS: &[&str] = &[
    "num_transformer_layers",
    "hidden_size",
    "intermed_size",
    "hidden_dropout_prob",
    "norm",
    "norm_eps",
    "nonlin",
    "tie_weights",
    "sparse_prediction",
    "decoder_bias",
    "loss",
    "z_loss_factor",
    "objective_layout",
    "embedding",
    "attention",
    "init",
    "ffn_layer_frequency",
    "deepnorm_scaling",
    "skip_head_transform",
    "layer_drop_theta",
    "use_bias",
    "final_norm",
    "recurrent_layers",
    "layer_macro_type",
    "norm_scheme",
];

/// The known keys of the nested blocks.
const KNOWN_SUBKEYS: &[(&str, &[&str])] = &[
    (
        "embedding",
        &[
            "vocab_size",
            "pos_embedding",
            "dropout_prob",
            "pad_token_id",
            "max_seq_length",
            "embedding_dim",
            "normalization",
        ],
    ),
    (
        "attention",
        &[
            "type",
            "causal_attention",
            "num_attention_heads",
            "dropout_prob",
            "skip_output_projection",
            "qkv_bias",
            "rotary_embedding",
            "sequence_op",
        ],
    ),
    ("init", &["std"]),
];

/// Refuse a key crambench neither reads nor knows to be without effect.
fn check_keys(arch: &Value) -> R<()> {
    let Some(obj) = arch.as_object() else {
        return err("arch", "not an object");
    };
    for k in obj.keys() {
        if !KNOWN_KEYS.contains(&k.as_str()) && !UPSTREAM_IGNORED.contains(&k.as_str()) {
            return err(&format!("arch.{k}"), "unknown key: no crambench equivalent");
        }
    }
    for (sub, keys) in KNOWN_SUBKEYS {
        if let Some(obj) = arch.get(sub).and_then(|x| x.as_object()) {
            for k in obj.keys() {
                let dotted = format!("{sub}.{k}");
                if !keys.contains(&k.as_str()) && !UPSTREAM_IGNORED.contains(&dotted.as_str()) {
                    return err(
                        &format!("arch.{dotted}"),
                        "unknown key: no crambench equivalent",
                    );
                }
            }
        }
    }
    Ok(())
}

/// Refuse the upstream features crambench's model does not have: each key must hold the one
/// value crambench implements.
fn check_expressible(arch: &Value) -> R<()> {
    let f = json!(false);
    let required: [(&str, Value, &str); 13] = [
        ("norm", json!("LayerNorm"), "LayerNorm"),
        ("loss", json!("cross-entropy"), "the MLM loss"),
        ("z_loss_factor", json!(0), "no z-loss"),
        ("objective_layout", json!("MLM"), "MLM pretraining"),
        ("ffn_layer_frequency", json!(1), "an FFN in every block"),
        ("deepnorm_scaling", f.clone(), "no DeepNorm"),
        ("layer_drop_theta", Value::Null, "no layer drop"),
        ("recurrent_layers", Value::Null, "no recurrent blocks"),
        (
            "layer_macro_type",
            json!("transformer"),
            "transformer blocks",
        ),
        (
            "attention.causal_attention",
            f.clone(),
            "bidirectional attention",
        ),
        (
            "attention.skip_output_projection",
            f.clone(),
            "an output projection",
        ),
        ("attention.rotary_embedding", f, "no rotary embedding"),
        (
            "attention.sequence_op",
            json!("torch-softmax"),
            "softmax attention",
        ),
    ];
    for (key, value, what) in &required {
        must_be(arch, key, value, what)?;
    }
    Ok(())
}

/// Pre- or post-LN: v2's `TransformerLayer` is pre-LN whatever the yaml says ("pre" is baked
/// in); v1 reads `norm_scheme`.
fn norm_scheme(arch: &Value, v2: bool) -> R<NormScheme> {
    if v2 {
        return Ok(NormScheme::Pre);
    }
    match get(arch, "norm_scheme")
        .and_then(|x| x.as_str())
        .unwrap_or("pre")
    {
        "pre" => Ok(NormScheme::Pre),
        "post" => Ok(NormScheme::Post),
        other => err("arch.norm_scheme", format!("{other:?}: only pre and post")),
    }
}

/// `sparse_prediction`: v2 gives the masking fraction (a static count of predicted
/// positions), v1 true (0.15) or false.
fn sparse_prediction(arch: &Value, v2: bool) -> R<(Option<f64>, bool)> {
    match req(arch, "sparse_prediction")? {
        Value::Bool(false) => Ok((None, false)),
        Value::Bool(true) if !v2 => Ok((Some(0.15), false)),
        Value::Number(n) if v2 => {
            let p = n.as_f64().unwrap_or(f64::NAN);
            Ok(if p == 0.0 {
                (None, false)
            } else {
                (Some(p), true)
            })
        }
        other => err(
            "arch.sparse_prediction",
            format!("{other}: v2 takes the masking fraction, v1 true/false"),
        ),
    }
}

/// What happens to one tensor of a source state dict.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyMap {
    /// Store under this crambench variable name.
    To(String),
    /// One third of a fused QKV projection (`part` 0 = query, 1 = key, 2 = value) of the
    /// crambench variable named (HF BERT keeps them separate).
    QkvPart(String, usize),
    /// The tied decoder weight: must equal the word embedding (checked, not stored).
    TiedDecoder,
    /// A buffer crambench recomputes (v1 `encoder.p` and `layers.N.alpha`, `position_ids`,
    /// `norm_factor`): its value is checked against `expect`.
    Buffer(BufferKind),
    /// Not part of the MLM model (HF pooler, NSP head): ignored and listed.
    Ignored,
}

/// Buffers of source models and the value they must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    /// A constant (1.0 for v1's `p` / `alpha`).
    One,
    /// `arange(n)` (`position_ids`).
    Arange,
    /// `1/sqrt(head_dim)` (`norm_factor`).
    NormFactor,
}

/// Map an upstream state-dict key to crambench's. crambench's variable names are upstream's v2
/// names; v1 differs in its flash-attention QKV name and a few buffers.
pub fn upstream_key(key: &str, cfg: &ArchConfig) -> KeyMap {
    let key = key.strip_prefix("module.").unwrap_or(key);
    let key = key.strip_prefix("_orig_mod.").unwrap_or(key);
    if key == "decoder.weight" && cfg.tie_weights {
        return KeyMap::TiedDecoder;
    }
    if key == "encoder.p" || (key.starts_with("encoder.layers.") && key.ends_with(".alpha")) {
        return KeyMap::Buffer(BufferKind::One);
    }
    if key.ends_with("position_ids") {
        return KeyMap::Buffer(BufferKind::Arange);
    }
    if key.ends_with("self_attention.norm_factor") {
        return KeyMap::Buffer(BufferKind::NormFactor);
    }
    if let Some(prefix) = key.strip_suffix("self_attention.flash_mha.Wqkv.weight") {
        return KeyMap::To(format!("{prefix}self_attention.query_key_value.weight"));
    }
    if let Some(prefix) = key.strip_suffix("self_attention.flash_mha.Wqkv.bias") {
        return KeyMap::To(format!("{prefix}self_attention.query_key_value.bias"));
    }
    KeyMap::To(key.to_string())
}

/// Map a Hugging Face `BertForMaskedLM` state-dict key to crambench's.
pub fn hf_key(key: &str, cfg: &ArchConfig) -> KeyMap {
    let k = key.replace(".gamma", ".weight").replace(".beta", ".bias");
    let k = k.as_str();
    let emb = "encoder.embedding";
    let simple = match k {
        "bert.embeddings.word_embeddings.weight" => Some(format!("{emb}.word_embedding.weight")),
        "bert.embeddings.position_embeddings.weight" => {
            Some(format!("{emb}.pos_embedding.embedding.weight"))
        }
        "bert.embeddings.token_type_embeddings.weight" => {
            Some(format!("{emb}.token_type_embedding.weight"))
        }
        "bert.embeddings.LayerNorm.weight" => Some(format!("{emb}.norm.weight")),
        "bert.embeddings.LayerNorm.bias" => Some(format!("{emb}.norm.bias")),
        "cls.predictions.transform.dense.weight" => Some("prediction_head.dense.weight".into()),
        "cls.predictions.transform.dense.bias" => Some("prediction_head.dense.bias".into()),
        "cls.predictions.transform.LayerNorm.weight" => Some("prediction_head.norm.weight".into()),
        "cls.predictions.transform.LayerNorm.bias" => Some("prediction_head.norm.bias".into()),
        "cls.predictions.bias" | "cls.predictions.decoder.bias" => Some("decoder.bias".into()),
        _ => None,
    };
    if let Some(s) = simple {
        return KeyMap::To(s);
    }
    if k == "cls.predictions.decoder.weight" {
        return if cfg.tie_weights {
            KeyMap::TiedDecoder
        } else {
            KeyMap::To("decoder.weight".into())
        };
    }
    if k.ends_with("position_ids") {
        return KeyMap::Buffer(BufferKind::Arange);
    }
    if let Some(rest) = k.strip_prefix("bert.encoder.layer.") {
        if let Some((n, tail)) = rest.split_once('.') {
            if n.parse::<u32>().is_ok() {
                let l = format!("encoder.layers.{n}");
                let qkv = |part: usize, wb: &str| {
                    KeyMap::QkvPart(
                        format!("{l}.attn.self_attention.query_key_value.{wb}"),
                        part,
                    )
                };
                return match tail {
                    "attention.self.query.weight" => qkv(0, "weight"),
                    "attention.self.key.weight" => qkv(1, "weight"),
                    "attention.self.value.weight" => qkv(2, "weight"),
                    "attention.self.query.bias" => qkv(0, "bias"),
                    "attention.self.key.bias" => qkv(1, "bias"),
                    "attention.self.value.bias" => qkv(2, "bias"),
                    "attention.output.dense.weight" => KeyMap::To(format!("{l}.attn.dense.weight")),
                    "attention.output.dense.bias" => KeyMap::To(format!("{l}.attn.dense.bias")),
                    "attention.output.LayerNorm.weight" => KeyMap::To(format!("{l}.norm1.weight")),
                    "attention.output.LayerNorm.bias" => KeyMap::To(format!("{l}.norm1.bias")),
                    "intermediate.dense.weight" => KeyMap::To(format!("{l}.ffn.dense_in.weight")),
                    "intermediate.dense.bias" => KeyMap::To(format!("{l}.ffn.dense_in.bias")),
                    "output.dense.weight" => KeyMap::To(format!("{l}.ffn.dense_out.weight")),
                    "output.dense.bias" => KeyMap::To(format!("{l}.ffn.dense_out.bias")),
                    "output.LayerNorm.weight" => KeyMap::To(format!("{l}.norm2.weight")),
                    "output.LayerNorm.bias" => KeyMap::To(format!("{l}.norm2.bias")),
                    _ => KeyMap::To(key.to_string()), // unknown: the caller reports it
                };
            }
        }
    }
    if k.starts_with("bert.pooler.") || k.starts_with("cls.seq_relationship.") {
        return KeyMap::Ignored;
    }
    KeyMap::To(key.to_string())
}

/// Translate a Hugging Face `BertConfig` (`config.json`, `model_type: bert`) into an
/// [`ArchConfig`] (post-LN BERT, fused QKV in the `blocks` layout: query, key, value rows).
pub fn arch_from_hf_bert(c: &Value) -> R<ArchConfig> {
    let obj = c.as_object().ok_or_else(|| Untranslatable {
        field: "config".into(),
        message: "not an object".into(),
    })?;
    let f = |k: &str| format!("config.{k}");
    match obj.get("model_type").and_then(|x| x.as_str()) {
        Some("bert") => {}
        other => return err(&f("model_type"), format!("{other:?}: expected \"bert\"")),
    }
    let known = [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "max_position_embeddings",
        "type_vocab_size",
        "initializer_range",
        "layer_norm_eps",
        "pad_token_id",
        "position_embedding_type",
        "tie_word_embeddings",
        "is_decoder",
        "add_cross_attention",
        "chunk_size_feed_forward",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "torchscript",
        "pruned_heads",
    ];
    for k in obj.keys() {
        if !known.contains(&k.as_str()) && !HF_IGNORED.contains(&k.as_str()) {
            return err(&f(k), "unknown key: no crambench equivalent");
        }
    }
    let i = |k: &str| -> R<i64> {
        obj.get(k)
            .and_then(|x| x.as_i64())
            .ok_or_else(|| Untranslatable {
                field: f(k),
                message: "missing or not an integer".into(),
            })
    };
    let x = |k: &str, default: f64| -> R<f64> {
        match obj.get(k) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| Untranslatable {
                field: f(k),
                message: "not a number".into(),
            }),
        }
    };
    let is = |k: &str, want: Value, default_ok: bool, why: &str| -> R<()> {
        match obj.get(k) {
            None if default_ok => Ok(()),
            Some(v) if *v == want => Ok(()),
            v => err(&f(k), format!("{v:?} cannot be translated ({why})")),
        }
    };
    is(
        "hidden_act",
        json!("gelu"),
        false,
        "crambench's BERT uses exact GELU",
    )?;
    is(
        "position_embedding_type",
        json!("absolute"),
        true,
        "learned absolute positions",
    )?;
    is("is_decoder", json!(false), true, "an encoder")?;
    is(
        "add_cross_attention",
        json!(false),
        true,
        "no cross-attention",
    )?;
    is("chunk_size_feed_forward", json!(0), true, "unchunked FFN")?;
    if let Some(p) = obj.get("pruned_heads") {
        if p.as_object().is_some_and(|m| !m.is_empty()) {
            return err(&f("pruned_heads"), "pruned heads cannot be translated");
        }
    }
    let tie = obj
        .get("tie_word_embeddings")
        .map(|v| v.as_bool().unwrap_or(true))
        .unwrap_or(true);
    let cfg = ArchConfig {
        kind: ArchKind::BertOriginal,
        vocab_size: i("vocab_size")?,
        hidden: i("hidden_size")?,
        layers: i("num_hidden_layers")?,
        heads: i("num_attention_heads")?,
        intermediate: i("intermediate_size")?,
        max_seq_len: i("max_position_embeddings")?,
        norm: NormScheme::Post,
        norm_eps: x("layer_norm_eps", 1e-12)?,
        qkv_bias: true,
        attn_out_bias: true,
        ffn_bias: true,
        head_bias: true,
        decoder_bias: true,
        nonlin: Nonlin::Gelu,
        positions: Positions::Learned,
        type_vocab_size: i("type_vocab_size").unwrap_or(2),
        embedding_norm: true,
        final_norm: false,
        head: HeadTransform::Bert,
        tie_weights: tie,
        sparse_prediction: None,
        sparse_static: false,
        qkv_layout: QkvLayout::Blocks,
        hidden_dropout: x("hidden_dropout_prob", 0.1)?,
        attention_dropout: x("attention_probs_dropout_prob", 0.1)?,
        embedding_dropout: x("hidden_dropout_prob", 0.1)?,
        init_std: x("initializer_range", 0.02)?,
        pad_token_id: Some(0),
    };
    cfg.validate().map_err(|m| Untranslatable {
        field: "config".into(),
        message: m,
    })?;
    Ok(cfg)
}

/// The upstream v2 `cfg_arch` container for `cfg` (what `export --format cramming` writes as
/// `model_config.json` and the `arch` block of `config.json`), or the first setting v2's
/// `ScriptableLMForPreTraining` cannot express.
pub fn arch_to_upstream_v2(cfg: &ArchConfig) -> R<Value> {
    let need = |ok: bool, field: &str, why: &str| -> R<()> {
        if ok {
            Ok(())
        } else {
            err(field, why.to_string())
        }
    };
    need(
        cfg.norm == NormScheme::Pre,
        "arch.norm",
        "upstream v2 blocks are pre-LN only",
    )?;
    need(
        cfg.qkv_layout == QkvLayout::PerHead,
        "arch.qkv_layout",
        "upstream v2 self-attention uses the per-head layout (blocks is v1's flash-attention)",
    )?;
    need(
        cfg.tie_weights,
        "arch.tie_weights",
        "upstream v2 always ties the decoder",
    )?;
    need(
        cfg.type_vocab_size == 0,
        "arch.type_vocab_size",
        "upstream has no token-type embedding",
    )?;
    need(
        cfg.head != HeadTransform::Linear,
        "arch.head",
        "a linear head exists only in upstream v1",
    )?;
    need(
        cfg.attn_out_bias == cfg.ffn_bias
            && (cfg.head == HeadTransform::None || cfg.head_bias == cfg.ffn_bias),
        "arch.ffn_bias",
        "upstream has one use_bias for attention output, FFN and head",
    )?;
    need(
        cfg.sparse_prediction.is_none() || cfg.sparse_static,
        "arch.sparse_static",
        "upstream v2 selects a static row count",
    )?;
    let mut m = Map::new();
    m.insert("architectures".into(), json!(["ScriptableCrammedBERT"]));
    m.insert("num_transformer_layers".into(), json!(cfg.layers));
    m.insert("hidden_size".into(), json!(cfg.hidden));
    m.insert("intermed_size".into(), json!(cfg.intermediate));
    m.insert("hidden_dropout_prob".into(), json!(cfg.hidden_dropout));
    m.insert("norm".into(), json!("LayerNorm"));
    m.insert("norm_eps".into(), json!(cfg.norm_eps));
    m.insert("norm_scheme".into(), json!("pre"));
    m.insert(
        "nonlin".into(),
        json!(match cfg.nonlin {
            Nonlin::Gelu => "GELU",
            Nonlin::GeluGlu => "GELUglu",
        }),
    );
    m.insert("tie_weights".into(), json!(true));
    m.insert("decoder_bias".into(), json!(cfg.decoder_bias));
    m.insert(
        "sparse_prediction".into(),
        match cfg.sparse_prediction {
            Some(p) => json!(p),
            None => json!(false),
        },
    );
    m.insert("loss".into(), json!("cross-entropy"));
    m.insert("objective_layout".into(), json!("MLM"));
    m.insert(
        "embedding".into(),
        json!({
            "vocab_size": cfg.vocab_size,
            "pos_embedding": match cfg.positions {
                Positions::Learned => "learned",
                Positions::ScaledSinusoidal => "scaled-sinusoidal",
            },
            "dropout_prob": cfg.embedding_dropout,
            "pad_token_id": cfg.pad_token_id.unwrap_or(0),
            "max_seq_length": cfg.max_seq_len,
            "embedding_dim": cfg.hidden,
            "normalization": cfg.embedding_norm,
            "stable_low_precision": false,
        }),
    );
    m.insert(
        "attention".into(),
        json!({
            "type": "self-attention",
            "causal_attention": false,
            "num_attention_heads": cfg.heads,
            "dropout_prob": cfg.attention_dropout,
            "skip_output_projection": false,
            "qkv_bias": cfg.qkv_bias,
            "rotary_embedding": false,
            "seq_op_in_fp32": false,
            "sequence_op": "torch-softmax",
        }),
    );
    m.insert(
        "init".into(),
        json!({"type": "normal", "std": cfg.init_std}),
    );
    m.insert("ffn_layer_frequency".into(), json!(1));
    m.insert(
        "skip_head_transform".into(),
        json!(cfg.head == HeadTransform::None),
    );
    m.insert("use_bias".into(), json!(cfg.ffn_bias));
    m.insert("final_norm".into(), json!(cfg.final_norm));
    m.insert("num_labels".into(), Value::Null);
    m.insert(
        "classification_head".into(),
        json!({"pooler": "avg", "include_ff_layer": true, "head_dim": 1024, "nonlin": "Tanh",
               "classifier_dropout": cfg.hidden_dropout}),
    );
    if !cfg.embedding_norm {
        return err(
            "arch.embedding_norm",
            "upstream v2 configs always normalise the embedding",
        );
    }
    Ok(Value::Object(m))
}

/// The Hugging Face `BertConfig` for `cfg`, or the first setting `BertForMaskedLM` cannot
/// express. The fused QKV is split by crambench's layout at export.
pub fn arch_to_hf_bert(cfg: &ArchConfig) -> R<Value> {
    let need = |ok: bool, field: &str, why: &str| -> R<()> {
        if ok {
            Ok(())
        } else {
            err(field, why.to_string())
        }
    };
    need(cfg.norm == NormScheme::Post, "arch.norm", "BERT is post-LN")?;
    need(
        cfg.nonlin == Nonlin::Gelu,
        "arch.nonlin",
        "BERT's FFN is GELU (no GLU)",
    )?;
    need(
        cfg.positions == Positions::Learned,
        "arch.positions",
        "BERT learns absolute positions",
    )?;
    need(
        cfg.head == HeadTransform::Bert,
        "arch.head",
        "BERT's head is Linear+GELU+LayerNorm",
    )?;
    need(
        cfg.qkv_bias && cfg.attn_out_bias && cfg.ffn_bias && cfg.head_bias && cfg.decoder_bias,
        "arch.qkv_bias",
        "BERT has every bias",
    )?;
    need(
        cfg.embedding_norm,
        "arch.embedding_norm",
        "BERT normalises the embedding",
    )?;
    need(
        !cfg.final_norm,
        "arch.final_norm",
        "BERT has no final LayerNorm",
    )?;
    need(
        cfg.sparse_prediction.is_none(),
        "arch.sparse_prediction",
        "BertForMaskedLM decodes every position (the loss is the same; set it false to export)",
    )?;
    Ok(json!({
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_seq_len,
        "type_vocab_size": cfg.type_vocab_size.max(1),
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.norm_eps,
        "pad_token_id": cfg.pad_token_id.unwrap_or(0),
        "position_embedding_type": "absolute",
        "tie_word_embeddings": cfg.tie_weights,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_tiny() -> Value {
        json!({
            "architectures": ["ScriptableCrammedBERT"], "num_transformer_layers": 2,
            "hidden_size": 32, "intermed_size": 64, "hidden_dropout_prob": 0.1,
            "norm": "LayerNorm", "norm_eps": 1e-12, "norm_scheme": "pre", "nonlin": "GELUglu",
            "tie_weights": true, "decoder_bias": false, "sparse_prediction": 0.25,
            "loss": "cross-entropy", "objective_layout": "MLM",
            "embedding": {"vocab_size": 64, "pos_embedding": "scaled-sinusoidal",
                "dropout_prob": 0.1, "pad_token_id": 0, "max_seq_length": 16,
                "embedding_dim": 32, "normalization": true, "stable_low_precision": false},
            "attention": {"type": "self-attention", "causal_attention": false,
                "num_attention_heads": 4, "dropout_prob": 0.1, "skip_output_projection": false,
                "qkv_bias": false, "rotary_embedding": false, "seq_op_in_fp32": false,
                "sequence_op": "torch-softmax"},
            "init": {"type": "normal", "std": 0.02}, "ffn_layer_frequency": 1,
            "skip_head_transform": true, "use_bias": false, "final_norm": true,
            "num_labels": null, "classification_head": {"pooler": "avg"}
        })
    }

    #[test]
    fn v2_config_round_trips() {
        let (v, cfg) = arch_from_upstream(&v2_tiny()).unwrap();
        assert_eq!(v, SourceKind::UpstreamV2);
        assert_eq!(cfg.kind, ArchKind::CrammedBert);
        assert_eq!(cfg.sparse_prediction, Some(0.25));
        let back = arch_to_upstream_v2(&cfg).unwrap();
        let (_, again) = arch_from_upstream(&back).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn untranslatable_fields_are_named() {
        for (path, value, field) in [
            (
                "/attention/rotary_embedding",
                json!(true),
                "arch.attention.rotary_embedding",
            ),
            ("/nonlin", json!("ReLUglu"), "arch.nonlin"),
            (
                "/embedding/embedding_dim",
                json!(16),
                "arch.embedding.embedding_dim",
            ),
            ("/attention/type", json!("fourier"), "arch.attention.type"),
            ("/recurrent_layers", json!(2), "arch.recurrent_layers"),
            ("/frobnicate", json!(1), "arch.frobnicate"),
        ] {
            let mut a = v2_tiny();
            match a.pointer_mut(path) {
                Some(slot) => *slot = value,
                None => {
                    a.as_object_mut().unwrap().insert(path[1..].into(), value);
                }
            }
            let e = arch_from_upstream(&a).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn hf_keys_fuse_qkv_and_tie() {
        let cfg = ArchConfig::preset("bert-original-tiny").unwrap();
        assert_eq!(
            hf_key("bert.encoder.layer.3.attention.self.key.bias", &cfg),
            KeyMap::QkvPart(
                "encoder.layers.3.attn.self_attention.query_key_value.bias".into(),
                1
            )
        );
        assert_eq!(
            hf_key("cls.predictions.decoder.weight", &cfg),
            KeyMap::TiedDecoder
        );
        assert_eq!(hf_key("bert.pooler.dense.weight", &cfg), KeyMap::Ignored);
        assert_eq!(
            upstream_key(
                "encoder.layers.0.attn.self_attention.flash_mha.Wqkv.weight",
                &cfg
            ),
            KeyMap::To("encoder.layers.0.attn.self_attention.query_key_value.weight".into())
        );
    }
}
