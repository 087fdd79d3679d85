//! The original GLUE TSV layout written by `download_glue_data.py` (`glue_data/<TASK>/*.tsv`;
//! data-and-glue.md §1a).
//!
//! * Tab-separated UTF-8, read with quoting **off**: the texts contain stray `"` characters.
//! * CoLA's train and dev files have no header (columns: source, label, original mark,
//!   sentence); every other file has one, and columns are found by header name, so MNLI's
//!   12-column train file and 16-column dev files read alike (`sentence1`, `sentence2`,
//!   `gold_label`). A UTF-8 BOM before the header (MRPC) is ignored.
//! * Labels are mapped onto the internal order of [`crate::glue::tasks`].
//! * `idx` is the 0-based ordinal of the data row in the file (malformed rows keep theirs).
//!
//! **Malformed rows** (a column count different from the header's, or a label that is not one
//! of the task's): in a *training* file they are skipped and counted, each with its `file:line`
//! (QQP's train file has a few; transformers skips them too); in a *dev* file they are an error
//! naming `file:line`, because a dev row silently dropped would change the reported score.
use crate::error::Error;
use crate::glue::tasks::{EvalSet, Example, Task};
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Longest line (one record) of a GLUE TSV file read, in bytes. GLUE's longest lines are a few
/// kilobytes; a longer one is bad input, refused before it can exhaust memory.
pub const MAX_LINE_BYTES: u64 = 1 << 20;

/// Whether a file is a training or an evaluation split (see the module doc on malformed rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    Train,
    Dev,
}

/// A row that was skipped, with where and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// `file:line` (1-based line).
    pub at: String,
    pub reason: String,
}

/// The examples of one file and the rows skipped.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub examples: Vec<Example>,
    pub skipped: Vec<Skipped>,
}

/// The task's directory name in `glue_data/`.
pub fn task_dir(task: Task) -> &'static str {
    match task {
        Task::Cola => "CoLA",
        Task::Sst2 => "SST-2",
        Task::Mrpc => "MRPC",
        Task::Qqp => "QQP",
        Task::Stsb => "STS-B",
        Task::Mnli => "MNLI",
        Task::Qnli => "QNLI",
        Task::Rte => "RTE",
        Task::Wnli => "WNLI",
        Task::DemoSentiment | Task::DemoNextSentence => "",
    }
}

/// Path of the training file under the GLUE data root.
pub fn train_path(root: &Path, task: Task) -> PathBuf {
    root.join(task_dir(task)).join("train.tsv")
}

/// Path of an evaluation set's dev file under the GLUE data root.
pub fn dev_path(root: &Path, set: &EvalSet) -> PathBuf {
    let file = match set.id {
        "mnli-m" => "dev_matched.tsv",
        "mnli-mm" => "dev_mismatched.tsv",
        _ => "dev.tsv",
    };
    root.join(task_dir(set.task)).join(file)
}

/// Column layout: indexes of text A, text B (pairs) and the label.
struct Columns {
    a: usize,
    b: Option<usize>,
    label: usize,
    /// Number of columns a well-formed row has.
    width: usize,
}

/// Header names of (text A, text B, label) per task.
fn header_names(task: Task) -> (&'static str, Option<&'static str>, &'static str) {
    match task {
        Task::Sst2 => ("sentence", None, "label"),
        Task::Mrpc => ("#1 String", Some("#2 String"), "Quality"),
        Task::Qqp => ("question1", Some("question2"), "is_duplicate"),
        Task::Stsb => ("sentence1", Some("sentence2"), "score"),
        Task::Mnli => ("sentence1", Some("sentence2"), "gold_label"),
        Task::Qnli => ("question", Some("sentence"), "label"),
        Task::Rte | Task::Wnli => ("sentence1", Some("sentence2"), "label"),
        Task::Cola | Task::DemoSentiment | Task::DemoNextSentence => unreachable!("no header"),
    }
}

/// Read one TSV file of `task`.
pub fn read(task: Task, path: &Path, kind: SplitKind) -> Result<Loaded> {
    if !task.is_glue() {
        return Err(Error::input(
            path.display(),
            format!("{} has no GLUE TSV layout", task.id()),
        )
        .into());
    }
    let file = crate::io::open_input(path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .quoting(false)
        .has_headers(false)
        .flexible(true)
        .from_reader(crate::io::LineCap::new(
            std::io::BufReader::with_capacity(1 << 20, file),
            MAX_LINE_BYTES,
            "the limit for one GLUE record (the longest GLUE line is a few kilobytes)",
        ));
    let name = path.display().to_string();
    let mut records = rdr.byte_records();
    let cols = if task == Task::Cola {
        // source, label, original mark, sentence
        Columns {
            a: 3,
            b: None,
            label: 1,
            width: 4,
        }
    } else {
        let header = match records.next() {
            Some(r) => r.map_err(|e| Error::input(&name, format!("reading the header: {e}")))?,
            None => return Err(Error::input(&name, "empty file (no header)").into()),
        };
        let fields: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let s = String::from_utf8_lossy(f).into_owned();
                if i == 0 {
                    s.trim_start_matches('\u{feff}').to_string()
                } else {
                    s
                }
            })
            .collect();
        let (a, b, l) = header_names(task);
        let find = |n: &str| {
            fields.iter().position(|f| f.trim() == n).ok_or_else(|| {
                Error::input(
                    format!("{name}:1"),
                    format!("header has no `{n}` column (found: {})", fields.join(" | ")),
                )
            })
        };
        Columns {
            a: find(a)?,
            b: b.map(find).transpose()?,
            label: find(l)?,
            width: fields.len(),
        }
    };
    let mut out = Loaded::default();
    for (idx, rec) in (0u64..).zip(records) {
        let rec = rec.map_err(|e| Error::input(&name, e))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let at = format!("{name}:{line}");
        let problem = if rec.len() != cols.width {
            Some(format!("{} columns, expected {}", rec.len(), cols.width))
        } else {
            None
        };
        let parsed = match problem {
            Some(p) => Err(p),
            None => parse_row(task, &rec, &cols),
        };
        match parsed {
            Ok(mut ex) => {
                ex.idx = idx;
                out.examples.push(ex);
            }
            Err(reason) => match kind {
                SplitKind::Train => out.skipped.push(Skipped { at, reason }),
                SplitKind::Dev => {
                    return Err(
                        Error::input(at, format!("malformed row in a dev file: {reason}")).into(),
                    )
                }
            },
        }
    }
    Ok(out)
}

fn parse_row(
    task: Task,
    rec: &csv::ByteRecord,
    cols: &Columns,
) -> std::result::Result<Example, String> {
    let text = |i: usize| -> std::result::Result<String, String> {
        std::str::from_utf8(&rec[i])
            .map(str::to_string)
            .map_err(|_| format!("column {} is not UTF-8", i + 1))
    };
    let label_text = text(cols.label)?;
    let label = task
        .label_from_text(&label_text)
        .ok_or_else(|| format!("`{}` is not a {} label", label_text.trim(), task.id()))?;
    Ok(Example {
        idx: 0,
        text_a: text(cols.a)?,
        text_b: cols.b.map(text).transpose()?,
        label: Some(label),
    })
}
