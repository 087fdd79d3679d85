//! MLM masking: which positions the model must predict, and what it sees there.
//!
//! * **v2** (`PatchedDataCollatorForLanguageModeling.torch_mask_tokens` @HEAD, bert-o4): exactly
//!   `n = round(p·S)` positions per sequence, chosen uniformly without replacement; the first
//!   `round(0.8·n)` chosen become `<mask>`, the next `round(0.9·n) − round(0.8·n)` become a
//!   uniformly random id from the *full* vocabulary (special tokens included), the rest stay
//!   unchanged (26/3/3 at p = 0.25, S = 128). Special tokens are **not** excluded. The reference
//!   chooses positions by `argsort(randint_like(ids, S))`, an approximately uniform permutation;
//!   we draw an exactly uniform one (partial Fisher–Yates). `round` is Python's (half to even).
//! * **v1** (HF `DataCollatorForLanguageModeling`, bert-o3 and the baselines): each non-special
//!   position is masked with probability p (Bernoulli); a masked position becomes `<mask>` with
//!   probability 0.8, else a random id with probability 0.5, else stays (80/10/10 by draw).
//!
//! Labels are the original ids at masked positions and −100 elsewhere. Randomness comes from a
//! counter-based stream: the mask of micro-batch `k` depends only on the `masking` seed and `k`,
//! so a resumed run masks exactly as an uninterrupted one would.
use crate::data::tokenizer::special;
use crate::rng::splitmix64;
use serde::{Deserialize, Serialize};

/// Label value of positions that are not predicted (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;
/// The `<mask>` id ([`special::MASK`], fixed in every crambench tokenizer).
pub const MASK_ID: i64 = special::MASK as i64;
/// Ids below this are special tokens ([`special::COUNT`]).
pub const NUM_SPECIAL: i64 = special::COUNT as i64;

/// Which masking rule (`train.masking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskingKind {
    /// Exactly round(p·S) per sequence, 80/10/10 by count, specials not excluded.
    #[serde(rename = "v2")]
    V2Exact,
    /// Bernoulli(p) per non-special token, 80/10/10 by draw.
    #[serde(rename = "v1")]
    V1Bernoulli,
}

/// Python's `round` for the non-negative values used here (half to even).
pub fn py_round(x: f64) -> usize {
    x.round_ties_even().max(0.0) as usize
}

/// xoshiro256** seeded through SplitMix64: small, fast and fully specified, so masks and the
/// synthetic stream are reproducible in any language.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for stream `stream` of seed `seed` (e.g. the micro-step index).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut t = stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut x = seed ^ splitmix64(&mut t);
        Rng {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's method with rejection; unbiased). `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The masking rule with its parameters.
#[derive(Debug, Clone)]
pub struct Masker {
    pub kind: MaskingKind,
    /// `mlm_probability`.
    pub p: f64,
    /// Size of the tokenizer's vocabulary (random replacements are drawn from `[0, vocab)`).
    pub vocab_size: u64,
    /// The derived `masking` seed.
    pub seed: u64,
}

/// Counts of what one call did (for tests and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaskCounts {
    pub masked: usize,
    pub replaced_by_mask: usize,
    pub replaced_by_random: usize,
    pub kept: usize,
}

impl Masker {
    /// Positions masked per sequence under v2: `round(p·S)`.
    pub fn per_sequence(&self, seq_len: usize) -> usize {
        py_round(self.p * seq_len as f64)
    }

    /// Mask a batch in place. `ids` holds `B·seq_len` token ids row-major; `labels` (same
    /// length) receives the targets. `stream` selects the random stream (the micro-step index).
    pub fn mask(
        &self,
        ids: &mut [i64],
        labels: &mut [i64],
        seq_len: usize,
        stream: u64,
    ) -> MaskCounts {
        assert_eq!(ids.len(), labels.len());
        assert!(seq_len > 0 && ids.len() % seq_len == 0);
        let mut rng = Rng::new(self.seed, stream);
        labels.fill(IGNORE);
        let mut c = MaskCounts::default();
        match self.kind {
            MaskingKind::V2Exact => {
                let n = self.per_sequence(seq_len).min(seq_len);
                let n_mask = py_round(0.8 * n as f64);
                let n_rand_end = py_round(0.9 * n as f64);
                let mut perm: Vec<usize> = (0..seq_len).collect();
                for (row_ids, row_labels) in ids.chunks_mut(seq_len).zip(labels.chunks_mut(seq_len))
                {
                    for (i, slot) in perm.iter_mut().enumerate() {
                        *slot = i;
                    }
                    // Partial Fisher–Yates: perm[..n] is a uniform ordered sample.
                    for i in 0..n {
                        let j = i + rng.below((seq_len - i) as u64) as usize;
                        perm.swap(i, j);
                    }
                    for (rank, &pos) in perm[..n].iter().enumerate() {
                        row_labels[pos] = row_ids[pos];
                        c.masked += 1;
                        if rank < n_mask {
                            row_ids[pos] = MASK_ID;
                            c.replaced_by_mask += 1;
                        } else if rank < n_rand_end {
                            row_ids[pos] = rng.below(self.vocab_size) as i64;
                            c.replaced_by_random += 1;
                        } else {
                            c.kept += 1;
                        }
                    }
                }
            }
            MaskingKind::V1Bernoulli => {
                for (id, label) in ids.iter_mut().zip(labels.iter_mut()) {
                    if *id < NUM_SPECIAL {
                        continue;
                    }
                    if rng.next_f64() >= self.p {
                        continue;
                    }
                    *label = *id;
                    c.masked += 1;
                    if rng.next_f64() < 0.8 {
                        *id = MASK_ID;
                        c.replaced_by_mask += 1;
                    } else if rng.next_f64() < 0.5 {
                        *id = rng.below(self.vocab_size) as i64;
                        c.replaced_by_random += 1;
                    } else {
                        c.kept += 1;
                    }
                }
            }
        }
        c
    }
}
