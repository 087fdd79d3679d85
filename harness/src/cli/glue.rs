//! `crambench glue …`: fine-tune and evaluate on GLUE (`run`), re-score a predictions file
//! (`score`), print the SHA-256 pins of a GLUE data directory (`pin`).
use super::args::{DeviceArg, GlueDataArg, JsonArg, SeedArg};
use super::{json_text, print};
use anyhow::Result;
use clap::{Args, Subcommand};
use crambench::glue::{data, predictions, tasks};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum GlueCmd {
    /// Fine-tune a pretrained checkpoint on GLUE (or the demo tasks) under the recipe's
    /// protocol; writes glue.json, the per-task table and per-trial predictions to --out.
    Run(RunArgs),
    /// Re-score a predictions TSV (idx, prediction, gold) and print the evaluation set's metrics.
    Score(ScoreArgs),
    /// Print the SHA-256 pins of every GLUE file under DIR (TSV or Parquet layout), as a
    /// `[glue.pins]` TOML table (or JSON with --json).
    Pin(PinArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Checkpoint directory with model.safetensors, arch.json and tokenizer.json.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Comma-separated tasks: all (the eight GLUE tasks without WNLI), demo, or ids
    /// (cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli,demo-sentiment,demo-next-sentence).
    /// Default: the recipe's `glue.tasks`, else all.
    #[arg(long)]
    pub tasks: Option<String>,
    #[command(flatten)]
    pub glue_data: GlueDataArg,
    /// The older name of --glue-data.
    #[arg(long, value_name = "DIR", hide = true, conflicts_with = "glue_data")]
    pub data: Option<PathBuf>,
    /// Recipe whose [glue] table sets the protocol (default: glue-sane defaults).
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Override the number of trials (seeds) per task.
    #[arg(long)]
    pub trials: Option<u32>,
    #[command(flatten)]
    pub seed: SeedArg,
    /// Also fine-tune the untrained architecture under the same protocol and trial seeds, as
    /// the no-pretraining control (the recipe's `glue.control_no_pretraining`; on by default
    /// for the demo tasks).
    #[arg(long)]
    pub control: bool,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "runs/glue")]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Attention kernel: auto, flash, efficient, cudnn or math (default: the recipe's
    /// `glue.attention`, else auto). Checked on the device before the first trial.
    #[arg(long, value_name = "BACKEND")]
    pub attention: Option<crambench::model::attention::AttentionBackend>,
    /// Length bucketing: sort pools of N training batches by length (0 = off; default: the
    /// recipe's `glue.bucket_batches`, else off). Same examples per epoch; other batches, so
    /// other results.
    #[arg(long, value_name = "N")]
    pub bucket_batches: Option<usize>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Args)]
pub struct ScoreArgs {
    /// Evaluation set: cola, sst2, mrpc, qqp, stsb, mnli-m, mnli-mm, qnli, rte, wnli, demo-*.
    #[arg(long)]
    pub task: String,
    /// Predictions TSV with the header `idx\tprediction\tgold`.
    #[arg(long, value_name = "FILE")]
    pub predictions: PathBuf,
    /// Gold labels from the task's dev file instead of the gold column (TSV or .parquet);
    /// joined by idx: every dev example must be predicted, and nothing else.
    #[arg(long, value_name = "FILE")]
    pub gold: Option<PathBuf>,
    /// Without --gold, accept a file with another number of rows than the task's dev set (a
    /// subset, or a test fixture) and score its gold column.
    #[arg(long)]
    pub any_size: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Args)]
