//! `crambench bench train-step`: time the trainer's own optimizer step on a recipe's
//! architecture (`crambench::train::bench::StepBench`: micro-batches from the loader thread,
//! forward under the recipe's autocast, backward, `--accumulation` of them, then the flat AdamW
//! step with the recipe's clipping) — tokens/s, step-time median and spread (interquartile range
//! over the median; min and max too), model-FLOPs utilisation against the GPU's datasheet peak —
//! and, with `--compare-python`, the same model, weights, batch shape, autocast, accumulation and
//! AdamW hyperparameters in PyTorch (`reference/pytorch/bench_step.py` in `.venv-torch`), in one
//! run: the two alternate block by block so that drift hits both alike.
use anyhow::{bail, Context, Result};
use clap::Args;
use crambench::error::{Error, ExitCode};
use crambench::model::{flops, ArchConfig};
use crambench::train::amp::{Amp, Precision};
use crambench::train::bench::StepBench;
use crambench::train::TrainConfig;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
    /// cpu, cuda or auto (cuda when available).
    #[arg(long, default_value = "auto")]
    device: String,
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
    /// `torch.compile` the Python reference model (GPU comparison).
    #[arg(long)]
    python_compile: bool,
    /// Train mode (dropout on); crammed-bert pretrains with dropout off.
    #[arg(long)]
    dropout: bool,
    /// Seed for weights and batch.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    #[arg(long)]
    json: bool,
}

/// Step times of one implementation, summarised.
#[derive(Debug, serde::Serialize)]
struct Timing {
    times_s: Vec<f64>,
    median_s: f64,
    /// First and third quartiles (linear interpolation).
    q1_s: f64,
    q3_s: f64,
    min_s: f64,
    max_s: f64,
    /// Interquartile range relative to the median: (q3 - q1) / median.
    spread: f64,
    tokens_per_s: f64,
    /// Model-FLOPs utilisation against the device's peak (None on CPU or an unknown GPU).
    mfu: Option<f64>,
}

fn summarise(times: Vec<f64>, tokens: f64, step_flops: f64, peak_flops: Option<f64>) -> Timing {
    let s = crambench::stats::Spread::of(&times).expect("at least one timed step");
    Timing {
        spread: s.relative_iqr(),
        tokens_per_s: tokens / s.median,
        mfu: peak_flops.map(|p| step_flops / s.median / p),
        times_s: times,
        median_s: s.median,
        q1_s: s.q1,
        q3_s: s.q3,
        min_s: s.min,
        max_s: s.max,
    }
}

/// Dense (no sparsity) datasheet peaks in TFLOP/s: (name substring, bf16 tensor core with fp32
/// accumulate, plain fp32). Matched against the CUDA device name, first match wins.
const GPU_PEAKS: &[(&str, Option<f64>, f64)] = &[
    ("H200", Some(989.4), 66.9),
    ("H100 PCIe", Some(756.0), 51.2),
    ("H100", Some(989.4), 66.9),
    ("A100", Some(312.0), 19.5),
    ("A6000", Some(154.8), 38.7),
    ("A4000", Some(76.7), 19.2),
    ("L40S", Some(362.1), 91.6),
    ("L4", Some(121.0), 30.3),
    ("RTX 4090", Some(165.2), 82.6),
    ("RTX 3090", Some(71.0), 35.6),
    ("V100", None, 15.7),
    ("2080 Ti", None, 13.4),
];

/// Peak FLOP/s of `gpu_name` for `dtype`, if the table knows it.
fn peak_flops(gpu_name: &str, dtype: Kind) -> Option<f64> {
    let (_, bf16, fp32) = GPU_PEAKS.iter().find(|(n, _, _)| gpu_name.contains(n))?;
    let tflops = if dtype == Kind::BFloat16 {
        (*bf16)?
    } else {
        *fp32
    };
    Some(tflops * 1e12)
}

