//! `crambench sweep collect`: the summary over pretraining seeds, as the paper's tables report
//! it — per group of runs that differ only in their seed, the median and the spread (min, max,
//! quartiles) of the GLUE aggregate and of the final MLM loss.
//!
//! Only finished runs ([`super::status`]: outputs verified against their signed manifest) are
//! summarised; the others are listed with their state. A run that *failed* verification stops
//! the collection (exit 1, nothing written): a summary never silently drops a tampered run.
//! So does a finished run whose envelope no trusted key signed (by default the key that signs
//! the summary: its signer vouches only for runs signed as it signs).
//!
//! The summary is an in-toto Statement (`<sweep>/summary.json`, RFC 8785) of type
//! [`PREDICATE_TYPE`] whose subjects are every run manifest it used — the path of the run's
//! envelope relative to the sweep directory, with the SHA-256 of the signed statement (the
//! envelope's payload, as the gate names a candidate) — signed into `<sweep>/summary.dsse.json`
//! with the one signing path of crambench ([`crate::manifest::sign::sign_statement`]).
use super::status::{check_all_trusting, RunStatus, State};
use super::Sweep;
use crate::error::Error;
use crate::manifest::keys::PublicKey;
use crate::stats::Spread;
use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The summary's predicate type.
pub const PREDICATE_TYPE: &str = "https://crambench.dev/sweep-summary/v0.1";
/// The statement and its envelope in the sweep directory.
pub const SUMMARY_FILE: &str = "summary.json";
pub const SUMMARY_ENVELOPE_FILE: &str = "summary.dsse.json";

/// One group's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub group: String,
    /// Seeds of the finished runs summarised, in sweep order.
    pub seeds: Vec<u64>,
    /// Runs of the group that are not finished (id and state).
    pub not_finished: Vec<(String, String)>,
    /// The aggregate's rule (one per group; runs under different rules are not mixed).
    pub rule: Option<String>,
    pub aggregate: Option<Spread>,
    pub final_mlm_loss: Option<Spread>,
}

/// The result of [`collect`].
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    pub groups: Vec<Group>,
    pub runs: Vec<RunStatus>,
    pub statement: PathBuf,
    pub envelope: PathBuf,
    pub keyid: String,
}

