//! `crambench bench train-step`: time the trainer's own optimizer step on a recipe's
//! architecture (`crambench::train::bench::StepBench`: micro-batches from the loader thread,
//! forward under the recipe's autocast, backward, `--accumulation` of them, then the flat AdamW
//! step with the recipe's clipping) — tokens/s, step-time median and spread (interquartile range
//! over the median; min and max too), model-FLOPs utilisation against the GPU's datasheet peak —
//! and, with `--compare-python`, the same model, weights, batch shape, autocast, accumulation and
//! AdamW hyperparameters in PyTorch (`reference/pytorch/bench_step.py` in `.venv-torch`), eager
//! and/or under `torch.compile` (`--python-modes eager,compile`), in one run: the
//! implementations take turns block by block, the order rotating each round, so that drift
//! (clocks, thermals, other load) hits all of them alike.
use super::args::{DeviceArg, JsonArg, SeedArg};
use anyhow::{Context, Result};
use clap::Args;
use crambench::error::{Error, ExitCode};
use crambench::model::step_bench::{PythonBench, PythonOptions, StepTiming};
use crambench::model::{flops, ArchConfig};
use crambench::train::amp::{Amp, Precision};
use crambench::train::bench::StepBench;
use crambench::train::TrainConfig;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(Args, Debug)]
pub struct TrainStepArgs {
    /// Recipe (`baselines/*.toml`) whose `[arch]` table is benchmarked.
    #[arg(long, required_unless_present = "arch", conflicts_with = "arch")]
    recipe: Option<PathBuf>,
    /// An architecture preset instead of a recipe: crammed-bert, bert-c5, bert-original, izsak,
    /// or their `-tiny` variants.
    #[arg(long)]
    arch: Option<String>,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    micro_batch: i64,
    /// Tokens per sequence (default: min(max_seq_len, 128)).
    #[arg(long)]
    seq_len: Option<i64>,
    #[command(flatten)]
    device: DeviceArg,
    /// Precision of the step: the recipe's `train.precision` by default; fp32, or bf16
    /// (autocast: fp32 weights and optimizer, bf16 matmuls; both implementations).
    #[arg(long)]
    dtype: Option<String>,
    /// Micro-batches accumulated per optimizer step (each timed step runs them all).
    #[arg(long, default_value_t = 1)]
    accumulation: u64,
    /// Timed steps per implementation.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps per implementation.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps per block when alternating with Python (default: steps / 5, at least 1).
    #[arg(long)]
    block: Option<usize>,
    /// Intra-op threads for both implementations (default: libtorch's default, all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Also time the PyTorch eager reference on the same model, weights and batch.
    #[arg(long)]
    compare_python: bool,
    /// Python with torch (default: `.venv-torch/bin/python` of the repository).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Attention in the Python reference: sdpa (F.scaled_dot_product_attention, as tch) or math.
    #[arg(long, default_value = "sdpa")]
    python_attention: String,
    /// The PyTorch references to time against, comma-separated: `eager`, `compile`
    /// (`torch.compile` of the reference model), or both; each runs in its own Python process
    /// and all alternate with tch in one run (default with --compare-python: eager).
    #[arg(long, value_delimiter = ',', value_parser = ["eager", "compile"])]
    python_modes: Vec<String>,
    /// Old spelling of `--python-modes compile`.
    #[arg(long, hide = true, conflicts_with = "python_modes")]
    python_compile: bool,
    /// Train mode (dropout on); crammed-bert pretrains with dropout off.
    #[arg(long)]
    dropout: bool,
    // The weights and the batch are drawn from the master seed (recorded in the JSON).
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

fn repo_file(rel: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::current_dir().ok().map(|d| d.join(rel)),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

pub fn run(args: TrainStepArgs) -> Result<ExitCode> {
    let (cfg, mut train, model_name) = match (&args.recipe, &args.arch) {
        (Some(path), _) => {
            let recipe = crambench::recipe::Recipe::load(path)?;
            (
                recipe.section::<ArchConfig>("arch")?,
                TrainConfig::from_recipe(&recipe)?,
                recipe.name(),
            )
        }
        (None, Some(name)) => (
            ArchConfig::preset(name)?,
            TrainConfig::default(),
            name.clone(),
        ),
        (None, None) => return Err(Error::input("arguments", "give --recipe or --arch").into()),
    };
    let device = args.device.resolve();
    crambench::run::preflight::check_device(device)?;
    match args.dtype.as_deref() {
        None => {}
        Some("fp32") => train.precision = Precision::Fp32,
        Some("bf16") => train.precision = Precision::Bf16,
        Some(other) => {
            return Err(Error::input("--dtype", format!("{other:?}: expected fp32 or bf16")).into())
        }
    }
    // What actually runs on this device (fp16 needs CUDA).
    let precision = Amp::setup_autocast(train.precision, train.tf32, device).precision;
    let dtype_name = format!("{precision:?}").to_lowercase();
    let dtype = match precision {
        Precision::Bf16 => Kind::BFloat16,
        Precision::Fp16 => Kind::Half,
        Precision::Fp32 => Kind::Float,
    };
    let seq = args.seq_len.unwrap_or(cfg.max_seq_len.min(128));
    if seq < 1 || seq > cfg.max_seq_len {
        return Err(
            Error::input("--seq-len", format!("must be in 1..={}", cfg.max_seq_len)).into(),
        );
    }
    if args.micro_batch < 1 || args.steps < 1 || args.accumulation < 1 {
        return Err(
            Error::input("--micro-batch/--steps/--accumulation", "must be at least 1").into(),
        );
    }
    if let Some(t) = args.threads {
        if t < 1 {
            return Err(Error::input("--threads", "must be at least 1").into());
        }
        tch::set_num_threads(t);
    }
    let threads = tch::get_num_threads();
    let modes = python_modes(&args)?;

    // The trainer's model, data path and step.
    let seed = crambench::provenance::seeds::Seeds::from_option(args.seed.seed)?.master;
    let mut bench = StepBench::new(
        &cfg,
        &train,
        args.micro_batch as usize,
        seq as usize,
        device,
        seed as i64,
    )?;
    let n_params = bench.n_params;
    let batch = bench.first_batch()?;
    let (ids, labels) = batch.to_device(device);
    let optim = serde_json::json!({
        "lr": train.lr, "betas": train.betas, "eps": train.eps,
        "weight_decay": train.weight_decay, "no_decay": train.no_decay,
        "kind": train.optimizer, "max_norm": train.clip_norm(),
    });
    let tmp = tempfile::tempdir().context("temporary directory")?;
    if !modes.is_empty() {
        // Same initial weights, batch shape and optimizer settings for every reference.
        bench.vs.save(tmp.path().join("model.safetensors"))?;
    }
    let mut python = Vec::new();
    for mode in &modes {
        let py = start_python(
            &args,
            &cfg,
            &dtype_name,
            &optim,
            tmp.path(),
            &ids,
            &labels,
            threads,
            mode == "compile",
        )?;
        python.push((mode.clone(), py));
    }

    eprintln!(
        "{model_name}: {n_params} parameters, micro-batch {} × {seq} tokens × {} accumulated, {device:?} {dtype_name}, {threads} threads",
        args.micro_batch, args.accumulation
    );
    let (ours, theirs) = bench.run(args.accumulation, args.dropout, |step| {
        for _ in 0..args.warmup {
            step()?;
        }
        for (_, py) in python.iter_mut() {
            if args.warmup > 1 {
                py.run(args.warmup - 1)?; // it did one warm-up step before saying ready
            }
        }
        let block = args.block.unwrap_or((args.steps / 5).max(1)).max(1);
        let mut ours = Vec::new();
        let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); python.len()];
        let mut round = 0;
        while ours.len() < args.steps {
            let n = block.min(args.steps - ours.len());
            // Each round, the implementations take turns in an order rotated by one: over a
            // multiple of n rounds every implementation goes first, second, … equally often
            // (as evenly as the rounds allow otherwise).
            for slot in turns(python.len() + 1, round) {
                match slot {
                    0 => {
                        for _ in 0..n {
                            ours.push(step()?);
                        }
                    }
                    k => theirs[k - 1].extend(python[k - 1].1.run(n)?),
                }
            }
            round += 1;
            eprintln!("  {}/{} steps timed", ours.len(), args.steps);
        }
        Ok((ours, theirs))
    })?;

