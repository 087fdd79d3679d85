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
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::audit::GoldPolicy;
pub use render::{write_site, Site};
pub use tracks::{Track, Tracks};
pub use verify::{BuildOptions, EntryReport};

pub use crate::audit::{
    manifest_medians, manifest_predictions, safe_rel, SignedPredictions, TOLERANCE,
};

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
    let mut gold = crate::audit::GoldCache::default();
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
