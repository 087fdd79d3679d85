//! Model FLOPs of a training step, for model-FLOPs utilisation (MFU).
//!
//! Counts the matrix multiplications only (2 FLOPs per multiply-add), as PaLM's MFU does:
//! per token and layer the QKV, attention-output and FFN weights (2 × their size) plus the
//! attention itself (QKᵀ and PV: 2 × 2 × S × H); then, for the positions the head predicts, the
//! head transform (2H², if any) and the decoder (2HV). Backward costs twice the forward, so a
//! training step is 3 × forward. Embedding lookups, norms, softmax and the optimizer are not
//! counted. MFU divides the FLOPs achieved per second by the device's datasheet peak
//! ([`peak_flops`], a table of GPUs).
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

/// Dense (no sparsity) datasheet peaks in TFLOP/s: (name substring, bf16 tensor core with fp32
/// accumulate, plain fp32). Matched against the CUDA device name, first match wins.
pub const GPU_PEAKS: &[(&str, Option<f64>, f64)] = &[
    ("H200", Some(989.4), 66.9),
    ("H100 PCIe", Some(756.0), 51.2),
    ("H100", Some(989.4), 66.9),
    ("A100", Some(312.0), 19.5),
    ("A6000", Some(154.8), 38.7),
    ("A4000", Some(76.7), 19.2),
    ("L40S", Some(362.1), 91.6),
    ("L4", Some(121.0), 30.3),
    ("RTX 4090", Some(165.2), 82.6),
    ("RTX 3090", Some(71.0), 35.6),
    ("V100", None, 15.7),
    ("2080 Ti", None, 13.4),
];

/// Peak FLOP/s of the GPU named `gpu_name` for `dtype` (bf16 or fp32), if [`GPU_PEAKS`] knows it.
pub fn peak_flops(gpu_name: &str, dtype: tch::Kind) -> Option<f64> {
    let (_, bf16, fp32) = GPU_PEAKS.iter().find(|(n, _, _)| gpu_name.contains(n))?;
    let tflops = if dtype == tch::Kind::BFloat16 {
        (*bf16)?
    } else {
        *fp32
    };
    Some(tflops * 1e12)
}

/// Model-FLOPs utilisation (a fraction): `step_flops` done in `step_seconds` against
/// `peak_flops` FLOP/s.
pub fn mfu(step_flops: f64, step_seconds: f64, peak_flops: f64) -> f64 {
    step_flops / step_seconds / peak_flops
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

    #[test]
    fn peaks_match_the_longest_name_first() {
        // "H100 PCIe" is listed before "H100": a PCIe card does not get the SXM peak.
        assert_eq!(
            peak_flops("NVIDIA H100 PCIe", tch::Kind::BFloat16),
            Some(756.0e12)
        );
        assert_eq!(
            peak_flops("NVIDIA H100 80GB HBM3", tch::Kind::Float),
            Some(66.9e12)
        );
        assert_eq!(
            peak_flops("Tesla V100-SXM2-16GB", tch::Kind::BFloat16),
            None
        );
        assert_eq!(peak_flops("Some Future GPU", tch::Kind::Float), None);
        assert_eq!(mfu(1e12, 0.5, 4e12), 0.5);
    }
}
