//! A finished run as the tools after it see it (`compare`, `gate`, `submit`, `leaderboard`,
//! `report`): the signed envelope, the statement it carries, and where the run's files lie.
//!
//! [`RunRecord::open`] accepts a run directory (`<out>/<recipe>/` from `crambench run`), a
//! submission bundle (same layout), a DSSE envelope file or a bare statement file. Inside a
//! directory the envelope `manifest.dsse.json` is preferred over `manifest.json`.
//!
//! The layout of a run directory (written by `crambench run`, read here):
//!
//! ```text
//! run.json                 stage state (resume bookkeeping)
//! recipe.resolved.json     the resolved recipe
//! fingerprint.json         this machine
//! pretrain/                metrics.jsonl, mllog.log, checkpoints/<name>/, checkpoints/latest
//! glue/                    glue.json, predictions/<set>/trial-<k>.tsv
//! manifest.json            the in-toto Statement (RFC 8785 canonical JSON)
//! manifest.dsse.json       the signed envelope
//! report.md, report.html   the report
//! ```
//!
//! Statement fields are read from the payload bytes of the envelope — the bytes a signature
//! covers — never from a second copy. Checking signatures is [`RunRecord::verify`]'s job; an
//! unverified record says so ([`RunRecord::signed`]).
use crate::error::Error;
use crate::manifest::dsse::{self, Envelope, Verification};
use crate::manifest::keys::PublicKey;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// File names inside a run directory.
pub const ENVELOPE_FILE: &str = "manifest.dsse.json";
pub const STATEMENT_FILE: &str = "manifest.json";
pub const METRICS_LOG: &str = "pretrain/metrics.jsonl";
/// `annotations.role` of the run manifest's subject for [`METRICS_LOG`].
pub const METRICS_LOG_ROLE: &str = "metrics-log";
pub const GLUE_DIR: &str = "glue";

/// Resume bookkeeping of a run directory (written by `crambench run`).
pub const RUN_STATE_FILE: &str = "run.json";

/// The index file of a bundle.
pub const BUNDLE_INDEX: &str = "bundle.json";
/// Format id written into the index.
pub const BUNDLE_FORMAT: &str = "crambench-bundle/v1";

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Path relative to the bundle, `/`-separated.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// Read a bundle's index (`bundle.json`), when the entry has one.
pub fn read_index(entry: &Path) -> Result<Option<Vec<BundleFile>>> {
    let p = entry.join(BUNDLE_INDEX);
    match p.symlink_metadata() {
        Err(_) => return Ok(None),
        Ok(m) if !m.file_type().is_file() => {
            return Err(Error::input(
                p.display(),
                "not a regular file (a symbolic link is not followed)",
            )
            .into())
        }
        Ok(_) => {}
    }
    let bytes = crate::io::read_limited(&p, 64 << 20)?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(p.display(), format!("not JSON: {e}")))?;
    if v["format"] != BUNDLE_FORMAT {
        return Err(Error::input(
            p.display(),
            format!("format is {}, expected {BUNDLE_FORMAT:?}", v["format"]),
        )
        .into());
    }
    let files: Vec<BundleFile> = serde_json::from_value(v["files"].clone())
        .map_err(|e| Error::input(format!("{}: files", p.display()), e))?;
    Ok(Some(files))
}

/// Largest manifest read (a run's statement is tens of kB; the cap stops hostile input).
const LIMIT: u64 = 64 << 20;

/// One run's record.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// What was opened (for messages).
    pub source: String,
    /// The directory holding the run's files (`glue/`, `pretrain/`), when opened from one.
    pub root: Option<PathBuf>,
    /// The envelope, when the record came in one.
    pub envelope: Option<Envelope>,
    /// The statement's bytes (the envelope's payload).
    pub payload: Vec<u8>,
    /// The statement parsed from `payload`.
    pub statement: Value,
}

