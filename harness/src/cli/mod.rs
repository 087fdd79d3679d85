//! Command groups of the `crambench` binary, one file per area; each defines its clap
//! arguments and calls into the library. This file holds the command table ([`Cli`],
//! [`Command`] and its dispatch), the grouped top-level help, and what every command shares:
//! the one stdout writer, JSON text, signal handling. Shared argument groups are in [`args`].
use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use crambench::ExitCode;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// `println!` for command output: through [`print`], so a closed pipe ends quietly (exit 0)
/// instead of panicking. Used with `?` inside functions returning `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::print(&format!("{}\n", format_args!($($arg)*)))?
    };
}

/// `print!` through [`print`] (see [`outln!`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print(&format!($($arg)*))?
    };
}

pub mod args;
pub mod bench;
pub mod bench_data;
pub mod bench_optim;
pub mod bench_train;
pub mod checkpoint;
pub mod compare;
pub mod conformance;
pub mod data;
pub mod gate;
pub mod glue;
pub mod leaderboard;
pub mod manifest;
pub mod provenance;
pub mod report;
pub mod run;
pub mod sign;
pub mod submit;
pub mod sweep;
pub mod train;
pub mod verify;

#[derive(Parser)]
#[command(
    name = "crambench",
    version,
    about = "Reproduce Cramming (arXiv 2212.14034) and its BERT baselines, and prove what ran",
    long_about = None,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Shown under the top-level help.
const EXAMPLES: &str = "\
Example:
  crambench run baselines/demo-cpu.toml --budget 10m --seed 2212 --out runs
  crambench verify runs/demo-cpu --trust ~/.config/crambench/keys/default.pub
  crambench compare runs/demo-cpu manifests/baselines/demo-cpu-10m
  crambench gate --baseline manifests/baselines/demo-cpu-10m --candidate runs/demo-cpu

`crambench COMMAND --help` describes a command.";

#[derive(Subcommand)]
pub enum Command {
    /// Run a recipe end to end: fingerprint, data, pretraining, GLUE, signed manifest, report.
    /// Rerunning the same command continues where it stopped.
    Run(run::RunArgs),
    /// Runs side by side: per-task medians and spread over trials, deltas to the first run,
    /// aggregate under its rule, budget and hardware; flags anything not comparable.
    Compare(compare::CompareArgs),
    /// CI regression gate: throughput, MLM loss and GLUE of a candidate run against a baseline;
    /// Markdown summary and a signed in-toto test-result attestation. Exit 0 pass, 1 regression.
    Gate(gate::GateArgs),
    /// Pack a signed run into a leaderboard entry (bundle directory with an index of digests).
    Submit(submit::SubmitArgs),
    /// Write a run's report (report.md and a self-contained report.html) against a
    /// reference row of the paper.
    Report(report::ReportArgs),
    /// Verify a DSSE envelope's signatures against trusted public keys, or a checkpoint's
    /// OpenSSF model signature (model.sig) against the checkpoint.
    Verify(verify::VerifyArgs),
    /// Leaderboard: verify entries against trusted keys and track rules, render the site.
    #[command(subcommand)]
    Leaderboard(leaderboard::LeaderboardCmd),
    /// Pretrain a recipe (crammed BERT or a baseline) under a device-hour budget.
    Pretrain(train::PretrainArgs),
    /// GLUE: fine-tune and evaluate (run), re-score predictions (score), pin data files (pin).
    #[command(subcommand)]
    Glue(glue::GlueCmd),
    /// Data: prepare a recipe's tokenizer and packed token shards (prepare), pin sources (pin).
    #[command(subcommand)]
    Data(data::DataCmd),
    /// Describe this machine's hardware, software and environment (no host identifiers unless
    /// --include-host), or compare two fingerprints with `fingerprint diff A B`.
    Fingerprint(provenance::FingerprintArgs),
    /// SHA-256 and size of files; in-toto dirHash of directories.
    Hash(provenance::HashArgs),
    /// Show the seeds derived from a master seed for the given labels.
    Seeds(provenance::SeedsArgs),
    /// Create a key pair (ECDSA P-256 or Ed25519) for signing manifests and checkpoints.
    Keygen(sign::KeygenArgs),
    /// Sign a manifest: wrap a statement in a DSSE envelope, or add a signature to an envelope.
    Sign(sign::SignArgs),
    /// Create or validate manifests (in-toto Statements with the crambench predicate).
    #[command(subcommand)]
    Manifest(manifest::ManifestCmd),
    /// Checkpoints: sign (OpenSSF model signing, model.sig, which `model_signing verify key`
    /// checks), import from upstream cramming / Hugging Face BERT, export to them.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCmd),
    /// Benchmarks measured side by side with a reference tool.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Many runs: recipes × seeds × overrides, locally or as a Slurm job array; `sweep status`,
    /// `sweep collect` (median and spread over seeds, signed).
    Sweep(sweep::SweepArgs),
    // [cli:commands] each area adds its command group above this line
}

