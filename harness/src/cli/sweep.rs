//! `crambench sweep SWEEP.toml`: recipes × seeds × overrides as many `crambench run`s, on this
//! machine (`--launcher local`) or as one Slurm job array (`--launcher slurm`);
//! `crambench sweep status SWEEP.toml` and `crambench sweep collect SWEEP.toml`.
//!
//! Exit codes: 0 done (or submitted); 1 a run failed its checks (collect: nothing written) or a
//! local run failed; 2 bad sweep file or argument; 3 I/O failure, or `sbatch` cannot be run;
//! 4 `sbatch` refused the script, or a run directory belongs to something else.
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use crambench::sweep::{self, Sweep};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Launcher {
    /// One run after another in this process.
    Local,
    /// One sbatch script with a job array, submitted.
    Slurm,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    cmd: Option<SweepCmd>,
    /// The sweep file (TOML: name, recipes, seeds, budgets, micro_batches, [run], [slurm]).
    file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "local")]
    launcher: Launcher,
    /// The sweep directory (default: the file's `out`, else sweeps/<name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Slurm: write the script only, do not submit.
    #[arg(long)]
    dry_run: bool,
    /// Slurm partition (overrides slurm.partition).
    #[arg(long)]
    partition: Option<String>,
    /// Slurm time limit per task (overrides slurm.time).
    #[arg(long)]
    time: Option<String>,
    /// GPUs per task (overrides slurm.gpus).
    #[arg(long)]
    gpus: Option<u32>,
    /// Tasks running at once, the %K of --array (overrides slurm.max_parallel).
    #[arg(long, value_name = "K")]
    max_parallel: Option<u32>,
    /// The crambench binary the Slurm tasks run (default: this one).
    #[arg(long, value_name = "PATH")]
    crambench: Option<PathBuf>,
    /// Local launcher: overrides the sweep file's run.device.
    #[command(flatten)]
    device: super::args::DeviceArg,
    #[command(flatten)]
    json: super::args::JsonArg,
}

#[derive(Subcommand)]
enum SweepCmd {
    /// Which runs finished (outputs verified against their signed manifest), are running,
    /// incomplete, failed or missing.
    Status(ReadArgs),
    /// Median and spread of the aggregate over pretraining seeds, written as a signed
    /// statement naming every run manifest by digest (summary.json, summary.dsse.json). Every
    /// finished run must be signed by a --trust key (default: the key signing the summary).
    Collect(CollectArgs),
}

#[derive(Args)]
struct ReadArgs {
    /// The sweep file.
    file: PathBuf,
    /// The sweep directory (default: the file's `out`, else sweeps/<name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    json: super::args::JsonArg,
}

#[derive(Args)]
struct CollectArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Private key to sign the summary with (default: your key).
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    /// Fail unless every run finished.
    #[arg(long)]
    require_all: bool,
    #[command(flatten)]
    trust: super::args::TrustArgs,
}

pub fn run(args: SweepArgs) -> Result<ExitCode> {
    match args.cmd {
        Some(SweepCmd::Status(a)) => status(a),
        Some(SweepCmd::Collect(a)) => collect(a),
        None => launch(args),
    }
}

fn launch(args: SweepArgs) -> Result<ExitCode> {
    let Some(file) = &args.file else {
        return Err(crambench::Error::input(
            "crambench sweep",
            "expected a sweep file (or `status FILE`, `collect FILE`)",
        )
        .into());
    };
    let sw = Sweep::load(file, args.out.as_deref())?;
    match args.launcher {
        Launcher::Local => {
            let stop = super::stop_on_signals()?;
            let device = match (args.device.device, sw.file.run.device.as_deref()) {
                (None, Some(d)) => crambench::train::run::parse_device(d)?,
                _ => args.device.resolve(),
            };
            let data_root = crambench::data::prepare::data_root(
                sw.file.run.data_dir.as_ref().map(|d| sw.resolve(d)),
            );
            let results = sweep::local::run_all(
                &sw,
                &sweep::local::LocalOptions {
                    device,
                    devices: sw.file.run.devices.unwrap_or(1),
                    data_root,
                    progress: true,
                    stop,
                },
            )?;
            if args.json.enabled {
                outln!("{}", super::json_text(&results)?.trim_end());
            } else {
                for r in &results {
                    outln!("{:>4} {:<32} {:<8} {}", r.index, r.id, r.status, r.detail);
                }
                outln!("sweep {}", sw.out.display());
            }
        }
        Launcher::Slurm => {
            let l = sweep::slurm::launch(
                &sw,
                &sweep::slurm::SlurmOptions {
                    partition: args.partition.clone(),
                    time: args.time.clone(),
                    gpus: args.gpus,
                    max_parallel: args.max_parallel,
                    crambench: args.crambench.clone(),
                    sbatch: None,
                },
                args.dry_run,
            )?;
            if args.json.enabled {
                outln!("{}", super::json_text(&l)?.trim_end());
            } else if l.indices.is_empty() {
                outln!(
                    "all {} runs of sweep {} are finished; nothing to submit",
                    sw.runs.len(),
                    sw.file.name
                );
            } else {
                match &l.job_id {
                    Some(id) => outln!(
                        "submitted job {id}: {} array task(s) ({}), script {}",
                        l.indices.len(),
                        sweep::slurm::array_spec(&l.indices, None),
                        l.script.display()
                    ),
                    None => outln!(
                        "wrote {} ({} array task(s)); submit it with: sbatch {}",
                        l.script.display(),
                        l.indices.len(),
                        l.script.display()
                    ),
                }
            }
        }
    }
    Ok(ExitCode::Ok)
}

fn status(a: ReadArgs) -> Result<ExitCode> {
    let sw = Sweep::load(&a.file, a.out.as_deref())?;
    let all = sweep::status::check_all(&sw);
    if a.json.enabled {
        outln!("{}", super::json_text(&all)?.trim_end());
    } else {
        out!("{}", sweep::status::table(&all));
    }
    Ok(ExitCode::Ok)
}

fn collect(a: CollectArgs) -> Result<ExitCode> {
    let sw = Sweep::load(&a.read.file, a.read.out.as_deref())?;
    let trusted = if a.trust.trust.is_empty() {
        Vec::new() // the summary's own signing key
    } else {
        a.trust.load(&[], "--trust")?
    };
    let c = sweep::collect::collect(&sw, a.key.as_deref(), a.require_all, &trusted)?;
    if a.read.json.enabled {
        outln!("{}", super::json_text(&c)?.trim_end());
    } else {
        out!("{}", sweep::collect::table(&c));
    }
    Ok(ExitCode::Ok)
}

/// A data-parallel rank other than 0 (its launcher's environment says so: torchrun, Slurm,
/// Kubeflow, or `--devices N` of rank 0): connect to rank 0, pretrain the job it sends, and
/// exit (`Some(code)`). `None` for rank 0 and for one process.
pub fn dist_worker(
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Option<ExitCode>> {
    let env = crambench::train::dist::DistEnv::detect()?;
    if env.world_size == 1 || env.rank == 0 {
        return Ok(None);
    }
    crambench::train::dist::worker::serve(&env, stop.clone())?;
    Ok(Some(ExitCode::Ok))
}