impl RunRecord {
    /// Open a run directory, bundle, envelope or statement file. The statement must be valid
    /// against the published schema (errors name the file and the JSON path).
    pub fn open(path: &Path) -> Result<Self> {
        // Inside a directory, the manifest files are regular files (a symbolic link is not
        // followed out of a run or an entry).
        let regular = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.file_type().is_file());
        let (file, root) = if path.is_dir() {
            let env = path.join(ENVELOPE_FILE);
            let st = path.join(STATEMENT_FILE);
            let f = if regular(&env) {
                env
            } else if regular(&st) {
                st
            } else {
                return Err(Error::input(
                    path.display(),
                    format!("not a run directory: neither {ENVELOPE_FILE} nor {STATEMENT_FILE}"),
                )
                .into());
            };
            (f, Some(path.to_path_buf()))
        } else {
            (path.to_path_buf(), None)
        };
        let source = file.display().to_string();
        let bytes = crate::io::read_limited(&file, LIMIT)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&source, format!("not JSON: {e}")))?;
        let (envelope, payload) = if v.get("payloadType").is_some() {
            let env = Envelope::parse(&bytes, &source)?;
            let decoded = env.decode(&source)?;
            if decoded.payload_type != dsse::PAYLOAD_TYPE_IN_TOTO {
                return Err(Error::input(
                    &source,
                    format!(
                        "payloadType is {:?}, expected {:?}",
                        decoded.payload_type,
                        dsse::PAYLOAD_TYPE_IN_TOTO
                    ),
                )
                .into());
            }
            (Some(env), decoded.payload)
        } else {
            (None, bytes)
        };
        let statement: Value = serde_json::from_slice(&payload)
            .map_err(|e| Error::input(&source, format!("payload is not JSON: {e}")))?;
        let problems = crate::manifest::schema::validate_statement(&statement);
        if let Some(p) = problems.first() {
            return Err(Error::input(
                format!("{source}: {}", if p.at.is_empty() { "/" } else { &p.at }),
                format!(
                    "not a valid crambench manifest: {}{}",
                    p.message,
                    if problems.len() > 1 {
                        format!(" (and {} more problems)", problems.len() - 1)
                    } else {
                        String::new()
                    }
                ),
            )
            .into());
        }
        Ok(RunRecord {
            source,
            root,
            envelope,
            payload,
            statement,
        })
    }

    /// Whether the record came in an envelope with at least one signature (not yet verified).
    pub fn signed(&self) -> bool {
        self.envelope
            .as_ref()
            .is_some_and(|e| !e.signatures.is_empty())
    }

    /// Verify the envelope against trusted keys. An unsigned record is an error
    /// ([`Error::Check`]); so is one no trusted key signed (`threshold` distinct keys needed).
    pub fn verify(&self, keys: &[PublicKey], threshold: usize) -> Result<Verification> {
        let env = self.envelope.as_ref().ok_or_else(|| {
            Error::Check(format!("{}: not signed (a bare statement)", self.source))
        })?;
        let decoded = env.decode(&self.source)?;
        let v = dsse::verify(&decoded, keys, threshold);
        if !v.ok {
            return Err(Error::Check(format!(
                "{}: signature not valid under the trusted keys ({} of {} needed)",
                self.source,
                v.valid_keys.len(),
                threshold
            ))
            .into());
        }
        Ok(v)
    }

    /// `statement.predicate`.
    pub fn predicate(&self) -> &Value {
        &self.statement["predicate"]
    }

    /// `predicate.kind` (`run` or `attestation`).
    pub fn kind(&self) -> &str {
        self.predicate()["kind"].as_str().unwrap_or("")
    }

    /// Fail unless this is a full run (`kind = "run"`).
    pub fn require_run(&self) -> Result<()> {
        if self.kind() != "run" {
            return Err(Error::input(
                format!("{}: /predicate/kind", self.source),
                format!("is {:?}: a `crambench run` manifest is needed", self.kind()),
            )
            .into());
        }
        Ok(())
    }

    /// The recipe name (`predicate.recipe.name`).
    pub fn recipe_name(&self) -> Option<&str> {
        self.predicate()["recipe"]["name"].as_str()
    }

    /// `predicate.fingerprint.hardware_class`.
    pub fn hardware_class(&self) -> &str {
        self.predicate()["fingerprint"]["hardware_class"]
            .as_str()
            .unwrap_or("")
    }

    /// `predicate.glue`, when present.
    pub fn glue(&self) -> Option<&Value> {
        self.predicate().get("glue")
    }

    /// The headline aggregate: (rule name, percent points).
    pub fn aggregate(&self) -> Option<(&str, f64)> {
        let a = &self.glue()?["aggregate"];
        Some((a["rule"].as_str()?, a["value"].as_f64()?))
    }

    /// A file of the run, relative to its root (`None` when opened from a lone file).
    pub fn file(&self, rel: &str) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(rel))
    }

    /// The predictions file of one trial: `glue/<trials[k].predictions>` under the root.
    pub fn predictions_file(&self, set: &str, trial: usize) -> Option<PathBuf> {
        let rel = self.glue()?["tasks"][set]["trials"][trial]["predictions"].as_str()?;
        self.file(&format!("{GLUE_DIR}/{rel}"))
    }

    /// The pretraining metrics log (`pretrain/metrics.jsonl`).
    pub fn metrics_log(&self) -> Option<PathBuf> {
        self.file(METRICS_LOG)
    }
}
