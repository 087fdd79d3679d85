//! `crambench run RECIPE`: the whole pipeline, from recipe to signed manifest and report.
//!
//! Progress of each stage goes to stderr; the outcome (stages, headline numbers, where the
//! manifest, envelope and report are, how to verify) goes to stdout as a table or, with
//! `--json`, as JSON. SIGINT/SIGTERM stop pretraining with a checkpoint (exit 0, "stopped");
//! rerunning the same command continues. Exit codes: 0 complete or cleanly stopped; 1 a
//! completed stage's outputs changed on disk, or training diverged; 2 bad recipe or argument;
//! 3 I/O failure (e.g. disk full — what was written before stays intact); 4 the run directory
//! belongs to another recipe or hardware class (override with --force) or another seed.
use super::args::{BudgetArg, DataDirArg, DeviceArg, GlueDataArg, JsonArg, SeedArg};
use anyhow::Result;
use clap::Args;
use crambench::run::{run as run_pipeline, RunOptions, RunOutcome};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// The recipe (TOML in baselines/).
    pub recipe: PathBuf,
    #[command(flatten)]
    pub budget: BudgetArg,
    /// Parent of run directories; the run lives in OUT/<recipe name>/.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub out: PathBuf,
    /// Private key to sign the manifest with (default: your key in the crambench config
    /// directory, created on first use).
    #[arg(long, value_name = "KEY")]
    pub key: Option<PathBuf>,
    /// Continue a run directory made from another recipe (or budget) or on another hardware
    /// class, or redo a stage whose outputs changed (recorded in run.json and the manifest).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub glue_data: GlueDataArg,
    /// Data-preparation threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Record host identifiers (host name, user, addresses) in the fingerprint.
    #[arg(long)]
    pub include_host: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let stop = super::stop_on_signals()?;
    let device = args.device.resolve();
    let data_root = args.data_dir.root();
    let outcome = run_pipeline(&RunOptions {
        recipe: args.recipe.clone(),
        out_root: args.out.clone(),
        budget: args.budget.budget.clone(),
        key: args.key.clone(),
        force: args.force,
        seed: args.seed.seed,
        device,
        data_root,
        glue_data: args.glue_data.glue_data.clone(),
        threads: args.threads,
        include_host: args.include_host,
        progress: true,
        stop,
    })?;
    args.json.emit(&outcome, || table(&outcome))?;
    Ok(ExitCode::Ok)
}

fn table(o: &RunOutcome) -> String {
    let mut t = String::new();
    for s in &o.stages {
        t += &format!(
            "{:<12} {:<8} {:>9.1}s  {}\n",
            s.stage, s.status, s.seconds, s.detail
        );
    }
    if !o.complete {
        t += &format!(
            "\nrun stopped; rerun the same command to continue ({})\n",
            o.dir.display()
        );
        return t;
    }
    t += "\n";
    let mut row = |k: &str, v: String| t.push_str(&format!("{k:<14} {v}\n"));
    if let Some(a) = &o.aggregate {
        row(
            "aggregate",
            format!(
                "{:.2} ({} rule){}",
                a["value"].as_f64().unwrap_or(f64::NAN),
                a["rule"].as_str().unwrap_or("?"),
                o.aggregate_ci95
                    .as_ref()
                    .map(|i| format!(
                        ", 95% interval [{:.2}, {:.2}]",
                        i["lo"].as_f64().unwrap_or(f64::NAN),
                        i["hi"].as_f64().unwrap_or(f64::NAN)
                    ))
                    .unwrap_or_default()
            ),
        );
    }
    for (i, line) in o.controls.iter().enumerate() {
        row(if i == 0 { "controls" } else { "" }, line.clone());
    }
    if let Some(l) = o.final_mlm_loss {
        row("final MLM loss", format!("{l:.4}"));
    }
    if let Some(v) = o.tokens_per_second {
        row("tokens/s", format!("{v:.0}"));
    }
    if let Some(h) = o.used_device_hours {
        row("device-hours", format!("{h:.4}"));
    }
    row("run", o.dir.display().to_string());
    row("manifest", o.manifest.display().to_string());
    row("envelope", o.envelope.display().to_string());
    row(
        "report",
        format!(
            "{}, {}",
            o.report_markdown.display(),
            o.report_html.display()
        ),
    );
    if let Some(k) = &o.keyid {
        row("signed by", k.clone());
    }
    if let Some(p) = &o.public_key {
        row(
            "verify",
            format!(
                "crambench verify {} --trust {}",
                o.envelope.display(),
                p.display()
            ),
        );
    }
    t
}
