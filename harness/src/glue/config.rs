//! The `[glue]` recipe table: the fine-tuning protocol and its hyperparameters.
//!
//! `protocol` picks the defaults; every other key overrides one of them:
//!
//! | key | `glue-sane` (crammed models) | `glue-bert` (BERT baselines) |
//! |---|---|---|
//! | `lr` | 4e-5 | 2e-5 |
//! | `batch_size` | 16 | 32 |
//! | `epochs` (at most 5) | 5 | 5 |
//! | `schedule` | `cosine` (HF cosine with warmup, stepped per batch) | `constant` |
//! | `warmup` (fraction of the task's steps) | 0.1 | 0.0 |
//! | `frozen_warmup` | true | true |
//! | `betas`, `eps`, `weight_decay` (AdamW) | [0.9, 0.98], 1e-6, 0.0 | same |
//! | `no_decay` (substrings of parameter names exempt from weight decay) | `bias`, `LayerNorm.bias`, `LayerNorm.weight`, `norm` | `bias`, `LayerNorm.bias`, `LayerNorm.weight` |
//! | `head_dim` | the architecture's (below) | same |
//! | `key_padding_mask` | the architecture's (below) | same |
//! | `dropout` (dropout on while fine-tuning) | true | true |
//! | `max_seq_len` | 128 | 128 |
//! | `trials` (seeds per task; median reported) | 5 | 5 |
//! | `attention` (kernel: `auto`, `flash`, `efficient`, `cudnn`, `math`) | `auto` | same |
//! | `bucket_batches` (length bucketing pool in batches; 0 = off) | 0 | same |
//! | `control_no_pretraining` (also fine-tune the untrained architecture as a control) | on for the demo tasks, off for GLUE | same |
//!
//! Sources: upstream `cramming/config/eval/GLUE_sane.yaml` (JonasGeiping/cramming 196c991) and `cramming/config/eval/GLUE.yaml` at Last1.13release for `glue-bert`: bs
//! 32, lr 2e-5, 5 epochs, constant). `glue-bert`'s AdamW betas/eps/weight decay are not given
//! by the spec; they are taken to be the shared `eval/optim/adam.yaml` values — an assumption,
//! written out so a recipe can override it. `no_decay` is upstream's `limited_decay_keys` of
//! each eval config (GLUE_sane.yaml at 196c991, GLUE.yaml at Last1.13release), matched as
//! substrings of the parameter names as `group_parameters` in `cramming/backend/utils.py` does;
//! it only matters when a recipe sets a `weight_decay` (both protocols fine-tune without).
//!
//! **`frozen_warmup`** (default on) is what the reference does and what its published GLUE numbers
//! were made with (upstream `eval.py`): `get_schedule_fn` in `cramming/backend/optimizers/schedulers.py`
//! (JonasGeiping/cramming 196c991, the same at Last1.13release) overwrites the shared
//! `cfg.eval.warmup_steps` with `int(0.1·steps)` of the *first* task run, and the conversion only
//! happens for a value below 1, so every later task reuses that step count (267 steps with CoLA
//! first: `int(0.1·(8551 // 16)·5)`). Tasks then run in the reference's order (CoLA first) whatever
//! order `--tasks` names them in. `frozen_warmup = false` is the per-task variant: each task warms
//! up for `int(warmup·steps)` of its own steps.
//!
//! **`head_dim`**, when absent, is the width upstream's architecture config gives the
//! classification head (`classification_head.head_dim`): 1024 for crammed-bert
//! (`arch/crammed-bert.yaml` at 196c991) and bert-c5 (`arch/bert-c5.yaml` at Last1.13release),
//! the hidden size for bert-original and izsak (`${arch.hidden_size}` in `arch/bert-original.yaml`
//! and `arch/bert-large-izsak.yaml` at Last1.13release, `arch/crammed-large-izsak.yaml` at
//! 196c991): 768 and 1024 at full size. Neither eval config overrides it.
//!
//! **`key_padding_mask`**, when absent, is whether upstream's attention for that architecture
//! honours the padding mask of a GLUE batch: v1's bert-c5 runs the flash-attention path
//! (`FlashMultiHeadAttention` in `cramming/architectures/attention.py` at Last1.13release), which
//! calls the kernel with `key_padding_mask=None`, so padded positions are attended to; every other
//! architecture masks them (the additive -10000 mask). `false` reproduces bert-c5's behaviour
//! (the crammed-bert-v1 recipe sets it), `true` masks padding for any architecture.
//!
//! More than 5 epochs is refused: the cramming rule caps downstream fine-tuning.
use crate::error::Error;
use crate::glue::aggregate::Rule;
use crate::model::attention::AttentionBackend;
use crate::model::config::{ArchConfig, ArchKind};
use crate::train::amp::Precision;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The cramming rule: fine-tuning may run at most this many epochs.
pub const MAX_EPOCHS: u32 = 5;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A fine-tuning protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    GlueSane,
    GlueBert,
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::GlueSane => "glue-sane",
            Protocol::GlueBert => "glue-bert",
        }
    }
}

