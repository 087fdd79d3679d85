//! `crambench bench conformance`: the models on a device against the CPU goldens of the
//! independent PyTorch reference (`tests/golden/*.{json,safetensors}`, written by
//! `reference/pytorch/make_goldens.py`; `tests/model_conformance.rs` checks them on the CPU).
//!
//! For every golden architecture, every attention backend asked for and each precision: load
//! the reference weights, run forward and backward with dropout off, and compare with the
//! reference (relative error = max |ours − reference| / max |reference|):
//!
//! | precision | logits, loss, masked encoder output | every parameter's gradient |
//! |---|---|---|
//! | fp32 (TF32 off) | ≤ 1e-4 | ≤ 1e-4 |
//! | bf16 (autocast) | ≤ 3e-2 | ≤ 1e-1 |
//!
//! bf16 keeps 8 significant bits (a relative step of 2⁻⁸ ≈ 3.9e-3 per rounding); through a
//! two-layer model and a softmax the forward values stay within a few steps of it, and
//! gradients, which go through twice as many roundings, within about 25 steps — hence 3e-2 and
//! 1e-1. Where libtorch does not have bf16 autocast for the device it reports the precision
//! that ran. A backend the device cannot run for a case (flash in fp32 or with a padding mask
//! on CUDA; efficient or cudnn on a CPU) is reported `unsupported` with libtorch's reason, not
//! failed; `auto` and `math` must run everything. Exit 0 when every supported case passes, 1
//! otherwise.
use anyhow::{Context, Result};
use clap::Args;
use crambench::error::{Error, ExitCode};
use crambench::model::attention::{self, AttentionBackend};
use crambench::model::{self, ArchConfig};
use crambench::train::amp::{Amp, Precision};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

#[derive(Args, Debug)]
pub struct ConformanceArgs {
    #[command(flatten)]
    device: super::args::DeviceArg,
    /// Directory of the goldens.
    #[arg(long, value_name = "DIR", default_value = "tests/golden")]
    golden: PathBuf,
    /// Comma-separated attention backends (default: auto,math, and on CUDA also
    /// flash,efficient,cudnn).
    #[arg(long, value_name = "LIST")]
    attention: Option<String>,
    /// Comma-separated precisions: fp32, bf16.
    #[arg(long, default_value = "fp32,bf16")]
    precision: String,
    #[arg(long)]
    json: bool,
}

/// Tolerances (relative to the reference's largest entry): (forward values, gradients).
pub fn tolerances(p: Precision) -> (f64, f64) {
    match p {
        Precision::Fp32 => (1e-4, 1e-4),
        Precision::Bf16 | Precision::Fp16 => (3e-2, 1e-1),
    }
}

#[derive(Debug, Serialize)]
struct Case {
    golden: String,
    attention: AttentionBackend,
    /// Precision asked for, and the one libtorch ran.
    precision: Precision,
    ran: Precision,
    masked: bool,
    /// `pass`, `fail` or `unsupported`.
    status: String,
    /// Worst relative error per quantity (`logits`, `loss`, `gradients`, `encoded_masked`).
    errors: Vec<(String, f64)>,
    tolerance_forward: f64,
    tolerance_gradients: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    device: String,
    gpu: Option<String>,
    cases: Vec<Case>,
    passed: usize,
    failed: usize,
    unsupported: usize,
    pass: bool,
}

struct Golden {
    name: String,
    cfg: ArchConfig,
    t: HashMap<String, Tensor>,
}

fn goldens(dir: &Path) -> Result<Vec<Golden>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for meta_path in names {
        let meta: serde_json::Value =
            serde_json::from_slice(&crambench::io::read_limited(&meta_path, 1 << 20)?)
                .map_err(|e| Error::input(meta_path.display(), format!("not JSON: {e}")))?;
        let Some(arch) = meta.get("arch") else {
            continue; // not a model golden (schedules)
        };
        let cfg: ArchConfig = serde_json::from_value(arch.clone())
            .map_err(|e| Error::input(meta_path.display(), format!("arch: {e}")))?;
        let st = meta_path.with_extension("safetensors");
        let t = Tensor::read_safetensors(&st)
            .map_err(|e| Error::input(st.display(), format!("not a safetensors file: {e}")))?
            .into_iter()
            .collect();
        let name = meta_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Golden { name, cfg, t });
    }
    if out.is_empty() {
        return Err(Error::input(dir.display(), "no model goldens (*.json with an arch)").into());
    }
    Ok(out)
}

/// max |a − b| / max |b|, computed in f64 on the CPU.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    if a.size() != b.size() {
        return f64::INFINITY;
    }
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]);
    let e = diff / scale.max(1e-12);
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// The golden's weights in a model on `device`.
fn model_on(g: &Golden, device: Device) -> Result<(VarStore, Box<dyn model::MlmModel>)> {
    let vs = VarStore::new(device);
    let m = model::build(&vs.root(), &g.cfg)?;
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vs.variables() {
            if !var.requires_grad() {
                continue; // buffers (norm_factor): constants
            }
            let src =
                g.t.get(&format!("param.{name}"))
                    .with_context(|| format!("golden {} has no weight for {name}", g.name))?;
            var.shallow_clone().copy_(src);
        }
        Ok(())
    })?;
    Ok((vs, m))
}

