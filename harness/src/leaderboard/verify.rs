//! Checking one leaderboard entry: signature, statement, track rules, predictions.
//!
//! Every check runs (as far as the entry can be read) and every failure becomes a reason, so a
//! submitter sees all that is wrong at once. The checks, in order:
//!
//! 1. the entry opens ([`RunRecord::open`]: schema-valid statement) and is a `kind = "run"`
//!    manifest; its `bundle.json`, when present, lists files that exist with those digests;
//! 2. the envelope is signed and verifies under a trusted key;
//! 3. the track (`--track`, else the first whose rule is the entry's aggregate rule) exists;
//!    pretraining from scratch (`pretraining.steps > 0`); `budget.allowed_device_hours` ≤ the
//!    track's maximum; `budget.used_device_hours` ≤ both, plus the track's
//!    `budget_overrun_seconds`;
//!    `budget.devices` equals the track's; the device kind is allowed;
//!    `recipe.resolved.glue.epochs` ≤ the track's maximum; `data.root_digest` is on the
//!    allowlist;
//! 4. the aggregate's rule is the track's, and [`aggregate`] over the signed per-set medians
//!    gives the signed value (within [`TOLERANCE`]);
//! 5. the artifacts ([`crate::audit`], the one implementation `verify`, `gate` and `submit`
//!    share): every file `bundle.json` lists and every subject inside the entry at its digest
//!    (the `glue/predictions` directory at the signed `dirHash`: no file added); every
//!    predictions file present with the signed `predictions_sha256`, re-scoring to the signed
//!    trial metrics, and the median over trials to the signed set metrics. Paths resolve inside
//!    the entry only, with no symbolic link in any component; nothing outside it is read, and
//!    no digest or error of a file outside it is reported.
//!
//! Gold labels for re-scoring ([`GoldPolicy::Trusted`], the default): the embedded demo dev sets
//! ([`crate::glue::demo::load`]) for `demo-*` sets, the GLUE dev files under `--glue-data` for
//! GLUE sets; a GLUE set without `--glue-data` is scored against the file's own gold column, and
//! the entry carries a note saying so. [`GoldPolicy::Column`] uses the gold column everywhere
//! (for synthetic test runs).
use super::{manifest_medians, Tracks};
use crate::audit::{self, GoldCache, GoldPolicy, Kind, Status};
use crate::glue::aggregate::Rule;
use crate::manifest::keys::PublicKey;
use crate::record::RunRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `leaderboard build` checks against.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Trusted public keys (`manifests/keys/`).
    pub keys: Vec<PublicKey>,
    pub tracks: Tracks,
    /// Put every entry in this track instead of choosing by rule.
    pub track: Option<String>,
    /// GLUE data root with the dev files (TSV or Parquet layout).
    pub glue_data: Option<PathBuf>,
    pub gold: GoldPolicy,
}

/// The outcome for one entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EntryReport {
    /// The entry path as given.
    pub entry: String,
    /// Its directory name: a locator, not an identity (anyone can copy an entry under any
    /// name). Tables show [`EntryReport::submitter`].
    pub name: String,
    /// Who submitted it: the names of the trusted keys that signed it (their file stems in
    /// `--trust`), `None` without a valid trusted signature.
    pub submitter: Option<String>,
    /// The dirHash of the signed `predictions` subject.
    pub predictions_digest: Option<String>,
    pub accepted: bool,
    /// Why it was rejected (empty when accepted).
    pub reasons: Vec<String>,
    /// Caveats that do not reject (e.g. self-reported gold labels).
    pub notes: Vec<String>,
    pub track: Option<String>,
    pub recipe: Option<String>,
    /// (rule, percent points) as signed.
    pub aggregate: Option<(String, f64)>,
    /// Signed per-set medians (fractions).
    pub medians: BTreeMap<String, BTreeMap<String, f64>>,
    pub used_device_hours: Option<f64>,
    pub allowed_device_hours: Option<f64>,
    pub devices: Option<u64>,
    pub device_kind: Option<String>,
    pub hardware_class: Option<String>,
    /// Key ids of the trusted keys that signed it.
    pub signers: Vec<String>,
    pub created: Option<String>,
    /// SHA-256 of the signed statement.
    pub payload_sha256: Option<String>,
    /// Where each set's gold labels came from.
    pub gold: BTreeMap<String, String>,
    /// Rank within its track (accepted entries only; 1 = best).
    pub rank: Option<usize>,
}