/// Learning-rate schedule over a task's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// HF `get_cosine_schedule_with_warmup`: linear warmup, then half a cosine to 0.
    Cosine,
    /// HF `get_constant_schedule` (with warmup if `warmup > 0`).
    Constant,
}

/// The recipe table as written (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlueOverrides {
    protocol: Option<Protocol>,
    lr: Option<f64>,
    batch_size: Option<usize>,
    eval_batch_size: Option<usize>,
    epochs: Option<u32>,
    schedule: Option<Schedule>,
    warmup: Option<f64>,
    frozen_warmup: Option<bool>,
    betas: Option<[f64; 2]>,
    eps: Option<f64>,
    weight_decay: Option<f64>,
    no_decay: Option<Vec<String>>,
    head_dim: Option<i64>,
    key_padding_mask: Option<bool>,
    dropout: Option<bool>,
    max_seq_len: Option<usize>,
    trials: Option<u32>,
    control_no_pretraining: Option<bool>,
    tasks: Option<Vec<String>>,
    aggregate: Option<Rule>,
    precision: Option<Precision>,
    attention: Option<AttentionBackend>,
    bucket_batches: Option<usize>,
    pins: Option<BTreeMap<String, String>>,
    data: Option<String>,
}

/// The resolved `[glue]` table (what is recorded in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GlueOverrides")]
pub struct GlueConfig {
    pub protocol: Protocol,
    /// Peak learning rate.
    pub lr: f64,
    /// Training batch size (incomplete last batches are dropped, as the reference does).
    pub batch_size: usize,
    /// Evaluation batch size (no effect on results).
    pub eval_batch_size: usize,
    /// Epochs per task (≤ 5).
    pub epochs: u32,
    pub schedule: Schedule,
    /// Warmup as a fraction of the task's optimizer steps.
    pub warmup: f64,
    /// The reference's warm-up: the first task's step count reused by every later task (on by
    /// default); `false`: each task warms up for `warmup` of its own steps (see the module doc).
    pub frozen_warmup: bool,
    /// AdamW betas, epsilon and (decoupled) weight decay.
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// Parameter-name substrings exempt from weight decay; absent: the protocol's (upstream's
    /// `limited_decay_keys`, see [`GlueConfig::no_decay_keys`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_decay: Option<Vec<String>>,
    /// Width of the head's first Linear; absent: the architecture's (see the module doc and
    /// [`GlueConfig::head_width`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<i64>,
    /// Whether attention ignores padded keys; absent: as upstream's attention for the
    /// architecture (see the module doc and [`GlueConfig::masks_padding`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_padding_mask: Option<bool>,
    /// Dropout on (encoder and head) while fine-tuning (the reference's `eval_in_train_mode`).
    pub dropout: bool,
    /// Longest input in tokens, specials included (clamped to the model's positions).
    pub max_seq_len: usize,
    /// Fine-tuning runs (seeds) per task.
    pub trials: u32,
    /// Whether the no-pretraining control is run ([`crate::glue::controls`]); absent: on for
    /// the demo tasks (cheap), off for GLUE (see [`GlueConfig::runs_no_pretraining`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_no_pretraining: Option<bool>,
    /// Tasks run when the command line names none (`all` = the eight default GLUE tasks).
    pub tasks: Vec<String>,
    /// Aggregate rule reported as the headline number.
    pub aggregate: Rule,
    /// Mixed precision on CUDA (fp32 on CPU).
    pub precision: Precision,
    /// Attention kernel while fine-tuning and evaluating ([`crate::model::attention`]); `auto`
    /// is left out of the resolved table, so configurations without it keep their digests.
    #[serde(skip_serializing_if = "AttentionBackend::is_auto")]
    pub attention: AttentionBackend,
    /// Length bucketing of the training batches, in batches per pool (0 = off, the default;
    /// see [`crate::glue::finetune::epoch_batches`]): each epoch's shuffled examples are taken
    /// `bucket_batches` batches at a time, sorted by length within the pool, cut into batches,
    /// and the batches shuffled. Every epoch still trains on the same examples as without it
    /// (the same incomplete tail is dropped), with the same step count and schedule; batches
    /// mix fewer lengths, so less padding runs through the encoder. Results change (other batch
    /// compositions, as another shuffle would), so it is opt-in.
    #[serde(skip_serializing_if = "is_zero")]
    pub bucket_batches: usize,
    /// SHA-256 pins of the GLUE files (path relative to the data root → `sha256:<hex>`);
    /// empty: files are hashed and recorded but not checked.
    pub pins: BTreeMap<String, String>,
    /// Where the GLUE data comes from when `--glue-data` is not given: a directory (relative
    /// to the recipe) or `hf:owner/name[@revision]` (the Parquet snapshot of a hub dataset,
    /// `hf:nyu-mll/glue`, resolved through the recipe's lock file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Default for GlueConfig {
    fn default() -> Self {
        GlueConfig::try_from(GlueOverrides::default()).expect("defaults are valid")
    }
}

