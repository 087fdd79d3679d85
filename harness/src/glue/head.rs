//! The classification head of upstream `ScriptableLMForSequenceClassification` in `cramming/architectures/crammed_bert.py`, JonasGeiping/cramming 196c991 (`ScriptableLMForSequenceClassification` with
//! the `GLUE_sane` pooler override):
//!
//! ```text
//! hidden states [B,S,H] → first token (<cls>) [B,H] → Linear(H→head_dim, bias) → Tanh
//!   → Dropout(0.1) → Linear(head_dim→num_labels, bias) → logits [B,num_labels]
//! ```
//!
//! `head_dim` is upstream's per architecture (`GlueConfig::head_width`): 1024 for crammed-bert and
//! bert-c5, the hidden size for bert-original (768) and izsak (1024). Weights are freshly
//! drawn from N(0, 0.02), biases zero. Variable names follow the reference:
//! `pooler.dense.{weight,bias}` and `head.{weight,bias}`.
use tch::nn::{self, Module};
use tch::Tensor;

/// Dropout after the pooler's Tanh (upstream `ScriptableLMForSequenceClassification` in `cramming/architectures/crammed_bert.py`, JonasGeiping/cramming 196c991).
pub const HEAD_DROPOUT: f64 = 0.1;
/// Std of the N(0, std) initialisation of both head Linears.
pub const HEAD_INIT_STD: f64 = 0.02;
/// Variable-name prefixes of the head (everything else comes from the checkpoint).
pub const HEAD_PREFIXES: [&str; 2] = ["pooler.", "head."];

/// First-token pooling, Linear → Tanh → Dropout → Linear.
#[derive(Debug)]
pub struct ClassifierHead {
    dense: nn::Linear,
    out: nn::Linear,
}

fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: HEAD_INIT_STD,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

impl ClassifierHead {
    /// Create the head's variables under `root` (`pooler.dense.*`, `head.*`).
    pub fn new(root: &nn::Path, hidden: i64, head_dim: i64, num_labels: i64) -> Self {
        ClassifierHead {
            dense: linear(root / "pooler" / "dense", hidden, head_dim),
            out: linear(root / "head", head_dim, num_labels),
        }
    }

    /// Logits `[B, num_labels]` from encoder states `[B, S, H]`; `train` enables dropout.
    pub fn forward(&self, hidden_states: &Tensor, train: bool) -> Tensor {
        let first = hidden_states.select(1, 0);
        let pooled = self
            .dense
            .forward(&first)
            .tanh()
            .dropout(HEAD_DROPOUT, train);
        self.out.forward(&pooled)
    }
}
