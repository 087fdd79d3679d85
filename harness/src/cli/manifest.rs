//! `crambench manifest new|validate`: attestation manifests made on this machine, and checks
//! of any manifest against the published JSON Schema.
use super::args::{JsonArg, SeedArg};
use super::provenance::digest_of;
use super::{json_text, print as out};
use anyhow::Result;
use clap::{Args, Subcommand};
use crambench::manifest::{dsse, schema, statement};
use crambench::provenance::{fingerprint, seeds};
use crambench::ExitCode;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ManifestCmd {
    /// Make an attestation manifest on this machine: fingerprint, seeds and the digests of the
    /// given subjects and materials.
    New(ManifestNewArgs),
    /// Check a manifest (statement or DSSE envelope) against the published JSON Schema.
    Validate {
        /// The manifest: an in-toto statement (JSON) or a DSSE envelope.
        file: PathBuf,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Args)]
pub struct ManifestNewArgs {
    /// Artifacts the manifest is about (files or directories).
    #[arg(long = "subject", value_name = "PATH", required = true)]
    subjects: Vec<PathBuf>,
    /// Inputs the artifacts depend on (files or directories).
    #[arg(long = "material", value_name = "PATH")]
    materials: Vec<PathBuf>,
    #[command(flatten)]
    seed: SeedArg,
    /// Seed labels to derive and record.
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Record hostname, user and addresses in the fingerprint.
    #[arg(long)]
    include_host: bool,
    /// Output file (canonical JSON); stdout when absent.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(cmd: ManifestCmd) -> Result<ExitCode> {
    match cmd {
        ManifestCmd::New(args) => new(args),
        ManifestCmd::Validate { file, json } => validate(&file, json),
    }
}

fn new(args: ManifestNewArgs) -> Result<ExitCode> {
    let mut seeds = seeds::Seeds::from_option(args.seed.seed)?;
    for l in &args.labels {
        seeds.get(l)?;
    }
    let fp = fingerprint::collect(&fingerprint::Options {
        include_host: args.include_host,
        ..Default::default()
    });
    let mut st = statement::Statement::new("attestation", serde_json::to_value(&fp)?, seeds);
    for p in &args.subjects {
        st.add_subject(&p.display().to_string(), &digest_of(p)?);
    }
    for p in &args.materials {
        let d = digest_of(p)?;
        st.predicate
            .materials
            .push(statement::Material::from_digest(
                &p.display().to_string(),
                None,
                &d,
            ));
    }
    let bytes = st.to_canonical()?;
    let problems = schema::validate_statement(&serde_json::from_slice(&bytes)?);
    if !problems.is_empty() {
        anyhow::bail!("internal error: the new manifest does not match its schema: {problems:?}");
    }
    match &args.out {
        Some(path) => {
            crambench::io::write_atomic(path, &bytes, None)?;
            eprintln!(
                "wrote {} ({} bytes, canonical JSON)",
                path.display(),
                bytes.len()
            );
        }
        None => out(&(String::from_utf8(bytes)? + "\n"))?,
    }
    Ok(ExitCode::Ok)
}

fn validate(file: &Path, json: JsonArg) -> Result<ExitCode> {
    let bytes = crambench::io::read_limited(file, dsse::MAX_ENVELOPE_BYTES)?;
    let loaded = schema::load(&bytes, &file.display().to_string())?;
    let problems = schema::validate_statement(&loaded.statement);
    if json.enabled {
        out(&json_text(&serde_json::json!({
            "file": file.display().to_string(),
            "enveloped": loaded.enveloped,
            "valid": problems.is_empty(),
            "problems": problems,
        }))?)?;
    } else if problems.is_empty() {
        out(&format!(
            "{}: valid crambench manifest ({})\n",
            file.display(),
            statement::PREDICATE_TYPE
        ))?;
    } else {
        let mut text = format!("{}: {} problem(s)\n", file.display(), problems.len());
        for p in &problems {
            text += &format!(
                "  at {}: {}\n",
                if p.at.is_empty() { "/" } else { &p.at },
                p.message
            );
        }
        out(&text)?;
    }
    Ok(if problems.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}
