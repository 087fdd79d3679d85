//! `crambench bench optim`: one optimizer step of a recipe's architecture, the trainer's flat
//! AdamW (`FlatAdam`) against the per-parameter optimizer it replaced (inf check over every
//! gradient, `clip_grad_norm`, `Adam::step`, per-parameter zeroing), alternating step by step on
//! two copies of the same parameters and gradients: median, interquartile spread, min and max,
//! and the ratio of the medians. The timing lives in `crambench::train::bench`.
use super::args::{DeviceArg, JsonArg};
use anyhow::Result;
use clap::Args;
use crambench::error::{Error, ExitCode};
use crambench::model::ArchConfig;
use crambench::stats::Spread;
use crambench::train::TrainConfig;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct OptimArgs {
    /// Recipe whose `[arch]` (parameters) and `[train]` (AdamW settings, clipping) are used.
    #[arg(long, required_unless_present = "arch", conflicts_with = "arch")]
    recipe: Option<PathBuf>,
    /// An architecture preset instead (with the default `[train]`).
    #[arg(long)]
    arch: Option<String>,
    /// Timed steps per optimizer.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps per optimizer.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[command(flatten)]
    device: DeviceArg,
    /// Intra-op threads (default: libtorch's default).
    #[arg(long)]
    threads: Option<i32>,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: OptimArgs) -> Result<ExitCode> {
    let (arch, train, name) = match (&args.recipe, &args.arch) {
        (Some(path), _) => {
            let recipe = crambench::recipe::Recipe::load(path)?;
            (
                recipe.section::<ArchConfig>("arch")?,
                TrainConfig::from_recipe(&recipe)?,
                recipe.name(),
            )
        }
        (None, Some(n)) => (ArchConfig::preset(n)?, TrainConfig::default(), n.clone()),
        (None, None) => return Err(Error::input("arguments", "give --recipe or --arch").into()),
    };
    if args.steps < 1 {
        return Err(Error::input("--steps", "must be at least 1").into());
    }
    let device = args.device.resolve();
    crambench::run::preflight::check_device(device)?;
    if let Some(t) = args.threads {
        if t < 1 {
            return Err(Error::input("--threads", "must be at least 1").into());
        }
        tch::set_num_threads(t);
    }
    let b =
        crambench::train::bench::bench_optimizer(&arch, &train, device, args.steps, args.warmup)?;
    let old = Spread::of(&b.per_parameter_s).expect("steps >= 1");
    let new = Spread::of(&b.flat_s).expect("steps >= 1");
    let speedup = old.median / new.median;
    if args.json.enabled {
        let v = serde_json::json!({
            "model": name, "parameters": b.n_params, "tensors": b.n_tensors,
            "flat_groups": b.groups, "kernel": b.kernel, "device": format!("{device:?}"),
            "threads": tch::get_num_threads(),
            "per_parameter": {"times_s": old.runs, "median_s": old.median, "q1_s": old.q1,
                              "q3_s": old.q3, "min_s": old.min, "max_s": old.max,
                              "spread": old.relative_iqr()},
            "flat": {"times_s": new.runs, "median_s": new.median, "q1_s": new.q1,
                     "q3_s": new.q3, "min_s": new.min, "max_s": new.max,
                     "spread": new.relative_iqr()},
            "speedup_median": speedup,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::Ok);
    }
    outln!(
        "{name}: {} parameters in {} tensors; flat: {} buffers, {:?} kernel; {device:?}, {} threads; {} timed steps (+{} warm-up) each, alternating",
        b.n_params,
        b.n_tensors,
        b.groups,
        b.kernel,
        tch::get_num_threads(),
        args.steps,
        args.warmup
    );
    outln!(
        "{:<16} {:>10} {:>8} {:>10} {:>10}",
        "optimizer",
        "median s",
        "IQR",
        "min s",
        "max s"
    );
    for (label, s) in [("per-parameter", &old), ("flat", &new)] {
        outln!(
            "{:<16} {:>10.4} {:>7.1}% {:>10.4} {:>10.4}",
            label,
            s.median,
            100.0 * s.relative_iqr(),
            s.min,
            s.max
        );
    }
    outln!("flat optimizer step speed-up (medians): {speedup:.2}x");
    Ok(ExitCode::Ok)
}
