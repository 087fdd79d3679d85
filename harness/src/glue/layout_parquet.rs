//! The Hugging Face `nyu-mll/glue` Parquet layout (`<config>/<split>-NNNNN-of-NNNNN.parquet`;
//! data-and-glue.md §1b), and the SuperGLUE RTE files in the same layout (`rte/` with `premise`
//! / `hypothesis` columns instead of `sentence1` / `sentence2`).
//!
//! * Configs: `cola sst2 mrpc qqp stsb mnli qnli rte wnli`; splits `train`, `validation`, and
//!   for MNLI `validation_matched` / `validation_mismatched`. Several shards of a split are
//!   read in file-name order.
//! * `label` is a ClassLabel stored as an integer in the internal order already (see
//!   [`crate::glue::tasks`]); STS-B's is a float (a `float32` label is widened to f64 exactly,
//!   as numpy does when `evaluate` scores it). If the file carries the `huggingface` schema
//!   metadata, its ClassLabel names are checked against the internal order; a mismatch is an
//!   error, never a silent relabelling.
//! * `idx` comes from the `idx` column (the row ordinal when absent).
//! * Rows without a usable label (test splits have −1) follow the TSV rule: skipped and
//!   counted in training files, an error naming `file:row` in dev files.
use crate::error::Error;
use crate::glue::layout_tsv::{Loaded, Skipped, SplitKind};
use crate::glue::tasks::{EvalSet, Example, Target, Task};
use anyhow::Result;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::{Path, PathBuf};

/// The task's config directory in the Hugging Face layout.
pub fn config_dir(task: Task) -> &'static str {
    match task {
        Task::DemoSentiment | Task::DemoNextSentence => "",
        t => t.id(),
    }
}

/// The split name of the training data.
pub const TRAIN_SPLIT: &str = "train";

/// The split name of an evaluation set.
pub fn dev_split(set: &EvalSet) -> &'static str {
    match set.id {
        "mnli-m" => "validation_matched",
        "mnli-mm" => "validation_mismatched",
        _ => "validation",
    }
}

/// The shard files of `split` under `<root>/<config>/`, sorted; empty if there are none.
pub fn split_files(root: &Path, task: Task, split: &str) -> Result<Vec<PathBuf>> {
    let dir = root.join(config_dir(task));
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e).into()),
    };
    let prefix = format!("{split}-");
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".parquet") {
            // `validation-…` must not pick up `validation_matched-…` (prefix ends in '-').
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Candidate (text A, text B) column names per task, first match wins.
fn text_columns(task: Task) -> &'static [(&'static str, Option<&'static str>)] {
    match task {
        Task::Cola | Task::Sst2 => &[("sentence", None)],
        Task::Mrpc | Task::Stsb | Task::Wnli => &[("sentence1", Some("sentence2"))],
        Task::Rte => &[
            ("sentence1", Some("sentence2")),
            ("premise", Some("hypothesis")),
        ],
        Task::Qqp => &[("question1", Some("question2"))],
        Task::Mnli => &[("premise", Some("hypothesis"))],
        Task::Qnli => &[("question", Some("sentence"))],
        Task::DemoSentiment | Task::DemoNextSentence => &[],
    }
}

/// Read the shards of one split.
pub fn read_files(task: Task, files: &[PathBuf], kind: SplitKind) -> Result<Loaded> {
    let mut out = Loaded::default();
    for f in files {
        // The parquet crate panics on some corrupted pages: that is bad input, not a crash.
        crate::io::contain_panics(&f.display().to_string(), || {
            read_one(task, f, kind, &mut out)
        })?;
    }
    Ok(out)
}

