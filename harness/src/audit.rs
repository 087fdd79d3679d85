//! Verifying what a signed run vouches for: every subject and material that is present is
//! re-hashed, every predictions file is re-hashed and re-scored against trusted gold labels, and
//! the signed per-set medians and aggregate are recomputed from the re-scored trials.
//!
//! This is the one implementation of "verify a run's artifacts": `crambench verify`, `gate`,
//! `submit` and `leaderboard build` all call [`audit`], and differ only in what they make of
//! its [`Item`]s (`verify` prints them; the others turn failures into refusals or reasons).
//! Checking the signature itself is [`RunRecord::verify`]'s job.
//!
//! Every path an entry or a manifest names is resolved by [`resolve_inside`]: a relative path of
//! plain components, inside the run directory or bundle, with no symbolic link in any component.
//! So a hostile entry cannot make a leaderboard read, hash or report on a file outside it.
use crate::error::Error;
use crate::glue::aggregate::{aggregate, median, Rule};
use crate::glue::predictions::{self, Row};
use crate::glue::tasks::{self, EvalSet, Example, Metrics};
use crate::glue::{data, demo};
use crate::manifest::oms;
use crate::provenance::hash;
use crate::record::{RunRecord, GLUE_DIR};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

/// Two numbers from a manifest and from re-computation agree within this (absolute; metrics
/// are fractions, the aggregate percent points).
pub const TOLERANCE: f64 = 1e-9;

/// The outcome of checking one artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Present, and its digest (and, for predictions, its scores) match the manifest.
    Verified,
    /// Not present where the manifest's name resolves (e.g. a dataset outside a bundle).
    Missing,
    /// Present, and different from what the manifest says.
    Mismatch,
    /// Named by a path that is not allowed (absolute, `..`, a symbolic link on the way).
    Unsafe,
    /// Not checked (a remote material, or materials not asked for).
    NotChecked,
}

impl Status {
    /// A mismatch or an unsafe path: what `verify` exits 1 for.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Mismatch | Status::Unsafe)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Missing => "missing",
            Status::Mismatch => "mismatch",
            Status::Unsafe => "unsafe",
            Status::NotChecked => "not checked",
        }
    }
}

/// What kind of artifact an [`Item`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A `subject` of the statement.
    Subject,
    /// A `predicate.materials` entry.
    Material,
    /// A file listed in a bundle's `bundle.json`.
    BundleFile,
    /// One trial's predictions file (digest and re-score).
    Predictions,
    /// A set's signed medians against the re-scored trials.
    Medians,
    /// The signed aggregate against the signed medians.
    Aggregate,
}

/// One checked artifact.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub kind: Kind,
    /// The manifest's name for it (a path relative to the run, `embedded:…`, a set id).
    pub name: String,
    /// `annotations.role` of a subject, `role` of a material.
    pub role: Option<String>,
    pub status: Status,
    /// What was found (the digest, or what differs); empty when verified.
    pub detail: String,
}

/// Where gold labels for re-scoring come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GoldPolicy {
    /// Embedded demo dev sets; GLUE dev files from `glue_data` (the gold column without it).
    #[default]
    Trusted,
    /// The predictions files' own gold column.
    Column,
}

/// What [`audit`] checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The user's own run (`crambench verify`): also check the materials (local files and
    /// embedded assets), and look for `dataset/…` subjects in the dataset directory the run's
    /// `run.json` names. Off where the run is someone else's (a leaderboard entry, a bundle to
    /// gate): nothing outside the entry is then read, so no entry can make crambench hash or
    /// report on a file outside it.
    pub materials: bool,
    pub gold: GoldPolicy,
    /// GLUE data root with the dev files (TSV or Parquet layout), for trusted GLUE gold.
    pub glue_data: Option<PathBuf>,
    /// Digests only: predictions files are checked for presence, digest and size, but not
    /// re-scored, and medians and the aggregate are not recomputed (`submit`, which packs what
    /// was signed; the leaderboard re-scores).
    pub digests_only: bool,
}

