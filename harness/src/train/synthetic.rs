//! Training data sources, and the synthetic stand-ins used until (and besides) real data.
//!
//! [`BlockSource`] is what the trainer reads: fixed-length blocks of token ids. A prepared
//! dataset (the data module's packed shards) is one; [`SyntheticStream`] is another — a
//! deterministic, learnable token stream used by the tests and when no dataset is given:
//!
//! * ids `7..vocab` (never special tokens except `<cls>` at position 0 of every block);
//! * each next id follows a fixed random permutation of the previous one (`next = π(prev)`) with
//!   probability 0.85, else is uniform; `π` and the draws come from the `data-order` seed, and
//!   block `i` depends only on that seed and `i` (so any position can be resumed).
//!
//! A masked token is thus predictable from its left neighbour, and an MLM's loss falls from
//! about ln(vocab) towards the stream's entropy: a quick, honest check that training trains.
//!
//! [`TinyMlm`] is a deliberately small stand-in MLM (embeddings, one neighbour-mixing layer,
//! tied decoder) with reference-style parameter names. It exists for the trainer's own tests,
//! so they do not depend on the model module; it is not one of the paper's architectures.
use super::masking::{Rng, IGNORE, NUM_SPECIAL};
use anyhow::Result;
use tch::{nn, Kind, Tensor};

/// Fixed-length blocks of token ids, read by index.
pub trait BlockSource: Sync {
    /// Tokens per block (the sequence length).
    fn seq_len(&self) -> usize;
    /// Vocabulary size (ids are in `0..vocab_size`).
    fn vocab_size(&self) -> usize;
    /// Number of blocks; the trainer wraps around.
    fn num_blocks(&self) -> u64;
    /// Copy block `i` into `out` (`out.len() == seq_len()`).
    fn block(&self, i: u64, out: &mut [i64]) -> Result<()>;
    /// A digest or description that pins the data (dataset root digest, stream parameters).
    fn digest(&self) -> String;
    /// The tokenizer to copy into checkpoints, if any.
    fn tokenizer_path(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// `<cls>` id.
const CLS_ID: i64 = crate::data::tokenizer::special::CLS as i64;
/// Probability that the next token follows the permutation.
const FOLLOW_P: f64 = 0.85;

/// The deterministic synthetic stream (see the module docs).
pub struct SyntheticStream {
    seq_len: usize,
    vocab_size: usize,
    seed: u64,
    perm: Vec<i64>,
}

impl SyntheticStream {
    /// A stream of `seq_len`-token blocks over `vocab_size` ids, from the `data-order` seed.
    pub fn new(seq_len: usize, vocab_size: usize, seed: u64) -> Self {
        assert!(vocab_size > NUM_SPECIAL as usize + 1 && seq_len > 1);
        let n = vocab_size - NUM_SPECIAL as usize;
        let mut perm: Vec<i64> = (0..n as i64).collect();
        let mut rng = Rng::new(seed, u64::MAX);
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            perm.swap(i, j);
        }
        SyntheticStream {
            seq_len,
            vocab_size,
            seed,
            perm,
        }
    }
}

impl BlockSource for SyntheticStream {
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn num_blocks(&self) -> u64 {
        u64::MAX
    }
    fn block(&self, i: u64, out: &mut [i64]) -> Result<()> {
        let n = self.perm.len() as u64;
        let mut rng = Rng::new(self.seed, i);
        out[0] = CLS_ID;
        let mut prev = rng.below(n) as i64;
        for slot in out.iter_mut().skip(1) {
            *slot = prev + NUM_SPECIAL;
            prev = if rng.next_f64() < FOLLOW_P {
                self.perm[prev as usize]
            } else {
                rng.below(n) as i64
            };
        }
        Ok(())
    }
    fn digest(&self) -> String {
        format!(
            "synthetic-stream/v1 seq_len={} vocab={} seed={}",
            self.seq_len, self.vocab_size, self.seed
        )
    }
}

/// A tiny MLM for the trainer's tests (see the module docs).
pub struct TinyMlm {
    word: Tensor,
    pos: Tensor,
    emb_norm: nn::LayerNorm,
    norm1: nn::LayerNorm,
    mix: nn::Linear,
    final_norm: nn::LayerNorm,
    hidden: i64,
}

impl TinyMlm {
    /// Build under `root` with `hidden` features for `vocab` ids and `seq_len` positions.
    pub fn new(root: &nn::Path, vocab: i64, hidden: i64, seq_len: i64) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let e = root / "encoder" / "embedding";
        let word = (&e / "word_embedding").var("weight", &[vocab, hidden], init);
        let pos = (&e / "pos_embedding").var("weight", &[seq_len, hidden], init);
        let ln = nn::LayerNormConfig {
            eps: 1e-12,
            ..Default::default()
        };
        let emb_norm = nn::layer_norm(&e / "norm", vec![hidden], ln);
        let l = root / "encoder" / "layers" / "0";
        let norm1 = nn::layer_norm(&l / "norm1", vec![hidden], ln);
        let lin = nn::LinearConfig {
            ws_init: init,
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let mix = nn::linear(&l / "ffn" / "dense_in", 3 * hidden, hidden, lin);
        let final_norm = nn::layer_norm(root / "encoder" / "final_norm", vec![hidden], ln);
        TinyMlm {
            word,
            pos,
            emb_norm,
            norm1,
            mix,
            final_norm,
            hidden,
        }
    }

    /// Mean cross-entropy over positions whose label is not −100.
    pub fn mlm_loss(&self, input_ids: &Tensor, labels: &Tensor, _train: bool) -> Tensor {
        use tch::nn::Module;
        let s = input_ids.size()[1];
        let x = self.word.embedding(input_ids) + self.pos.narrow(0, 0, s);
        let x = self.emb_norm.forward(&x);
        let h = self.norm1.forward(&x);
        let left = h.roll([1], [1]);
        let right = h.roll([-1], [1]);
        let x = x + self
            .mix
            .forward(&Tensor::cat(&[left, h, right], -1))
            .gelu("none");
        let x = self.final_norm.forward(&x).reshape([-1, self.hidden]);
        let logits = x.matmul(&self.word.tr());
        logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
            &labels.reshape([-1]),
            None,
            tch::Reduction::Mean,
            IGNORE,
            0.0,
        )
    }
}

trait Embedding {
    fn embedding(&self, ids: &Tensor) -> Tensor;
}

impl Embedding for Tensor {
    fn embedding(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(self, ids, -1, false, false)
    }
}

/// The data module's packed shards, read in their recorded training order.
impl BlockSource for crate::data::PackedDataset {
    fn seq_len(&self) -> usize {
        crate::data::PackedDataset::seq_len(self)
    }
    fn vocab_size(&self) -> usize {
        crate::data::PackedDataset::vocab_size(self) as usize
    }
    fn num_blocks(&self) -> u64 {
        crate::data::PackedDataset::num_blocks(self)
    }
    fn block(&self, i: u64, out: &mut [i64]) -> Result<()> {
        crate::data::PackedDataset::block(self, i, out);
        Ok(())
    }
    fn digest(&self) -> String {
        format!("sha256:{}", self.root_digest())
    }
    fn tokenizer_path(&self) -> Option<std::path::PathBuf> {
        Some(crate::data::PackedDataset::tokenizer_path(self))
    }
}
