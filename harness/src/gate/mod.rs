//! `crambench gate`: the CI regression check of a candidate run against a baseline run on the
//! same hardware class, with thresholds from a TOML file ([`thresholds`]), a Markdown summary
//! and a signed in-toto test-result attestation.
//!
//! # Checks
//!
//! * `hardware-class` — the two runs' `fingerprint.hardware_class` must be equal. Otherwise
//!   the gate refuses (bad input, exit 2) unless `--allow-hardware-mismatch`, which turns this
//!   check into a warning.
//! * `throughput` — `pretraining.tokens_per_second` of the candidate must not be below the
//!   baseline's by more than `throughput_max_drop_percent` percent:
//!   fail iff `cand < base · (1 − X/100)`.
//! * `mlm-loss` — `pretraining.final_mlm_loss` of the candidate must not exceed the baseline's
//!   by more than `loss_max_increase` (absolute): fail iff `cand > base + Y`.
//! * `glue/<set>/<metric>` for every evaluation set of the baseline and each metric the
//!   baseline's aggregate rule uses for that set (every metric of the set when the rule does
//!   not use it), and `glue/aggregate/<rule>` — "not significantly worse", below.
//!
//! A check whose numbers are missing from either manifest is **skipped** with the reason; a
//! skipped check is reported as a warning, never as a pass.
//!
//! # "Not significantly worse"
//!
//! All values are in percent points; `δ = glue_min_drop_points`, `α = alpha`. The question is
//! one-sided: *is the candidate worse than the baseline by more than δ?* —
//! `H0: Δ ≥ −δ` against `H1: Δ < −δ`, where Δ is candidate − baseline. A check **fails** iff
//! `p < α` **and** the observed Δ is below `−δ` (so a drop smaller than δ never fails).
//!
//! 1. **Paired bootstrap over dev examples** when both runs have per-example predictions for
//!    the set (run directories or bundles with `glue/predictions`, every file matching its
//!    `predictions_sha256` and re-scoring to the manifest's trial metrics) and the
//!    predictions pair up by `idx` with equal gold labels. See [`bootstrap`]: B =
//!    `bootstrap_resamples` resamples of the dev examples (the same draw for both runs and all
//!    their trials), metric re-computed per trial, the trial median per run; `d_b` =
//!    candidate − baseline. `p = (1 + #{b : d_b ≥ −δ}) / (1 + B)` — the percentile-bootstrap
//!    test: `p < α` exactly when the one-sided upper (1 − α) percentile bound of Δ lies
//!    below −δ. The observed Δ is the difference of the manifests' trial medians. For the
//!    aggregate, each resample recomputes the rule from the per-set resampled medians (sets
//!    resampled independently, with the streams of the per-set checks), so it needs paired
//!    predictions for every set the rule uses.
//! 2. Otherwise, with **at least 2 trials on each side**, **Welch's t-test** over the trials'
//!    metrics ([`ttest::welch_less`]): `t = (mean_c − mean_b + δ) / √(s_c²/n_c + s_b²/n_b)`,
//!    Welch–Satterthwaite df, `p = P(T_df ≤ t)` — equal to
//!    `scipy.stats.ttest_ind(c + δ, b, equal_var=False, alternative="less")`. The observed Δ is
//!    the difference of the means. For the aggregate, trial k's aggregate is the rule applied
//!    to every set's trial-k metrics (trials are independent seeds per task), over the trials
//!    all sets share.
//! 3. Otherwise the check is skipped with the reason.
//!
//! The runs must use the same fine-tuning protocol (`glue.protocol`), otherwise every GLUE
//! check is **refused**; the aggregate check needs the same aggregate rule, otherwise it is
//! refused. A refused check makes the gate's input unusable (exit 2): the summary is still
//! written, no attestation is.
//!
//! # Outcome
//!
//! `FAILED` when a check failed (exit 1); else `WARNED` when one was skipped or only warned
//! (exit 0); else `PASSED` (exit 0). The attestation is an in-toto Statement with predicate
//! type [`PREDICATE_TYPE`], subject = the candidate manifest's payload SHA-256, and
//! `configuration` = the thresholds file and both manifests with their SHA-256.
/// The bootstrap lives with GLUE (`glue run` records its intervals with it); the gate uses the
/// same implementation.
pub use crate::glue::bootstrap;
pub mod thresholds;
pub mod ttest;

