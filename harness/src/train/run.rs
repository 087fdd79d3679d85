//! `crambench pretrain RECIPE`: load the recipe, build the model and the data source, and run
//! the trainer. The library side of the CLI command.
//!
//! Data: `--data DIR` trains on a prepared dataset (the data module's packed shards, verified on
//! open, read in their recorded order, wrapping around); the dataset's sequence length and
//! vocabulary size replace `train.seq_len` and `arch.vocab_size` in the resolved recipe (the
//! reference takes the vocabulary from the tokenizer), and its `tokenizer.json` is copied into
//! every checkpoint. Only when asked for by name ([`PretrainData::Synthetic`], `--synthetic`)
//! does pretraining read the deterministic [`SyntheticStream`] instead (seeded by the
//! `data-order` seed, `train.seq_len` tokens per block, the model's vocabulary), and it says so
//! on stderr. The data digest (dataset root digest, or the stream's parameters) is recorded in
//! checkpoints, and resume refuses other data.
use super::config::TrainConfig;
use super::synthetic::{BlockSource, SyntheticStream};
use super::trainer::{Pretrain, PretrainSummary};
use crate::error::Error;
use crate::model::attention::{self, AttentionBackend};
use crate::model::ArchConfig;
use crate::provenance::seeds;
use crate::recipe::Recipe;
use anyhow::Result;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

/// Options of one pretraining run (the command line).
#[derive(Debug, Clone)]
pub struct PretrainOptions {
    /// Override of `train.budget` (`2m`, `24h`, …).
    pub budget: Option<String>,
    /// Output directory.
    pub out: PathBuf,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Master seed; on resume taken from the checkpoint when absent; else drawn from the OS.
    pub seed: Option<u64>,
    pub device: Device,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Set by signal handlers to stop with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// What to train on.
    pub data: PretrainData,
    /// `--attention`: overrides `train.attention` (and so becomes part of the resolved recipe
    /// the checkpoints are pinned to).
    pub attention: Option<AttentionBackend>,
}

/// The data a pretraining run reads.
#[derive(Debug, Clone, PartialEq)]
pub enum PretrainData {
    /// A prepared dataset directory (`crambench data prepare`).
    Dataset(PathBuf),
    /// The synthetic token stream, for tests and benchmarks (never a real result).
    Synthetic,
}

/// The resolved `[arch]` and `[train]` of a recipe (with a budget override applied), as JSON
/// with the recipe name: `{"name", "arch", "train"}`. Its sha256 (of the canonical JSON) pins a
/// run's checkpoints to the recipe.
/// With `data = Some((seq_len, vocab_size, origin))` of a dataset, those replace
/// `train.seq_len` and `arch.vocab_size`; a value that does not fit the architecture is bad
/// input named `<origin>seq_len` / `<origin>vocab_size` (`origin`: where the data's shape was
/// read, e.g. `recipe.toml: data.` or `DIR/dataset.json: `), not as the recipe field it
/// replaced.
pub fn resolved(
    recipe: &Recipe,
    budget: Option<&str>,
    data: Option<(usize, usize, &str)>,
) -> Result<(ArchConfig, TrainConfig, Value)> {
    let mut arch: ArchConfig = recipe.section("arch")?;
    let mut train = TrainConfig::from_recipe(recipe)?;
    if let Some(b) = budget {
        super::budget::parse_budget(b)?;
        train.budget = b.to_string();
    }
    let mut seq_len_field = format!("{}: train.seq_len", recipe.path.display());
    if let Some((seq_len, vocab_size, origin)) = data {
        train.seq_len = seq_len;
        arch.vocab_size = i64::try_from(vocab_size).unwrap_or(i64::MAX);
        arch.validate().map_err(|m| {
            Error::input(
                format!("{origin}vocab_size"),
                format!(
                    "{vocab_size} (it replaces arch.vocab_size of {}) does not fit the architecture: {m}",
                    recipe.path.display()
                ),
            )
        })?;
        seq_len_field = format!("{origin}seq_len");
    }
    if train.seq_len as i64 > arch.max_seq_len {
        return Err(Error::input(
            seq_len_field,
            format!(
                "{} exceeds arch.max_seq_len {}",
                train.seq_len, arch.max_seq_len
            ),
        )
        .into());
    }
    if arch.sparse_prediction.is_some()
        && arch.sparse_static
        && train.masking == super::masking::MaskingKind::V1Bernoulli
    {
        // A fixed round(p·B·S) row count is exact only when exactly that many positions are
        // masked (v2's masking); with Bernoulli masking it silently drops targets whenever more
        // are masked (upstream v1 decodes every masked position instead).
        return Err(Error::input(
            format!("{}: arch.sparse_static", recipe.path.display()),
            "a static sparse-prediction row count needs train.masking = \"v2\" (exact count); \
             with \"v1\" (Bernoulli) masking set arch.sparse_static = false to decode every target",
        )
        .into());
    }
    let value = json!({"name": recipe.name(), "arch": arch, "train": train});
    Ok((arch, train, value))
}

