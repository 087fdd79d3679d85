//! `crambench keygen` and `crambench sign`: key pairs, and DSSE signatures of manifests by a
//! given key (a new envelope, or one more signature on an existing envelope).
use super::args::JsonArg;
use super::{json_text, print as out};
use anyhow::Result;
use clap::Args;
use crambench::error::Error;
use crambench::manifest::{dsse, keys, schema};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Args)]
pub struct KeygenArgs {
    /// Directory for the key files (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Base name: writes NAME.key (private, 0600) and NAME.pub.
    #[arg(long, default_value = "crambench")]
    name: String,
    /// Key algorithm: ecdsa-p256 (the default: `model_signing` and cosign verify it) or ed25519.
    #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "ed25519"])]
    algorithm: String,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args)]
pub struct SignArgs {
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

pub fn keygen(args: KeygenArgs) -> Result<ExitCode> {
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
    if args.json.enabled {
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

pub fn sign(args: SignArgs) -> Result<ExitCode> {
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