use crate::error::Error;
use crate::escape::markdown as md;
use crate::glue::aggregate::Rule;
use crate::glue::predictions::Row;
use crate::glue::tasks::{self, EvalSet};
use crate::provenance::hash::sha256_hex;
use crate::record::RunRecord;
use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
pub use thresholds::Thresholds;

/// The in-toto test-result predicate type.
pub const PREDICATE_TYPE: &str = "https://in-toto.io/attestation/test-result/v0.1";

/// What became of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    /// Passed with a caveat (hardware mismatch allowed).
    Warned,
    /// Not evaluated: the numbers it needs are missing (the reason is in `detail`).
    Skipped,
    /// Not evaluated because the runs are not comparable (different protocol or rule).
    Refused,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `throughput`, `mlm-loss`, `glue/<set>/<metric>`, `glue/aggregate/<rule>`, …
    pub name: String,
    pub status: Status,
    /// `ratio`, `difference`, `paired-bootstrap`, `welch-t`, `equality`, or `none`.
    pub method: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// candidate − baseline, in `unit`.
    pub delta: Option<f64>,
    /// Unit of the values (`tokens/s`, `loss`, `percent points`).
    pub unit: String,
    /// The threshold, in words.
    pub limit: String,
    pub p_value: Option<f64>,
    /// How it was decided, or why it was skipped or refused.
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, unit: &str, limit: String) -> Check {
        Check {
            name: name.into(),
            status: Status::Skipped,
            method: "none".into(),
            baseline: None,
            candidate: None,
            delta: None,
            unit: unit.into(),
            limit,
            p_value: None,
            detail: String::new(),
        }
    }
}

/// A file the gate read, with its SHA-256.
#[derive(Debug, Clone, Serialize)]
pub struct FileRef {
    pub name: String,
    pub sha256: String,
}

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub source: String,
    /// SHA-256 of the manifest's statement bytes (the envelope's payload).
    pub payload_sha256: String,
    pub recipe: Option<String>,
    pub hardware_class: String,
    pub protocol: Option<String>,
    pub aggregate_rule: Option<String>,
    pub aggregate: Option<f64>,
}

impl RunInfo {
    fn of(r: &RunRecord) -> RunInfo {
        RunInfo {
            source: r.source.clone(),
            payload_sha256: sha256_hex(&r.payload),
            recipe: r.recipe_name().map(str::to_string),
            hardware_class: r.hardware_class().to_string(),
            protocol: protocol(r).map(str::to_string),
            aggregate_rule: r.aggregate().map(|(rule, _)| rule.to_string()),
            aggregate: r.aggregate().map(|(_, v)| v),
        }
    }
}

/// The overall result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Passed,
    Warned,
    Failed,
    /// A check was refused: the input cannot be gated (exit 2; no attestation).
    Refused,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Passed => "PASSED",
            Outcome::Warned => "WARNED",
            Outcome::Failed => "FAILED",
            Outcome::Refused => "REFUSED",
        }
    }
}

/// Everything the gate decided.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub result: Outcome,
    pub baseline: RunInfo,
    pub candidate: RunInfo,
    pub thresholds_file: FileRef,
    pub thresholds: Thresholds,
    pub checks: Vec<Check>,
}

/// The thresholds in force and what they came from: `path` when given (over the built-in
/// values); else [`thresholds::DEFAULT_PATH`] when it exists in the working directory; else the
/// built-in values ([`thresholds::BUILT_IN`], named [`thresholds::BUILT_IN_NAME`]).
pub fn resolve_thresholds(path: Option<&Path>) -> Result<(Thresholds, FileRef)> {
    match path {
        Some(p) => load_thresholds(p),
        None if Path::new(thresholds::DEFAULT_PATH).is_file() => {
            load_thresholds(Path::new(thresholds::DEFAULT_PATH))
        }
        None => Ok((
            Thresholds::built_in(),
            FileRef {
                name: thresholds::BUILT_IN_NAME.into(),
                sha256: sha256_hex(thresholds::BUILT_IN.as_bytes()),
            },
        )),
    }
}