fn repo_file(rel: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::current_dir().ok().map(|d| d.join(rel)),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

/// The Python reference running `bench_step.py --serve`.
struct PythonBench {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    info: serde_json::Value,
}

impl PythonBench {
    fn read_json(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("bench_step.py ended ({status}) before answering (see its stderr above)");
        }
        serde_json::from_str(&line).with_context(|| format!("bench_step.py said {line:?}"))
    }

    fn run(&mut self, steps: usize) -> Result<Vec<f64>> {
        writeln!(self.stdin, "run {steps}")?;
        self.stdin.flush()?;
        let v = self.read_json()?;
        let times: Vec<f64> =
            serde_json::from_value(v["times_s"].clone()).context("bench_step.py times_s")?;
        if times.len() != steps {
            bail!("bench_step.py ran {} steps, asked {steps}", times.len());
        }
        Ok(times)
    }

    fn quit(mut self) -> Result<()> {
        let _ = writeln!(self.stdin, "quit");
        drop(self.stdin);
        self.child.wait()?;
        Ok(())
    }
}

pub fn run(args: TrainStepArgs) -> Result<ExitCode> {
    let (cfg, mut train, model_name) = match (&args.recipe, &args.arch) {
        (Some(path), _) => {
            let recipe = crambench::recipe::Recipe::load(path)?;
            (
                recipe.section::<ArchConfig>("arch")?,
                crambench::train::TrainConfig::from_recipe(&recipe)?,
                recipe.name(),
            )
        }
        (None, Some(name)) => (
            ArchConfig::preset(name)?,
            crambench::train::TrainConfig::default(),
            name.clone(),
        ),
        (None, None) => return Err(Error::input("arguments", "give --recipe or --arch").into()),
    };
    let device = match args.device.as_str() {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => {
            return Err(
                Error::input("--device", "cuda requested but no CUDA device is available").into(),
            )
        }
        other => {
            return Err(
                Error::input("--device", format!("{other:?}: expected cpu, cuda or auto")).into(),
            )
        }
    };
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

    // The trainer's model, data path and step.
    let mut bench = StepBench::new(
        &cfg,
        &train,
        args.micro_batch as usize,
        seq as usize,
        device,
        args.seed,
    )?;
    let n_params = bench.n_params;
    let batch = bench.first_batch()?;
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let mut python = if args.compare_python {
        // Same initial weights, batch shape and optimizer settings for the reference.
        bench.vs.save(tmp.path().join("model.safetensors"))?;
        Some(start_python(
            &args,
            &cfg,
            &train,
            &dtype_name,
            tmp.path(),
            &batch.input_ids,
            &batch.labels,
            threads,
            device,
        )?)
    } else {
        None
    };
    let (ours, theirs) = bench.run(args.accumulation, args.dropout, |step| {
    eprintln!(
        "{model_name}: {n_params} parameters, micro-batch {} × {seq} tokens, {device:?} {}, {threads} threads",
        args.micro_batch, dtype_name
    );
    for _ in 0..args.warmup {
        step()?;
    }
    if let Some(py) = python.as_mut() {
        if args.warmup > 1 {
            py.run(args.warmup - 1)?; // it did one warm-up step before saying ready
        }
    }
    let block = args.block.unwrap_or((args.steps / 5).max(1)).max(1);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut round = 0;
    while ours.len() < args.steps {
        let n = block.min(args.steps - ours.len());
        // Alternate which implementation goes first in each round.
        let python_first = round % 2 == 1;
        if let (true, Some(py)) = (python_first, python.as_mut()) {
            theirs.extend(py.run(n)?);
        }
        for _ in 0..n {
            ours.push(step()?);
        }
        if let (false, Some(py)) = (python_first, python.as_mut()) {
            theirs.extend(py.run(n)?);
        }
        round += 1;
        eprintln!("  {}/{} steps timed", ours.len(), args.steps);
    }
        Ok((ours, theirs))
    })?;
    let python_info = match python {
        Some(py) => {
            let info = py.info.clone();
            py.quit()?;
            Some(info)
        }
        None => None,
    };

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
    let peak = gpu_name.as_deref().and_then(|n| peak_flops(n, dtype));
    let ours = summarise(ours, tokens, step_flops, peak);
    let theirs = (!theirs.is_empty()).then(|| summarise(theirs, tokens, step_flops, peak));
    let ratio = theirs.as_ref().map(|t| ours.median_s / t.median_s);

    if args.json {
        let v = serde_json::json!({
            "model": model_name, "arch": cfg, "parameters": n_params,
            "micro_batch": args.micro_batch, "seq_len": seq, "device": format!("{device:?}"),
            "gpu": gpu_name, "dtype": dtype_name, "accumulation": args.accumulation, "threads": threads, "dropout": args.dropout,
            "train_step_flops": step_flops, "peak_flops": peak,
            "tch": ours, "pytorch": theirs, "pytorch_info": python_info,
            "step_time_ratio_tch_over_pytorch": ratio,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::Ok);
    }
    outln!(
        "{model_name}: {n_params} parameters; micro-batch {} × {seq} tokens × {} accumulated; {device:?} {}; {threads} threads; \
         {} timed steps (+{} warm-up) per implementation; {:.3} GFLOP per step (the trainer's step: loader thread, autocast, flat AdamW)",
        args.micro_batch,
        args.accumulation,
        dtype_name,
        args.steps,
        args.warmup,
        step_flops / 1e9
    );
    if let Some(g) = &gpu_name {
        match peak {
            Some(p) => outln!(
                "GPU {g}: datasheet peak {:.1} TFLOP/s ({})",
                p / 1e12,
                dtype_name
            ),
            None => outln!("GPU {g}: peak unknown, no MFU"),
        }
    }
    outln!(
        "{:<22} {:>10} {:>8} {:>10} {:>10} {:>12} {:>7}",
        "implementation",
        "median s",
        "IQR",
        "min s",
        "max s",
        "tokens/s",
        "MFU"
    );
    let mut rows = vec![("tch".to_string(), &ours)];
    if let (Some(t), Some(info)) = (&theirs, &python_info) {
        let label = format!(
            "pytorch {}{}",
            info["attention"].as_str().unwrap_or("?"),
            if args.python_compile {
                "+compile"
            } else {
                " eager"
            }
        );
        rows.push((label, t));
    }
    for (name, t) in rows {
        outln!(
            "{:<22} {:>10.4} {:>7.1}% {:>10.4} {:>10.4} {:>12.0} {:>7}",
            name,
            t.median_s,
            100.0 * t.spread,
            t.min_s,
            t.max_s,
            t.tokens_per_s,
            t.mfu
                .map(|m| format!("{:.1}%", 100.0 * m))
                .unwrap_or_else(|| "-".into())
        );
    }
    if let Some(r) = ratio {
        outln!(
            "step time tch / pytorch (medians): {r:.3} ({})",
            if r <= 1.0 {
                "tch no slower"
            } else {
                "tch slower"
            }
        );
    }
    Ok(ExitCode::Ok)
}

#[allow(clippy::too_many_arguments)]
fn start_python(
    args: &TrainStepArgs,
    cfg: &ArchConfig,
    train: &TrainConfig,
    dtype: &str,
    dir: &Path,
    ids: &Tensor,
    labels: &Tensor,
    threads: i32,
    device: Device,
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
    let arch_json = dir.join("arch.json");
    std::fs::write(&arch_json, serde_json::to_vec(cfg)?).map_err(|e| Error::io(&arch_json, e))?;
    let batch = dir.join("batch.safetensors");
    Tensor::write_safetensors(
        &[
            ("input_ids", &ids.to_device(Device::Cpu)),
            ("labels", &labels.to_device(Device::Cpu)),
        ],
        &batch,
    )?;
    let device = if device.is_cuda() { "cuda" } else { "cpu" };
    let optim = serde_json::json!({
        "lr": train.lr, "betas": train.betas, "eps": train.eps,
        "weight_decay": train.weight_decay, "no_decay": train.no_decay,
        "kind": train.optimizer, "max_norm": train.clip_norm(),
    });
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--serve")
        .arg("--arch-json")
        .arg(&arch_json)
        .arg("--weights")
        .arg(dir.join("model.safetensors"))
        .arg("--batch")
        .arg(&batch)
        .args(["--threads", &threads.to_string()])
        .args(["--device", device])
        .args(["--dtype", dtype])
        .args(["--optim-json", &optim.to_string()])
        .args(["--accumulation", &args.accumulation.to_string()])
        .args(["--attention", &args.python_attention]);
    if args.python_compile {
        cmd.arg("--compile");
    }
    if args.dropout {
        cmd.arg("--dropout");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut py = PythonBench {
        child,
        stdin,
        stdout,
        info: serde_json::Value::Null,
    };
    eprintln!("starting the PyTorch reference ({})", python.display());
    let ready = py.read_json()?;
    if ready["ready"] != serde_json::Value::Bool(true) {
        bail!("bench_step.py did not get ready: {ready}");
    }
    py.info = ready;
    Ok(py)
}
