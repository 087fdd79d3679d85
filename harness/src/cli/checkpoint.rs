//! `crambench checkpoint …`: checkpoint directories — their OpenSSF model signature
//! (model.sig), which `model_signing verify key` checks.
use super::args::JsonArg;
use super::{json_text, print as out};
use anyhow::Result;
use clap::{Args, Subcommand};
use crambench::manifest::{keys, oms};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// Write DIR/model.sig (or --signature): a Sigstore bundle with a DSSE-signed OMS
    /// statement of every file in DIR, as `model_signing sign key` makes it.
    Sign(CheckpointSignArgs),
    // [checkpoint:commands] other checkpoint commands add their variant above this line
}

#[derive(Args)]
pub struct CheckpointSignArgs {
    /// The checkpoint (model) directory.
    dir: PathBuf,
    /// ECDSA P-256 private key (PKCS#8 PEM). Default: your key (created on first use).
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    /// Where to write the signature (default: DIR/model.sig; inside DIR it is not signed).
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(cmd: CheckpointCmd) -> Result<ExitCode> {
    match cmd {
        CheckpointCmd::Sign(args) => sign(args),
        // [checkpoint:dispatch] other checkpoint commands add their match arm above this line
    }
}

fn sign(args: CheckpointSignArgs) -> Result<ExitCode> {
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
    if args.json.enabled {
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