impl Command {
    /// Run the command; its exit code, or the error that ended it.
    pub fn run(self) -> Result<ExitCode> {
        match self {
            Command::Run(args) => run::run(args),
            Command::Compare(args) => compare::run(args),
            Command::Gate(args) => gate::run(args),
            Command::Submit(args) => submit::run(args),
            Command::Report(args) => report::run(args),
            Command::Verify(args) => verify::run(args),
            Command::Leaderboard(cmd) => leaderboard::run(cmd),
            Command::Pretrain(args) => train::run(args),
            Command::Glue(cmd) => glue::run(cmd),
            Command::Data(cmd) => data::run(cmd),
            Command::Fingerprint(args) => provenance::fingerprint(args),
            Command::Hash(args) => provenance::hash(args),
            Command::Seeds(args) => provenance::seeds(args),
            Command::Keygen(args) => sign::keygen(args),
            Command::Sign(args) => sign::sign(args),
            Command::Manifest(cmd) => manifest::run(cmd),
            Command::Checkpoint(cmd) => checkpoint::run(cmd),
            Command::Bench(cmd) => bench::run(cmd),
            Command::Sweep(args) => sweep::run(args),
            // [cli:dispatch] each area adds its match arm above this line
        }
    }
}

/// The top-level help's command groups, in order; a command not named here is listed under
/// the last group.
const HELP_GROUPS: &[(&str, &[&str])] = &[
    (
        "Run and judge",
        &[
            "run",
            "sweep",
            "compare",
            "gate",
            "submit",
            "report",
            "verify",
            "leaderboard",
        ],
    ),
    ("Stages", &["pretrain", "glue", "data"]),
    (
        "Plumbing",
        &[
            "fingerprint",
            "hash",
            "seeds",
            "keygen",
            "sign",
            "manifest",
            "checkpoint",
            "bench",
        ],
    ),
];

/// The clap command with the top-level help's commands in groups.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let subs: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| {
            let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
            (s.get_name().to_string(), about)
        })
        .collect();
    let width = subs.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(4);
    let mut listing = String::new();
    let last = HELP_GROUPS.len() - 1;
    for (i, (title, names)) in HELP_GROUPS.iter().enumerate() {
        let members: Vec<&(String, String)> = subs
            .iter()
            .filter(|(n, _)| {
                names.contains(&n.as_str())
                    || (i == last && !HELP_GROUPS.iter().any(|(_, g)| g.contains(&n.as_str())))
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        listing += &format!("{title}:\n");
        for (name, about) in members {
            listing += &format!("  {name:<width$}  {}\n", wrap(about, width + 4, 100));
        }
        listing += "\n";
    }
    listing += &format!(
        "  {:<width$}  Print this message or the help of a command\n",
        "help"
    );
    cmd.help_template(format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{listing}\n\
         Options:\n{{options}}{{after-help}}"
    ))
}

/// `text` wrapped to lines of at most `max` columns, continuation lines indented by `indent`.
fn wrap(text: &str, indent: usize, max: usize) -> String {
    let mut out = String::new();
    let mut col = indent;
    for word in text.split_whitespace() {
        if col > indent && col + 1 + word.len() > max {
            out += &format!("\n{:indent$}", "");
            col = indent;
        } else if col > indent {
            out.push(' ');
            col += 1;
        }
        out += word;
        col += word.chars().count();
    }
    out
}