/// Parse `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                Error::input(format!("--device {s}"), "expected cpu, cuda or cuda:N").into()
            }),
    }
}

/// Pretrain `recipe_path` with `opts`.
pub fn pretrain_recipe(recipe_path: &Path, opts: &PretrainOptions) -> Result<PretrainSummary> {
    pretrain_recipe_dist(recipe_path, opts, &mut super::dist::Single)
}

/// [`pretrain_recipe`] as one rank of a data-parallel run ([`super::dist`]).
pub fn pretrain_recipe_dist(
    recipe_path: &Path,
    opts: &PretrainOptions,
    dist: &mut dyn super::dist::Collective,
) -> Result<PretrainSummary> {
    let setup = Instant::now();
    let recipe = Recipe::load(recipe_path)?;
    let dataset = match &opts.data {
        PretrainData::Dataset(dir) => Some(crate::data::PackedDataset::open(dir)?),
        PretrainData::Synthetic => {
            if opts.progress {
                eprintln!(
                    "pretraining on SYNTHETIC random tokens (--synthetic), not on a corpus: \
                     for tests and benchmarks only"
                );
            }
            None
        }
    };
    let origin = match &opts.data {
        PretrainData::Dataset(d) => {
            format!("{}: ", d.join(crate::data::reader::MANIFEST_FILE).display())
        }
        PretrainData::Synthetic => String::new(),
    };
    let shape = dataset
        .as_ref()
        .map(|d| (d.seq_len(), d.vocab_size() as usize, origin.as_str()));
    let (arch, mut train, mut resolved) = resolved(&recipe, opts.budget.as_deref(), shape)?;
    if let Some(a) = opts.attention {
        train.attention = a;
        resolved["train"] = serde_json::to_value(&train)?;
    }
    let budget_hours = train.budget_hours()?;
    if opts.device.is_cuda() && !tch::Cuda::is_available() {
        return Err(Error::input("--device", "CUDA is not available on this machine").into());
    }
    // The attention backend, checked on this device with pretraining's shapes before any work.
    let what = match opts.attention {
        Some(_) => "--attention".to_string(),
        None => format!("{}: train.attention", recipe.path.display()),
    };
    let amp = super::amp::Amp::setup_autocast(train.precision, train.tf32, opts.device);
    attention::check(
        train.attention,
        &attention::Probe {
            device: opts.device,
            kind: amp.precision.kind(),
            heads: arch.heads,
            head_dim: arch.head_dim(),
            masked: false,
            backward: true,
            dropout: if train.pretrain_in_train_mode {
                arch.attention_dropout
            } else {
                0.0
            },
        },
        &what,
    )?;
    let master_seed = match (opts.seed, opts.resume) {
        (Some(s), _) => {
            if s > seeds::MAX_SEED {
                return Err(
                    Error::input("--seed", format!("must be at most {}", seeds::MAX_SEED)).into(),
                );
            }
            s
        }
        (None, true) => match super::checkpoint::load_latest(&opts.out)? {
            Some(ck) => ck.state.master_seed,
            None => {
                return Err(Error::input(
                    opts.out.display(),
                    "--resume: no checkpoint to resume from",
                )
                .into());
            }
        },
        (None, false) => seeds::random_master()?,
    };
    // Initialisation draws from tch's global CPU generator, seeded with the `init` seed
    // (< 2^53), whatever the device (`model::build_on`).
    tch::manual_seed(seeds::derive(master_seed, "init") as i64);
    let (mut vs, model) = crate::model::build_on(&arch, opts.device)?;
    if dataset.is_none() && arch.vocab_size <= super::masking::NUM_SPECIAL + 1 {
        return Err(Error::input(
            format!("{}: arch.vocab_size", recipe.path.display()),
            format!(
                "{} leaves no ordinary tokens for the synthetic stream (pretraining without \
                 --data needs more than {})",
                arch.vocab_size,
                super::masking::NUM_SPECIAL + 1
            ),
        )
        .into());
    }
    let data: Box<dyn BlockSource> = match dataset {
        Some(d) => Box::new(d),
        None => Box::new(SyntheticStream::new(
            train.seq_len,
            arch.vocab_size as usize,
            seeds::derive(master_seed, "data-order"),
        )),
    };
    let loss = |ids: &tch::Tensor, labels: &tch::Tensor, t: bool| model.mlm_loss(ids, labels, t);
    let setup_seconds = setup.elapsed().as_secs_f64();
    super::trainer::pretrain_dist(
        Pretrain {
            recipe_name: recipe.name(),
            recipe_resolved: resolved,
            budget_hours,
            vs: &mut vs,
            loss: &loss,
            arch_json: serde_json::to_value(&arch)?,
            data: data.as_ref(),
            out: opts.out.clone(),
            master_seed,
            resume: opts.resume,
            device: opts.device,
            progress: opts.progress,
            stop: opts.stop.clone(),
            setup_seconds,
            train,
        },
        dist,
    )
}