impl GlueConfig {
    /// The protocol's defaults.
    pub fn for_protocol(p: Protocol) -> Self {
        GlueConfig::try_from(GlueOverrides {
            protocol: Some(p),
            ..Default::default()
        })
        .expect("defaults are valid")
    }
}

impl TryFrom<GlueOverrides> for GlueConfig {
    type Error = String;

    fn try_from(o: GlueOverrides) -> std::result::Result<Self, String> {
        let protocol = o.protocol.unwrap_or_default();
        let sane = protocol == Protocol::GlueSane;
        let c = GlueConfig {
            protocol,
            lr: o.lr.unwrap_or(if sane { 4e-5 } else { 2e-5 }),
            batch_size: o.batch_size.unwrap_or(if sane { 16 } else { 32 }),
            eval_batch_size: o.eval_batch_size.unwrap_or(128),
            epochs: o.epochs.unwrap_or(5),
            schedule: o.schedule.unwrap_or(if sane {
                Schedule::Cosine
            } else {
                Schedule::Constant
            }),
            warmup: o.warmup.unwrap_or(if sane { 0.1 } else { 0.0 }),
            frozen_warmup: o.frozen_warmup.unwrap_or(true),
            betas: o.betas.unwrap_or([0.9, 0.98]),
            eps: o.eps.unwrap_or(1e-6),
            weight_decay: o.weight_decay.unwrap_or(0.0),
            no_decay: o.no_decay,
            head_dim: o.head_dim,
            key_padding_mask: o.key_padding_mask,
            dropout: o.dropout.unwrap_or(true),
            max_seq_len: o.max_seq_len.unwrap_or(128),
            trials: o.trials.unwrap_or(5),
            control_no_pretraining: o.control_no_pretraining,
            tasks: o.tasks.unwrap_or_else(|| vec!["all".into()]),
            aggregate: o.aggregate.unwrap_or_default(),
            precision: o.precision.unwrap_or(Precision::Bf16),
            attention: o.attention.unwrap_or_default(),
            bucket_batches: o.bucket_batches.unwrap_or(0),
            pins: o.pins.unwrap_or_default(),
            data: o.data,
        };
        c.validate()?;
        Ok(c)
    }
}

