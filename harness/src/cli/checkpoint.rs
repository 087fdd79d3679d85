//! `crambench checkpoint …`: checkpoint directories — their OpenSSF model signature
//! (model.sig), which `model_signing verify key` checks; `import` and `export` move checkpoints
//! between crambench, upstream cramming and Hugging Face BERT (crambench::train::transfer).
use super::args::JsonArg;
use super::{json_text, print as out};
use anyhow::Result;
use clap::{Args, Subcommand};
use crambench::manifest::{keys, oms};
use crambench::train::transfer::{self, ExportFormat};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// Write DIR/model.sig (or --signature): a Sigstore bundle with a DSSE-signed OMS
    /// statement of every file in DIR, as `model_signing sign key` makes it.
    Sign(CheckpointSignArgs),
    /// Import an upstream cramming save or hub checkpoint, or a Hugging Face BertForMaskedLM
    /// (a directory or hf:OWNER/NAME[@REV] from the local hub cache), as a crambench checkpoint.
    Import(ImportArgs),
    /// Export a crambench checkpoint for upstream cramming (`--format cramming`) or
    /// transformers (`--format hf-bert`).
    Export(ExportArgs),
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
        CheckpointCmd::Import(args) => import(args),
        CheckpointCmd::Export(args) => export(args),
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

#[derive(Args)]
pub struct ImportArgs {
    /// An upstream cramming save (model_config.json + model.safetensors + tokenizer files), an
    /// upstream hub checkpoint (config.json with model_type crammedBERT), a Hugging Face
    /// BertForMaskedLM directory, or hf:OWNER/NAME[@REV] from the local hub cache.
    pub src: String,
    /// The new crambench checkpoint directory (must not exist).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A crambench checkpoint directory (meta.json, model.safetensors, arch.json, tokenizer.json).
    pub ckpt: PathBuf,
    /// cramming (upstream's hub layout: AutoModelForMaskedLM after importing cramming) or
    /// hf-bert (transformers BertForMaskedLM).
    #[arg(long, value_name = "FORMAT")]
    pub format: String,
    /// Output directory (must not exist).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn import(a: ImportArgs) -> Result<ExitCode> {
    let (dir, label) = if a.src.starts_with("hf:") {
        transfer::resolve_hub_source(&a.src)?
    } else {
        let p = PathBuf::from(&a.src);
        let label = std::fs::canonicalize(&p)
            .map(|c| c.display().to_string())
            .unwrap_or_else(|_| a.src.clone());
        (p, label)
    };
    let rec = transfer::import(&dir, &label, &a.out)?;
    if a.json.enabled {
        out(&json_text(&rec)?)?;
    } else {
        outln!(
            "imported {} ({:?}, arch from {}) into {}",
            rec.source,
            rec.source_kind,
            rec.config_file,
            a.out.display()
        );
        outln!(
            "  {} token ids moved to crambench's fixed special ids; {} source tensors ignored{}",
            rec.token_id_map.len(),
            rec.ignored_tensors.len(),
            if rec.ignored_tensors.is_empty() {
                String::new()
            } else {
                format!(" ({})", rec.ignored_tensors.join(", "))
            }
        );
    }
    Ok(ExitCode::Ok)
}

pub fn export(a: ExportArgs) -> Result<ExitCode> {
    let format: ExportFormat = a.format.parse()?;
    let files = transfer::export(&a.ckpt, format, &a.out)?;
    outln!(
        "exported {} as {} to {}: {}",
        a.ckpt.display(),
        a.format,
        a.out.display(),
        files.join(", ")
    );
    Ok(ExitCode::Ok)
}