/// Read a thresholds file once: the parsed thresholds and the file's SHA-256.
pub fn load_thresholds(path: &Path) -> Result<(Thresholds, FileRef)> {
    let bytes = crate::io::read_limited(path, 1 << 20)?;
    let name = path.display().to_string();
    let text =
        std::str::from_utf8(&bytes).map_err(|e| Error::input(&name, format!("not UTF-8: {e}")))?;
    let t = Thresholds::parse(text, &name)?;
    Ok((
        t,
        FileRef {
            name,
            sha256: sha256_hex(&bytes),
        },
    ))
}

fn protocol(r: &RunRecord) -> Option<&str> {
    Some(r.glue()?.protocol.as_str())
}

/// `predicate.pretraining`, when the manifest has it.
fn pretraining(r: &RunRecord) -> Option<&crate::manifest::predicate::PretrainingSection> {
    r.predicate.pretraining.as_ref()
}

/// Run every check of `candidate` against `baseline`.
///
/// Errors (bad input, exit 2): either is not a `crambench run` manifest; the hardware classes
/// differ without `allow_hardware_mismatch`; a predictions file does not match its manifest.
pub fn evaluate(
    baseline: &RunRecord,
    candidate: &RunRecord,
    thresholds: &Thresholds,
    thresholds_file: FileRef,
    allow_hardware_mismatch: bool,
) -> Result<GateReport> {
    baseline.require_run()?;
    candidate.require_run()?;
    let mut checks = Vec::new();

    let (hb, hc) = (baseline.hardware_class(), candidate.hardware_class());
    let mut hw = Check::new("hardware-class", "", "equal".into());
    hw.method = "equality".into();
    if hb == hc {
        hw.status = Status::Passed;
        hw.detail = format!("both {hb}");
    } else if allow_hardware_mismatch {
        hw.status = Status::Warned;
        hw.detail =
            format!("baseline {hb}, candidate {hc}: compared anyway (--allow-hardware-mismatch)");
    } else {
        return Err(Error::input(
            &candidate.source,
            format!(
                "hardware class {hc:?} differs from the baseline's {hb:?} ({}): the gate \
                 compares runs on one hardware class only (pass --allow-hardware-mismatch to \
                 compare anyway)",
                baseline.source
            ),
        )
        .into());
    }
    checks.push(hw);

    checks.push(throughput_check(baseline, candidate, thresholds));
    checks.push(loss_check(baseline, candidate, thresholds));
    // Both runs' artifacts against their signed manifests (the one audit `verify`, `submit` and
    // `leaderboard` use): a run whose files do not match what it signed is unusable input.
    let opts = crate::audit::Options {
        gold: crate::audit::GoldPolicy::Column,
        ..Default::default()
    };
    let mut gold = crate::audit::GoldCache::default();
    let ab = crate::audit::audit(baseline, &opts, &mut gold);
    let ac = crate::audit::audit(candidate, &opts, &mut gold);
    for (r, a) in [(baseline, &ab), (candidate, &ac)] {
        // Files only, the most specific first (a predictions file names what changed; the
        // predictions directory's dirHash only that something did); medians and the aggregate
        // are what the checks compare.
        use crate::audit::Kind;
        let bad = a
            .failures()
            .find(|i| i.kind == Kind::Predictions)
            .or_else(|| {
                a.failures()
                    .find(|i| matches!(i.kind, Kind::Subject | Kind::BundleFile))
            });
        if let Some(bad) = bad {
            return Err(Error::input(
                format!("{}: {}", r.source, bad.name),
                format!(
                    "{} ({}): the run's files do not match its signed manifest",
                    bad.detail,
                    bad.status.as_str()
                ),
            )
            .into());
        }
    }
    checks.extend(glue_checks((baseline, &ab), (candidate, &ac), thresholds)?);

    let result = if checks.iter().any(|c| c.status == Status::Refused) {
        Outcome::Refused
    } else if checks.iter().any(|c| c.status == Status::Failed) {
        Outcome::Failed
    } else if checks
        .iter()
        .any(|c| matches!(c.status, Status::Warned | Status::Skipped))
    {
        Outcome::Warned
    } else {
        Outcome::Passed
    };
    Ok(GateReport {
        result,
        baseline: RunInfo::of(baseline),
        candidate: RunInfo::of(candidate),
        thresholds_file,
        thresholds: thresholds.clone(),
        checks,
    })
}