/// One trial's predictions as checked: the rows (when the file verified) for the gate's
/// paired bootstrap.
#[derive(Debug, Clone)]
pub struct Trial {
    pub set: String,
    pub trial: usize,
    pub rows: Option<Vec<Row>>,
    pub metrics: Option<Metrics>,
}

/// The result of [`audit`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    pub items: Vec<Item>,
    /// Where each set's gold labels came from.
    pub gold: BTreeMap<String, String>,
    /// Caveats that are not failures (self-reported gold labels).
    pub notes: Vec<String>,
    #[serde(skip)]
    pub trials: Vec<Trial>,
}

impl Audit {
    /// The items that failed (mismatch or unsafe).
    pub fn failures(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.status.is_failure())
    }

    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.failures().next().is_none()
    }

    /// Items of `kind` that are not verified (for callers that require them all).
    pub fn unverified(&self, kind: Kind) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(move |i| i.kind == kind && i.status != Status::Verified)
    }

    /// The checked rows of every trial of `set`, in trial order; `None` unless all verified.
    pub fn rows(&self, set: &str) -> Option<Vec<&[Row]>> {
        let t: Vec<&Trial> = self.trials.iter().filter(|t| t.set == set).collect();
        if t.is_empty() {
            return None;
        }
        t.iter().map(|t| t.rows.as_deref()).collect()
    }

    fn push(&mut self, kind: Kind, name: &str, role: Option<&str>, status: Status, detail: String) {
        self.items.push(Item {
            kind,
            name: name.to_string(),
            role: role.map(str::to_string),
            status,
            detail,
        });
    }

    /// One line per item, for people.
    pub fn to_table(&self) -> String {
        let mut t = String::new();
        for i in &self.items {
            let kind = serde_json::to_value(i.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            t += &format!(
                "{:<12} {:<12} {}{}{}\n",
                i.status.as_str(),
                kind,
                i.name,
                // A predictions item's name already says its set.
                i.role
                    .as_ref()
                    .filter(|_| i.kind != Kind::Predictions)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                if i.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", i.detail)
                }
            );
        }
        for n in &self.notes {
            t += &format!("note         {n}\n");
        }
        t
    }
}

/// Whether `rel` is a plain relative path that stays inside its root: `/`-separated
/// components, each an identifier ([`crate::ident`]: no `..`, `.`, empty, hidden or absolute
/// component, no backslash, newline or control character).
pub fn safe_rel(rel: &str) -> bool {
    !rel.is_empty()
        && rel.split('/').all(crate::ident::is_valid)
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Resolve `rel` inside `root`: a [`safe_rel`] path none of whose components (the last
/// included) is a symbolic link. `Ok(None)` when it does not exist; `Err` (a message that names
/// only `rel`, never what lies outside) when it is not allowed.
pub fn resolve_inside(root: &Path, rel: &str) -> Result<Option<PathBuf>, String> {
    if !safe_rel(rel) {
        return Err(format!("{rel:?} is not a relative path inside the run"));
    }
    let mut p = root.to_path_buf();
    for c in Path::new(rel).components() {
        p.push(c);
        match p.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{rel}: a symbolic link on the way; not followed"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{rel}: {}", e.kind())),
        }
    }
    Ok(Some(p))
}

/// A regular file inside `root` (see [`resolve_inside`]).
fn file_inside(root: &Path, rel: &str) -> Result<Option<PathBuf>, String> {
    match resolve_inside(root, rel)? {
        Some(p) if p.is_file() => Ok(Some(p)),
        Some(_) => Err(format!("{rel}: not a regular file")),
        None => Ok(None),
    }
}

/// The bytes of an asset compiled into crambench, by its material name.
fn embedded_asset(name: &str) -> Option<&'static [u8]> {
    match name {
        "embedded:sotu" => Some(crate::data::source::SOTU_ZST),
        "embedded:glue-demo/sentiment.tsv" => Some(demo::SENTIMENT_TSV),
        _ => None,
    }
}