fn run_case(
    g: &Golden,
    device: Device,
    backend: AttentionBackend,
    precision: Precision,
    masked: bool,
) -> Result<Case> {
    let amp = Amp::setup(precision, false, device);
    let (tf, tg) = tolerances(amp.precision);
    let mut case = Case {
        golden: g.name.clone(),
        attention: backend,
        precision,
        ran: amp.precision,
        masked,
        status: "pass".into(),
        errors: Vec::new(),
        tolerance_forward: tf,
        tolerance_gradients: tg,
        reason: None,
    };
    let probe = attention::Probe {
        device,
        kind: amp.precision.kind(),
        heads: g.cfg.heads,
        head_dim: g.cfg.head_dim(),
        masked,
        backward: !masked,
        dropout: 0.0,
    };
    if let Err(e) = attention::check(backend, &probe, "--attention") {
        case.status = "unsupported".into();
        case.reason = Some(e.to_string());
        return Ok(case);
    }
    let (vs, m) = model_on(g, device)?;
    let ids = g.t["input_ids"].to_device(device);
    let fail = |case: &mut Case, what: &str, e: f64, tol: f64| {
        case.errors.push((what.to_string(), e));
        if e > tol {
            case.status = "fail".into();
        }
    };
    if masked {
        let mask = g.t["attention_mask"].to_device(device);
        let h = tch::no_grad(|| amp.forward(|| m.encode(&ids, Some(&mask), false)));
        fail(
            &mut case,
            "encoded_masked",
            rel_err(&h, &g.t["encoded_masked"]),
            tf,
        );
        return Ok(case);
    }
    let labels = g.t["labels"].to_device(device);
    let (logits, _) = amp.forward(|| m.mlm_logits(&ids, &labels, false));
    fail(&mut case, "logits", rel_err(&logits, &g.t["logits"]), tf);
    let loss = amp.forward(|| m.mlm_loss(&ids, &labels, false));
    fail(&mut case, "loss", rel_err(&loss, &g.t["loss"]), tf);
    loss.backward();
    let mut worst = 0f64;
    for (name, var) in vs.variables() {
        if !var.requires_grad() {
            continue;
        }
        let grad = var.grad();
        let e = match g.t.get(&format!("grad.{name}")) {
            Some(r) if grad.defined() => rel_err(&grad, r),
            _ => f64::INFINITY,
        };
        worst = worst.max(e);
    }
    fail(&mut case, "gradients", worst, tg);
    Ok(case)
}

pub fn run(args: ConformanceArgs) -> Result<ExitCode> {
    let device = args.device.resolve();
    if device.is_cuda() && !tch::Cuda::is_available() {
        return Err(Error::input("--device", "CUDA is not available on this machine").into());
    }
    let backends: Vec<AttentionBackend> = match &args.attention {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|e: String| Error::input("--attention", e))
            })
            .collect::<Result<_, _>>()?,
        None if device.is_cuda() => AttentionBackend::ALL.to_vec(),
        None => vec![AttentionBackend::Auto, AttentionBackend::Math],
    };
    let precisions: Vec<Precision> = args
        .precision
        .split(',')
        .map(|s| match s.trim() {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(Error::input(
                "--precision",
                format!("{other:?}: expected fp32 or bf16"),
            )),
        })
        .collect::<Result<_, _>>()?;
    let goldens = goldens(&args.golden)?;
    let mut cases = Vec::new();
    for g in &goldens {
        for &b in &backends {
            for &p in &precisions {
                for masked in [false, true] {
                    let mut c = run_case(g, device, b, p, masked)?;
                    // auto and math must run every case.
                    if c.status == "unsupported"
                        && matches!(b, AttentionBackend::Auto | AttentionBackend::Math)
                    {
                        c.status = "fail".into();
                    }
                    cases.push(c);
                }
            }
        }
    }
    attention::select(AttentionBackend::Auto);
    let count = |s: &str| cases.iter().filter(|c| c.status == s).count();
    let report = Report {
        device: format!("{device:?}"),
        gpu: device.is_cuda().then(gpu_name).flatten(),
        passed: count("pass"),
        failed: count("fail"),
        unsupported: count("unsupported"),
        pass: count("fail") == 0,
        cases,
    };
    if args.json {
        super::print(&super::json_text(&report)?)?;
    } else {
        outln!(
            "conformance on {} {}: {} passed, {} failed, {} unsupported",
            report.device,
            report.gpu.as_deref().unwrap_or(""),
            report.passed,
            report.failed,
            report.unsupported
        );
        for c in &report.cases {
            let errs: Vec<String> = c
                .errors
                .iter()
                .map(|(k, e)| format!("{k} {e:.1e}"))
                .collect();
            outln!(
                "{:<20} {:<9} {:<4}{} {:<5} {:<11} {}",
                c.golden,
                c.attention.name(),
                format!("{:?}", c.ran).to_lowercase(),
                if c.ran != c.precision { "*" } else { " " },
                if c.masked { "mask" } else { "" },
                c.status,
                c.reason.clone().unwrap_or_else(|| errs.join(", "))
            );
        }
    }
    Ok(if report.pass {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

fn gpu_name() -> Option<String> {
    let fp = crambench::provenance::fingerprint::collect(&Default::default());
    fp.hardware.gpus.first().map(|g| g.name.clone())
}
