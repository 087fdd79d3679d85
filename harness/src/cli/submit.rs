//! `crambench submit RUN_DIR --out ENTRY`: pack a signed run into a leaderboard bundle
//! (see `crambench::leaderboard::submit`).
use super::args::JsonArg;
use anyhow::Result;
use clap::Args;
use crambench::leaderboard::submit::{self, SubmitOptions};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Args)]
pub struct SubmitArgs {
    /// The run directory (`crambench run` output) holding manifest.dsse.json.
    pub run_dir: PathBuf,
    /// The entry directory to create (never overwritten).
    #[arg(long, value_name = "ENTRY")]
    pub out: PathBuf,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(a: SubmitArgs) -> Result<ExitCode> {
    let b = submit::submit(&a.run_dir, &a.out, &SubmitOptions::default())?;
    if a.json.enabled {
        outln!("{}", serde_json::to_string_pretty(&b)?);
        return Ok(ExitCode::Ok);
    }
    let total: u64 = b.files.iter().map(|f| f.size).sum();
    outln!("entry      {}", b.entry.display());
    outln!("recipe     {}", b.recipe.as_deref().unwrap_or("?"));
    if let Some((rule, v)) = &b.aggregate {
        outln!("aggregate  {v:.2} ({rule})");
    }
    outln!("statement  sha256 {}", b.payload_sha256);
    outln!(
        "files      {} ({} bytes), listed with their SHA-256 in {}",
        b.files.len() + 1,
        total,
        b.entry.join(submit::BUNDLE_INDEX).display()
    );
    Ok(ExitCode::Ok)
}