/// Gold labels loaded once per set for all the runs one command checks.
#[derive(Default)]
pub struct GoldCache {
    sets: HashMap<String, Result<Vec<Example>, String>>,
}

impl GoldCache {
    /// The trusted gold examples of `set` with where they came from, or `None` when the policy
    /// (or a missing GLUE data root) says to use the gold column; `Err` when trusted gold should
    /// exist but cannot be loaded.
    fn get(
        &mut self,
        set: &EvalSet,
        opts: &Options,
    ) -> Option<Result<(&[Example], String), String>> {
        if opts.gold == GoldPolicy::Column {
            return None;
        }
        let source = if set.task.is_glue() {
            format!("--glue-data {}", opts.glue_data.as_ref()?.display())
        } else {
            "embedded demo dev set".to_string()
        };
        let entry = self.sets.entry(set.id.to_string()).or_insert_with(|| {
            let dev = match &opts.glue_data {
                Some(root) if set.task.is_glue() => glue_dev(root, set),
                _ => demo::load(set.task).map(|td| {
                    td.dev
                        .into_iter()
                        .filter(|(s, _)| s.id == set.id)
                        .flat_map(|(_, ex)| ex)
                        .collect()
                }),
            }
            .map_err(|e| format!("{e:#}"))?;
            if dev.is_empty() {
                return Err(format!("no dev examples of {}", set.id));
            }
            Ok(dev)
        });
        Some(match entry {
            Ok(ex) => Ok((ex.as_slice(), source)),
            Err(e) => Err(format!("gold labels of {} ({source}): {e}", set.id)),
        })
    }
}

/// The dev examples of a GLUE evaluation set under a GLUE data root (dev files only).
fn glue_dev(root: &Path, set: &EvalSet) -> anyhow::Result<Vec<Example>> {
    let (_, (_, dev_files)) = data::locate(root, set.task)?;
    let mut out = Vec::new();
    for (s, files) in dev_files {
        if s.id == set.id {
            for f in files {
                out.extend(data::load_dev_file(set, &f)?);
            }
        }
    }
    Ok(out)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE
}

/// A manifest digest set (`{"sha256": …}` or `{"dirHash": …}`) against the artifact at `path`.
fn check_digest(path: &Path, want: &Value) -> (Status, String) {
    let found = match hash::hash_path(path, &|_| {}) {
        Ok(d) => d.digest_set(),
        Err(e) => return (Status::Mismatch, format!("cannot be hashed: {e:#}")),
    };
    let Some(want) = want.as_object().filter(|w| !w.is_empty()) else {
        return (Status::Mismatch, "the manifest gives no digest".into());
    };
    for (alg, v) in want {
        match found.get(alg) {
            Some(f) if Some(f.as_str()) == v.as_str() => {}
            Some(f) => {
                return (
                    Status::Mismatch,
                    format!("{alg} {f}, the manifest says {}", v.as_str().unwrap_or("?")),
                )
            }
            None => {
                return (
                    Status::Mismatch,
                    format!("is not what the manifest's {alg} digest describes"),
                )
            }
        }
    }
    (Status::Verified, String::new())
}

/// A checkpoint directory's OMS root digest (files serialised as `model_signing` does, with the
/// ignore paths a `model.sig` in the run directory gives) against the manifest's sha256.
fn check_oms_root(dir: &Path, record: &RunRecord, want: &Value) -> (Status, String) {
    let sig = record
        .root
        .as_ref()
        .map(|r| r.join(oms::SIGNATURE_FILE))
        .unwrap_or_default();
    let root = oms::hash_model(dir, &oms::default_ignore_paths(dir, &sig))
        .and_then(|r| oms::root_digest(&r));
    match (root, want["sha256"].as_str()) {
        (Ok(got), Some(w)) if got == w => (Status::Verified, String::new()),
        (Ok(got), w) => (
            Status::Mismatch,
            format!(
                "model-signing root digest {got}, the manifest says {}",
                w.unwrap_or("(none)")
            ),
        ),
        (Err(e), _) => (Status::Mismatch, format!("cannot be serialised: {e:#}")),
    }
}