fn throughput_check(b: &RunRecord, c: &RunRecord, t: &Thresholds) -> Check {
    let x = t.throughput_max_drop_percent;
    let mut ch = Check::new(
        "throughput",
        "tokens/s",
        format!("drop ≤ {x}% (throughput_max_drop_percent)"),
    );
    let (Some(vb), Some(vc)) = (
        pretraining(b).map(|t| t.tokens_per_second),
        pretraining(c).map(|t| t.tokens_per_second),
    ) else {
        ch.detail = "pretraining.tokens_per_second missing from a manifest".into();
        return ch;
    };
    ch.method = "ratio".into();
    ch.baseline = Some(vb);
    ch.candidate = Some(vc);
    ch.delta = Some(vc - vb);
    let floor = vb * (1.0 - x / 100.0);
    let change = if vb > 0.0 {
        100.0 * (vc - vb) / vb
    } else {
        0.0
    };
    ch.status = if vc < floor {
        Status::Failed
    } else {
        Status::Passed
    };
    ch.detail = format!("{change:+.2}% (floor {floor:.1} tokens/s)");
    ch
}

fn loss_check(b: &RunRecord, c: &RunRecord, t: &Thresholds) -> Check {
    let y = t.loss_max_increase;
    let mut ch = Check::new(
        "mlm-loss",
        "loss",
        format!("increase ≤ {y} (loss_max_increase)"),
    );
    let (Some(vb), Some(vc)) = (
        pretraining(b).and_then(|t| t.final_mlm_loss),
        pretraining(c).and_then(|t| t.final_mlm_loss),
    ) else {
        ch.detail = "pretraining.final_mlm_loss missing from a manifest".into();
        return ch;
    };
    ch.method = "difference".into();
    ch.baseline = Some(vb);
    ch.candidate = Some(vc);
    ch.delta = Some(vc - vb);
    ch.status = if vc > vb + y {
        Status::Failed
    } else {
        Status::Passed
    };
    ch.detail = format!("{:+.4} (ceiling {:.4})", vc - vb, vb + y);
    ch
}

/// One run's results for one evaluation set.
struct SideSet {
    /// Per trial: metric → fraction.
    trials: Vec<BTreeMap<String, f64>>,
    /// The manifest's per-set medians (fractions).
    medians: BTreeMap<String, f64>,
    /// Per trial, the predictions rows; `Err(reason)` when not available.
    rows: std::result::Result<Vec<Vec<Row>>, String>,
}

/// One side of one set: the manifest's trial metrics and medians, and the predictions rows
/// that [`crate::audit`] verified (digest and re-score; the gold column as gold, both runs being
/// the user's own). A predictions file that does not match its signed manifest is unusable
/// input, naming the file.
fn load_side(
    r: &RunRecord,
    audit: &crate::audit::Audit,
    set: &str,
    eval: Option<&EvalSet>,
) -> Result<SideSet> {
    let task = r.glue().expect("checked by the caller").tasks.get(set);
    let trial_values = r.trials(set);
    let trials: Vec<BTreeMap<String, f64>> =
        trial_values.iter().map(|t| t.metrics.clone()).collect();
    let medians = task.map(|t| t.metrics.clone()).unwrap_or_default();
    if let Some(bad) = audit.items.iter().find(|i| {
        i.kind == crate::audit::Kind::Predictions
            && i.role.as_deref() == Some(set)
            && i.status.is_failure()
    }) {
        return Err(Error::input(
            format!("{}: {}", r.source, bad.name),
            format!("{} ({})", bad.detail, bad.status.as_str()),
        )
        .into());
    }
    let rows = if eval.is_none() {
        Err(format!("`{set}` is not an evaluation set crambench scores"))
    } else if r.root.is_none() {
        Err(format!(
            "{} is a lone manifest (no glue/predictions beside it)",
            r.source
        ))
    } else if trial_values.is_empty() {
        Err("no trials".into())
    } else {
        match audit.rows(set) {
            Some(rows) => Ok(rows.into_iter().map(<[Row]>::to_vec).collect()),
            None => Err(audit
                .items
                .iter()
                .find(|i| {
                    i.kind == crate::audit::Kind::Predictions
                        && i.role.as_deref() == Some(set)
                        && i.status != crate::audit::Status::Verified
                })
                .map(|i| format!("{}: {} {}", i.name, i.status.as_str(), i.detail))
                .unwrap_or_else(|| "no predictions".into())),
        }
    };
    Ok(SideSet {
        trials,
        medians,
        rows,
    })
}

