//! Parameter counts of the full-size architectures (built on CPU only to count them), the
//! variable names checkpoints carry, and the init quirks of upstream `cramming/architectures/crammed_bert.py` (JonasGeiping/cramming 196c991).
use crambench::model::{self, ArchConfig, ArchKind};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn count(cfg: &ArchConfig) -> i64 {
    let vs = VarStore::new(Device::Cpu);
    let _m = model::build(&vs.root(), cfg).unwrap();
    model::num_parameters(&vs)
}

/// HF `BertForMaskedLM` parameter count from its shapes (vocab V, hidden H, layers L, FFN I,
/// positions P, token types T): embeddings V·H + P·H + T·H + LN 2H; each layer Q, K, V and the
/// attention output (H·H + H each), LN 2H, intermediate H·I + I, output I·H + H, LN 2H; the MLM
/// head's transform H·H + H and LN 2H, the decoder tied to the embedding plus its bias V.
/// (No pooler: `BertForMaskedLM` builds `BertModel(add_pooling_layer=False)`.)
fn hf_bert_for_masked_lm(v: i64, h: i64, l: i64, i: i64, p: i64, t: i64) -> i64 {
    let embeddings = v * h + p * h + t * h + 2 * h;
    let layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
    let head = (h * h + h) + 2 * h + v;
    embeddings + l * layer + head
}

#[test]
fn crammed_bert_has_119_589_889_parameters() {
    assert_eq!(
        count(&ArchConfig::for_kind(ArchKind::CrammedBert)),
        119_589_889
    );
}

#[test]
fn bert_c5_has_120_179_713_parameters() {
    assert_eq!(count(&ArchConfig::for_kind(ArchKind::BertC5)), 120_179_713);
}

#[test]
fn bert_original_counts_as_bert_base_mlm() {
    // Independent anchor of the formula: bert-base-uncased's BertForMaskedLM has 109,514,298
    // parameters (BertModel's well-known 109,482,240 minus its 590,592-parameter pooler, plus
    // the 622,650 of the MLM head).
    assert_eq!(
        hf_bert_for_masked_lm(30522, 768, 12, 3072, 512, 2),
        109_514_298
    );
    let mut cfg = ArchConfig::for_kind(ArchKind::BertOriginal);
    assert_eq!(
        count(&cfg),
        hf_bert_for_masked_lm(32768, 768, 12, 3072, 512, 2)
    );
    cfg.vocab_size = 30522;
    assert_eq!(count(&cfg), 109_514_298);
}

#[test]
fn names_buffers_and_init_follow_the_reference() {
    tch::manual_seed(0);
    let cfg = ArchConfig::preset("crammed-bert-tiny").unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _m = model::build(&vs.root(), &cfg).unwrap();
    let vars = vs.variables();
    for name in [
        "encoder.embedding.word_embedding.weight",
        "encoder.embedding.pos_embedding.scale_factor",
        "encoder.embedding.norm.weight",
        "encoder.embedding.norm.bias",
        "encoder.layers.0.norm1.weight",
        "encoder.layers.0.attn.self_attention.query_key_value.weight",
        "encoder.layers.0.attn.self_attention.norm_factor",
        "encoder.layers.0.attn.dense.weight",
        "encoder.layers.1.ffn.dense_in.weight",
        "encoder.layers.1.ffn.dense_out.weight",
        "encoder.final_norm.weight",
    ] {
        assert!(vars.contains_key(name), "missing {name}");
    }
    assert!(
        !vars.contains_key("decoder.weight"),
        "tied decoder is not a second variable"
    );
    assert_eq!(vars.len(), 4 + 2 * 9 + 2);
    assert_eq!(
        vars["encoder.layers.0.ffn.dense_out.weight"].size(),
        [64, 128]
    );
    // norm_factor is a persistent buffer, not a parameter.
    let nf = &vars["encoder.layers.0.attn.self_attention.norm_factor"];
    assert!(!nf.requires_grad());
    assert!((nf.double_value(&[]) - 0.25).abs() < 1e-7); // 1/sqrt(64/4)
    let s = vars["encoder.embedding.pos_embedding.scale_factor"].double_value(&[0]);
    assert!((s - 1.0 / 8.0).abs() < 1e-7); // 1/sqrt(hidden = 64)
                                           // Tied: the decoder re-draws the shared matrix, so the padding row is not zero; N(0, 0.02).
    let e = &vars["encoder.embedding.word_embedding.weight"];
    assert!(e.get(0).abs().sum(Kind::Float).double_value(&[]) > 0.0);
    let std = e.std(true).double_value(&[]);
    assert!((std - 0.02).abs() < 0.002, "std {std}");
    // Untied: the padding row stays zero and the decoder is its own variable.
    let untied = ArchConfig {
        tie_weights: false,
        ..cfg.clone()
    };
    let vs2 = VarStore::new(Device::Cpu);
    let _m2 = model::build(&vs2.root(), &untied).unwrap();
    let v2 = vs2.variables();
    assert_eq!(
        v2["encoder.embedding.word_embedding.weight"]
            .get(0)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    assert_eq!(v2["decoder.weight"].size(), [128, 64]);
}

#[test]
fn sinusoid_table_is_interleaved() {
    let t = crambench::model::layers::sinusoid_table(8, 6);
    let (p, i) = (5i64, 1i64); // w_1 = exp(-2·ln(10000)/6)
    let w = (-(2.0 * i as f64) * 10000f64.ln() / 6.0).exp();
    assert!((t.double_value(&[p, 2 * i]) - (p as f64 * w).sin()).abs() < 1e-6);
    assert!((t.double_value(&[p, 2 * i + 1]) - (p as f64 * w).cos()).abs() < 1e-6);
    assert_eq!(t.double_value(&[0, 1]), 1.0);
}

#[test]
fn training_mode_applies_dropout_and_eval_is_deterministic() {
    tch::manual_seed(1);
    let cfg = ArchConfig::preset("bert-original-tiny").unwrap();
    let vs = VarStore::new(Device::Cpu);
    let m = model::build(&vs.root(), &cfg).unwrap();
    let ids = Tensor::randint(128, [2, 16], (Kind::Int64, Device::Cpu));
    let labels = ids.shallow_clone();
    let a = m.mlm_loss(&ids, &labels, false);
    let b = m.mlm_loss(&ids, &labels, false);
    assert!(a.equal(&b));
    let c = m.mlm_loss(&ids, &labels, true);
    assert!(
        !a.equal(&c),
        "dropout should change the loss in training mode"
    );
    assert!(model::build(&vs.root(), &ArchConfig { heads: 5, ..cfg }).is_err());
}