/// Where a subject named `name` lives: inside the run's root, or — for `dataset/<name>/<file>`
/// subjects, which live in the dataset cache — inside the dataset directory `run.json` records.
fn locate_subject(record: &RunRecord, name: &str, local: bool) -> Result<Option<PathBuf>, String> {
    let Some(root) = &record.root else {
        return Ok(None);
    };
    if let Some(p) = resolve_inside(root, name)? {
        return Ok(Some(p));
    }
    if !local {
        return Ok(None);
    }
    if let Some(rest) = name.strip_prefix("dataset/") {
        if let Some((ds, file)) = rest.split_once('/') {
            if let Some(dir) = dataset_dir(root) {
                if dir.file_name().is_some_and(|n| n == ds) {
                    return resolve_inside(&dir, file);
                }
            }
        }
    }
    Ok(None)
}

/// The dataset directory a run directory's `run.json` records (`stages.data.info.dir`).
fn dataset_dir(root: &Path) -> Option<PathBuf> {
    let p = file_inside(root, crate::record::RUN_STATE_FILE).ok()??;
    let v: Value = serde_json::from_slice(&crate::io::read_limited(&p, 64 << 20).ok()?).ok()?;
    v["stages"]["data"]["info"]["dir"]
        .as_str()
        .map(PathBuf::from)
}

/// Check everything `record` vouches for that can be found (see the module doc).
pub fn audit(record: &RunRecord, opts: &Options, gold: &mut GoldCache) -> Audit {
    let mut a = Audit::default();
    subjects(record, opts.materials, &mut a);
    if opts.materials {
        materials(record, &mut a);
    }
    if let Some(root) = &record.root {
        bundle_files(root, &mut a);
    }
    if record.glue().is_some() {
        predictions_and_metrics(record, opts, gold, &mut a);
    }
    a
}

fn subjects(record: &RunRecord, local: bool, a: &mut Audit) {
    for s in record.statement["subject"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("");
        let role = s["annotations"]["role"].as_str();
        match locate_subject(record, name, local) {
            Err(e) => a.push(Kind::Subject, name, role, Status::Unsafe, e),
            Ok(None) => a.push(
                Kind::Subject,
                name,
                role,
                Status::Missing,
                if record.root.is_some() {
                    "not found in the run directory".into()
                } else {
                    "a lone manifest: no run directory to look in".into()
                },
            ),
            Ok(Some(p)) if role == Some(crate::manifest::oms::SUBJECT_ROLE) => {
                // The OpenSSF model-signing root digest of the checkpoint directory.
                let (st, d) = check_oms_root(&p, record, &s["digest"]);
                a.push(Kind::Subject, name, role, st, d);
            }
            Ok(Some(p)) => {
                let (st, mut d) = check_digest(&p, &s["digest"]);
                if st == Status::Mismatch && role == Some("predictions") {
                    d += &unnamed_predictions(record, &p);
                }
                a.push(Kind::Subject, name, role, st, d);
            }
        }
    }
}

/// The files of a predictions directory that no trial of the manifest names (what was added).
fn unnamed_predictions(record: &RunRecord, dir: &Path) -> String {
    let named: std::collections::BTreeSet<String> = manifest_predictions(record)
        .map(|v| v.into_iter().map(|p| p.rel).collect())
        .unwrap_or_default();
    let Ok(listed) = hash::hash_dir(dir, &|_| {}) else {
        return String::new();
    };
    let extra: Vec<String> = listed
        .entries
        .iter()
        .map(|e| format!("predictions/{}", e.path))
        .filter(|p| !named.contains(p))
        .collect();
    if extra.is_empty() {
        String::new()
    } else {
        format!("; files the manifest does not name: {}", extra.join(", "))
    }
}

