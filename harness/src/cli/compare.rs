//! `crambench compare A B ... [--reference ID] [--json]`: runs side by side (see
//! `crambench::compare`).
use super::args::JsonArg;
use anyhow::Result;
use clap::Args;
use crambench::compare;
use crambench::record::RunRecord;
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Args)]
pub struct CompareArgs {
    /// Runs: run directories, submission bundles, or manifest envelopes/statements. The first
    /// is the base of the deltas.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// Add a column of the paper's published GLUE-dev row with this id (e.g. crammed-bert-v1,
    /// crammed-bert-v2-best-of-5, bert-base; see reference/glue_reference.json).
    #[arg(long, value_name = "ID")]
    pub reference: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
    /// Also write one self-contained HTML page: the runs' curves overlaid and the task table
    /// side by side.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
}

pub fn run(a: CompareArgs) -> Result<ExitCode> {
    let records = a
        .runs
        .iter()
        .map(|p| RunRecord::open(p))
        .collect::<Result<Vec<_>>>()?;
    let reference = match &a.reference {
        Some(id) => Some(crambench::reference::row(id)?),
        None => None,
    };
    let c = compare::compare(&records, reference)?;
    if let Some(out) = &a.html {
        let logs: Vec<_> = records
            .iter()
            .map(|r| crambench::report::metrics_log::read(r.metrics_log().as_deref()))
            .collect();
        crambench::io::write_atomic(out, c.to_html(&logs)?.as_bytes(), None)?;
    }
    a.json.emit(&c, || c.to_table())?;
    Ok(ExitCode::Ok)
}