fn read_one(task: Task, path: &Path, kind: SplitKind, out: &mut Loaded) -> Result<()> {
    let name = path.display().to_string();
    let file = crate::io::open_input(path)?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| Error::input(&name, format!("not a readable Parquet file: {e}")))?;
    check_hf_labels(task, &reader, &name)?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let has = |c: &str| columns.iter().any(|x| x == c);
    let (ca, cb) = text_columns(task)
        .iter()
        .find(|(a, b)| has(a) && b.is_none_or(&has))
        .copied()
        .ok_or_else(|| {
            Error::input(
                &name,
                format!(
                    "no text columns for {} (found: {})",
                    task.id(),
                    columns.join(", ")
                ),
            )
        })?;
    if !has("label") {
        return Err(Error::input(&name, "no `label` column").into());
    }
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| Error::input(&name, format!("reading rows: {e}")))?;
    for (ordinal, row) in rows.enumerate() {
        let row = row.map_err(|e| Error::input(format!("{name}: row {ordinal}"), e))?;
        let (mut a, mut b, mut label, mut idx) = (None, None, None, None);
        let mut bad: Option<String> = None;
        for (col, field) in row.get_column_iter() {
            if col == ca {
                a = str_of(field);
            } else if Some(col.as_str()) == cb {
                b = str_of(field);
            } else if col == "label" {
                label = match (task.is_regression(), field) {
                    (true, Field::Float(v)) => Some(Target::Score(*v as f64))
                        .filter(|t| crate::glue::tasks::gold_in_range(task, t)),
                    (true, Field::Double(v)) => Some(Target::Score(*v))
                        .filter(|t| crate::glue::tasks::gold_in_range(task, t)),
                    (false, Field::Long(v)) => task.label_from_index(*v),
                    (false, Field::Int(v)) => task.label_from_index(*v as i64),
                    (false, Field::Short(v)) => task.label_from_index(*v as i64),
                    (false, Field::Byte(v)) => task.label_from_index(*v as i64),
                    (_, f) => {
                        bad = Some(format!("label `{f}` is not a {} label", task.id()));
                        None
                    }
                };
                if label.is_none() && bad.is_none() {
                    bad = Some(format!("label `{field}` is not a {} label", task.id()));
                }
            } else if col == "idx" {
                idx = match field {
                    Field::Int(v) if *v >= 0 => Some(*v as u64),
                    Field::Long(v) if *v >= 0 => Some(*v as u64),
                    _ => None,
                };
            }
        }
        if a.is_none() || (cb.is_some() && b.is_none()) {
            bad = bad.or(Some("missing text".into()));
        }
        // The same per-record bound as the TSV layout (a record here is one row's texts).
        let text_bytes = a.as_ref().map_or(0, |t| t.len()) + b.as_ref().map_or(0, |t| t.len());
        if text_bytes as u64 > crate::glue::layout_tsv::MAX_LINE_BYTES {
            return Err(Error::input(
                format!("{name}: row {ordinal}"),
                format!(
                    "the row's text is {text_bytes} bytes, longer than {} bytes, the limit for one GLUE record",
                    crate::glue::layout_tsv::MAX_LINE_BYTES
                ),
            )
            .into());
        }
        match bad {
            None => out.examples.push(Example {
                idx: idx.unwrap_or(ordinal as u64),
                text_a: a.unwrap_or_default(),
                text_b: b,
                label,
            }),
            Some(reason) => {
                let at = format!("{name}: row {ordinal}");
                match kind {
                    SplitKind::Train => out.skipped.push(Skipped { at, reason }),
                    SplitKind::Dev => {
                        return Err(Error::input(
                            at,
                            format!("unusable row in a dev file: {reason}"),
                        )
                        .into())
                    }
                }
            }
        }
    }
    Ok(())
}

fn str_of(f: &Field) -> Option<String> {
    match f {
        Field::Str(s) => Some(s.clone()),
        Field::Bytes(b) => std::str::from_utf8(b.data()).ok().map(str::to_string),
        _ => None,
    }
}

/// If the file has Hugging Face `datasets` metadata naming the ClassLabel names, they must be
/// the internal order.
fn check_hf_labels<R: parquet::file::reader::ChunkReader + 'static>(
    task: Task,
    reader: &SerializedFileReader<R>,
    name: &str,
) -> Result<()> {
    let Some(kv) = reader.metadata().file_metadata().key_value_metadata() else {
        return Ok(());
    };
    let Some(json) = kv
        .iter()
        .find(|k| k.key == "huggingface")
        .and_then(|k| k.value.as_ref())
    else {
        return Ok(());
    };
    let v: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return Ok(()),
    };
    let names = v
        .pointer("/info/features/label/names")
        .and_then(|n| n.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        });
    if let Some(names) = names {
        let expected: Vec<String> = task.labels().iter().map(|s| s.to_string()).collect();
        if names != expected {
            return Err(Error::input(
                name,
                format!(
                    "ClassLabel names {names:?} differ from crambench's order {expected:?} for {}",
                    task.id()
                ),
            )
            .into());
        }
    }
    Ok(())
}