    // Summaries.
    let tokens = (args.micro_batch * seq) as f64 * args.accumulation as f64;
    let step_flops =
        flops::train_step_flops(&cfg, args.micro_batch, seq) * args.accumulation as f64;
    let gpu_name = match device {
        Device::Cuda(i) => crambench::provenance::fingerprint::collect(&Default::default())
            .hardware
            .gpus
            .get(i)
            .map(|g| g.name.clone()),
        _ => None,
    };
    let peak = gpu_name
        .as_deref()
        .and_then(|n| flops::peak_flops(n, dtype));
    let ours = StepTiming::of(ours, tokens, step_flops, peak);
    let mut references = Vec::new();
    for ((mode, py), times) in python.into_iter().zip(theirs) {
        let timing = StepTiming::of(times, tokens, step_flops, peak);
        references.push(Reference {
            step_time_ratio_tch_over_reference: ours.median_s / timing.median_s,
            mode,
            info: py.info.clone(),
            timing,
        });
        py.quit()?;
    }

    let result = TrainStepResult {
        model: model_name,
        arch: cfg,
        parameters: n_params,
        micro_batch: args.micro_batch,
        seq_len: seq,
        device: format!("{device:?}"),
        gpu: gpu_name,
        dtype: dtype_name.clone(),
        accumulation: args.accumulation,
        threads,
        dropout: args.dropout,
        seed,
        train_step_flops: step_flops,
        peak_flops: peak,
        tch: ours,
        references,
    };
    args.json.emit(&result, || result.to_table(&args))?;
    Ok(ExitCode::Ok)
}

