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
//! 5. every predictions file is present with the signed `predictions_sha256`; the
//!    `glue/predictions` directory has the signed `dirHash` (no file added); each file
//!    re-scores to the signed trial metrics, and the median over trials to the signed set
//!    metrics.
//!
//! Gold labels for re-scoring ([`GoldPolicy::Trusted`], the default): the embedded demo dev sets
//! ([`crate::glue::demo::load`]) for `demo-*` sets, the GLUE dev files under `--glue-data` for
//! GLUE sets; a GLUE set without `--glue-data` is scored against the file's own gold column, and
//! the entry carries a note saying so. [`GoldPolicy::Column`] uses the gold column everywhere
//! (for synthetic test runs).
use super::{manifest_medians, manifest_predictions, predictions_path, predictions_subject};
use super::{Tracks, TOLERANCE};
use crate::glue::aggregate::{aggregate, median, Rule};
use crate::glue::tasks::{self, EvalSet, Example, Metrics};
use crate::glue::{data, demo, predictions};
use crate::manifest::keys::PublicKey;
use crate::record::RunRecord;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where gold labels for re-scoring come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GoldPolicy {
    /// Embedded demo dev sets; GLUE dev files from `--glue-data` (gold column without it).
    #[default]
    Trusted,
    /// The predictions files' own gold column.
    Column,
}

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
    /// `--keys`), `None` without a valid trusted signature.
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

/// Gold labels loaded once per set for all entries.
#[derive(Default)]
pub struct GoldCache {
    sets: HashMap<String, Result<Vec<Example>, String>>,
}