/// Trial values of `metric` in percent points.
fn trial_points(s: &SideSet, metric: &str) -> Vec<f64> {
    s.trials
        .iter()
        .filter_map(|m| m.get(metric).map(|v| 100.0 * v))
        .collect()
}

fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

/// Decide a "not significantly worse" check from its observed Δ and p-value.
fn decide(ch: &mut Check, observed: f64, p: f64, t: &Thresholds) {
    ch.delta = Some(observed);
    ch.p_value = Some(p);
    let worse = observed < -t.glue_min_drop_points && p < t.alpha;
    ch.status = if worse {
        Status::Failed
    } else {
        Status::Passed
    };
    let why = if worse {
        format!(
            "worse by more than {} points (p = {} < α = {})",
            t.glue_min_drop_points,
            fmt_p(p),
            t.alpha
        )
    } else if observed >= -t.glue_min_drop_points {
        format!(
            "drop within the {}-point margin (p = {})",
            t.glue_min_drop_points,
            fmt_p(p)
        )
    } else {
        format!("not significant (p = {} ≥ α = {})", fmt_p(p), t.alpha)
    };
    ch.detail = if ch.detail.is_empty() {
        why
    } else {
        format!("{}; {why}", ch.detail)
    };
}

fn welch_check(ch: &mut Check, base: &[f64], cand: &[f64], t: &Thresholds, note: &str) -> bool {
    match ttest::welch_less(cand, base, t.glue_min_drop_points) {
        Some(w) => {
            ch.method = "welch-t".into();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            ch.detail = format!(
                "{note}means {:.2} → {:.2} over {}/{} trials, t = {:.3}, df = {:.2}",
                mean(base),
                mean(cand),
                base.len(),
                cand.len(),
                w.t,
                w.df
            );
            decide(ch, w.mean_difference, w.p_value, t);
            true
        }
        None => false,
    }
}

