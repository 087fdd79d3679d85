//! The leaderboard: submission bundles ([`submit`]), track rules ([`tracks`]), verification of
//! every entry against trusted keys and its track ([`verify`]) and the static site
//! ([`render`]).
//!
//! `crambench leaderboard build ENTRIES --trust DIR --out site/` ([`build`]) trusts nothing an
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
            // Symbolic links are listed (and rejected as entries), never followed.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() || t.is_symlink()))
            .map(|e| e.path())
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
        return Err(Error::input("--trust", "no trusted public keys (*.pub, *.pem)").into());
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
    for r in reports.iter_mut() {
        r.submitter = submitter_name(&r.signers, &opts.keys);
    }
    resolve_duplicates(&mut reports);
    for r in reports.iter_mut() {
        r.accepted = r.reasons.is_empty();
    }
    Ok(Site::rank(reports, opts))
}

/// The submitter of an entry: the names (file stems) of the trusted keys that signed it, in
/// the order of `--trust`, joined by ` + `.
fn submitter_name(signers: &[String], keys: &[crate::manifest::keys::PublicKey]) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for k in keys {
        if signers.contains(&k.keyid) {
            let stem = Path::new(&k.source)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| k.keyid.chars().take(16).collect());
            if !names.contains(&stem) {
                names.push(stem);
            }
        }
    }
    (!names.is_empty()).then(|| names.join(" + "))
}

/// `created` as a comparable key: crambench writes `YYYY-MM-DDTHH:MM:SSZ` (UTC), which sorts
/// as text; anything else is unknown (`None`), and an unknown time is never the earliest.
fn created_key(created: Option<&str>) -> Option<&str> {
    let c = created?;
    let b = c.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, ch)| match i {
            4 | 7 => *ch == b'-',
            10 => *ch == b'T',
            13 | 16 => *ch == b':',
            19 => *ch == b'Z',
            _ => ch.is_ascii_digit(),
        });
    shape.then_some(c)
}