/// What `bench train-step` measured: `--json` prints it, the table renders it.
#[derive(serde::Serialize)]
struct TrainStepResult {
    model: String,
    arch: ArchConfig,
    parameters: i64,
    micro_batch: i64,
    seq_len: i64,
    device: String,
    gpu: Option<String>,
    dtype: String,
    accumulation: u64,
    threads: i32,
    dropout: bool,
    seed: u64,
    train_step_flops: f64,
    peak_flops: Option<f64>,
    tch: StepTiming,
    /// The PyTorch references timed alongside, in `--python-modes` order.
    references: Vec<Reference>,
}

/// One PyTorch reference's timing, beside tch's.
#[derive(serde::Serialize)]
struct Reference {
    /// `eager` or `compile` (`torch.compile`).
    mode: String,
    /// Its `ready` line: torch version, threads, device, attention, fused AdamW.
    info: serde_json::Value,
    #[serde(flatten)]
    timing: StepTiming,
    /// tch's median step time over this reference's (below 1: tch faster).
    step_time_ratio_tch_over_reference: f64,
}

/// The PyTorch references `--compare-python` times: `--python-modes`, else eager.
fn python_modes(args: &TrainStepArgs) -> Result<Vec<String>> {
    let mut modes = args.python_modes.clone();
    if args.python_compile {
        modes = vec!["compile".into()];
    }
    if !args.compare_python {
        if !modes.is_empty() {
            return Err(Error::input("--python-modes", "needs --compare-python").into());
        }
        return Ok(modes);
    }
    if modes.is_empty() {
        modes.push("eager".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = modes.iter().find(|m| !seen.insert(m.as_str())) {
        return Err(Error::input("--python-modes", format!("{dup} named twice")).into());
    }
    Ok(modes)
}

/// The order in which `n` implementations (0 = tch) run their blocks in round `round`: `0..n`
/// rotated left by `round`.
fn turns(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

impl TrainStepResult {
    fn to_table(&self, args: &TrainStepArgs) -> String {
        let mut t = format!(
            "{}: {} parameters; micro-batch {} × {} tokens × {} accumulated; {} {}; {} threads; \
             {} timed steps (+{} warm-up) per implementation; {:.3} GFLOP per step (the trainer's \
             step: loader thread, autocast, flat AdamW)\n",
            self.model,
            self.parameters,
            self.micro_batch,
            self.seq_len,
            self.accumulation,
            self.device,
            self.dtype,
            self.threads,
            args.steps,
            args.warmup,
            self.train_step_flops / 1e9
        );
        if let Some(g) = &self.gpu {
            t += &match self.peak_flops {
                Some(p) => format!(
                    "GPU {g}: datasheet peak {:.1} TFLOP/s ({})\n",
                    p / 1e12,
                    self.dtype
                ),
                None => format!("GPU {g}: peak unknown, no MFU\n"),
            };
        }
        t += &format!(
            "{:<22} {:>10} {:>8} {:>10} {:>10} {:>12} {:>7}\n",
            "implementation", "median s", "IQR", "min s", "max s", "tokens/s", "MFU"
        );
        let mut rows = vec![("tch".to_string(), &self.tch)];
        for r in &self.references {
            let label = format!(
                "pytorch {} {}",
                r.info["attention"].as_str().unwrap_or("?"),
                r.mode
            );
            rows.push((label, &r.timing));
        }
        for (name, r) in rows {
            t += &format!(
                "{:<22} {:>10.4} {:>7.1}% {:>10.4} {:>10.4} {:>12.0} {:>7}\n",
                name,
                r.median_s,
                100.0 * r.spread,
                r.min_s,
                r.max_s,
                r.tokens_per_s,
                r.mfu
                    .map(|m| format!("{:.1}%", 100.0 * m))
                    .unwrap_or_else(|| "-".into())
            );
        }
        for r in &self.references {
            let ratio = r.step_time_ratio_tch_over_reference;
            t += &format!(
                "step time tch / pytorch {} (medians): {ratio:.3} ({})\n",
                r.mode,
                if ratio <= 1.0 {
                    "tch no slower"
                } else {
                    "tch slower"
                }
            );
        }
        t
    }
}

#[allow(clippy::too_many_arguments)]
fn start_python(
    args: &TrainStepArgs,
    cfg: &ArchConfig,
    dtype: &str,
    optim: &serde_json::Value,
    dir: &Path,
    ids: &Tensor,
    labels: &Tensor,
    threads: i32,
    compile: bool,
) -> Result<PythonBench> {
    let python = match &args.python {
        Some(p) => p.clone(),
        None => repo_file(".venv-torch/bin/python").ok_or_else(|| {
            Error::input(
                "--compare-python",
                ".venv-torch is missing: run scripts/torchenv.sh",
            )
        })?,
    };
    let script = repo_file("reference/pytorch/bench_step.py").ok_or_else(|| {
        Error::input(
            "--compare-python",
            "reference/pytorch/bench_step.py not found (run from the repository)",
        )
    })?;
    eprintln!("starting the PyTorch reference ({})", python.display());
    PythonBench::start(&PythonOptions {
        python,
        script,
        arch: cfg,
        weights: dir.join("model.safetensors"),
        dir,
        ids,
        labels,
        threads,
        dtype,
        attention: &args.python_attention,
        compile,
        dropout: args.dropout,
        optim: Some(optim),
        accumulation: args.accumulation,
    })
}

#[cfg(test)]
mod tests {
    use super::turns;

    #[test]
    fn every_implementation_takes_every_turn_equally_often() {
        let rounds: Vec<Vec<usize>> = (0..3).map(|r| turns(3, r).collect()).collect();
        assert_eq!(rounds, [[0, 1, 2], [1, 2, 0], [2, 0, 1]]);
        assert_eq!(
            turns(2, 1).collect::<Vec<_>>(),
            [1, 0],
            "tch and one reference swap"
        );
    }
}
