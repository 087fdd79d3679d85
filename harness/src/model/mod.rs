//! Models: the crammed BERT and the BERT baselines in tch, with the reference's state-dict names
//! so checkpoints map onto the PyTorch reference. The four architectures of upstream `cramming/config/arch/` (JonasGeiping/cramming 196c991; v1 at Last1.13release)
//! (crammed-bert v2, bert-c5 v1, post-LN bert-original, pre-LN izsak) differ only in switches, so
//! one readable model file serves them all:
//!
//! * [`config`] — the `[arch]` table ([`ArchConfig`]): every switch of upstream `cramming/config/arch/` (JonasGeiping/cramming 196c991; v1 at Last1.13release) and the
//!   presets `crammed-bert`, `bert-c5`, `bert-original`, `izsak` (and `-tiny` variants).
//! * [`attention`] — the attention backend (`auto`, `flash`, `efficient`, `cudnn`, `math`).
//! * [`layers`] — Linear, LayerNorm, embeddings, fused-QKV attention, (GLU) FFN, blocks.
//! * [`crammed_bert`] — the MLM transformer that all four kinds are switch settings of.
//! * [`flops`] — model FLOPs of a training step, GPU datasheet peaks and MFU.
//! * [`step_bench`] — timing one training step, and the protocol of its PyTorch reference.
//!
//! Variable names equal the reference state-dict names (upstream `cramming/architectures/crammed_bert.py`, JonasGeiping/cramming 196c991), e.g.
//! `encoder.layers.0.attn.self_attention.query_key_value.weight`, so `VarStore::save` to a
//! `.safetensors` file gives a checkpoint Python's `safetensors` loads onto the reference model
//! (`decoder.weight` is absent when tied, as the reference loader allows). The persistent
//! `norm_factor` buffers are non-trainable variables: optimisers must use
//! `VarStore::trainable_variables()`.
pub mod attention;
pub mod config;
pub mod crammed_bert;
pub mod flops;
pub mod layers;
pub mod step_bench;
pub mod upstream;

pub use config::{
    ArchConfig, ArchKind, HeadTransform, Nonlin, NormScheme, Positions, QkvLayout, PRESETS,
};
pub use crammed_bert::{MlmTransformer, IGNORE_INDEX};

use crate::error::Error;

/// A masked-language model (any `[arch]` kind).
pub trait MlmModel: Send {
    /// Logits of the positions the loss is computed on and their labels: `[N, V]` and `[N]`
    /// (N = B·S without sparse prediction, the masked positions for the dynamic variant,
    /// round(p·B·S) for the static one). `input_ids`, `labels`: `[B, S]` Int64.
    fn mlm_logits(
        &self,
        input_ids: &tch::Tensor,
        labels: &tch::Tensor,
        train: bool,
    ) -> (tch::Tensor, tch::Tensor);

    /// Mean MLM cross-entropy over positions whose label != -100. `input_ids`, `labels`: [B,S]
    /// Int64. `train` enables dropout (pretraining of crammed-bert runs with train=false per
    /// upstream `cramming/config/train/bert-o4.yaml`, JonasGeiping/cramming 196c991).
    fn mlm_loss(&self, input_ids: &tch::Tensor, labels: &tch::Tensor, train: bool) -> tch::Tensor;

    /// Final hidden states [B,S,H] (after the final norm where the arch has one), with an
    /// optional key-padding mask [B,S] (Bool or Int64, 1/true = real token). Used by GLUE
    /// fine-tuning.
    fn encode(
        &self,
        input_ids: &tch::Tensor,
        key_padding_mask: Option<&tch::Tensor>,
        train: bool,
    ) -> tch::Tensor;

    fn hidden_size(&self) -> i64;

    fn config(&self) -> &ArchConfig;
}

/// Build the model's variables under `root` (names equal the reference state-dict names of
/// upstream `cramming/architectures/crammed_bert.py`, JonasGeiping/cramming 196c991; the tied decoder creates no second variable), initialised N(0, init_std)
/// as the reference does. Uses tch's global RNG: seed it (`tch::manual_seed`) first.
pub fn build(root: &tch::nn::Path, cfg: &ArchConfig) -> anyhow::Result<Box<dyn MlmModel>> {
    cfg.validate().map_err(|m| Error::input("[arch]", m))?;
    Ok(Box::new(MlmTransformer::new(root, cfg)))
}

/// The model's variables and the model on `device`, initialised on the CPU from tch's global
/// generator (seed it first), so that a seed gives the same weights on every device: `Init::Randn`
/// on a CUDA VarStore would draw from the CUDA generator instead. The CPU values are copied by
/// name into a model built on `device`; the tied decoder is the word embedding there too (no
/// variable of its own), so it stays tied. Upstream builds on the CPU and moves the model
/// (`cramming/backend/torch_default.py`, `TorchEngineMinimal.__init__`, `model.to(**setup)`;
/// JonasGeiping/cramming 196c991).
pub fn build_on(
    cfg: &ArchConfig,
    device: tch::Device,
) -> anyhow::Result<(tch::nn::VarStore, Box<dyn MlmModel>)> {
    let cpu = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = build(&cpu.root(), cfg)?;
    if device == tch::Device::Cpu {
        return Ok((cpu, model));
    }
    let mut vs = tch::nn::VarStore::new(device);
    let model = build(&vs.root(), cfg)?;
    vs.copy(&cpu)?;
    Ok((vs, model))
}

/// Number of trainable parameters (elements) in `vs`.
pub fn num_parameters(vs: &tch::nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}