/// Verify one entry (see the module doc). Never fails: problems become reasons.
pub fn verify_entry(path: &Path, opts: &BuildOptions, gold: &mut GoldCache) -> EntryReport {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let mut r = EntryReport {
        entry: path.display().to_string(),
        name,
        submitter: None,
        predictions_digest: None,
        accepted: false,
        reasons: Vec::new(),
        notes: Vec::new(),
        track: None,
        recipe: None,
        aggregate: None,
        medians: BTreeMap::new(),
        used_device_hours: None,
        allowed_device_hours: None,
        devices: None,
        device_kind: None,
        hardware_class: None,
        signers: Vec::new(),
        created: None,
        payload_sha256: None,
        gold: BTreeMap::new(),
        rank: None,
    };
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        r.reasons.push(
            "a symbolic link, not an entry directory (entries are not followed out of the \
             submissions)"
                .into(),
        );
        return r;
    }
    let record = match RunRecord::open(path) {
        Ok(rec) => rec,
        Err(e) => {
            r.reasons.push(format!("cannot be read: {e:#}"));
            return r;
        }
    };
    check(&record, path, opts, gold, &mut r);
    r.accepted = r.reasons.is_empty();
    r
}

fn check(
    record: &RunRecord,
    root: &Path,
    opts: &BuildOptions,
    gold: &mut GoldCache,
    r: &mut EntryReport,
) {
    let p = record.predicate();
    r.recipe = record.recipe_name().map(str::to_string);
    r.aggregate = record.aggregate().map(|(a, v)| (a.to_string(), v));
    r.hardware_class = Some(record.hardware_class().to_string()).filter(|s| !s.is_empty());
    r.created = p["created"].as_str().map(str::to_string);
    r.payload_sha256 = Some(crate::provenance::hash::sha256_hex(&record.payload));
    r.predictions_digest = crate::audit::predictions_subject(record);
    let b = &p["budget"];
    r.used_device_hours = b["used_device_hours"].as_f64();
    r.allowed_device_hours = b["allowed_device_hours"].as_f64();
    r.devices = b["devices"].as_u64();
    r.device_kind = b["device_kind"].as_str().map(str::to_string);

    // 1. kind and bundle index.
    if let Err(e) = record.require_run() {
        r.reasons.push(format!("{e:#}"));
    }
    if root
        .join(crate::record::BUNDLE_INDEX)
        .symlink_metadata()
        .is_err()
    {
        r.notes
            .push("no bundle.json (a run directory, not a `crambench submit` bundle)".into());
    }

    // 2. signature.
    if !record.signed() {
        r.reasons
            .push("unsigned: no DSSE envelope with a signature (manifest.dsse.json)".into());
    } else {
        match record.verify(&opts.keys, 1) {
            Ok(v) => r.signers = v.valid_keys,
            Err(_) => {
                let hints: Vec<String> = record
                    .envelope
                    .as_ref()
                    .map(|e| {
                        e.signatures
                            .iter()
                            .map(|s| s.keyid.clone().unwrap_or_else(|| "(no keyid)".into()))
                            .collect()
                    })
                    .unwrap_or_default();
                r.reasons.push(format!(
                    "signature not valid under any trusted key (the payload was altered, or it \
                     was signed by an untrusted key; claimed keyids: {})",
                    hints.join(", ")
                ));
            }
        }
    }

    // 3. track rules.
    let rule_name = r.aggregate.as_ref().map(|(a, _)| a.clone());
    let track = opts
        .tracks
        .select(opts.track.as_deref(), rule_name.as_deref());
    let Some(track) = track else {
        r.reasons.push(format!(
            "no track takes the aggregate rule {} (tracks: {})",
            rule_name.as_deref().unwrap_or("(none)"),
            opts.tracks
                .tracks
                .iter()
                .map(|t| format!("{} = {}", t.name, t.aggregate_rule))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        artifacts(record, opts, gold, r);
        return;
    };
    r.track = Some(track.name.clone());
    let t = &track.name;
    if track.from_scratch {
        match p["pretraining"]["steps"].as_u64() {
            Some(s) if s > 0 && record.kind() == "run" => {}
            Some(_) => r
                .reasons
                .push(format!("track {t}: pretraining from scratch required, but pretraining.steps is 0")),
            None => r.reasons.push(format!(
                "track {t}: pretraining from scratch required, but the manifest has no pretraining.steps"
            )),
        }
    }
    let max = track.max_device_hours;
    // The last step crosses the budget (the trainer checks the clock after each step).
    let slack_h = track.budget_overrun_seconds / 3600.0;
    let over = track.budget_overrun_seconds;
    match r.allowed_device_hours {
        Some(a) if a <= max => {}
        Some(a) => r.reasons.push(format!(
            "track {t}: declared budget {a} device-hours exceeds the track's {max}"
        )),
        None => r
            .reasons
            .push("budget.allowed_device_hours missing".to_string()),
    }
    match r.used_device_hours {
        Some(u) if !u.is_finite() || u < 0.0 => {
            r.reasons.push(format!("budget.used_device_hours is {u}"))
        }
        Some(u) => {
            if u > max + slack_h {
                r.reasons.push(format!(
                    "track {t}: used {u} device-hours, over the track's {max} (+ {over} s for the last step)"
                ));
            }
            if let Some(a) = r.allowed_device_hours {
                if u > a + slack_h {
                    r.reasons.push(format!(
                        "used {u} device-hours, over the run's own budget {a} (+ {over} s for the last step)"
                    ));
                }
            }
        }
        None => r
            .reasons
            .push("budget.used_device_hours missing".to_string()),
    }
    match r.devices {
        Some(d) if d == track.devices as u64 => {}
        Some(d) => r.reasons.push(format!(
            "track {t}: {d} devices, the track requires {}",
            track.devices
        )),
        None => r.reasons.push("budget.devices missing".to_string()),
    }
    match r.device_kind.as_deref() {
        Some(k) if track.device_kind_allowed(k) => {}
        k => r.reasons.push(format!(
            "track {t}: device kind {} not allowed ({})",
            k.unwrap_or("(missing)"),
            track.device_kinds.join(", ")
        )),
    }
    match p["recipe"]["resolved"]["glue"]["epochs"].as_f64() {
        Some(e) if e <= track.max_finetune_epochs => {}
        Some(e) => r.reasons.push(format!(
            "track {t}: fine-tuning for {e} epochs, the track allows at most {}",
            track.max_finetune_epochs
        )),
        None => r
            .reasons
            .push("recipe.resolved.glue.epochs missing: fine-tuning epochs unknown".into()),
    }
    match p["data"]["root_digest"].as_str() {
        Some(d) if track.data_root_digests.iter().any(|a| a == d) => {}
        Some(d) if track.data_root_digests.is_empty() => r.reasons.push(format!(
            "track {t}: data root digest {d} is not allowed (the track lists no data digests yet; \
             entries are refused until the maintainers add them)"
        )),
        Some(d) => r.reasons.push(format!(
            "track {t}: data root digest {d} is not in the track's allowlist"
        )),
        None => r.reasons.push("data.root_digest missing".into()),
    }

    // 4. aggregate rule (its value is recomputed from the signed medians by the audit).
    let want = track.rule();
    match &r.aggregate {
        None => r.reasons.push("the manifest has no glue.aggregate".into()),
        Some((rule, _)) if Rule::parse(rule).is_err() => {
            r.reasons.push(format!("unknown aggregate rule {rule}"))
        }
        Some((rule, _)) if rule != want.name() => r.reasons.push(format!(
            "track {t}: aggregate rule is {rule}, the track's is {}",
            want.name()
        )),
        Some(_) => {}
    }
    artifacts(record, opts, gold, r);
}

/// Step 5, the entry's artifacts ([`audit::audit`]): bundle files, subjects inside the entry,
/// predictions (digests, re-scores, medians) and the aggregate. Everything not verified that an
/// entry must have becomes a reason; a subject an entry does not carry (the checkpoint, the
/// dataset) is not required.
fn artifacts(record: &RunRecord, opts: &BuildOptions, gold: &mut GoldCache, r: &mut EntryReport) {
    match manifest_medians(record) {
        Ok(m) => r.medians = m,
        Err(e) => {
            r.reasons.push(e);
            return;
        }
    }
    if r.signers.is_empty() {
        // Nothing an untrusted statement names is read.
        r.notes
            .push("artifacts not checked: the signature is not valid under a trusted key".into());
        return;
    }
    let a = audit::audit(
        record,
        &audit::Options {
            materials: false,
            gold: opts.gold,
            glue_data: opts.glue_data.clone(),
            digests_only: false,
        },
        gold,
    );
    for i in &a.items {
        let required = match i.kind {
            Kind::Subject => i.role.as_deref() == Some("predictions"),
            Kind::Medians => i.status != Status::NotChecked,
            _ => true,
        };
        if i.status != Status::Verified && (required || i.status.is_failure()) {
            r.reasons.push(match i.status {
                Status::Mismatch => format!("{}: {}", i.name, i.detail),
                st => format!("{}: {} ({})", i.name, st.as_str(), i.detail),
            });
        }
    }
    r.gold = a.gold;
    r.notes.extend(a.notes);
}