impl GlueConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.epochs > MAX_EPOCHS {
            return Err(format!(
                "epochs = {}: more than {MAX_EPOCHS} epochs of fine-tuning is refused (the cramming rule)",
                self.epochs
            ));
        }
        if self.epochs == 0 || self.trials == 0 || self.batch_size == 0 || self.eval_batch_size == 0
        {
            return Err("epochs, trials, batch_size and eval_batch_size must be positive".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr = {}: must be positive", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return Err(format!("warmup = {}: a fraction in [0, 1)", self.warmup));
        }
        if self.betas.iter().any(|b| !(0.0..1.0).contains(b))
            || self.eps <= 0.0
            || self.weight_decay < 0.0
        {
            return Err("betas must lie in [0, 1), eps > 0, weight_decay >= 0".into());
        }
        if self
            .no_decay
            .as_ref()
            .is_some_and(|keys| keys.iter().any(|k| k.is_empty()))
        {
            return Err("no_decay: an empty name would exempt every parameter".into());
        }
        if self.head_dim.is_some_and(|d| d <= 0) || self.max_seq_len < 4 {
            return Err("head_dim must be positive and max_seq_len at least 4".into());
        }
        // Task ids name output directories (`predictions/<set>/`): only known ones pass.
        if let Err(e) = crate::glue::tasks::Task::parse_list_as("tasks", &self.tasks.join(",")) {
            return Err(match e.downcast_ref::<Error>() {
                Some(Error::Input { msg, .. }) => format!("tasks: {msg}"),
                _ => format!("tasks: {e}"),
            });
        }
        for (path, pin) in &self.pins {
            let hex = pin.strip_prefix("sha256:").unwrap_or(pin);
            if !crate::provenance::hash::is_sha256_hex(hex) {
                return Err(format!("pins.{path:?}: not a sha256 hex digest"));
            }
        }
        Ok(())
    }

    /// Width of the classification head for a model of architecture `arch`: `head_dim`, or
    /// upstream's `classification_head.head_dim` of that architecture.
    pub fn head_width(&self, arch: &ArchConfig) -> i64 {
        self.head_dim.unwrap_or(match arch.kind {
            ArchKind::CrammedBert | ArchKind::BertC5 => 1024,
            ArchKind::BertOriginal | ArchKind::Izsak => arch.hidden,
        })
    }

    /// The parameter-name substrings exempt from weight decay: `no_decay`, or the protocol's
    /// `limited_decay_keys` upstream (`glue-sane`: bias, LayerNorm.bias, LayerNorm.weight,
    /// norm; `glue-bert`: the first three).
    pub fn no_decay_keys(&self) -> Vec<String> {
        self.no_decay.clone().unwrap_or_else(|| {
            let keys: &[&str] = match self.protocol {
                Protocol::GlueSane => &["bias", "LayerNorm.bias", "LayerNorm.weight", "norm"],
                Protocol::GlueBert => &["bias", "LayerNorm.bias", "LayerNorm.weight"],
            };
            keys.iter().map(|k| k.to_string()).collect()
        })
    }

    /// Whether fine-tuning and evaluation pass the batch's key-padding mask to the encoder:
    /// `key_padding_mask`, or what upstream's attention does for `arch` (v1 bert-c5's flash
    /// path ignores it).
    pub fn masks_padding(&self, arch: &ArchConfig) -> bool {
        self.key_padding_mask
            .unwrap_or(arch.kind != ArchKind::BertC5)
    }

    /// Whether a run of GLUE tasks (`glue`) or of the demo tasks also fine-tunes the
    /// untrained architecture as a control: `control_no_pretraining`, or on for the demo tasks
    /// only.
    pub fn runs_no_pretraining(&self, glue: bool) -> bool {
        self.control_no_pretraining.unwrap_or(!glue)
    }

    /// Read `[glue]` of a recipe.
    pub fn from_recipe(recipe: &crate::recipe::Recipe) -> Result<Self> {
        recipe.section::<GlueConfig>("glue")
    }

    /// Parse a `[glue]` table given as TOML text (tests, `--set`-style overrides).
    pub fn from_toml(text: &str, what: &str) -> Result<Self> {
        let v: toml::Table = text.parse().map_err(|e| Error::input(what, e))?;
        serde_path_to_error::deserialize(toml::Value::Table(v))
            .map_err(|e| Error::input(format!("{what}: {}", e.path()), e.inner()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_refusals() {
        let s = GlueConfig::default();
        assert_eq!(
            (s.lr, s.batch_size, s.epochs, s.schedule, s.head_dim),
            (4e-5, 16, 5, Schedule::Cosine, None)
        );
        let b = GlueConfig::from_toml("protocol = \"glue-bert\"", "t").unwrap();
        assert_eq!(
            (b.lr, b.batch_size, b.schedule, b.warmup, b.head_dim),
            (2e-5, 32, Schedule::Constant, 0.0, None)
        );
        let e = GlueConfig::from_toml("epochs = 6", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused"), "{e}");
        let e = GlueConfig::from_toml("epoch = 3", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("epoch"), "{e}");
        // The control: on by default for the demo tasks only; the key overrides it.
        assert!(s.runs_no_pretraining(false) && !s.runs_no_pretraining(true));
        let c = GlueConfig::from_toml("control_no_pretraining = true", "t").unwrap();
        assert!(c.runs_no_pretraining(true));
        let c = GlueConfig::from_toml("control_no_pretraining = false", "t").unwrap();
        assert!(!c.runs_no_pretraining(false));
        // The resolved table round-trips through the recipe format.
        let t = toml::to_string(&b).unwrap();
        assert_eq!(GlueConfig::from_toml(&t, "t").unwrap(), b);
        // The attention and bucketing keys: absent from the resolved table at their defaults
        // (digests of existing configurations unchanged), round-tripped when set.
        assert!(
            !t.contains("attention") && !t.contains("bucket_batches"),
            "{t}"
        );
        let a = GlueConfig::from_toml("attention = \"math\"\nbucket_batches = 50", "t").unwrap();
        assert_eq!(
            (a.attention, a.bucket_batches),
            (AttentionBackend::Math, 50)
        );
        let t = toml::to_string(&a).unwrap();
        assert_eq!(GlueConfig::from_toml(&t, "t").unwrap(), a);
        let e = GlueConfig::from_toml("attention = \"fast\"", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("attention"), "{e}");
        // no_decay: absent from the resolved table at the protocol's keys, round-tripped when
        // set; an empty name (which would exempt everything) is refused.
        assert!(!t.contains("no_decay"), "{t}");
        assert_eq!(s.no_decay_keys().len(), 4);
        let n = GlueConfig::from_toml("weight_decay = 0.01\nno_decay = [\"bias\"]", "t").unwrap();
        assert_eq!(n.no_decay_keys(), ["bias"]);
        let t = toml::to_string(&n).unwrap();
        assert_eq!(GlueConfig::from_toml(&t, "t").unwrap(), n);
        let e = GlueConfig::from_toml("no_decay = [\"\"]", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_decay"), "{e}");
    }
}
