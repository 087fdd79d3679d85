//! `crambench`: the command-line interface. A thin layer over the library: it parses
//! arguments, calls one library function per command, and prints a table for people or JSON
//! for machines (`--json`). Progress goes to stderr; errors go to stderr with an exit code from
//! [`crambench::ExitCode`].
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use crambench::error::{exit_code_of, Error, ExitCode};
use crambench::manifest::{dsse, keys, oms, schema, statement};
use crambench::provenance::{fingerprint, hash, seeds};
use std::path::{Path, PathBuf};

#[macro_use]
mod cli;
mod bench;
use cli::{json_text, print as out};

#[derive(Parser)]
#[command(name = "crambench", version, about = "Reproduce Cramming (arXiv 2212.14034) and its BERT baselines, and prove what ran", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe this machine's hardware, software and environment (no host identifiers unless
    /// --include-host), or compare two fingerprints with `fingerprint diff A B`.
    Fingerprint(FingerprintArgs),
    /// SHA-256 and size of files; in-toto dirHash of directories.
    Hash(HashArgs),
    /// Show the seeds derived from a master seed for the given labels.
    Seeds(SeedsArgs),
    /// Create a key pair (ECDSA P-256 or Ed25519) for signing manifests and checkpoints.
    Keygen(KeygenArgs),
    /// Sign a checkpoint directory in the OpenSSF model-signing format (model.sig), which
    /// `model_signing verify key` checks.
    #[command(subcommand)]
    Checkpoint(CheckpointCmd),
    /// Create or validate manifests (in-toto Statements with the crambench predicate).
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// Sign a manifest: wrap a statement in a DSSE envelope, or add a signature to an envelope.
    Sign(SignArgs),
    /// Verify a DSSE envelope's signatures against trusted public keys, or a checkpoint's
    /// OpenSSF model signature (model.sig) against the checkpoint.
    Verify(VerifyArgs),
    /// Benchmarks measured side by side with a reference tool.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Pretrain a recipe (crammed BERT or a baseline) under a device-hour budget.
    Pretrain(cli::train::PretrainArgs),
    /// GLUE: fine-tune and evaluate (run), re-score predictions (score), pin data files (pin).
    #[command(subcommand)]
    Glue(cli::glue::GlueCmd),
    /// Data: prepare a recipe's tokenizer and packed token shards (prepare), pin sources (pin).
    #[command(subcommand)]
    Data(cli::data::DataCmd),
    /// Write a run's report (report.md and a self-contained report.html) against a
    /// reference row of the paper.
    Report(cli::report::ReportArgs),
    /// Run a recipe end to end: fingerprint, data, pretraining, GLUE, signed manifest, report.
    /// Rerunning the same command continues where it stopped.
    Run(cli::run::RunArgs),
    /// Runs side by side: per-task medians and spread over trials, deltas to the first run,
    /// aggregate under its rule, budget and hardware; flags anything not comparable.
    Compare(cli::compare::CompareArgs),
    /// CI regression gate: throughput, MLM loss and GLUE of a candidate run against a baseline;
    /// Markdown summary and a signed in-toto test-result attestation. Exit 0 pass, 1 regression.
    Gate(cli::gate::GateArgs),
    /// Pack a signed run into a leaderboard entry (bundle directory with an index of digests).
    Submit(cli::submit::SubmitArgs),
    /// Leaderboard: verify entries against trusted keys and track rules, render the site.
    #[command(subcommand)]
    Leaderboard(cli::leaderboard::LeaderboardCmd),
    /// Many runs: recipes × seeds × overrides, locally or as a Slurm job array; `sweep status`,
    /// `sweep collect` (median and spread over seeds, signed).
    Sweep(cli::sweep::SweepArgs),
    // [cli:commands] each area adds its command group above this line
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct FingerprintArgs {
    #[command(subcommand)]
    diff: Option<FingerprintCmd>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Include hostname, user name, IP and MAC addresses (off by default: entries are public).
    #[arg(long)]
    include_host: bool,
    /// Also write the JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum FingerprintCmd {
    /// What changed between two fingerprints (files from `fingerprint --json`, manifests or
    /// envelopes), grouped into hardware / software / environment. Exit 1 when the hardware
    /// class differs.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct HashArgs {
    /// Files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// List every file of a directory with its digest.
    #[arg(long)]
    list: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SeedsArgs {
    /// Master seed (0 ..= 2^53-1); drawn from the OS when absent.
    #[arg(long)]
    master: Option<u64>,
    /// Labels, e.g. init data-order masking finetune/mnli/0.
    labels: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct KeygenArgs {
    /// Directory for the key files (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Base name: writes NAME.key (private, 0600) and NAME.pub.
    #[arg(long, default_value = "crambench")]
    name: String,
    /// Key algorithm: ecdsa-p256 (the default: `model_signing` and cosign verify it) or ed25519.
    #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "ed25519"])]
    algorithm: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CheckpointCmd {
    /// Write DIR/model.sig (or --signature): a Sigstore bundle with a DSSE-signed OMS
    /// statement of every file in DIR, as `model_signing sign key` makes it.
    Sign(CheckpointSignArgs),
}

#[derive(Args)]
struct CheckpointSignArgs {
    /// The checkpoint (model) directory.
    dir: PathBuf,
    /// ECDSA P-256 private key (PKCS#8 PEM). Default: your key (created on first use).
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    /// Where to write the signature (default: DIR/model.sig; inside DIR it is not signed).
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ManifestCmd {
    /// Make an attestation manifest on this machine: fingerprint, seeds and the digests of the
    /// given subjects and materials.
    New(ManifestNewArgs),
    /// Check a manifest (statement or DSSE envelope) against the published JSON Schema.
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ManifestNewArgs {
    /// Artifacts the manifest is about (files or directories).
    #[arg(long = "subject", value_name = "PATH", required = true)]
    subjects: Vec<PathBuf>,
    /// Inputs the artifacts depend on (files or directories).
    #[arg(long = "material", value_name = "PATH")]
    materials: Vec<PathBuf>,
    /// Master seed; drawn from the OS when absent.
    #[arg(long)]
    seed: Option<u64>,
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

#[derive(Args)]
struct SignArgs {
    /// Private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// A statement (JSON) to wrap and sign, or a DSSE envelope to add a signature to.
    input: PathBuf,
    /// Output envelope. Default: the envelope itself (updated atomically), or
    /// `<statement>.dsse.json` next to a statement.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct VerifyArgs {
    /// A run directory or a `crambench submit` bundle (the signature, then every artifact; a
    /// run's model.sig too), a DSSE envelope file (the signature only), an OpenSSF model
    /// signature file (model.sig) or a checkpoint directory holding one.
    path: PathBuf,
    /// The checkpoint directory an OpenSSF model signature is for (default: the directory
    /// the signature file is in).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Trusted public keys (PEM files or directories of .pub/.pem files). Default: your own
    /// public key (the crambench config directory's keys/default.pub).
    #[arg(long = "key", value_name = "PUB")]
    keys: Vec<PathBuf>,
    /// Number of distinct trusted keys that must have signed.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// GLUE data root whose dev files give the gold labels for re-scoring GLUE predictions
    /// (default: the predictions files' own gold column; demo sets use the embedded dev sets).
    #[arg(long, value_name = "DIR")]
    glue_data: Option<PathBuf>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() {
    cli::install_panic_hook();
    // Before any tch call: register libtorch's CUDA backend where it exists.
    crambench::torchrt::load_cuda_backend();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                ExitCode::BadInput
            } else {
                ExitCode::Ok
            };
            std::process::exit(code as i32);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code_of(&err)
        }
    };
    std::process::exit(code as i32);
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Fingerprint(args) => cmd_fingerprint(args),
        Command::Hash(args) => cmd_hash(args),
        Command::Seeds(args) => cmd_seeds(args),
        Command::Keygen(args) => cmd_keygen(args),
        Command::Checkpoint(CheckpointCmd::Sign(args)) => cmd_checkpoint_sign(args),
        Command::Manifest(ManifestCmd::New(args)) => cmd_manifest_new(args),
        Command::Manifest(ManifestCmd::Validate { file, json }) => {
            cmd_manifest_validate(&file, json)
        }
        Command::Sign(args) => cmd_sign(args),
        Command::Verify(args) => cmd_verify(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Pretrain(args) => cli::train::run(args),
        Command::Glue(cmd) => cli::glue::run(cmd),
        Command::Data(cmd) => cli::data::run(cmd),
        Command::Report(args) => cli::report::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Compare(args) => cli::compare::run(args),
        Command::Gate(args) => cli::gate::run(args),
        Command::Submit(args) => cli::submit::run(args),
        Command::Leaderboard(cmd) => cli::leaderboard::run(cmd),
        Command::Sweep(args) => cli::sweep::run(args),
        // [cli:dispatch] each area adds its match arm above this line
    }
}

/// Write to stdout, treating a closed pipe (`crambench … | head`) as success.
fn cmd_fingerprint(args: FingerprintArgs) -> Result<ExitCode> {
    if let Some(FingerprintCmd::Diff { a, b, json }) = args.diff {
        let va = fingerprint::load(&a)?;
        let vb = fingerprint::load(&b)?;
        let d = fingerprint::diff(&va, &vb);
        out(&if json { json_text(&d)? } else { d.to_table() })?;
        return Ok(if d.hardware_class_changed {
            ExitCode::CheckFailed
        } else {
            ExitCode::Ok
        });
    }
    let fp = fingerprint::collect(&fingerprint::Options {
        include_host: args.include_host,
        ..Default::default()
    });
    if let Some(path) = &args.out {
        crambench::io::write_atomic(path, json_text(&fp)?.as_bytes(), None)?;
    }
    out(&if args.json {
        json_text(&fp)?
    } else {
        fp.to_table()
    })?;
    Ok(ExitCode::Ok)
}

/// A progress bar on stderr for `total` bytes (hidden when stderr is not a terminal).
fn byte_progress(total: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template"),
    );
    pb.set_message(what.to_string());
    pb
}

fn cmd_hash(args: HashArgs) -> Result<ExitCode> {
    let results = args
        .paths
        .iter()
        .map(|p| digest_of(p))
        .collect::<Result<Vec<_>>>()?;
    if args.json {
        let mut v = serde_json::to_value(&results)?;
        if !args.list {
            for item in v.as_array_mut().into_iter().flatten() {
                if let Some(o) = item.as_object_mut() {
                    o.remove("entries");
                }
            }
        }
        return out(&json_text(&v)?).map(|_| ExitCode::Ok);
    }
    let mut text = String::new();
    for d in &results {
        match d {
            hash::PathDigest::File(f) => {
                text += &format!("sha256:{}  {:>14}  {}\n", f.sha256, f.size, f.path)
            }
            hash::PathDigest::Dir(dir) => {
                text += &format!(
                    "dirHash:{}  {:>14}  {}/  ({} files)\n",
                    dir.dir_hash, dir.size, dir.path, dir.files
                );
                if args.list {
                    for e in &dir.entries {
                        text += &format!("  sha256:{}  {:>14}  {}\n", e.sha256, e.size, e.path);
                    }
                }
                for l in &dir.skipped_symlinks {
                    text += &format!("  (symbolic link not hashed: {l})\n");
                }
            }
        }
    }
    out(&text)?;
    Ok(ExitCode::Ok)
}

fn cmd_seeds(args: SeedsArgs) -> Result<ExitCode> {
    let mut s = seeds::Seeds::from_option(args.master)?;
    for l in &args.labels {
        s.get(l)?;
    }
    if args.json {
        return out(&json_text(&s)?).map(|_| ExitCode::Ok);
    }
    let origin = if s.master_from_os {
        " (drawn from the OS)"
    } else {
        ""
    };
    let mut text = format!("master  {}{origin}\n", s.master);
    for (label, seed) in &s.derived {
        text += &format!("{label}  {seed}\n");
    }
    out(&text)?;
    Ok(ExitCode::Ok)
}

fn cmd_keygen(args: KeygenArgs) -> Result<ExitCode> {
    let algorithm = keys::Algorithm::parse(&args.algorithm)?;
    let (files, rederived) = keys::generate_or_repair(&args.out, &args.name, algorithm)?;
    if rederived {
        eprintln!(
            "{} exists without its public key: re-derived {} from it (no new key made; its \
             algorithm is {})",
            files.private_key.display(),
            files.public_key.display(),
            files.algorithm.as_str()
        );
    }
    if args.json {
        return out(&json_text(&files)?).map(|_| ExitCode::Ok);
    }
    out(&format!(
        "private key  {}  (mode 0600; keep it secret)\npublic key   {}\nalgorithm    {}\nkeyid        {}\n",
        files.private_key.display(),
        files.public_key.display(),
        files.algorithm.as_str(),
        files.keyid
    ))?;
    Ok(ExitCode::Ok)
}

fn cmd_checkpoint_sign(args: CheckpointSignArgs) -> Result<ExitCode> {
    let signature = args
        .signature
        .clone()
        .unwrap_or_else(|| args.dir.join(oms::SIGNATURE_FILE));
    let (key, key_path, created) = keys::signing_key_or_default(args.key.as_deref())?;
    if created {
        eprintln!(
            "crambench: created your signing key {} (public key {}); keep the private key \
             secret and publish the public one",
            key_path.display(),
            key_path.with_extension("pub").display()
        );
    }
    let signed = oms::sign_model_to(&args.dir, &signature, &key)?;
    if args.json {
        let mut j = serde_json::to_value(&signed)?;
        j["signature"] = signature.display().to_string().into();
        j["public_key"] = key_path.with_extension("pub").display().to_string().into();
        return out(&json_text(&j)?).map(|_| ExitCode::Ok);
    }
    out(&format!(
        "signature    {}\nmodel        {} ({} file(s))\nroot digest  sha256:{}\nsigned by    {}\n\
         check with   model_signing verify key {} --signature {} --public_key {}\n",
        signature.display(),
        args.dir.display(),
        signed.files,
        signed.root_digest,
        signed.keyid,
        args.dir.display(),
        signature.display(),
        key_path.with_extension("pub").display()
    ))?;
    Ok(ExitCode::Ok)
}

/// `crambench verify` of an OpenSSF model signature.
fn verify_oms(
    model: &Path,
    signature: &Path,
    trusted: &[keys::PublicKey],
    json: bool,
) -> Result<ExitCode> {
    let v = oms::verify_model(model, signature, trusted)?;
    if json {
        out(&json_text(&v)?)?;
    } else {
        out(&v.to_table())?;
    }
    Ok(if v.ok {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

fn digest_of(path: &Path) -> Result<hash::PathDigest> {
    let total = std::fs::metadata(path)
        .map(|m| if m.is_file() { m.len() } else { 0 })
        .unwrap_or(0);
    let pb = byte_progress(total, &path.display().to_string());
    let d = hash::hash_path(path, &|n| pb.inc(n))?;
    pb.finish_and_clear();
    Ok(d)
}

fn cmd_manifest_new(args: ManifestNewArgs) -> Result<ExitCode> {
    let mut seeds = seeds::Seeds::from_option(args.seed)?;
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

fn cmd_manifest_validate(file: &Path, json: bool) -> Result<ExitCode> {
    let bytes = crambench::io::read_limited(file, dsse::MAX_ENVELOPE_BYTES)?;
    let loaded = schema::load(&bytes, &file.display().to_string())?;
    let problems = schema::validate_statement(&loaded.statement);
    if json {
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

fn cmd_sign(args: SignArgs) -> Result<ExitCode> {
    let key = keys::load_signing_key(&args.key)?;
    let source = args.input.display().to_string();
    let bytes = crambench::io::read_limited(&args.input, dsse::MAX_ENVELOPE_BYTES)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&source, format!("not JSON: {e}")))?;
    let is_envelope = v.get("payloadType").is_some();
    let (mut env, target) = if is_envelope {
        let env = dsse::Envelope::parse(&bytes, &source)?;
        (env, args.out.clone().unwrap_or_else(|| args.input.clone()))
    } else {
        let problems = schema::validate_statement(&v);
        if !problems.is_empty() {
            let list: Vec<String> = problems
                .iter()
                .map(|p| format!("at {}: {}", p.at, p.message))
                .collect();
            return Err(Error::input(
                &source,
                format!("not a valid crambench manifest:\n  {}", list.join("\n  ")),
            )
            .into());
        }
        let payload = crambench::manifest::jcs::to_vec(&v)?;
        let target = args.out.clone().unwrap_or_else(|| {
            let stem = args
                .input
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("manifest");
            args.input.with_file_name(format!("{stem}.dsse.json"))
        });
        (
            dsse::Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, &payload),
            target,
        )
    };
    let added = env.sign(&key, &source)?;
    crambench::io::write_atomic(&target, env.to_json().as_bytes(), None)?;
    let kid = keys::keyid(&key.verifying_key());
    if added {
        eprintln!(
            "signed by {kid}: {} ({} signature(s))",
            target.display(),
            env.signatures.len()
        );
    } else {
        eprintln!(
            "{} already holds a valid signature by {kid}; nothing added",
            target.display()
        );
    }
    Ok(ExitCode::Ok)
}

fn cmd_verify(args: VerifyArgs) -> Result<ExitCode> {
    let key_paths = if args.keys.is_empty() {
        match keys::default_public_key() {
            Some(p) => {
                eprintln!(
                    "verify: trusting your own public key {} (pass --key PUB to trust others)",
                    p.display()
                );
                vec![p]
            }
            None => {
                return Err(Error::input(
                    "--key",
                    "no trusted public key given, and you have no default key yet \
                     (crambench run creates one); pass --key PUB (a .pub file or a directory)",
                )
                .into())
            }
        }
    } else {
        args.keys.clone()
    };
    let trusted = keys::load_trusted(&key_paths, "--key")?;
    let source = args.path.display().to_string();
    let is_dir = args.path.is_dir();
    // An OpenSSF model signature: a bundle file, or a checkpoint directory holding model.sig
    // (and no run record).
    if is_dir
        && args.path.join(oms::SIGNATURE_FILE).is_file()
        && !args.path.join(crambench::record::ENVELOPE_FILE).exists()
        && !args.path.join(crambench::record::STATEMENT_FILE).exists()
    {
        let model = args.model.clone().unwrap_or_else(|| args.path.clone());
        return verify_oms(
            &model,
            &args.path.join(oms::SIGNATURE_FILE),
            &trusted,
            args.json,
        );
    }
    if !is_dir {
        let head = crambench::io::read_limited(&args.path, dsse::MAX_ENVELOPE_BYTES)?;
        if oms::looks_like_bundle(&head) {
            let model = match &args.model {
                Some(m) => m.clone(),
                None => match args.path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                },
            };
            return verify_oms(&model, &args.path, &trusted, args.json);
        }
    }
    // A run directory or bundle: its envelope; a file: the envelope itself.
    let (env, record) = if is_dir {
        let record = crambench::record::RunRecord::open(&args.path)?;
        let env = record.envelope.clone().ok_or_else(|| {
            Error::Check(format!(
                "{source}: not signed ({} missing; `crambench sign` adds a signature)",
                crambench::record::ENVELOPE_FILE
            ))
        })?;
        (env, Some(record))
    } else {
        (dsse::Envelope::read(&args.path)?, None)
    };
    let env_source = match &record {
        Some(r) => r.source.clone(),
        None => source.clone(),
    };
    let decoded = env.decode(&env_source)?;
    let v = dsse::verify(&decoded, &trusted, args.threshold);
    // Subjects are read from the verified bytes only; artifacts are checked only against a
    // verified statement.
    let statement: Option<serde_json::Value> = if v.ok {
        serde_json::from_slice(&decoded.payload).ok()
    } else {
        None
    };
    let audit = match (&record, v.ok) {
        (Some(r), true) => Some(crambench::audit::audit(
            r,
            &crambench::audit::Options {
                materials: true,
                gold: crambench::audit::GoldPolicy::Trusted,
                glue_data: args.glue_data.clone(),
                digests_only: false,
            },
            &mut crambench::audit::GoldCache::default(),
        )),
        _ => None,
    };
    let artifacts_ok = audit.as_ref().is_none_or(|a| a.ok());
    let scope = match (&record, &audit) {
        (None, _) => {
            "signature only; artifacts not checked (pass the run directory or bundle to check them)"
        }
        (Some(_), None) => "artifacts not checked: the signature is not valid",
        (Some(_), Some(_)) => "signature and artifacts",
    };
    // A run's OpenSSF model signature of its checkpoint (the statement's `checkpoint` subject).
    let model_sig = match (&record, &statement) {
        (Some(_), Some(st)) if args.path.join(oms::SIGNATURE_FILE).is_file() => {
            let rel = st["subject"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["annotations"]["role"] == "checkpoint")
                .and_then(|s| s["name"].as_str())
                .filter(|r| crambench::audit::safe_rel(r));
            match rel {
                Some(rel) if args.path.join(rel).is_dir() => Some(oms::verify_model(
                    &args.path.join(rel),
                    &args.path.join(oms::SIGNATURE_FILE),
                    &trusted,
                )?),
                _ => None,
            }
        }
        _ => None,
    };
    // The model signature must sign the checkpoint the run manifest records: its root digest
    // equals the manifest's `checkpoint-oms` subject.
    let model_sig = model_sig.map(|mut m| {
        let signed_root = statement
            .as_ref()
            .and_then(|st| st["subject"].as_array())
            .into_iter()
            .flatten()
            .find(|s| s["annotations"]["role"] == oms::SUBJECT_ROLE)
            .and_then(|s| s["digest"]["sha256"].as_str());
        if let (Some(want), Some(got)) = (signed_root, m.root_digest.as_deref()) {
            if want != got {
                m.ok = false;
                m.problem = Some(format!(
                    "its root digest {got} is not the run manifest's checkpoint-oms subject {want}"
                ));
            }
        }
        m
    });
    let ok = v.ok && artifacts_ok && model_sig.as_ref().is_none_or(|m| m.ok);
    if args.json {
        let mut j = serde_json::to_value(&v)?;
        j["envelope"] = env_source.clone().into();
        j["subject"] = statement
            .as_ref()
            .and_then(|s| s.get("subject"))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        j["checked"] = scope.into();
        j["artifacts"] = match &audit {
            Some(a) => serde_json::to_value(a)?,
            None => serde_json::Value::Null,
        };
        j["model_signature"] = match &model_sig {
            Some(m) => serde_json::to_value(m)?,
            None => serde_json::Value::Null,
        };
        j["ok"] = ok.into();
        out(&json_text(&j)?)?;
    } else {
        let mut t = format!(
            "envelope     {env_source}\npayloadType  {}\npayload      sha256:{}\n",
            v.payload_type, v.payload_sha256
        );
        if v.signatures.is_empty() {
            t += "signatures   none\n";
        }
        for s in &v.signatures {
            let who = match (&s.verified_keyid, &s.verified_key_source) {
                (Some(k), Some(src)) => format!(
                    "by {k} ({src}){}",
                    if s.duplicate {
                        ", duplicate: counted once"
                    } else {
                        ""
                    }
                ),
                _ => format!("keyid hint {}", s.keyid_hint.as_deref().unwrap_or("(none)")),
            };
            t += &format!("signature {}  {:<9} {who}\n", s.index, s.status);
        }
        t += &format!(
            "signed       {} ({} distinct trusted key(s) signed; threshold {})\n",
            if v.ok { "VALID" } else { "NOT VALID" },
            v.valid_keys.len(),
            v.threshold
        );
        match &audit {
            Some(a) => t += &a.to_table(),
            None => {
                if !v.ok {
                    t += "subject      (not shown: the payload is not verified)\n";
                }
                for s in statement
                    .as_ref()
                    .and_then(|s| s["subject"].as_array())
                    .into_iter()
                    .flatten()
                {
                    let digest = s["digest"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("?")))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    t += &format!(
                        "subject      {}  {digest}\n",
                        s["name"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        if let Some(m) = &model_sig {
            for line in m.to_table().lines() {
                t += &format!("model.sig    {line}\n");
            }
        }
        let failed = audit.as_ref().map(|a| a.failures().count()).unwrap_or(0);
        t += &format!(
            "result       {} ({scope}{})\n",
            if ok { "VALID" } else { "NOT VALID" },
            if failed > 0 {
                format!("; {failed} artifact(s) do not match")
            } else {
                String::new()
            }
        );
        out(&t)?;
    }
    Ok(if ok {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}