fn glue_checks(
    (b, ab): (&RunRecord, &crate::audit::Audit),
    (c, ac): (&RunRecord, &crate::audit::Audit),
    t: &Thresholds,
) -> Result<Vec<Check>> {
    let margin = t.glue_min_drop_points;
    let limit = format!("not worse by > {margin} points at α = {}", t.alpha);
    let pp = "percent points";
    let (Some(gb), Some(gc)) = (b.glue(), c.glue()) else {
        let mut ch = Check::new("glue", pp, limit);
        ch.detail = if b.glue().is_none() {
            "the baseline has no GLUE results".into()
        } else {
            "the candidate has no GLUE results".into()
        };
        if b.glue().is_some() {
            ch.status = Status::Failed;
        }
        return Ok(vec![ch]);
    };
    let (pb, pc) = (protocol(b).unwrap_or(""), protocol(c).unwrap_or(""));
    if pb != pc {
        let mut ch = Check::new("glue", pp, limit);
        ch.status = Status::Refused;
        ch.detail = format!(
            "fine-tuning protocols differ (baseline {pb:?}, candidate {pc:?}): GLUE results are \
             not compared across protocols"
        );
        return Ok(vec![ch]);
    }
    let rule_b = b.aggregate().map(|(r, _)| r.to_string());
    let rule = rule_b.as_deref().and_then(|r| Rule::parse(r).ok());
    let terms = rule.map(|r| r.terms()).unwrap_or_default();

    let sets: Vec<String> = gb.tasks.keys().cloned().collect();
    let mut checks = Vec::new();
    // Pass 1: read both sides of every set and pair their predictions.
    struct Work {
        set: String,
        metrics: Vec<String>,
        sb: SideSet,
        sc: SideSet,
        paired: std::result::Result<bootstrap::Paired, String>,
    }
    let mut work = Vec::new();
    for set in &sets {
        let eval = tasks::eval_set(set).ok();
        let sb = load_side(b, ab, set, eval.as_ref())?;
        let mut metrics: Vec<String> = terms
            .iter()
            .flatten()
            .filter(|(s, _)| s == set)
            .map(|(_, m)| m.to_string())
            .collect();
        metrics.dedup();
        if metrics.is_empty() {
            metrics = sb.medians.keys().cloned().collect();
        }
        if !gc.tasks.contains_key(set) {
            for m in &metrics {
                let mut ch = Check::new(format!("glue/{set}/{m}"), pp, limit.clone());
                ch.status = Status::Failed;
                ch.baseline = sb.medians.get(m).map(|v| 100.0 * v);
                ch.detail = "the candidate has no results for this set".into();
                checks.push(ch);
            }
            continue;
        }
        let sc = load_side(c, ac, set, eval.as_ref())?;
        let paired = match (&sb.rows, &sc.rows, eval) {
            (Ok(rb), Ok(rc), Some(e)) => bootstrap::Paired::new(e, rb, rc),
            (Err(why), _, _) => Err(format!("baseline: {why}")),
            (_, Err(why), _) => Err(format!("candidate: {why}")),
            (_, _, None) => Err(format!("`{set}` is not an evaluation set crambench scores")),
        };
        work.push(Work {
            set: set.clone(),
            metrics,
            sb,
            sc,
            paired,
        });
    }
    // Pass 2: the bootstrap resamples, one set per thread.
    let all_draws: Vec<Option<Vec<[bootstrap::SideValues; 2]>>> = {
        use rayon::prelude::*;
        work.par_iter()
            .map(|w| match &w.paired {
                Ok(p) => bootstrap::resample(
                    p,
                    &w.metrics,
                    t.bootstrap_resamples,
                    crate::provenance::seeds::derive(t.seed, &format!("gate/bootstrap/{}", w.set)),
                )
                .map(Some),
                Err(_) => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?
    };
    // Per set, per resample: [baseline, candidate] trial-median metrics (fractions).
    let mut resampled: BTreeMap<String, Vec<[bootstrap::SideValues; 2]>> = BTreeMap::new();
    let mut sides: BTreeMap<String, (SideSet, SideSet)> = BTreeMap::new();
    for (w, draws) in work.into_iter().zip(all_draws) {
        let Work {
            set,
            metrics,
            sb,
            sc,
            paired,
        } = w;
        for m in &metrics {
            let mut ch = Check::new(format!("glue/{set}/{m}"), pp, limit.clone());
            let (vb, vc) = (sb.medians.get(m), sc.medians.get(m));
            ch.baseline = vb.map(|v| 100.0 * v);
            ch.candidate = vc.map(|v| 100.0 * v);
            let (Some(vb), Some(vc)) = (vb, vc) else {
                ch.detail = format!("metric `{m}` missing from a manifest");
                if vb.is_some() {
                    ch.status = Status::Failed;
                    ch.detail = format!("the candidate reports no `{m}` for this set");
                }
                checks.push(ch);
                continue;
            };
            let observed = 100.0 * (vc - vb);
            if let (Some(d), Ok(p)) = (&draws, &paired) {
                let diffs: Vec<f64> = d
                    .iter()
                    .filter_map(|s| Some(100.0 * (s[1].get(m)? - s[0].get(m)?)))
                    .collect();
                ch.method = "paired-bootstrap".into();
                ch.detail = format!(
                    "{} examples × {} resamples, {}/{} trials",
                    p.len(),
                    diffs.len(),
                    p.pred[0].len(),
                    p.pred[1].len()
                );
                decide(&mut ch, observed, bootstrap::p_value(&diffs, margin), t);
            } else {
                let why = paired.as_ref().err().cloned().unwrap_or_default();
                let (xb, xc) = (trial_points(&sb, m), trial_points(&sc, m));
                if !welch_check(
                    &mut ch,
                    &xb,
                    &xc,
                    t,
                    &format!("no paired predictions ({why}); "),
                ) {
                    ch.delta = Some(observed);
                    ch.detail = format!(
                        "no paired predictions ({why}) and fewer than 2 trials on a side \
                         ({}/{}): not tested",
                        xb.len(),
                        xc.len()
                    );
                }
            }
            checks.push(ch);
        }
        if let Some(d) = draws {
            resampled.insert(set.clone(), d);
        }
        sides.insert(set, (sb, sc));
    }
    checks.push(aggregate_check(b, c, t, &terms, &resampled, &sides));
    Ok(checks)
}

/// The rule's value from per-(set, metric) fractions, in percent points; `None` when one is
/// missing.
fn rule_value(
    terms: &[Vec<(&'static str, &'static str)>],
    get: &dyn Fn(&str, &str) -> Option<f64>,
) -> Option<f64> {
    let mut sum = 0.0;
    for term in terms {
        let mut s = 0.0;
        for (set, m) in term {
            s += get(set, m)?;
        }
        sum += s / term.len() as f64;
    }
    Some(100.0 * sum / terms.len() as f64)
}

fn aggregate_check(
    b: &RunRecord,
    c: &RunRecord,
    t: &Thresholds,
    terms: &[Vec<(&'static str, &'static str)>],
    resampled: &BTreeMap<String, Vec<[bootstrap::SideValues; 2]>>,
    sides: &BTreeMap<String, (SideSet, SideSet)>,
) -> Check {
    let limit = format!(
        "not worse by > {} points at α = {}",
        t.glue_min_drop_points, t.alpha
    );
    let (ab, ac) = (b.aggregate(), c.aggregate());
    let rule_name = ab.map(|(r, _)| r).unwrap_or("?");
    let mut ch = Check::new(
        format!("glue/aggregate/{rule_name}"),
        "percent points",
        limit,
    );
    let (Some((rb, vb)), Some((rc, vc))) = (ab, ac) else {
        ch.detail = "aggregate missing from a manifest".into();
        return ch;
    };
    ch.baseline = Some(vb);
    ch.candidate = Some(vc);
    if rb != rc {
        ch.status = Status::Refused;
        ch.detail =
            format!("aggregate rules differ (baseline `{rb}`, candidate `{rc}`): never compared");
        return ch;
    }
    if terms.is_empty() {
        ch.detail = format!("unknown aggregate rule `{rb}`");
        return ch;
    }
    let observed = vc - vb;
    let needed: Vec<&str> = terms.iter().flatten().map(|(s, _)| *s).collect();
    let n = t.bootstrap_resamples as usize;
    if needed
        .iter()
        .all(|s| resampled.get(*s).is_some_and(|d| d.len() == n))
    {
        let mut diffs = Vec::with_capacity(n);
        for i in 0..n {
            let side =
                |k: usize| rule_value(terms, &|s, m| resampled.get(s)?[i][k].get(m).copied());
            if let (Some(xb), Some(xc)) = (side(0), side(1)) {
                diffs.push(xc - xb);
            }
        }
        if diffs.len() == n {
            ch.method = "paired-bootstrap".into();
            ch.detail = format!("{n} resamples of every set, rule `{rb}`");
            decide(
                &mut ch,
                observed,
                bootstrap::p_value(&diffs, t.glue_min_drop_points),
                t,
            );
            return ch;
        }
    }
    // Per-trial aggregates over the trials every set has.
    let per_trial = |k: usize| -> Vec<f64> {
        let count = needed
            .iter()
            .map(|s| {
                sides.get(*s).map_or(0, |p| {
                    if k == 0 {
                        p.0.trials.len()
                    } else {
                        p.1.trials.len()
                    }
                })
            })
            .min()
            .unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                rule_value(terms, &|s, m| {
                    let p = sides.get(s)?;
                    let side = if k == 0 { &p.0 } else { &p.1 };
                    side.trials.get(i)?.get(m).copied()
                })
            })
            .collect()
    };
    let missing: Vec<&str> = {
        let mut m: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|s| !sides.contains_key(*s))
            .collect();
        m.dedup();
        m
    };
    if !missing.is_empty() {
        ch.delta = Some(observed);
        ch.detail = format!(
            "rule `{rb}` needs {} which the runs do not both have: not tested",
            missing.join(", ")
        );
        return ch;
    }
    let (xb, xc) = (per_trial(0), per_trial(1));
    let note = "per-trial aggregates; ";
    if !welch_check(&mut ch, &xb, &xc, t, note) {
        ch.delta = Some(observed);
        ch.detail = format!(
            "no paired predictions for every set of rule `{rb}` and fewer than 2 per-trial \
             aggregates on a side ({}/{}): not tested",
            xb.len(),
            xc.len()
        );
    }
    ch
}