fn materials(record: &RunRecord, a: &mut Audit) {
    for m in record.predicate()["materials"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = m["name"].as_str().unwrap_or("");
        let role = m["role"].as_str();
        if let Some(bytes) = embedded_asset(name) {
            let got = hash::sha256_hex(bytes);
            let (st, d) = match m["digest"]["sha256"].as_str() {
                Some(w) if w == got => (Status::Verified, String::new()),
                w => (
                    Status::Mismatch,
                    format!(
                        "this crambench embeds sha256 {got}, the manifest says {}",
                        w.unwrap_or("(none)")
                    ),
                ),
            };
            a.push(Kind::Material, name, role, st, d);
            continue;
        }
        if name.contains("://") || name.starts_with("hub:") || name.starts_with("hf:") {
            a.push(
                Kind::Material,
                name,
                role,
                Status::NotChecked,
                "remote; not fetched".into(),
            );
            continue;
        }
        // A local path, as the run named it (relative to where it ran); a dataset's own files
        // (its tokenizer) relative to the dataset directory `run.json` records.
        let in_dataset = record
            .root
            .as_deref()
            .and_then(dataset_dir)
            .and_then(|d| resolve_inside(&d, name).ok().flatten());
        let p = match in_dataset {
            Some(p) if !Path::new(name).exists() => p,
            _ => PathBuf::from(name),
        };
        let p = p.as_path();
        match p.symlink_metadata() {
            Ok(meta) if meta.is_file() || meta.is_dir() => {
                let (st, d) = check_digest(p, &m["digest"]);
                a.push(Kind::Material, name, role, st, d);
            }
            Ok(_) => a.push(
                Kind::Material,
                name,
                role,
                Status::Unsafe,
                "not a regular file or directory".into(),
            ),
            Err(_) => a.push(
                Kind::Material,
                name,
                role,
                Status::Missing,
                "not found from the working directory".into(),
            ),
        }
    }
}

/// Every file a bundle's `bundle.json` lists, at its digest.
fn bundle_files(root: &Path, a: &mut Audit) {
    let files = match crate::record::read_index(root) {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e) => {
            a.push(
                Kind::BundleFile,
                crate::record::BUNDLE_INDEX,
                None,
                Status::Mismatch,
                format!("{e:#}"),
            );
            return;
        }
    };
    for f in files {
        let (st, d) = match file_inside(root, &f.path) {
            Err(e) => (Status::Unsafe, e),
            Ok(None) => (
                Status::Missing,
                "listed in bundle.json, not in the bundle".into(),
            ),
            Ok(Some(p)) => match hash::hash_file(&p, &|_| {}) {
                Ok(d) if d.sha256 == f.sha256 => (Status::Verified, String::new()),
                Ok(d) => (
                    Status::Mismatch,
                    format!("sha256 {}, bundle.json says {}", d.sha256, f.sha256),
                ),
                Err(e) => (Status::Mismatch, format!("{e:#}")),
            },
        };
        a.push(Kind::BundleFile, &f.path, None, st, d);
    }
}

/// One trial's predictions as the signed manifest names them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignedPredictions {
    /// Evaluation set id (`sst2`, `demo-sentiment`, …).
    pub set: String,
    /// Position in the set's `trials` array.
    pub trial: usize,
    /// Path relative to `glue/` (checked: [`safe_rel`]).
    pub rel: String,
    pub sha256: String,
    /// The trial's metrics (fractions).
    pub metrics: BTreeMap<String, f64>,
    pub dev_examples: Option<u64>,
}

/// The `dirHash` of the signed `predictions` subject (`annotations.role = "predictions"`).
pub fn predictions_subject(record: &RunRecord) -> Option<String> {
    record.statement["subject"]
        .as_array()?
        .iter()
        .find(|s| s["annotations"]["role"] == "predictions")
        .and_then(|s| s["digest"]["dirHash"].as_str())
        .map(str::to_string)
}

/// Metrics object → map; non-numbers are an error.
fn metrics_of(v: &Value, at: &str) -> Result<BTreeMap<String, f64>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at}: metrics is not an object"))?;
    obj.iter()
        .map(|(k, x)| {
            x.as_f64()
                .map(|f| (k.clone(), f))
                .ok_or_else(|| format!("{at}: metric {k} is not a number"))
        })
        .collect()
}

