//! `crambench checkpoint import|export`: move checkpoints between crambench, upstream cramming
//! and Hugging Face BERT (crambench::train::transfer).
use super::json_text;
use anyhow::Result;
use clap::Args;
use crambench::train::transfer::{self, ExportFormat};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportArgs {
    /// An upstream cramming save (model_config.json + model.safetensors + tokenizer files), an
    /// upstream hub checkpoint (config.json with model_type crammedBERT), a Hugging Face
    /// BertForMaskedLM directory, or hf:OWNER/NAME[@REV] from the local hub cache.
    pub src: String,
    /// The new crambench checkpoint directory (must not exist).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print import.json instead of a summary.
    #[arg(long)]
    pub json: bool,
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
    if a.json {
        super::print(&json_text(&rec)?)?;
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