/// Summarise `sweep` and sign the summary with `key` (default: the user's key). Every finished
/// run's envelope must verify under `trusted` (empty: the summary's own signing key). With
/// `require_all`, any run not finished is an error.
pub fn collect(
    sweep: &Sweep,
    key: Option<&Path>,
    require_all: bool,
    trusted: &[PublicKey],
) -> Result<Collected> {
    let own;
    let trusted = if trusted.is_empty() {
        // The public half of the key that will sign, read without creating a default key
        // (no run can be signed by a key that does not exist yet).
        use crate::manifest::keys;
        own = [match key {
            Some(k) => PublicKey::new(
                keys::load_signing_key(k)?.verifying_key(),
                k.display().to_string(),
            ),
            None => keys::load_public_key(&keys::default_public_key().ok_or_else(|| {
                Error::input(
                    "--trust",
                    "no trusted public key given, and you have no default key yet; \
                     pass --trust PUB (or --key KEY, whose public half is then trusted)",
                )
            })?)?,
        }];
        &own[..]
    } else {
        trusted
    };
    let runs = check_all_trusting(sweep, Some(trusted));
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r.state == State::Failed)
        .map(|r| format!("{}: {}", r.id, r.detail))
        .collect();
    if !failed.is_empty() {
        return Err(Error::Check(format!(
            "sweep {}: {} run(s) failed their checks; nothing summarised:\n  {}",
            sweep.file.name,
            failed.len(),
            failed.join("\n  ")
        ))
        .into());
    }
    let unfinished: Vec<String> = runs
        .iter()
        .filter(|r| r.state != State::Finished)
        .map(|r| format!("{} ({})", r.id, r.state.as_str()))
        .collect();
    if require_all && !unfinished.is_empty() {
        return Err(Error::Check(format!(
            "sweep {}: {} run(s) not finished: {}",
            sweep.file.name,
            unfinished.len(),
            unfinished.join(", ")
        ))
        .into());
    }
    if runs.iter().all(|r| r.state != State::Finished) {
        return Err(Error::Check(format!(
            "sweep {}: no run has finished yet ({}); nothing to summarise",
            sweep.file.name,
            super::status::counts(&runs)
        ))
        .into());
    }
    let mut order: Vec<String> = Vec::new();
    let mut by_group: BTreeMap<String, Vec<&RunStatus>> = BTreeMap::new();
    for r in &runs {
        if !by_group.contains_key(&r.group) {
            order.push(r.group.clone());
        }
        by_group.entry(r.group.clone()).or_default().push(r);
    }
    let mut groups = Vec::new();
    for g in &order {
        let members = &by_group[g];
        let done: Vec<&&RunStatus> = members
            .iter()
            .filter(|r| r.state == State::Finished)
            .collect();
        let rules: std::collections::BTreeSet<&str> = done
            .iter()
            .filter_map(|r| r.aggregate.as_ref().map(|a| a.0.as_str()))
            .collect();
        if rules.len() > 1 {
            return Err(Error::Check(format!(
                "sweep {}: runs of group {g} report their aggregate under different rules \
                 ({}); they cannot be summarised together",
                sweep.file.name,
                rules.into_iter().collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
        let agg: Vec<f64> = done
            .iter()
            .filter_map(|r| r.aggregate.as_ref().map(|a| a.1))
            .collect();
        let loss: Vec<f64> = done.iter().filter_map(|r| r.final_mlm_loss).collect();
        groups.push(Group {
            group: g.clone(),
            seeds: done.iter().map(|r| r.seed).collect(),
            not_finished: members
                .iter()
                .filter(|r| r.state != State::Finished)
                .map(|r| (r.id.clone(), r.state.as_str().to_string()))
                .collect(),
            rule: rules.into_iter().next().map(str::to_string),
            aggregate: Spread::of(&agg),
            final_mlm_loss: Spread::of(&loss),
        });
    }
    let subjects: Vec<Value> = runs
        .iter()
        .filter(|r| r.state == State::Finished)
        .map(|r| {
            let env = r
                .envelope
                .as_ref()
                .expect("finished runs name their envelope");
            let rel = env.strip_prefix(&sweep.out).unwrap_or(env);
            json!({
                "name": rel.display().to_string(),
                "digest": {"sha256": r.manifest_sha256},
                "annotations": {"role": "run-manifest", "run": r.id, "group": r.group,
                                 "seed": r.seed},
            })
        })
        .collect();
    let statement = json!({
        "_type": crate::manifest::statement::STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "crambench_version": crate::VERSION,
            "created": crate::manifest::statement::now_rfc3339(),
            "sweep": sweep.file.name,
            "sweep_file": {"name": sweep.path.display().to_string(),
                           "digest": {"sha256": sweep.sha256}},
            "summary_over": "pretraining seeds",
            "groups": groups,
            "runs": runs.iter().map(|r| json!({
                "id": r.id, "index": r.index, "group": r.group, "seed": r.seed,
                "state": r.state, "restarts": r.invocations.saturating_sub(1),
                "aggregate": r.aggregate.as_ref().map(|a| a.1),
            })).collect::<Vec<_>>(),
        },
    });
    let bytes = crate::manifest::jcs::to_vec(&statement)?;
    let signed = crate::manifest::sign::sign_statement(key, &bytes, SUMMARY_FILE)?;
    let st_path = sweep.out.join(SUMMARY_FILE);
    let env_path = sweep.out.join(SUMMARY_ENVELOPE_FILE);
    let mut env_text = signed.envelope.to_json();
    if !env_text.ends_with('\n') {
        env_text.push('\n');
    }
    crate::io::write_all_atomic(&[
        (&st_path, &bytes, None),
        (&env_path, env_text.as_bytes(), None),
    ])?;
    Ok(Collected {
        groups,
        runs,
        statement: st_path,
        envelope: env_path,
        keyid: signed.keyid,
    })
}

fn fmt_spread(s: &Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) => format!(
            "{:.d$} [{:.d$}, {:.d$}]",
            s.median,
            s.min,
            s.max,
            d = digits
        ),
        None => "-".into(),
    }
}

/// One line per group, for people.
pub fn table(c: &Collected) -> String {
    let mut t = format!(
        "{:<32} {:>5} {:<28} {}\n",
        "group", "seeds", "aggregate median [min, max]", "final MLM loss median [min, max]"
    );
    for g in &c.groups {
        t += &format!(
            "{:<32} {:>5} {:<28} {}{}\n",
            g.group,
            g.seeds.len(),
            format!(
                "{}{}",
                fmt_spread(&g.aggregate, 2),
                g.rule
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            fmt_spread(&g.final_mlm_loss, 4),
            if g.not_finished.is_empty() {
                String::new()
            } else {
                format!("  ({} not finished)", g.not_finished.len())
            }
        );
    }
    t += &format!(
        "\n{}\nsummary   {}\nenvelope  {}\nsigned by {}\n",
        super::status::counts(&c.runs),
        c.statement.display(),
        c.envelope.display(),
        c.keyid
    );
    t
}