impl GoldCache {
    /// The trusted gold examples of `set`, or `None` when the policy or data says to use the
    /// gold column; `Err` when trusted gold should exist but cannot be loaded.
    fn get(
        &mut self,
        set: &EvalSet,
        opts: &BuildOptions,
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
            let dev = if set.task.is_glue() {
                glue_dev(opts.glue_data.as_deref().expect("checked above"), set)
            } else {
                demo::load(set.task).map(|td| {
                    td.dev
                        .into_iter()
                        .filter(|(s, _)| s.id == set.id)
                        .flat_map(|(_, ex)| ex)
                        .collect()
                })
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

/// The dev examples of a GLUE evaluation set under a GLUE data root (dev files only; the
/// training files are not read).
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

/// A regular file (symbolic links are not followed out of the entry).
fn regular_file(path: &Path) -> Result<(), String> {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(_) => Err(format!("{}: not a regular file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE
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
    r.predictions_digest = super::predictions_subject(record);
    let b = &p["budget"];
    r.used_device_hours = b["used_device_hours"].as_f64();
    r.allowed_device_hours = b["allowed_device_hours"].as_f64();
    r.devices = b["devices"].as_u64();
    r.device_kind = b["device_kind"].as_str().map(str::to_string);

    // 1. kind and bundle index.
    if let Err(e) = record.require_run() {
        r.reasons.push(format!("{e:#}"));
    }
    match super::submit::read_index(root) {
        Ok(Some(files)) => {
            for f in files {
                if !super::safe_rel(&f.path) {
                    r.reasons.push(format!(
                        "bundle.json lists {:?}, not a path inside the entry",
                        f.path
                    ));
                    continue;
                }
                if let Err(e) = regular_file(&root.join(&f.path)) {
                    r.reasons.push(format!("bundle.json lists {}: {e}", f.path));
                    continue;
                }
                match crate::provenance::hash::hash_file(&root.join(&f.path), &|_| {}) {
                    Ok(d) if d.sha256 == f.sha256 => {}
                    Ok(d) => r.reasons.push(format!(
                        "{}: sha256 {} differs from bundle.json's {}",
                        f.path, d.sha256, f.sha256
                    )),
                    Err(e) => r.reasons.push(format!("{}: {e:#}", f.path)),
                }
            }
        }
        Ok(None) => r
            .notes
            .push("no bundle.json (a run directory, not a `crambench submit` bundle)".into()),
        Err(e) => r.reasons.push(format!("{e:#}")),
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
        rescore(record, root, opts, gold, r);
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

    // 4. aggregate rule and value from the signed medians.
    let want = track.rule();
    match &r.aggregate {
        None => r.reasons.push("the manifest has no glue.aggregate".into()),
        Some((rule, value)) => {
            if rule != want.name() {
                r.reasons.push(format!(
                    "track {t}: aggregate rule is {rule}, the track's is {}",
                    want.name()
                ));
            }
            if let Ok(rule) = Rule::parse(rule) {
                match manifest_medians(record) {
                    Ok(m) => match aggregate(rule, &m) {
                        Ok(a) if close(a.value, *value) => {}
                        Ok(a) => r.reasons.push(format!(
                            "aggregate {value} does not follow from the per-set medians under {}: they give {}",
                            rule.name(),
                            a.value
                        )),
                        Err(e) => r.reasons.push(format!("aggregate cannot be recomputed: {e:#}")),
                    },
                    Err(e) => r.reasons.push(e),
                }
            } else {
                r.reasons.push(format!("unknown aggregate rule {rule}"));
            }
        }
    }
    rescore(record, root, opts, gold, r);
}

/// 5. Predictions: presence, digests, directory digest, re-scoring, medians.
fn rescore(
    record: &RunRecord,
    root: &Path,
    opts: &BuildOptions,
    gold: &mut GoldCache,
    r: &mut EntryReport,
) {
    match manifest_medians(record) {
        Ok(m) => r.medians = m,
        Err(e) => {
            r.reasons.push(e);
            return;
        }
    }
    let preds = match manifest_predictions(record) {
        Ok(p) => p,
        Err(e) => {
            r.reasons.push(e);
            return;
        }
    };
    let pred_dir = root.join(crate::record::GLUE_DIR).join("predictions");
    match (
        predictions_subject(record),
        crate::provenance::hash::hash_dir(&pred_dir, &|_| {}),
    ) {
        (Some(signed), Ok(d)) if d.dir_hash != signed => r.reasons.push(format!(
            "glue/predictions: dirHash {} differs from the signed predictions subject {signed}",
            d.dir_hash
        )),
        (None, _) => r
            .reasons
            .push("the manifest has no predictions subject (role = predictions)".into()),
        (_, Err(e)) => r.reasons.push(format!("glue/predictions: {e:#}")),
        _ => {}
    }
    // Re-scored metrics per set, per trial.
    let mut rescored: BTreeMap<String, Vec<Option<Metrics>>> = BTreeMap::new();
    for sp in &preds {
        let slot = rescored.entry(sp.set.clone()).or_default();
        slot.push(None);
        let at = format!("{} trial {} ({})", sp.set, sp.trial, sp.rel);
        let path = predictions_path(root, sp);
        if let Err(e) = regular_file(&path) {
            r.reasons.push(format!("{at}: {e}"));
            continue;
        }
        match crate::provenance::hash::hash_file(&path, &|_| {}) {
            Ok(d) if d.sha256 == sp.sha256 => {}
            Ok(d) => {
                r.reasons.push(format!(
                    "{at}: sha256 {} differs from the signed predictions_sha256 {}",
                    d.sha256, sp.sha256
                ));
                continue;
            }
            Err(e) => {
                r.reasons.push(format!("{at}: {e:#}"));
                continue;
            }
        }
        let set = match tasks::eval_set(&sp.set) {
            Ok(s) => s,
            Err(e) => {
                r.reasons.push(format!("{}: {e:#}", sp.set));
                continue;
            }
        };
        let rows = match predictions::read(&set, &path) {
            Ok(rows) => rows,
            Err(e) => {
                r.reasons.push(format!("{at}: {e:#}"));
                continue;
            }
        };
        if let Some(n) = sp.dev_examples {
            if n != rows.len() as u64 {
                r.reasons.push(format!(
                    "{at}: {} predictions, the manifest says dev_examples = {n}",
                    rows.len()
                ));
            }
        }
        let src = path.display().to_string();
        let scored = match gold.get(&set, opts) {
            Some(Ok((ex, source))) => {
                r.gold.insert(sp.set.clone(), source);
                predictions::score_against(&set, &rows, ex, &src)
            }
            Some(Err(e)) => {
                r.reasons.push(e);
                continue;
            }
            None => {
                r.gold
                    .insert(sp.set.clone(), "gold column of the predictions file".into());
                predictions::score_rows(&set, &rows, &src)
            }
        };
        let m = match scored {
            Ok(m) => m,
            Err(e) => {
                r.reasons.push(format!("{at}: cannot be re-scored: {e:#}"));
                continue;
            }
        };
        for (k, v) in &sp.metrics {
            match m.get(k) {
                Some(x) if close(*x, *v) => {}
                Some(x) => r
                    .reasons
                    .push(format!("{at}: {k} re-scores to {x}, the manifest says {v}")),
                None => r.reasons.push(format!(
                    "{at}: the manifest states {k}, which {} does not have",
                    sp.set
                )),
            }
        }
        *slot.last_mut().expect("pushed above") = Some(m);
    }
    // Medians of the re-scored trials against the signed set metrics.
    for (set, trials) in &rescored {
        if trials.iter().any(Option::is_none) {
            continue; // already a reason
        }
        let Some(signed) = r.medians.get(set) else {
            continue;
        };
        for (k, v) in signed {
            let vals: Vec<f64> = trials
                .iter()
                .filter_map(|m| m.as_ref().and_then(|m| m.get(k)).copied())
                .collect();
            match median(&vals) {
                Some(x) if vals.len() == trials.len() && close(x, *v) => {}
                Some(x) if vals.len() == trials.len() => r.reasons.push(format!(
                    "{set}: median {k} over the re-scored trials is {x}, the manifest says {v}"
                )),
                _ => r.reasons.push(format!(
                    "{set}: the manifest states median {k}, which the trials do not have"
                )),
            }
        }
    }
    if r.gold.values().any(|g| g.starts_with("gold column")) && opts.gold == GoldPolicy::Trusted {
        let sets: Vec<&str> = r
            .gold
            .iter()
            .filter(|(_, g)| g.starts_with("gold column"))
            .map(|(s, _)| s.as_str())
            .collect();
        r.notes.push(format!(
            "re-scored against the submitted gold column for {} (pass --glue-data for trusted gold)",
            sets.join(", ")
        ));
    }
}
