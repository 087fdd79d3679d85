//! Timing one pretraining step (forward, backward, AdamW update) of an architecture, and the
//! line protocol of its PyTorch eager reference (`reference/pytorch/bench_step.py --serve`):
//! what `crambench bench train-step` measures, with model-FLOPs utilisation from
//! [`super::flops`].
//!
//! The protocol: the reference is started with the architecture (`--arch-json`), the weights
//! (`--weights`, a safetensors file) and the batch (`--batch`), does one warm-up step and
//! prints one JSON line `{"ready": true, …}` (its versions and attention kind); then each
//! `run N` line on its stdin is answered by one JSON line `{"times_s": [N seconds]}`, and
//! `quit` ends it.
use super::config::ArchConfig;
use super::IGNORE_INDEX;
use crate::error::Error;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use tch::{Device, Kind, Tensor};

/// Step times of one implementation, summarised.
#[derive(Debug, serde::Serialize)]
pub struct StepTiming {
    /// Every timed step, seconds.
    pub times_s: Vec<f64>,
    /// Median step time, seconds.
    pub median_s: f64,
    /// First quartile of the step time (linear interpolation), seconds.
    pub q1_s: f64,
    /// Third quartile of the step time, seconds.
    pub q3_s: f64,
    /// Shortest step, seconds.
    pub min_s: f64,
    /// Longest step, seconds.
    pub max_s: f64,
    /// Interquartile range relative to the median: (q3 - q1) / median (a fraction).
    pub spread: f64,
    /// Tokens per second at the median step time.
    pub tokens_per_s: f64,
    /// Model-FLOPs utilisation at the median step time, a fraction of the device's peak (None
    /// on CPU or an unknown GPU).
    pub mfu: Option<f64>,
}

impl StepTiming {
    /// Summarise `times` (seconds) of steps of `tokens` tokens and `step_flops` FLOPs each,
    /// against `peak_flops` (FLOP/s) when known.
    pub fn of(times: Vec<f64>, tokens: f64, step_flops: f64, peak_flops: Option<f64>) -> Self {
        let s = crate::stats::Spread::of(&times).expect("at least one timed step");
        StepTiming {
            spread: s.relative_iqr(),
            tokens_per_s: tokens / s.median,
            mfu: peak_flops.map(|p| super::flops::mfu(step_flops, s.median, p)),
            times_s: times,
            median_s: s.median,
            q1_s: s.q1,
            q3_s: s.q3,
            min_s: s.min,
            max_s: s.max,
        }
    }
}

/// One MLM batch: random ids; exactly round(p·S) targets per row at random positions (p = the
/// arch's sparse-prediction fraction, 0.15 without one), as the v2 masking produces.
pub fn mlm_batch(cfg: &ArchConfig, batch: i64, seq: i64, device: Device) -> (Tensor, Tensor) {
    let opts = (Kind::Int64, Device::Cpu);
    let ids = Tensor::randint(cfg.vocab_size, [batch, seq], opts);
    let fraction = cfg.sparse_prediction.unwrap_or(0.15);
    let per_row = ((fraction * seq as f64).round() as i64).clamp(1, seq);
    let positions = Tensor::rand([batch, seq], (Kind::Float, Device::Cpu))
        .argsort(1, false)
        .narrow(1, 0, per_row);
    let labels = Tensor::full([batch, seq], IGNORE_INDEX, opts).scatter(
        1,
        &positions,
        &ids.gather(1, &positions, false),
    );
    (ids.to_device(device), labels.to_device(device))
}

/// How to start the Python reference.
pub struct PythonOptions<'a> {
    /// The Python with torch.
    pub python: PathBuf,
    /// `bench_step.py`.
    pub script: PathBuf,
    /// The architecture both implementations run.
    pub arch: &'a ArchConfig,
    /// The weights, saved as safetensors before any dtype cast.
    pub weights: PathBuf,
    /// A directory for the architecture and batch files.
    pub dir: &'a Path,
    /// The batch.
    pub ids: &'a Tensor,
    pub labels: &'a Tensor,
    /// Intra-op threads.
    pub threads: i32,
    /// `fp32` or `bf16`.
    pub dtype: &'a str,
    /// `sdpa` or `math`.
    pub attention: &'a str,
    /// `torch.compile` the model.
    pub compile: bool,
    /// Train mode (dropout on).
    pub dropout: bool,
    /// The trainer's AdamW settings (`{"lr", "betas", "eps", "weight_decay", "no_decay",
    /// "max_norm"}`); the script's defaults when `None`.
    pub optim: Option<&'a serde_json::Value>,
    /// Micro-batches per timed step.
    pub accumulation: u64,
}

/// The Python reference running `bench_step.py --serve`.
pub struct PythonBench {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Its `ready` line: versions, attention kind.
    pub info: serde_json::Value,
}

impl PythonBench {
    /// Start the reference and wait for its `ready` line (after its first warm-up step).
    pub fn start(o: &PythonOptions) -> Result<Self> {
        let arch_json = o.dir.join("arch.json");
        std::fs::write(&arch_json, serde_json::to_vec(o.arch)?)
            .map_err(|e| Error::io(&arch_json, e))?;
        let batch = o.dir.join("batch.safetensors");
        Tensor::write_safetensors(
            &[
                ("input_ids", &o.ids.to_device(Device::Cpu)),
                ("labels", &o.labels.to_device(Device::Cpu)),
            ],
            &batch,
        )?;
        let device = if o.ids.device().is_cuda() {
            "cuda"
        } else {
            "cpu"
        };
        let mut cmd = Command::new(&o.python);
        cmd.arg(&o.script)
            .arg("--serve")
            .arg("--arch-json")
            .arg(&arch_json)
            .arg("--weights")
            .arg(&o.weights)
            .arg("--batch")
            .arg(&batch)
            .args(["--threads", &o.threads.to_string()])
            .args(["--device", device])
            .args(["--dtype", o.dtype])
            .args(["--accumulation", &o.accumulation.to_string()])
            .args(["--attention", o.attention]);
        if let Some(optim) = o.optim {
            cmd.args(["--optim-json", &optim.to_string()]);
        }
        if o.compile {
            cmd.arg("--compile");
        }
        if o.dropout {
            cmd.arg("--dropout");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", o.python.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut py = PythonBench {
            child,
            stdin,
            stdout,
            info: serde_json::Value::Null,
        };
        let ready = py.read_json()?;
        if ready["ready"] != serde_json::Value::Bool(true) {
            bail!("bench_step.py did not get ready: {ready}");
        }
        py.info = ready;
        Ok(py)
    }

    fn read_json(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("bench_step.py ended ({status}) before answering (see its stderr above)");
        }
        serde_json::from_str(&line).with_context(|| format!("bench_step.py said {line:?}"))
    }

    /// Run `steps` timed steps; their times in seconds.
    pub fn run(&mut self, steps: usize) -> Result<Vec<f64>> {
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

    /// End the reference.
    pub fn quit(mut self) -> Result<()> {
        let _ = writeln!(self.stdin, "quit");
        drop(self.stdin);
        self.child.wait()?;
        Ok(())
    }
}
