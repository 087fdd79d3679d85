//! The BERT-style masked-language model behind every `[arch]` kind: crammed-bert (v2), bert-c5
//! (v1), bert-original (post-LN BERT-base) and izsak (24 × 1024 pre-LN). They differ only in the
//! switches of [`ArchConfig`] (upstream `cramming/config/arch/` (JonasGeiping/cramming 196c991; v1 at Last1.13release)), so one readable forward pass serves all four:
//!
//! ```text
//! ids ─ embedding (word + positions [+ type 0], LN, dropout)
//!     ─ layers × Block (pre-LN: x + f(LN(x)); post-LN: LN(x + f(x)))
//!     ─ final LayerNorm (if any)                                   ← `encode` returns this
//!     ─ select positions (none | masked ones | static round(p·B·S))
//!     ─ prediction head (identity | Linear | Linear+GELU+LN)
//!     ─ decoder (tied word embedding, optional bias) → logits → CE ignoring -100
//! ```
use super::config::{ArchConfig, HeadTransform};
use super::layers::{normal, Block, Embedding, LayerNorm, Linear};
use super::MlmModel;
use tch::nn::{Init, Path};
use tch::{Kind, Reduction, Tensor};

/// Label of positions that carry no MLM target.
pub const IGNORE_INDEX: i64 = -100;

/// The additive attention mask value of the reference for padded keys.
pub const MASK_FILL: f64 = -10000.0;

/// `prediction_head`: what sits between the encoder and the decoder.
#[derive(Debug)]
enum PredictionHead {
    Identity,
    /// `prediction_head.{weight,bias}` (bert-c5).
    Linear(Linear),
    /// `prediction_head.dense`, GELU, `prediction_head.norm` (BERT).
    Bert {
        dense: Linear,
        norm: LayerNorm,
    },
}

/// The MLM transformer (see the module docs for the data flow).
#[derive(Debug)]
pub struct MlmTransformer {
    cfg: ArchConfig,
    embedding: Embedding,
    layers: Vec<Block>,
    final_norm: Option<LayerNorm>,
    head: PredictionHead,
    /// `[V, H]`: the word embedding itself when tied (a shallow clone, no second variable).
    decoder_weight: Tensor,
    decoder_bias: Option<Tensor>,
}

impl MlmTransformer {
    /// Create the variables under `root` with the reference's names and init.
    pub fn new(root: &Path, cfg: &ArchConfig) -> Self {
        let enc = root / "encoder";
        // The reference zeroes the padding row, but a tied decoder is initialised after the
        // embedding and redraws the whole shared matrix, row 0 included (upstream `cramming/architectures/crammed_bert.py`, JonasGeiping/cramming 196c991).
        let zero_pad_row = !cfg.tie_weights;
        let embedding = Embedding::new(&(&enc / "embedding"), cfg, zero_pad_row);
        let layers = (0..cfg.layers)
            .map(|i| Block::new(&(&enc / "layers" / i), cfg))
            .collect();
        let final_norm = cfg
            .final_norm
            .then(|| LayerNorm::new(&(&enc / "final_norm"), cfg.hidden, cfg.norm_eps));
        let hp = root / "prediction_head";
        let head = match cfg.head {
            HeadTransform::None => PredictionHead::Identity,
            HeadTransform::Linear => PredictionHead::Linear(Linear::new(
                &hp,
                cfg.hidden,
                cfg.hidden,
                cfg.head_bias,
                cfg.init_std,
            )),
            HeadTransform::Bert => PredictionHead::Bert {
                dense: Linear::new(
                    &(&hp / "dense"),
                    cfg.hidden,
                    cfg.hidden,
                    cfg.head_bias,
                    cfg.init_std,
                ),
                norm: LayerNorm::new(&(&hp / "norm"), cfg.hidden, cfg.norm_eps),
            },
        };
        let dec = root / "decoder";
        let decoder_weight = if cfg.tie_weights {
            embedding.word.shallow_clone()
        } else {
            dec.var(
                "weight",
                &[cfg.vocab_size, cfg.hidden],
                normal(cfg.init_std),
            )
        };
        let decoder_bias = cfg
            .decoder_bias
            .then(|| dec.var("bias", &[cfg.vocab_size], Init::Const(0.0)));
        MlmTransformer {
            cfg: cfg.clone(),
            embedding,
            layers,
            final_norm,
            head,
            decoder_weight,
            decoder_bias,
        }
    }

    /// Rows of the flattened `[B·S, H]` states that the loss is computed on (`None`: all).
    fn prediction_rows(&self, labels_flat: &Tensor) -> Option<Tensor> {
        let p = self.cfg.sparse_prediction?;
        let is_target = labels_flat.ne(IGNORE_INDEX);
        if self.cfg.sparse_static {
            // v2: `argsort(labels != -100)[-round(p·B·S):]` — a fixed count keeps shapes static;
            // exact when exactly that many positions are masked (the v2 masking guarantees it).
            // Python's round() rounds half to even; a count of 0 selects everything (`[-0:]`).
            let total = labels_flat.size()[0];
            let count = ((p * total as f64).round_ties_even() as i64).min(total);
            if count == 0 {
                return None;
            }
            let order = is_target.argsort_stable(true, 0, false);
            Some(order.narrow(0, total - count, count))
        } else {
            // v1: exactly the masked positions (`outputs[labels != -100]`), a dynamic count.
            Some(is_target.nonzero().squeeze_dim(1))
        }
    }

    fn predict(&self, h: &Tensor) -> Tensor {
        let h = match &self.head {
            PredictionHead::Identity => h.shallow_clone(),
            PredictionHead::Linear(lin) => lin.forward(h),
            PredictionHead::Bert { dense, norm } => norm.forward(&dense.forward(h).gelu("none")),
        };
        h.linear(&self.decoder_weight, self.decoder_bias.as_ref())
    }
}

impl MlmModel for MlmTransformer {
    fn mlm_logits(&self, input_ids: &Tensor, labels: &Tensor, train: bool) -> (Tensor, Tensor) {
        let hidden = self.cfg.hidden;
        let h = self.encode(input_ids, None, train).reshape([-1, hidden]); // [B·S, H]
        let labels = labels.reshape([-1]);
        let (h, labels) = match self.prediction_rows(&labels) {
            Some(rows) => (h.index_select(0, &rows), labels.index_select(0, &rows)),
            None => (h, labels),
        };
        (self.predict(&h), labels)
    }

    fn mlm_loss(&self, input_ids: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let (logits, labels) = self.mlm_logits(input_ids, labels, train);
        logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
            &labels,
            None,
            Reduction::Mean,
            IGNORE_INDEX,
            0.0,
        )
    }

    fn encode(&self, input_ids: &Tensor, key_padding_mask: Option<&Tensor>, train: bool) -> Tensor {
        let mut x = self.embedding.forward(input_ids, train);
        // The reference adds (1 - mask) * -10000 to the scores of padded keys.
        let additive_mask = key_padding_mask.map(|m| {
            let (b, s) = m.size2().expect("key_padding_mask is [B, S]");
            let real = m.to_kind(x.kind());
            ((real.ones_like() - real) * MASK_FILL).view([b, 1, 1, s])
        });
        for block in &self.layers {
            x = block.forward(&x, additive_mask.as_ref(), train);
        }
        match &self.final_norm {
            Some(norm) => norm.forward(&x),
            None => x,
        }
    }

    fn hidden_size(&self) -> i64 {
        self.cfg.hidden
    }

    fn config(&self) -> &ArchConfig {
        &self.cfg
    }
}
