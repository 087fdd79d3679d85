//! `crambench pretrain RECIPE`: pretrain a recipe under its (or the given) budget.
//!
//! Progress (loss, learning rate, batch size, tokens/s, budget used and left) goes to stderr;
//! the run summary goes to stdout as a table or, with `--json`, as JSON. SIGINT or SIGTERM stop
//! the run at the next micro-step with a checkpoint and exit 0 (`stop_reason: signal`; continue
//! with `--resume`); a second SIGINT exits immediately with code 130.
//!
//! Exit codes: 0 trained to the budget / `train.steps`, or stopped by a signal with a checkpoint;
//! 1 the loss stayed non-finite (the message names the micro-step; the last good checkpoint is
//! kept) or a checkpoint failed its digest check; 2 bad recipe or argument (names file and key);
//! 3 I/O failure; 4 `--out` already holds a run and `--resume` was not given; 130 second signal.
use super::args::{BudgetArg, DataDirArg, DeviceArg, JsonArg, SeedArg};
use anyhow::{Context, Result};
use clap::Args;
use crambench::model::attention::AttentionBackend;
use crambench::train::run::PretrainData;
use crambench::train::{pretrain_recipe, PretrainOptions, PretrainSummary};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Args)]
pub struct PretrainArgs {
    /// Recipe file, e.g. baselines/crammed-bert.toml.
    pub recipe: PathBuf,
    #[command(flatten)]
    pub budget: BudgetArg,
    /// Output directory (checkpoints/, metrics.jsonl, mllog.log); default runs/<recipe name>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub device: DeviceArg,
    /// A prepared dataset directory (`crambench data prepare`). Default: the recipe's [data]
    /// table, prepared into (or reused from) the dataset cache.
    #[arg(long, value_name = "DIR", conflicts_with = "synthetic", alias = "data")]
    pub dataset: Option<PathBuf>,
    /// Train on the synthetic random-token stream instead of a corpus (tests and benchmarks;
    /// never a real result). The only way to pretrain a recipe without a [data] table.
    #[arg(long)]
    pub synthetic: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// CPU threads for libtorch's intra-op parallelism (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Attention kernel: auto, flash, efficient, cudnn or math (default: the recipe's
    /// `train.attention`, else auto). Checked on the device before training starts.
    #[arg(long, value_name = "BACKEND")]
    pub attention: Option<AttentionBackend>,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: PretrainArgs) -> Result<ExitCode> {
    let stop = super::stop_on_signals()?;
    if let Some(n) = args.threads {
        if n < 1 {
            return Err(crambench::Error::input("--threads", "must be at least 1").into());
        }
        tch::set_num_threads(n);
    }
    let device = args.device.resolve();
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .recipe
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        PathBuf::from("runs").join(stem)
    });
    let data = pretrain_data(&args)?;
    // GPU energy of the pretraining (NVML's counter; unavailable on a CPU).
    let mut energy = crambench::provenance::energy::EnergyMeter::for_device(device);
    let phase = energy.start("pretraining");
    let summary = pretrain_recipe(
        &args.recipe,
        &PretrainOptions {
            budget: args.budget.budget.clone(),
            out,
            resume: args.resume,
            seed: args.seed.seed,
            device,
            progress: !args.json.enabled,
            stop,
            data,
            attention: args.attention,
        },
    )?;
    energy.stop(phase);
    // The summary, with the energy (kWh, or why it is unavailable).
    let mut v = serde_json::to_value(&summary)?;
    v["energy"] = serde_json::to_value(energy.record())?;
    args.json.emit(&v, || {
        let e = energy.record();
        let line = match e.kwh.get("pretraining") {
            Some(k) => format!(
                "{:<22} {k:.6} kWh ({})\n",
                "energy",
                e.device.as_deref().unwrap_or("GPU")
            ),
            None => format!(
                "{:<22} unavailable: {}\n",
                "energy",
                e.unavailable.join("; ")
            ),
        };
        table(&summary) + &line
    })?;
    Ok(ExitCode::Ok)
}

/// `--data DIR`, `--synthetic`, or the recipe's own `[data]` (prepared or reused); a recipe
/// without `[data]` and neither flag is refused before anything is trained.
fn pretrain_data(args: &PretrainArgs) -> Result<PretrainData> {
    if let Some(d) = &args.dataset {
        return Ok(PretrainData::Dataset(d.clone()));
    }
    if args.synthetic {
        return Ok(PretrainData::Synthetic);
    }
    let recipe = crambench::recipe::Recipe::load(&args.recipe)?;
    // The whole recipe is checked before any data is prepared.
    crambench::train::run::resolved(&recipe, args.budget.budget.as_deref(), None)?;
    if !recipe.has_section("data") {
        return Err(crambench::Error::input(
            args.recipe.display(),
            "the recipe has no [data] table, so there is no corpus to pretrain on: pass --data \
             DIR (a prepared dataset) or --synthetic (random tokens, for tests and benchmarks)",
        )
        .into());
    }
    let cfg: crambench::data::config::DataConfig = recipe.section("data")?;
    let opts = crambench::data::prepare::PrepareOptions::for_recipe(
        &args.recipe,
        args.data_dir.root(),
        None,
        !args.json.enabled,
    );
    let p = crambench::data::prepare(&cfg, &args.recipe.display().to_string(), &opts).context(
        "preparing the recipe's [data] (pass --data DIR for a prepared dataset, or \
             --synthetic for random tokens in tests and benchmarks)",
    )?;
    if !args.json.enabled {
        eprintln!(
            "pretraining on {} ({} dataset {})",
            p.dir.display(),
            if p.reused { "reused" } else { "prepared" },
            p.dataset.manifest().name
        );
    }
    Ok(PretrainData::Dataset(p.dir))
}

fn table(s: &PretrainSummary) -> String {
    let loss = |l: Option<f64>| l.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let mut t = String::new();
    let mut row = |k: &str, v: String| t.push_str(&format!("{k:<22} {v}\n"));
    row(
        "recipe",
        format!("{} (sha256 {})", s.recipe, &s.recipe_sha256[..16]),
    );
    row("stopped by", format!("{:?}", s.stop_reason).to_lowercase());
    row(
        "steps",
        format!("{} optimizer, {} micro-batch", s.steps, s.micro_steps),
    );
    row("tokens seen", s.tokens_seen.to_string());
    row(
        "loss",
        format!(
            "{} at start -> {} (mean of last {})",
            loss(s.initial_mlm_loss),
            loss(s.final_mlm_loss),
            s.final_loss_window
        ),
    );
    row("tokens/s", format!("{:.0}", s.tokens_per_second));
    row(
        "budget",
        format!(
            "{:.4} of {:.4} device-hours ({} x {})",
            s.budget.used_device_hours,
            s.budget.allowed_device_hours,
            s.budget.devices,
            s.budget.device_kind
        ),
    );
    let phases: Vec<String> = s
        .budget
        .phase_seconds
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}s"))
        .collect();
    row("phases", phases.join(", "));
    row(
        "precision",
        format!("{:?} (tf32 {})", s.precision.precision, s.precision.tf32).to_lowercase(),
    );
    row("master seed", s.master_seed.to_string());
    row("checkpoint", s.checkpoint.display().to_string());
    row(
        "metrics",
        format!("{}, {}", s.metrics_log.display(), s.mllog.display()),
    );
    if let Some(r) = &s.resumed_from {
        row("resumed from", r.display().to_string());
    }
    t
}
