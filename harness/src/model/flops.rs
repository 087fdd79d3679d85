//! Model FLOPs of a training step, for model-FLOPs utilisation (MFU).
//!
//! Counts the matrix multiplications only (2 FLOPs per multiply-add), as PaLM's MFU does:
//! per token and layer the QKV, attention-output and FFN weights (2 × their size) plus the
//! attention itself (QKᵀ and PV: 2 × 2 × S × H); then, for the positions the head predicts, the
//! head transform (2H², if any) and the decoder (2HV). Backward costs twice the forward, so a
//! training step is 3 × forward. Embedding lookups, norms, softmax and the optimizer are not
//! counted.
use super::config::{ArchConfig, HeadTransform};

/// Forward-pass FLOPs for a `[batch, seq]` MLM batch.
pub fn forward_flops(cfg: &ArchConfig, batch: i64, seq: i64) -> f64 {
    let (h, v) = (cfg.hidden as f64, cfg.vocab_size as f64);
    let tokens = (batch * seq) as f64;
    let layer_weights = 3.0 * h * h // fused QKV
        + h * h // attention output
        + h * cfg.intermediate as f64 // dense_in
        + cfg.ffn_out_in() as f64 * h; // dense_out
    let attention = 2.0 * 2.0 * seq as f64 * h; // scores and weighted sum, per token
    let per_token_layers = cfg.layers as f64 * (2.0 * layer_weights + attention);
    let predicted = match cfg.sparse_prediction {
        None => tokens,
        Some(p) => (p * tokens).round(),
    };
    let head = match cfg.head {
        HeadTransform::None => 0.0,
        HeadTransform::Linear | HeadTransform::Bert => 2.0 * h * h,
    };
    tokens * per_token_layers + predicted * (head + 2.0 * h * v)
}

/// Training-step FLOPs (forward + backward = 3 × forward).
pub fn train_step_flops(cfg: &ArchConfig, batch: i64, seq: i64) -> f64 {
    3.0 * forward_flops(cfg, batch, seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ArchKind;

    #[test]
    fn crammed_bert_step_flops_by_hand() {
        // 16 layers × (2 × 5,898,240 weights + 4·128·768) per token, 1024 tokens, and 256
        // predicted tokens × 2·768·32768 for the tied decoder; × 3.
        let cfg = ArchConfig::for_kind(ArchKind::CrammedBert);
        let per_token = 16.0 * (2.0 * 5_898_240.0 + 4.0 * 128.0 * 768.0);
        let want = 3.0 * (1024.0 * per_token + 256.0 * 2.0 * 768.0 * 32768.0);
        assert_eq!(train_step_flops(&cfg, 8, 128), want);
    }
}
