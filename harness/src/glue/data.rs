//! Finding a task's files under a GLUE data root in either layout, loading them, hashing every
//! file read, and checking SHA-256 pins.
//!
//! Layout detection per task, first match wins:
//! 1. TSV (`download_glue_data.py`): `<root>/<TASK>/train.tsv` exists (e.g. `CoLA/train.tsv`).
//! 2. Parquet (`nyu-mll/glue`, or SuperGLUE for RTE): `<root>/<config>/train-*.parquet`.
//!
//! Pins map a file's path relative to the root (with `/`) to its SHA-256 hex. When a pin set is
//! given, every file read must be pinned and match; `crambench glue pin DIR` prints the pins of
//! every GLUE file found.
use crate::error::Error;
use crate::glue::layout_parquet as pq;
use crate::glue::layout_tsv::{self as tsv, Loaded, Skipped, SplitKind};
use crate::glue::tasks::{EvalSet, Example, Task};
use crate::provenance::hash::hash_file;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which file layout a task was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `download_glue_data.py` TSV files.
    GlueTsv,
    /// Hugging Face Parquet files (`nyu-mll/glue`, or `super_glue` RTE).
    HfParquet,
    /// Data compiled into crambench (the `demo-*` tasks).
    Embedded,
}

/// A file read, with its digest (path relative to the data root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A task's training and dev examples.
#[derive(Debug, Clone)]
pub struct TaskData {
    pub task: Task,
    pub layout: Layout,
    pub train: Vec<Example>,
    pub dev: Vec<(EvalSet, Vec<Example>)>,
    /// Every file read, hashed.
    pub files: Vec<DataFile>,
    /// Training rows skipped as malformed, with `file:line`.
    pub skipped: Vec<Skipped>,
}

/// The files of a task in a layout: (training files, per eval set dev files).
type Files = (Vec<PathBuf>, Vec<(EvalSet, Vec<PathBuf>)>);

/// Detect the task's layout and list its files. Errors name what was looked for.
pub fn locate(root: &Path, task: Task) -> Result<(Layout, Files)> {
    // A GLUE data root is a directory; a file there is a wrong argument, not an OS failure.
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::input(
            root.display(),
            "not a directory (the GLUE data root holds one directory per task, TSV or Parquet layout)",
        )
        .into());
    }
    let t = tsv::train_path(root, task);
    if t.is_file() {
        let dev = task
            .eval_sets()
            .into_iter()
            .map(|s| {
                let p = tsv::dev_path(root, &s);
                (s, vec![p])
            })
            .collect();
        return Ok((Layout::GlueTsv, (vec![t], dev)));
    }
    let train = pq::split_files(root, task, pq::TRAIN_SPLIT)?;
    if !train.is_empty() {
        let mut dev = Vec::new();
        for s in task.eval_sets() {
            let files = pq::split_files(root, task, pq::dev_split(&s))?;
            if files.is_empty() {
                return Err(Error::input(
                    root.join(pq::config_dir(task)).display(),
                    format!("no {}-*.parquet for {}", pq::dev_split(&s), s.id),
                )
                .into());
            }
            dev.push((s, files));
        }
        return Ok((Layout::HfParquet, (train, dev)));
    }
    Err(Error::input(
        root.display(),
        format!(
            "no {} data: neither {} nor {}/train-*.parquet",
            task.id(),
            t.strip_prefix(root).unwrap_or(&t).display(),
            pq::config_dir(task)
        ),
    )
    .into())
}

fn read(layout: Layout, task: Task, files: &[PathBuf], kind: SplitKind) -> Result<Loaded> {
    match layout {
        Layout::GlueTsv => {
            let mut out = Loaded::default();
            for f in files {
                let l = tsv::read(task, f, kind)?;
                out.examples.extend(l.examples);
                out.skipped.extend(l.skipped);
            }
            Ok(out)
        }
        Layout::HfParquet => pq::read_files(task, files, kind),
        Layout::Embedded => Err(Error::input(task.id(), "embedded data has no files").into()),
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Hash a file and check it against `pins` (when given).
fn digest(root: &Path, p: &Path, pins: Option<&BTreeMap<String, String>>) -> Result<DataFile> {
    let d = hash_file(p, &|_| {})?;
    let f = DataFile {
        path: rel(root, p),
        size: d.size,
        sha256: d.sha256,
    };
    if let Some(pins) = pins {
        match pins.get(&f.path) {
            None => {
                return Err(Error::Check(format!(
                    "{}: not pinned (sha256 {}); add it to the pins or run `crambench glue pin`",
                    f.path, f.sha256
                ))
                .into())
            }
            Some(want) if want.trim_start_matches("sha256:") != f.sha256 => {
                return Err(Error::Check(format!(
                    "{}: sha256 {} does not match the pin {want}",
                    f.path, f.sha256
                ))
                .into())
            }
            Some(_) => {}
        }
    }
    Ok(f)
}

/// Load a task: detect the layout, hash and check every file, read train and dev.
pub fn load(root: &Path, task: Task, pins: Option<&BTreeMap<String, String>>) -> Result<TaskData> {
    let (layout, (train_files, dev_files)) = locate(root, task)?;
    let mut files = Vec::new();
    for p in train_files
        .iter()
        .chain(dev_files.iter().flat_map(|(_, v)| v.iter()))
    {
        files.push(digest(root, p, pins)?);
    }
    let train = read(layout, task, &train_files, SplitKind::Train)?;
    if train.examples.is_empty() {
        return Err(Error::input(
            root.display(),
            format!("{}: no training examples", task.id()),
        )
        .into());
    }
    let mut dev = Vec::new();
    for (s, f) in &dev_files {
        let d = read(layout, task, f, SplitKind::Dev)?;
        if d.examples.is_empty() {
            return Err(Error::input(root.display(), format!("{}: no dev examples", s.id)).into());
        }
        dev.push((*s, d.examples));
    }
    Ok(TaskData {
        task,
        layout,
        train: train.examples,
        dev,
        files,
        skipped: train.skipped,
    })
}

/// Load only the dev examples of one evaluation set from a file (TSV or Parquet, by extension).
pub fn load_dev_file(set: &EvalSet, path: &Path) -> Result<Vec<Example>> {
    let is_parquet = path.extension().is_some_and(|e| e == "parquet");
    let l = if is_parquet {
        pq::read_files(set.task, &[path.to_path_buf()], SplitKind::Dev)?
    } else {
        tsv::read(set.task, path, SplitKind::Dev)?
    };
    Ok(l.examples)
}

/// The pins of every GLUE file found under `root` (all nine tasks, either layout; tasks with
/// no files are left out), sorted by path.
pub fn pin_dir(root: &Path) -> Result<Vec<DataFile>> {
    if !root.is_dir() {
        return Err(Error::input(root.display(), "not a directory").into());
    }
    let mut out = Vec::new();
    for task in Task::ALL_GLUE {
        let Ok((_, (train, dev))) = locate(root, task) else {
            continue;
        };
        for p in train.iter().chain(dev.iter().flat_map(|(_, v)| v.iter())) {
            // Present but not a regular file (a FIFO, a link to a device): refused by the
            // reader, not skipped.
            if p.exists() {
                out.push(digest(root, p, None)?);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

/// Pins as a TOML table to paste into a recipe's `[glue.pins]`.
pub fn pins_toml(files: &[DataFile]) -> String {
    let mut s = String::from("[glue.pins]\n");
    for f in files {
        s += &format!("{:?} = \"sha256:{}\"\n", f.path, f.sha256);
    }
    s
}