pub struct PinArgs {
    /// GLUE data root (`glue_data/` of download_glue_data.py, or a nyu-mll/glue snapshot).
    pub dir: PathBuf,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(cmd: GlueCmd) -> Result<ExitCode> {
    match cmd {
        GlueCmd::Run(a) => run_glue(a),
        GlueCmd::Score(a) => score(a),
        GlueCmd::Pin(a) => pin(a),
    }
}

fn score(a: ScoreArgs) -> Result<ExitCode> {
    let set = tasks::eval_set(&a.task)?;
    let rows = predictions::read(&set, &a.predictions)?;
    let source = a.predictions.display().to_string();
    let metrics = match &a.gold {
        Some(g) => {
            let gold = data::load_dev_file(&set, g)?;
            predictions::score_against(&set, &rows, &gold, &source)?
        }
        None => {
            // Without a dev file the rows must be the whole dev set of the task named: a file
            // of another task (or a partial one) would otherwise score as this one.
            let want = set.dev_examples();
            if rows.len() != want && !a.any_size {
                return Err(crambench::Error::input(
                    &source,
                    format!(
                        "{} prediction rows, but the {} dev set has {want} examples: is this \
                         another task's file? (pass --gold DEV_FILE to score against a dev file \
                         of another size, or --any-size for a subset)",
                        rows.len(),
                        set.id
                    ),
                )
                .into());
            }
            predictions::score_rows(&set, &rows, &source)?
        }
    };
    let sha = crambench::provenance::hash::hash_file(&a.predictions, &|_| {})?.sha256;
    if a.json.enabled {
        print(&json_text(&serde_json::json!({
            "task": set.id,
            "predictions": {"path": source, "sha256": sha, "rows": rows.len()},
            "gold": a.gold.as_ref().map(|g| g.display().to_string()),
            "metrics": metrics,
        }))?)?;
    } else {
        let mut t = format!("{}  {} rows  sha256:{sha}\n", set.id, rows.len());
        for (k, v) in &metrics {
            t += &format!("  {k:<9} {v:.6}  ({:.2})\n", 100.0 * v);
        }
        print(&t)?;
    }
    Ok(ExitCode::Ok)
}

fn pin(a: PinArgs) -> Result<ExitCode> {
    let files = data::pin_dir(&a.dir)?;
    if files.is_empty() {
        return Err(crambench::Error::input(
            a.dir.display(),
            "no GLUE files found (TSV or Parquet layout)",
        )
        .into());
    }
    if a.json.enabled {
        print(&json_text(&files)?)?;
    } else {
        print(&data::pins_toml(&files))?;
    }
    Ok(ExitCode::Ok)
}

fn run_glue(a: RunArgs) -> Result<ExitCode> {
    // The first SIGINT/SIGTERM stops at the next fine-tuning step; completed trials stay in
    // --out and a rerun into it continues (exit 130 meanwhile).
    let stop = super::stop_on_signals()?;
    use crambench::glue::config::GlueConfig;
    use crambench::glue::finetune;
    let mut cfg = match &a.recipe {
        Some(r) => GlueConfig::from_recipe(&crambench::recipe::Recipe::load(r)?)?,
        None => GlueConfig::default(),
    };
    if let Some(n) = a.trials {
        if n == 0 {
            return Err(crambench::Error::input("--trials", "must be positive").into());
        }
        cfg.trials = n;
    }
    if a.control {
        cfg.control_no_pretraining = Some(true);
    }
    if let Some(b) = a.attention {
        cfg.attention = b;
    }
    if let Some(n) = a.bucket_batches {
        cfg.bucket_batches = n;
    }
    let tasks = match (&a.tasks, &a.recipe) {
        (Some(list), _) => tasks::Task::parse_list(list)?,
        (None, Some(r)) => tasks::Task::parse_list_as(
            &format!("{}: glue.tasks", r.display()),
            &cfg.tasks.join(","),
        )?,
        (None, None) => tasks::Task::parse_list_as("glue.tasks (default)", &cfg.tasks.join(","))?,
    };
    let device = a.device.resolve();
    let glue_data = a.glue_data.glue_data.clone().or(a.data.clone());
    // Every task's data and the device, before the first trial.
    crambench::run::preflight::check_glue_data(
        &tasks,
        glue_data.as_deref(),
        "--glue-data",
        "--tasks",
    )?;
    crambench::run::preflight::check_device(device)?;
    let master = crambench::provenance::seeds::Seeds::from_option(a.seed.seed)?.master;
    let ck = finetune::Checkpoint::load(&a.checkpoint)?;
    let res = finetune::run(
        &cfg,
        &finetune::RunOptions {
            checkpoint: &ck,
            tasks,
            data: glue_data.as_deref(),
            out: &a.out,
            master_seed: master,
            device,
            progress: true,
            stop: Some(stop.as_ref()),
        },
    )?;
    a.json.emit(&res, || table(&res))?;
    Ok(ExitCode::Ok)
}

fn table(r: &crambench::glue::finetune::GlueResults) -> String {
    let mut t = format!(
        "protocol {}  trials {}  master seed {}  device {}  ({:.1}s)\n",
        r.protocol, r.config.trials, r.master_seed, r.device, r.total_finetune_seconds
    );
    t += &format!(
        "{:<20} {:<10} {:>8} {:>17}   trials\n",
        "set", "metric", "median", "95% interval"
    );
    for (set, s) in &r.tasks {
        for (m, v) in &s.metrics {
            let ci = r
                .uncertainty
                .tasks
                .get(set)
                .and_then(|u| u.ci95.get(m))
                .map(|i| format!("[{:.2}, {:.2}]", 100.0 * i.lo, 100.0 * i.hi))
                .unwrap_or_default();
            let trials: Vec<String> = s
                .trials
                .iter()
                .map(|x| {
                    x.metrics
                        .get(m)
                        .map(|v| format!("{:.2}", 100.0 * v))
                        .unwrap_or_default()
                })
                .collect();
            t += &format!(
                "{set:<20} {m:<10} {:>8.2} {ci:>17}   {}\n",
                100.0 * v,
                trials.join(" ")
            );
        }
    }
    for agg in &r.aggregates {
        let head = if Some(agg) == r.aggregate.as_ref() {
            " (headline)"
        } else {
            ""
        };
        let ci = if head.is_empty() {
            String::new()
        } else {
            r.uncertainty
                .aggregate
                .map(|i| format!(" [{:.2}, {:.2}]", i.lo, i.hi))
                .unwrap_or_default()
        };
        t += &format!(
            "aggregate {:<14} {:.2}{ci}{head}\n",
            agg.rule.name(),
            agg.value
        );
    }
    for line in crambench::glue::controls::summary_lines(&r.controls) {
        t += &line;
        t.push('\n');
    }
    if !r.glue {
        t += "demo tasks: not GLUE; their aggregate is the `demo` rule\n";
    } else if r.aggregate.is_none() {
        t += &format!(
            "aggregate {}: not all of its tasks were run\n",
            r.config.aggregate.name()
        );
    }
    t
}
