//! The run report: a Markdown file and a self-contained HTML page written beside a run's
//! manifest (`report.md`, `report.html`).
//!
//! They lead with the answer (recipe, hardware in words, precision used, the GLUE aggregate
//! with its interval against the control and the reference row, final loss, budget used of
//! allowed, signed), then show the recipe's hyperparameters, the data summary, the pretraining
//! summary with its curves against budget time (HTML only, drawn from `pretrain/metrics.jsonl`
//! as inline SVG: the MLM loss raw and smoothed with the initial loss, the learning rate, the
//! throughput), the GLUE table — median, interval, every trial, control and reference per
//! evaluation set, also as a chart — the phases in pipeline order, the run's identity and
//! subjects, and which inputs are signed. The aggregate is compared with the reference only
//! under the same rule name, and a `demo` aggregate never. Everything shown comes from the
//! signed statement and the metrics log (whose digest is checked against the statement's
//! `metrics-log` subject): nothing is computed that the manifest does not carry, except the
//! epochs over the corpus and the smoothed loss, and empty reference cells stay empty.
//!
//! * [`facts`] — what the report says, gathered once from the record and the reference row.
//! * [`metrics_log`] — reading, smoothing and thinning the metrics log.
//! * [`charts`] — line charts and the GLUE dot plot as SVG strings (`plotters`).
//! * [`panels`] — the recipe's hyperparameters, the data summary, the phases in pipeline order
//!   and which inputs are signed.
//! * [`tables`] — the key–value tables and trial lists as plain text, shared by both renderings.
//! * [`markdown`], [`html`] — the two renderings and their escaping.
//! * [`format`] — number formatting shared by both.
pub mod charts;
pub mod facts;
pub mod format;
pub mod html;
pub mod markdown;
pub mod metrics_log;
pub mod panels;
pub mod tables;

use crate::error::Error;
use crate::record::RunRecord;
use crate::reference::ReferenceRow;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// File names of the report inside its output directory.
pub const MARKDOWN_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";

/// A rendered report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub markdown: String,
    pub html: String,
}

/// Render the report of a full run (`kind = "run"`) against `reference`. A missing or corrupt
/// metrics log is not an error: the report says so.
pub fn render(record: &RunRecord, reference: &ReferenceRow) -> Result<Report> {
    record.require_run()?;
    let f = facts::Facts::gather(record, reference);
    Ok(Report {
        markdown: markdown::render(&f),
        html: html::render(&f)?,
    })
}

/// Render and write `report.md` and `report.html` into `out_dir` (created if missing), together
/// ([`crate::io::write_all_atomic`]: both or, on a failure, neither). Returns their paths
/// (Markdown, HTML).
pub fn write(
    record: &RunRecord,
    reference: &ReferenceRow,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let report = render(record, reference)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let md = out_dir.join(MARKDOWN_FILE);
    let html = out_dir.join(HTML_FILE);
    crate::io::write_all_atomic(&[
        (&md, report.markdown.as_bytes(), None),
        (&html, report.html.as_bytes(), None),
    ])?;
    Ok((md, html))
}