fn glue_tasks(record: &RunRecord) -> Result<&serde_json::Map<String, Value>, String> {
    record
        .glue()
        .and_then(|g| g.get("tasks"))
        .and_then(|t| t.as_object())
        .ok_or_else(|| "the manifest has no glue.tasks".to_string())
}

/// The per-set medians the signed manifest states (`glue.tasks.<set>.metrics`).
pub fn manifest_medians(record: &RunRecord) -> Result<BTreeMap<String, Metrics>, String> {
    glue_tasks(record)?
        .iter()
        .map(|(set, t)| {
            Ok((
                set.clone(),
                metrics_of(&t["metrics"], &format!("glue.tasks.{set}"))?,
            ))
        })
        .collect()
}

/// Every trial's predictions the signed manifest names, in set and trial order. Errors are
/// messages naming the manifest field.
pub fn manifest_predictions(record: &RunRecord) -> Result<Vec<SignedPredictions>, String> {
    let tasks = glue_tasks(record)?;
    if tasks.is_empty() {
        return Err("glue.tasks is empty".into());
    }
    let mut out = Vec::new();
    for (set, t) in tasks {
        let trials = t["trials"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("glue.tasks.{set}.trials: missing or empty"))?;
        for (k, tr) in trials.iter().enumerate() {
            let at = format!("glue.tasks.{set}.trials[{k}]");
            let rel = tr["predictions"]
                .as_str()
                .ok_or_else(|| format!("{at}.predictions: missing"))?;
            if !safe_rel(rel) {
                return Err(format!(
                    "{at}.predictions: {rel:?} is not a relative path inside glue/"
                ));
            }
            let sha256 = tr["predictions_sha256"]
                .as_str()
                .filter(|s| hash::is_sha256_hex(s))
                .ok_or_else(|| format!("{at}.predictions_sha256: missing or not a SHA-256"))?;
            out.push(SignedPredictions {
                set: set.clone(),
                trial: k,
                rel: rel.to_string(),
                sha256: sha256.to_string(),
                metrics: metrics_of(&tr["metrics"], &at)?,
                dev_examples: tr["dev_examples"].as_u64(),
            });
        }
    }
    Ok(out)
}

/// Predictions files (digest, size, re-score), then medians and aggregate.
fn predictions_and_metrics(
    record: &RunRecord,
    opts: &Options,
    gold: &mut GoldCache,
    a: &mut Audit,
) {
    let preds = match manifest_predictions(record) {
        Ok(p) => p,
        Err(e) => {
            a.push(Kind::Predictions, "glue.tasks", None, Status::Mismatch, e);
            return;
        }
    };
    for sp in &preds {
        let rel = format!("{GLUE_DIR}/{}", sp.rel);
        let name = format!("{} trial {} ({})", sp.set, sp.trial, sp.rel);
        let mut trial = Trial {
            set: sp.set.clone(),
            trial: sp.trial,
            rows: None,
            metrics: None,
        };
        let (st, detail) = check_trial(record, sp, &rel, opts, gold, a, &mut trial);
        a.push(Kind::Predictions, &name, Some(&sp.set), st, detail);
        a.trials.push(trial);
    }
    if opts.digests_only {
        return;
    }
    medians_and_aggregate(record, a);
    let self_gold: Vec<&str> = a
        .gold
        .iter()
        .filter(|(_, g)| g.starts_with("gold column"))
        .map(|(s, _)| s.as_str())
        .collect();
    if !self_gold.is_empty() && opts.gold == GoldPolicy::Trusted {
        let note = format!(
            "re-scored against the submitted gold column for {} (pass --glue-data for trusted gold)",
            self_gold.join(", ")
        );
        a.notes.push(note);
    }
}