/// Copies among the otherwise acceptable entries. A submitter is a signing key, never a
/// directory name, and processing order decides nothing that matters:
///
/// * The same signed statement several times, signed by keys in common (the same submitter,
///   perhaps with a co-signer more): counted once; the others are rejected as duplicates. They
///   are byte-identical and credited to the same key, so which directory is kept is immaterial.
/// * The same signed statement, or different statements with the same predictions, from
///   submitters with no key in common: the one with the earliest signed `created` is ranked and
///   the later ones are rejected as copies; when no single entry is the earliest (the same
///   statement, equal or unreadable times) all of them are rejected, with the reason.
fn resolve_duplicates(reports: &mut [EntryReport]) {
    let ok: Vec<usize> = (0..reports.len())
        .filter(|&i| reports[i].reasons.is_empty())
        .collect();
    let disjoint =
        |a: &EntryReport, b: &EntryReport| !a.signers.iter().any(|k| b.signers.contains(k));
    let mut add: Vec<(usize, String)> = Vec::new();
    // Same statement, same submitter: keep the first.
    for (n, &i) in ok.iter().enumerate() {
        for &j in &ok[..n] {
            let (a, b) = (&reports[j], &reports[i]);
            if a.payload_sha256.is_some() && a.payload_sha256 == b.payload_sha256 && !disjoint(a, b)
            {
                add.push((
                    i,
                    format!(
                        "duplicate of entry {} (the same signed statement, submitted by {}; counted once)",
                        a.entry,
                        a.submitter.as_deref().unwrap_or("the same key")
                    ),
                ));
                break;
            }
        }
    }
    let dup: Vec<usize> = add.iter().map(|(i, _)| *i).collect();
    // Claims by different submitters on one statement or one set of predictions.
    let same_work = |a: &EntryReport, b: &EntryReport| {
        (a.payload_sha256.is_some() && a.payload_sha256 == b.payload_sha256)
            || (a.predictions_digest.is_some() && a.predictions_digest == b.predictions_digest)
    };
    for &i in ok.iter().filter(|i| !dup.contains(i)) {
        let rivals: Vec<usize> = ok
            .iter()
            .copied()
            .filter(|&j| j != i && !dup.contains(&j))
            .filter(|&j| same_work(&reports[i], &reports[j]) && disjoint(&reports[i], &reports[j]))
            .collect();
        if rivals.is_empty() {
            continue;
        }
        let me = created_key(reports[i].created.as_deref());
        let earliest = rivals
            .iter()
            .filter_map(|&j| created_key(reports[j].created.as_deref()).map(|c| (c, j)))
            .min();
        let what = |j: usize| {
            if reports[i].payload_sha256 == reports[j].payload_sha256 {
                "the same signed statement".to_string()
            } else {
                format!(
                    "the same predictions (dirHash {})",
                    reports[j].predictions_digest.as_deref().unwrap_or("?")
                )
            }
        };
        let by = |j: usize| {
            reports[j]
                .submitter
                .clone()
                .unwrap_or_else(|| "another key".into())
        };
        match (me, earliest) {
            // This one is the earliest signed (the rivals' times are later or unreadable).
            (Some(m), Some((c, _))) if m < c => {}
            (Some(_), None) => {}
            (Some(m), Some((c, j))) if m > c => add.push((
                i,
                format!(
                    "copy of entry {}: {} signed earlier by {} (created {c}, this one {m}); the earliest signed entry is ranked",
                    reports[j].entry,
                    what(j),
                    by(j)
                ),
            )),
            (None, Some((c, j))) => add.push((
                i,
                format!(
                    "copy of entry {}: {} signed by {} (created {c}); this entry has no readable created time, so it cannot be the earliest",
                    reports[j].entry,
                    what(j),
                    by(j)
                ),
            )),
            (_, _) => {
                let j = rivals[0];
                add.push((
                    i,
                    format!(
                        "contested: {} as entry {} is claimed by {} and by {} with no earlier signed created time for either; neither is ranked",
                        what(j),
                        reports[j].entry,
                        reports[i].submitter.as_deref().unwrap_or("this key"),
                        by(j)
                    ),
                ));
            }
        }
    }
    for (i, reason) in add {
        reports[i].reasons.push(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        name: &str,
        key: &str,
        created: Option<&str>,
        payload: &str,
        preds: &str,
    ) -> EntryReport {
        EntryReport {
            entry: format!("entries/{name}"),
            name: name.into(),
            submitter: Some(key.into()),
            signers: vec![key.into()],
            created: created.map(str::to_string),
            payload_sha256: Some(payload.into()),
            predictions_digest: Some(preds.into()),
            ..Default::default()
        }
    }

    fn outcome(mut v: Vec<EntryReport>) -> Vec<(String, Option<String>)> {
        resolve_duplicates(&mut v);
        v.into_iter()
            .map(|r| (r.name, r.reasons.first().cloned()))
            .collect()
    }

    fn kept(o: &[(String, Option<String>)]) -> Vec<&str> {
        o.iter()
            .filter(|(_, r)| r.is_none())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    #[test]
    fn the_earliest_signed_claim_wins_whatever_the_order() {
        let t1 = Some("2026-11-28T12:00:00Z");
        let t2 = Some("2026-11-29T12:00:00Z");
        // Another submitter's later statement with the same predictions, listed first.
        let o = outcome(vec![
            entry("aa-copy", "mallory", t2, "p2", "d"),
            entry("zz-orig", "alice", t1, "p1", "d"),
        ]);
        assert_eq!(kept(&o), ["zz-orig"]);
        assert!(o[0]
            .1
            .as_deref()
            .unwrap()
            .starts_with("copy of entry entries/zz-orig"));
        // An unreadable time is never the earliest.
        let o = outcome(vec![
            entry("aa", "mallory", Some("yesterday"), "p2", "d"),
            entry("zz", "alice", t1, "p1", "d"),
        ]);
        assert_eq!(kept(&o), ["zz"]);
        // The same statement re-signed by someone else: equal times, nobody is ranked.
        let o = outcome(vec![
            entry("a", "alice", t1, "p", "d"),
            entry("b", "mallory", t1, "p", "d"),
        ]);
        assert!(kept(&o).is_empty());
        assert!(o
            .iter()
            .all(|(_, r)| r.as_deref().unwrap().starts_with("contested")));
        // The same statement by the same key: counted once.
        let o = outcome(vec![
            entry("a", "alice", t1, "p", "d"),
            entry("b", "alice", t1, "p", "d"),
        ]);
        assert_eq!(kept(&o), ["a"]);
        assert!(o[1]
            .1
            .as_deref()
            .unwrap()
            .starts_with("duplicate of entry entries/a"));
        // Different predictions and statements: independent entries.
        let o = outcome(vec![
            entry("a", "alice", t1, "p1", "d1"),
            entry("b", "mallory", t1, "p2", "d2"),
        ]);
        assert_eq!(kept(&o), ["a", "b"]);
    }
}
