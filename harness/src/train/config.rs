//! The `[train]` table of a recipe. Defaults are the v2 recipe `bert-o4` (upstream `cramming/config/train/bert-o4.yaml`, JonasGeiping/cramming 196c991); every
//! field is named like the reference's `train.*` (or `impl.*`) key it mirrors.
use super::amp::Precision;
use super::masking::MaskingKind;
use super::optim::{AdamConfig, OptimizerKind};
use super::schedule::SchedulerKind;
use crate::model::attention::AttentionBackend;
use serde::{Deserialize, Serialize};

/// Pretraining hyperparameters (`[train]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Device-hour budget: `24h`, `90m`, `2.5h`, `30s` (`budget`, hours, in `cfg_pretrain.yaml`).
    pub budget: String,
    /// `train.steps`: schedule resolution in micro-batch steps (and a hard upper limit).
    pub steps: u64,
    /// `adamw` (decoupled weight decay) or `adam-l2` (classic Adam, coupled L2).
    pub optimizer: OptimizerKind,
    /// Base (peak) learning rate.
    pub lr: f64,
    /// Adam betas.
    pub betas: [f64; 2],
    /// Adam epsilon.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Parameters whose name contains any of these substrings get no weight decay.
    pub no_decay: Vec<String>,
    /// Learning-rate schedule.
    pub scheduler: SchedulerKind,
    /// Warm-up: a fraction of `steps` when in (0, 1), else a step count.
    pub warmup_steps: f64,
    /// Final learning rate of `polynomial-decay`.
    pub lr_end: f64,
    /// Power of `polynomial-decay`.
    pub power: f64,
    /// Target batch size in sequences.
    pub batch_size: u64,
    /// Micro-batch size (`impl.microbatch_size`); batch = accumulation × micro-batch.
    pub microbatch_size: u64,
    /// Batch-size ramp: 0 none; (0, 1) fraction of the budget; ≥ 1 micro-steps.
    pub batch_size_ramp: f64,
    /// Global L2 norm to clip gradients to; 0 = no clipping (TOML has no null).
    pub gradient_clipping: f64,
    /// Dropout on during pretraining (`pretrain_in_train_mode`).
    pub pretrain_in_train_mode: bool,
    /// `objective.mlm_probability`.
    pub mlm_probability: f64,
    /// Masking rule: `v2` (exact count) or `v1` (Bernoulli).
    pub masking: MaskingKind,
    /// Precision on CUDA: `bf16` (default), `fp16` (reference: with dynamic loss scaling) or
    /// `fp32`. CPU always trains in fp32.
    pub precision: Precision,
    /// TF32 matmuls on CUDA (reference: on).
    pub tf32: bool,
    /// Attention kernel (`auto`, `flash`, `efficient`, `cudnn`, `math`;
    /// [`crate::model::attention`]); `auto` is not written into the resolved recipe, so recipes
    /// without the key keep their digests.
    #[serde(skip_serializing_if = "AttentionBackend::is_auto")]
    pub attention: AttentionBackend,
    /// Minutes between intermediate checkpoints (0 = only the final one).
    pub checkpoint_every_minutes: f64,
    /// Checkpoints kept on disk (the newest; at least 1).
    pub keep_checkpoints: usize,
    /// Log a metrics line every this many optimizer steps.
    pub log_every: u64,
    /// Micro-steps averaged for the reported final loss (reference: last 1000 steps).
    pub loss_window: usize,
    /// Consecutive non-finite losses after which training aborts.
    pub nonfinite_patience: u32,
    /// Sequence length of the synthetic stream (a real dataset brings its own).
    pub seq_len: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            budget: "24h".into(),
            steps: 900_000,
            optimizer: OptimizerKind::AdamW,
            lr: 1e-3,
            betas: [0.9, 0.98],
            eps: 1e-12,
            weight_decay: 0.01,
            no_decay: vec![
                "bias".into(),
                "LayerNorm.bias".into(),
                "LayerNorm.weight".into(),
                "norm".into(),
            ],
            scheduler: SchedulerKind::BudgetTriangle2,
            warmup_steps: 0.0,
            lr_end: 1e-7,
            power: 1.0,
            batch_size: 8192,
            microbatch_size: 128,
            batch_size_ramp: 0.6,
            gradient_clipping: 0.5,
            pretrain_in_train_mode: false,
            mlm_probability: 0.25,
            masking: MaskingKind::V2Exact,
            precision: Precision::Bf16,
            tf32: true,
            attention: AttentionBackend::Auto,
            checkpoint_every_minutes: 30.0,
            keep_checkpoints: 2,
            log_every: 10,
            loss_window: 1000,
            nonfinite_patience: 20,
            seq_len: 128,
        }
    }
}

impl TrainConfig {
    /// The optimizer settings of the `[train]` table.
    pub fn adam(&self) -> AdamConfig {
        AdamConfig {
            kind: self.optimizer,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            no_decay: self.no_decay.clone(),
        }
    }

    /// The clipping norm, `None` when clipping is off.
    pub fn clip_norm(&self) -> Option<f64> {
        (self.gradient_clipping > 0.0).then_some(self.gradient_clipping)
    }

    /// Check values that deserialisation cannot: returns `(field, message)` of the first problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        crate::train::budget::parse_budget(&self.budget).map_err(|e| ("budget", e.to_string()))?;
        if self.steps == 0 {
            return Err(("steps", "must be positive".into()));
        }
        if self.microbatch_size == 0 || self.batch_size < self.microbatch_size {
            return Err((
                "microbatch_size",
                format!("must be in 1..=batch_size ({})", self.batch_size),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(("lr", "must be positive".into()));
        }
        if !self.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return Err(("betas", "each must be in [0, 1)".into()));
        }
        if !(self.mlm_probability > 0.0 && self.mlm_probability < 1.0) {
            return Err(("mlm_probability", "must be in (0, 1)".into()));
        }
        if !(self.batch_size_ramp >= 0.0 && self.batch_size_ramp.is_finite()) {
            return Err(("batch_size_ramp", "must be ≥ 0".into()));
        }
        if !(self.gradient_clipping >= 0.0 && self.gradient_clipping.is_finite()) {
            return Err(("gradient_clipping", "must be ≥ 0 (0 = no clipping)".into()));
        }
        if !(2..=1 << 16).contains(&self.seq_len) {
            return Err((
                "seq_len",
                format!("must be in 2..=65536, got {}", self.seq_len),
            ));
        }
        if self.checkpoint_every_minutes < 0.0 {
            return Err(("checkpoint_every_minutes", "must be ≥ 0".into()));
        }
        Ok(())
    }

    /// Read and check `[train]` of a recipe; errors name the file and the key.
    pub fn from_recipe(recipe: &crate::recipe::Recipe) -> anyhow::Result<Self> {
        let cfg: TrainConfig = recipe.section("train")?;
        cfg.check().map_err(|(field, msg)| {
            crate::error::Error::input(format!("{}: train.{field}", recipe.path.display()), msg)
        })?;
        Ok(cfg)
    }

    /// The budget in device-hours.
    pub fn budget_hours(&self) -> anyhow::Result<f64> {
        crate::train::budget::parse_budget(&self.budget)
    }
}
