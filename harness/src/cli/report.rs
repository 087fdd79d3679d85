//! `crambench report RUN`: write a run's report (`report.md` and a self-contained
//! `report.html`) against a reference row of the paper, and print where they are.
use super::args::JsonArg;
use anyhow::Result;
use clap::Args;
use crambench::record::RunRecord;
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// Run directory (from `crambench run`), submission bundle, or manifest / envelope file.
    pub run: PathBuf,
    /// Reference row id (`crammed-bert-v1`, `bert-base`, …); default: the recipe's usual
    /// reference.
    #[arg(long, value_name = "ID")]
    pub reference: Option<String>,
    /// Output directory (default: the run directory, or the manifest file's directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let record = RunRecord::open(&a.run)?;
    record.require_run()?;
    let reference = match &a.reference {
        Some(id) => crambench::reference::row(id)?,
        None => crambench::reference::default_for_recipe(record.recipe_name().unwrap_or("")),
    };
    let out = match (&a.out, &record.root) {
        (Some(o), _) => o.clone(),
        (None, Some(root)) => root.clone(),
        (None, None) => match a.run.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let (md, html) = crambench::report::write(&record, reference, &out)?;
    let paths = serde_json::json!({
        "markdown": md.display().to_string(),
        "html": html.display().to_string(),
        "reference": reference.id,
    });
    a.json
        .emit(&paths, || format!("{}\n{}\n", md.display(), html.display()))?;
    Ok(ExitCode::Ok)
}
