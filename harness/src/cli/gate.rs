//! `crambench gate --baseline BASE --candidate NEW`: the CI regression gate (see
//! `crambench::gate`). Writes `gate-summary.md` and the signed attestation `gate.dsse.json`
//! to `--out`, appends the summary to `$GITHUB_STEP_SUMMARY` when set, and exits 0 (passed or
//! warned), 1 (a regression) or 2 (unusable input).
use super::args::{JsonArg, TrustArgs};
use super::print;
use anyhow::{Context, Result};
use clap::Args;
use crambench::error::Error;
use crambench::gate;
use crambench::manifest::jcs;
use crambench::record::RunRecord;
use crambench::ExitCode;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(
    after_help = "With --trust, both runs' manifests must be signed by a trusted key (a \
    run no trusted key signed is unusable input, exit 2); without it, signatures are not checked."
)]
pub struct GateArgs {
    /// The baseline run (run directory, bundle, or manifest envelope/statement).
    #[arg(long, value_name = "BASE")]
    pub baseline: PathBuf,
    /// The candidate run.
    #[arg(long, value_name = "NEW")]
    pub candidate: PathBuf,
    /// Thresholds (TOML; see CI/gate-thresholds.toml); keys it leaves out keep their built-in
    /// values. Default: CI/gate-thresholds.toml when it exists in the working directory, else
    /// the built-in thresholds.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Private key to sign the attestation (default: the user's default key, created on
    /// first use).
    #[arg(long, value_name = "KEY")]
    pub key: Option<PathBuf>,
    /// Output directory for gate-summary.md and gate.dsse.json.
    #[arg(long, value_name = "DIR", default_value = "gate-out")]
    pub out: PathBuf,
    // Keys of which one must have signed both runs' manifests; a run no trusted key signed
    // is unusable input (exit 2). Without --trust, signatures are not checked.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Compare runs from different hardware classes (reported as a warning).
    #[arg(long)]
    pub allow_hardware_mismatch: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// The CI run's URL from GitHub Actions' environment, when there.
fn ci_url() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(format!(
        "{}/{}/actions/runs/{}",
        var("GITHUB_SERVER_URL")?,
        var("GITHUB_REPOSITORY")?,
        var("GITHUB_RUN_ID")?
    ))
}

fn append_step_summary(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))?;
    Ok(())
}

pub fn run(a: GateArgs) -> Result<ExitCode> {
    let (thresholds, tfile) = gate::resolve_thresholds(a.thresholds.as_deref())?;
    let baseline = RunRecord::open(&a.baseline).context("reading the baseline")?;
    let candidate = RunRecord::open(&a.candidate).context("reading the candidate")?;
    if !a.trust.trust.is_empty() {
        let trusted = a.trust.load(&[], "--trust")?;
        for (what, r) in [("--baseline", &baseline), ("--candidate", &candidate)] {
            r.verify(&trusted, 1)
                .map_err(|e| Error::input(what, format!("{e:#}")))?;
        }
    }
    let report = gate::evaluate(
        &baseline,
        &candidate,
        &thresholds,
        tfile,
        a.allow_hardware_mismatch,
    )?;
    // Everything that can refuse — the signing key (a key readable by others is refused) and
    // the signature — comes before the first byte is written; then the summary and the
    // attestation are published together, or neither is.
    let markdown = report.to_markdown();
    let summary_path = a.out.join("gate-summary.md");
    let env_path = a.out.join("gate.dsse.json");
    let envelope = match report.statement(ci_url().as_deref()) {
        Some(statement) => {
            let bytes = jcs::to_vec(&statement)?;
            let signed = crambench::manifest::sign::sign_statement(
                a.key.as_deref(),
                &bytes,
                "gate attestation",
            )?;
            Some(signed.envelope.to_json())
        }
        None => None,
    };
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let mut group: Vec<(&Path, &[u8], Option<u32>)> =
        vec![(&summary_path, markdown.as_bytes(), None)];
    if let Some(env) = &envelope {
        group.push((&env_path, env.as_bytes(), None));
    }
    crambench::io::write_all_atomic(&group)?;
    let mut written = vec![summary_path.display().to_string()];
    if envelope.is_some() {
        written.push(env_path.display().to_string());
    }
    if let Some(p) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        append_step_summary(Path::new(&p), &markdown)?;
    }
    if a.json.enabled {
        let mut v = serde_json::to_value(&report)?;
        v["written"] = serde_json::json!(written);
        let mut s = serde_json::to_string_pretty(&v)?;
        s.push('\n');
        print(&s)?;
    } else {
        let mut s = report.to_table();
        s += &format!("\nwritten: {}\n", written.join(", "));
        print(&s)?;
    }
    if report.result == gate::Outcome::Refused {
        let stale = a.out.join("gate.dsse.json");
        if stale.exists() {
            eprintln!(
                "note: {} is from an earlier gate and does not describe this one",
                stale.display()
            );
        }
        let why: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.status == gate::Status::Refused)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        eprintln!(
            "error: the runs cannot be gated against each other: {}",
            why.join("; ")
        );
    }
    Ok(report.exit_code())
}