impl GateReport {
    /// The process exit code: 0 passed or warned, 1 failed, 2 refused.
    pub fn exit_code(&self) -> crate::ExitCode {
        match self.result {
            Outcome::Passed | Outcome::Warned => crate::ExitCode::Ok,
            Outcome::Failed => crate::ExitCode::CheckFailed,
            Outcome::Refused => crate::ExitCode::BadInput,
        }
    }

    fn names(&self, pick: &[Status]) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| pick.contains(&c.status))
            .map(|c| c.name.clone())
            .collect()
    }

    /// The in-toto Statement (test-result predicate); `url` links the CI run. `None` when the
    /// result is [`Outcome::Refused`] (there is no test result to attest).
    pub fn statement(&self, url: Option<&str>) -> Option<Value> {
        if self.result == Outcome::Refused {
            return None;
        }
        let rd = |name: &str, sha: &str, role: &str| json!({"name": name, "digest": {"sha256": sha}, "annotations": {"role": role}});
        let mut predicate = json!({
            "result": self.result.as_str(),
            "configuration": [
                rd(&self.thresholds_file.name, &self.thresholds_file.sha256, "thresholds"),
                rd(&self.baseline.source, &self.baseline.payload_sha256, "baseline"),
                rd(&self.candidate.source, &self.candidate.payload_sha256, "candidate"),
            ],
            "passedTests": self.names(&[Status::Passed]),
            "warnedTests": self.names(&[Status::Warned, Status::Skipped]),
            "failedTests": self.names(&[Status::Failed]),
        });
        if let Some(u) = url {
            predicate["url"] = json!(u);
        }
        Some(json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{
                "name": self.candidate.source,
                "digest": {"sha256": self.candidate.payload_sha256},
            }],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }))
    }

    /// The Markdown summary (for `$GITHUB_STEP_SUMMARY` and `gate-summary.md`).
    pub fn to_markdown(&self) -> String {
        let icon = match self.result {
            Outcome::Passed => "✅",
            Outcome::Warned => "⚠️",
            Outcome::Failed => "❌",
            Outcome::Refused => "⛔",
        };
        let run = |r: &RunInfo| {
            format!(
                "`{}` — recipe {}, hardware `{}`, protocol {}, aggregate {}",
                md(&r.source),
                r.recipe.as_deref().unwrap_or("?"),
                r.hardware_class,
                r.protocol.as_deref().unwrap_or("—"),
                match (&r.aggregate_rule, r.aggregate) {
                    (Some(rule), Some(v)) => format!("{v:.2} ({rule})"),
                    _ => "—".into(),
                }
            )
        };
        let mut s = format!("## crambench gate: {icon} {}\n\n", self.result.as_str());
        s += &format!("- baseline: {}\n", run(&self.baseline));
        s += &format!("- candidate: {}\n", run(&self.candidate));
        s += &format!(
            "- thresholds: `{}` (sha256 {}…)\n\n",
            md(&self.thresholds_file.name),
            &self.thresholds_file.sha256[..12]
        );
        s += "| check | result | baseline | candidate | Δ | limit | method | p | detail |\n";
        s += "|---|---|---:|---:|---:|---|---|---:|---|\n";
        let num = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "—".into());
        for c in &self.checks {
            let status = match c.status {
                Status::Passed => "passed",
                Status::Failed => "**FAILED**",
                Status::Warned => "warned",
                Status::Skipped => "skipped",
                Status::Refused => "**refused**",
            };
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.name,
                status,
                num(c.baseline),
                num(c.candidate),
                c.delta
                    .map(|d| format!("{}{}", if d >= 0.0 { "+" } else { "" }, fmt_num(d)))
                    .unwrap_or_else(|| "—".into()),
                md(&c.limit),
                c.method,
                c.p_value.map(fmt_p).unwrap_or_else(|| "—".into()),
                md(&c.detail)
            );
        }
        s
    }

    /// A plain-text table for the terminal.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "gate: {}\nbaseline:  {} ({})\ncandidate: {} ({})\n\n",
            self.result.as_str(),
            self.baseline.source,
            self.baseline.hardware_class,
            self.candidate.source,
            self.candidate.hardware_class
        );
        let num = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:<34} {:<8} {:>12} {:>12} {:>10} {:>9}  {}\n",
            "check", "result", "baseline", "candidate", "delta", "p", "detail"
        );
        for c in &self.checks {
            s += &format!(
                "{:<34} {:<8} {:>12} {:>12} {:>10} {:>9}  {}\n",
                c.name,
                format!("{:?}", c.status).to_lowercase(),
                num(c.baseline),
                num(c.candidate),
                num(c.delta),
                c.p_value.map(fmt_p).unwrap_or_else(|| "-".into()),
                c.detail
            );
        }
        s
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}