fn check_trial(
    record: &RunRecord,
    sp: &SignedPredictions,
    rel: &str,
    opts: &Options,
    gold: &mut GoldCache,
    a: &mut Audit,
    trial: &mut Trial,
) -> (Status, String) {
    let Some(root) = &record.root else {
        return (
            Status::Missing,
            "a lone manifest: no run directory to look in".into(),
        );
    };
    let path = match file_inside(root, rel) {
        Err(e) => return (Status::Unsafe, e),
        Ok(None) => return (Status::Missing, "not found".into()),
        Ok(Some(p)) => p,
    };
    match hash::hash_file(&path, &|_| {}) {
        Ok(d) if d.sha256 == sp.sha256 => {}
        Ok(d) => {
            return (
                Status::Mismatch,
                format!(
                    "sha256 {} differs from the signed predictions_sha256 {}",
                    d.sha256, sp.sha256
                ),
            )
        }
        Err(e) => return (Status::Mismatch, format!("{e:#}")),
    }
    let set = match tasks::eval_set(&sp.set) {
        Ok(s) => s,
        Err(e) => return (Status::Mismatch, format!("{e:#}")),
    };
    let rows = match predictions::read(&set, &path) {
        Ok(r) => r,
        Err(e) => return (Status::Mismatch, format!("{e:#}")),
    };
    if opts.digests_only {
        trial.rows = Some(rows);
        return (Status::Verified, String::new());
    }
    if let Some(n) = sp.dev_examples {
        if n != rows.len() as u64 {
            return (
                Status::Mismatch,
                format!(
                    "{} predictions, the manifest says dev_examples = {n}",
                    rows.len()
                ),
            );
        }
    }
    let src = path.display().to_string();
    let scored = match gold.get(&set, opts) {
        Some(Ok((ex, source))) => {
            a.gold.insert(sp.set.clone(), source);
            predictions::score_against(&set, &rows, ex, &src)
        }
        Some(Err(e)) => return (Status::Mismatch, e),
        None => {
            a.gold
                .insert(sp.set.clone(), "gold column of the predictions file".into());
            predictions::score_rows(&set, &rows, &src)
        }
    };
    let m = match scored {
        Ok(m) => m,
        Err(e) => return (Status::Mismatch, format!("cannot be re-scored: {e:#}")),
    };
    let mut wrong = Vec::new();
    for (k, v) in &sp.metrics {
        match m.get(k) {
            Some(x) if close(*x, *v) => {}
            Some(x) => wrong.push(format!("{k} re-scores to {x}, the manifest says {v}")),
            None => wrong.push(format!(
                "the manifest states {k}, which {} does not have",
                sp.set
            )),
        }
    }
    trial.metrics = Some(m);
    if !wrong.is_empty() {
        return (Status::Mismatch, wrong.join("; "));
    }
    trial.rows = Some(rows);
    (Status::Verified, String::new())
}

/// The signed medians against the re-scored trials, and the aggregate against the medians.
fn medians_and_aggregate(record: &RunRecord, a: &mut Audit) {
    let signed = match manifest_medians(record) {
        Ok(m) => m,
        Err(e) => {
            a.push(Kind::Medians, "glue.tasks", None, Status::Mismatch, e);
            return;
        }
    };
    for (set, medians) in &signed {
        let trials: Vec<&Trial> = a.trials.iter().filter(|t| &t.set == set).collect();
        let name = set.clone();
        if trials.is_empty() || trials.iter().any(|t| t.metrics.is_none()) {
            a.push(
                Kind::Medians,
                &name,
                None,
                Status::NotChecked,
                "not every trial could be re-scored".into(),
            );
            continue;
        }
        let mut wrong = Vec::new();
        for (k, v) in medians {
            let vals: Vec<f64> = trials
                .iter()
                .filter_map(|t| t.metrics.as_ref().and_then(|m| m.get(k)).copied())
                .collect();
            match median(&vals) {
                Some(x) if vals.len() == trials.len() && close(x, *v) => {}
                Some(x) if vals.len() == trials.len() => wrong.push(format!(
                    "median {k} over the re-scored trials is {x}, the manifest says {v}"
                )),
                _ => wrong.push(format!(
                    "the manifest states median {k}, which the trials do not have"
                )),
            }
        }
        let st = if wrong.is_empty() {
            Status::Verified
        } else {
            Status::Mismatch
        };
        a.push(Kind::Medians, &name, None, st, wrong.join("; "));
    }
    let Some((rule, value)) = record.aggregate() else {
        return;
    };
    let (st, detail) = match Rule::parse(rule) {
        Err(_) => (Status::Mismatch, format!("unknown aggregate rule {rule}")),
        Ok(r) => match aggregate(r, &signed) {
            Ok(x) if close(x.value, value) => (Status::Verified, String::new()),
            Ok(x) => (
                Status::Mismatch,
                format!(
                    "aggregate {value} does not follow from the per-set medians under {}: they give {}",
                    r.name(),
                    x.value
                ),
            ),
            Err(e) => (Status::Mismatch, format!("cannot be recomputed: {e:#}")),
        },
    };
    a.push(Kind::Aggregate, "glue.aggregate", Some(rule), st, detail);
}

