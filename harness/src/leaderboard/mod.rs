//! The leaderboard: submission bundles ([`submit`]), track rules ([`tracks`]), verification of
//! every entry against trusted keys and its track ([`verify`]) and the static site
//! ([`render`]).
//!
//! `crambench leaderboard build ENTRIES --keys DIR --out site/` ([`build`]) trusts nothing an
//! entry says without checking it: the DSSE signature must verify under a trusted key; the
//! numbers are read from the signed statement only; every predictions file must hash to the
//! signed `predictions_sha256` and re-score to the signed per-trial metrics; the per-set
//! medians and the aggregate are recomputed. A rejected entry is listed with every reason found,
//! not only the first.
pub mod render;
pub mod submit;
pub mod tracks;
pub mod verify;

use crate::error::Error;
use crate::record::{RunRecord, GLUE_DIR};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

pub use render::{write_site, Site};
pub use tracks::{Track, Tracks};
pub use verify::{BuildOptions, EntryReport, GoldPolicy};

/// Two numbers from a manifest and from re-computation agree within this (absolute; metrics
/// are fractions, the aggregate percent points).
pub const TOLERANCE: f64 = 1e-9;

/// One trial's predictions as the signed manifest names them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignedPredictions {
    /// Evaluation set id (`sst2`, `demo-sentiment`, …).
    pub set: String,
    /// Position in the set's `trials` array.
    pub trial: usize,
    /// Path relative to `glue/` (checked: relative, no `..`).
    pub rel: String,
    pub sha256: String,
    /// The trial's metrics (fractions).
    pub metrics: BTreeMap<String, f64>,
    pub dev_examples: Option<u64>,
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

/// Metrics object → map; non-numbers are an error.
fn metrics_of(
    v: &serde_json::Value,
    at: &str,
) -> std::result::Result<BTreeMap<String, f64>, String> {
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

/// The per-set medians the signed manifest states (`glue.tasks.<set>.metrics`).
pub fn manifest_medians(
    record: &RunRecord,
) -> std::result::Result<BTreeMap<String, BTreeMap<String, f64>>, String> {
    let tasks = record
        .glue()
        .and_then(|g| g.get("tasks"))
        .and_then(|t| t.as_object())
        .ok_or("the manifest has no glue.tasks")?;
    tasks
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
pub fn manifest_predictions(
    record: &RunRecord,
) -> std::result::Result<Vec<SignedPredictions>, String> {
    let tasks = record
        .glue()
        .and_then(|g| g.get("tasks"))
        .and_then(|t| t.as_object())
        .ok_or("the manifest has no glue.tasks")?;
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
                .filter(|s| crate::provenance::hash::is_sha256_hex(s))
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

/// The `dirHash` of the signed `predictions` subject (`annotations.role = "predictions"`).
pub fn predictions_subject(record: &RunRecord) -> Option<String> {
    record.statement["subject"]
        .as_array()?
        .iter()
        .find(|s| s["annotations"]["role"] == "predictions")
        .and_then(|s| s["digest"]["dirHash"].as_str())
        .map(str::to_string)
}

/// The path of a signed predictions file under an entry's root.
pub fn predictions_path(root: &Path, p: &SignedPredictions) -> PathBuf {
    root.join(GLUE_DIR).join(&p.rel)
}

/// Expand the ENTRIES arguments: a directory holding `manifest.dsse.json`, `manifest.json` or
/// `bundle.json` is one entry; any other directory contributes each of its subdirectories, in
/// name order (hidden ones, like unfinished `submit` temporaries, are skipped; one that is not a
/// bundle is still an entry, rejected as unreadable). A missing path, or a directory with
/// neither, is unusable input.
pub fn expand_entries(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let is_entry = |d: &Path| {
        [
            crate::record::ENVELOPE_FILE,
            crate::record::STATEMENT_FILE,
            submit::BUNDLE_INDEX,
        ]
        .iter()
        .any(|f| d.join(f).is_file())
    };
    let mut out = Vec::new();
    for a in args {
        let meta = std::fs::metadata(a).map_err(|e| Error::io(a, e))?;
        if !meta.is_dir() {
            return Err(Error::input(
                a.display(),
                "not a directory (an entry is a bundle directory)",
            )
            .into());
        }
        if is_entry(a) {
            out.push(a.clone());
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(a)
            .map_err(|e| Error::io(a, e))?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        if subs.is_empty() {
            return Err(Error::input(
                a.display(),
                "neither a bundle (no manifest.dsse.json) nor a directory of bundles",
            )
            .into());
        }
        out.extend(subs);
    }
    Ok(out)
}

/// Verify every entry and rank the accepted ones (see [`verify::verify_entry`]).
pub fn build(entries: &[PathBuf], opts: &BuildOptions) -> Result<Site> {
    if entries.is_empty() {
        return Err(Error::input("ENTRIES", "no entries given").into());
    }
    if opts.keys.is_empty() {
        return Err(Error::input("--keys", "no trusted public keys (*.pub, *.pem)").into());
    }
    if let Some(t) = &opts.track {
        if opts.tracks.get(t).is_none() {
            return Err(Error::input(
                format!("--track {t}"),
                format!("not a track of {}", opts.tracks.source),
            )
            .into());
        }
    }
    let mut gold = verify::GoldCache::default();
    let mut reports: Vec<EntryReport> = entries
        .iter()
        .map(|e| verify::verify_entry(e, opts, &mut gold))
        .collect();
    // The same signed statement twice counts once: a later copy of an otherwise acceptable
    // entry is rejected as a duplicate (entries are in argument order, directories sorted).
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for r in reports.iter_mut() {
        if let (Some(p), true) = (&r.payload_sha256, r.reasons.is_empty()) {
            if let Some(first) = seen.get(p) {
                r.reasons.push(format!(
                    "duplicate of entry {first} (the same signed statement)"
                ));
            } else {
                seen.insert(p.clone(), r.entry.clone());
            }
        }
        r.accepted = r.reasons.is_empty();
    }
    Ok(Site::rank(reports, opts))
}