/// Parse the command line (clap's own errors and `--help` exit here: 2 and 0).
pub fn parse() -> Cli {
    let matches = match command().try_get_matches() {
        Ok(m) => m,
        Err(e) => exit_on_clap_error(e),
    };
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => exit_on_clap_error(e),
    }
}

fn exit_on_clap_error(e: clap::Error) -> ! {
    let _ = e.print();
    let code = if e.use_stderr() {
        ExitCode::BadInput
    } else {
        ExitCode::Ok
    };
    std::process::exit(code as i32);
}

/// The error [`print`] returns when stdout is closed (`crambench … | head`): `main` ends the
/// command quietly with exit 0, like ripgrep.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The one stdout writer of every command. A closed pipe (`crambench … | head`) is the error
/// [`StdoutClosed`], which `main` turns into a quiet exit 0; the command stops there.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => r.context("writing to stdout"),
    }
}

/// A panic anywhere (any thread) is a bug in crambench: print one line naming it and what to
/// report, then exit 70 ([`ExitCode::Internal`], as the README documents) instead of Rust's
/// default 101 with a backtrace. `RUST_BACKTRACE=1` still adds the backtrace. A write to a
/// closed stdout that panicked (a stray `println!`) is the reader going away, not a bug: exit 0.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if crambench::io::panics_contained() {
            // A third-party decoder's panic that the library turns into bad input.
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                default(info);
            }
            return;
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(ExitCode::Ok as i32);
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "crambench: internal error (a bug in crambench {}): {}{at}; please report it to \
             the crambench maintainers with the command line and this message (RUST_BACKTRACE=1 \
             adds a backtrace)",
            crambench::VERSION,
            msg.replace('\n', " ")
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        std::process::exit(ExitCode::Internal as i32);
    }));
}

/// Pretty JSON with a trailing newline (what `--json` prints).
pub fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

/// A flag set by SIGINT or SIGTERM, for commands that stop cleanly (with a checkpoint); a
/// second signal while the first is being handled exits at once with code 130.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand, with its path.
    fn all(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            out.push((p.clone(), sub.clone()));
            all(sub, p, out);
        }
    }

    #[test]
    fn the_command_table_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_positional_and_json_flag_has_help() {
        let mut cmds = Vec::new();
        all(&Cli::command(), "crambench".into(), &mut cmds);
        let mut missing = Vec::new();
        for (path, cmd) in &cmds {
            for a in cmd.get_arguments() {
                let needs = a.is_positional() || a.get_long() == Some("json");
                if needs && !a.is_hide_set() && a.get_help().is_none() {
                    missing.push(format!("{path}: {}", a.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no help line: {missing:?}");
    }

    #[test]
    fn a_flag_name_means_one_thing() {
        // The shared groups' flags carry one help text wherever they appear.
        let mut cmds = Vec::new();
        all(&Cli::command(), "crambench".into(), &mut cmds);
        let mut seen: std::collections::BTreeMap<&str, (String, String)> = Default::default();
        for (path, cmd) in &cmds {
            for a in cmd.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                let shared = [
                    "device",
                    "seed",
                    "budget",
                    "json",
                    "trust",
                    "data-dir",
                    "glue-data",
                ];
                let Some(name) = shared.iter().find(|s| **s == long) else {
                    continue;
                };
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                match seen.get(name) {
                    Some((first, h)) => assert_eq!(h, &help, "--{name}: {first} vs {path}"),
                    None => {
                        seen.insert(name, (path.clone(), help));
                    }
                }
            }
        }
        assert_eq!(seen.len(), 7, "{:?}", seen.keys());
    }

    #[test]
    fn every_command_is_in_a_help_group() {
        for sub in Cli::command().get_subcommands() {
            let n = sub.get_name();
            assert!(
                HELP_GROUPS.iter().any(|(_, g)| g.contains(&n)),
                "{n} is in no help group (add it to HELP_GROUPS)"
            );
        }
    }

    #[test]
    fn wrap_keeps_words_and_width() {
        let w = wrap("aaa bbb ccc ddd", 4, 12);
        assert_eq!(w, "aaa bbb\n    ccc ddd");
    }
}