/// The OpenSSF model signature (`model.sig`) beside the run in `root`, verified against the
/// checkpoint its signed `statement` names (the `checkpoint` subject) and `trusted` keys; and
/// it must sign that checkpoint: its root digest equals the statement's `checkpoint-oms`
/// subject. None when the run has no model.sig or no checkpoint directory.
pub fn model_signature(
    root: &Path,
    statement: &Value,
    trusted: &[crate::manifest::keys::PublicKey],
) -> anyhow::Result<Option<oms::ModelVerification>> {
    let signature = root.join(oms::SIGNATURE_FILE);
    if !signature.is_file() {
        return Ok(None);
    }
    let subject = |role: &str| {
        statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["annotations"]["role"] == role)
    };
    let rel = subject("checkpoint")
        .and_then(|s| s["name"].as_str())
        .filter(|r| safe_rel(r));
    let mut m = match rel {
        Some(rel) if root.join(rel).is_dir() => {
            oms::verify_model(&root.join(rel), &signature, trusted)?
        }
        _ => return Ok(None),
    };
    let signed_root = subject(oms::SUBJECT_ROLE).and_then(|s| s["digest"]["sha256"].as_str());
    if let (Some(want), Some(got)) = (signed_root, m.root_digest.as_deref()) {
        if want != got {
            m.ok = false;
            m.problem = Some(format!(
                "its root digest {got} is not the run manifest's checkpoint-oms subject {want}"
            ));
        }
    }
    Ok(Some(m))
}

/// Fail with [`Error::Check`] naming every failed item (for commands that refuse a run whose
/// artifacts do not match, like `submit`).
pub fn require_ok(a: &Audit, source: &str) -> anyhow::Result<()> {
    let bad: Vec<String> = a
        .failures()
        .map(|i| format!("{} {}: {}", i.status.as_str(), i.name, i.detail))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(Error::Check(format!(
        "{source}: the run's artifacts do not match its signed manifest:\n  {}",
        bad.join("\n  ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_inside_refuses_links_on_the_way_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("lnk")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("alias")).unwrap();
        assert!(resolve_inside(d.path(), "a/f").unwrap().is_some());
        assert!(resolve_inside(d.path(), "a/none").unwrap().is_none());
        for bad in [
            "lnk/passwd",
            "alias/f",
            "../x",
            "/etc/passwd",
            "a/../a/f",
            "a//f",
            "./a/f",
        ] {
            let e = resolve_inside(d.path(), bad).unwrap_err();
            assert!(!e.contains("/etc/passwd") || bad == "/etc/passwd", "{e}");
        }
        // The message never says whether something exists behind the link.
        let e1 = resolve_inside(d.path(), "lnk/passwd").unwrap_err();
        let e2 = resolve_inside(d.path(), "lnk/no-such-file").unwrap_err();
        assert_eq!(e1.replace("passwd", "X"), e2.replace("no-such-file", "X"));
    }
}
