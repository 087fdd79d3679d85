//! `run.json`: what a run directory holds and which stages are complete.
//!
//! A stage counts as complete only when `run.json` says so **and** every output it recorded
//! still has the digest recorded then (sha256 of a file, or the in-toto dirHash of a
//! directory). A later invocation checks those digests before it reuses a stage, so an output
//! changed or damaged after the fact is caught, not built upon. `run.json` itself is rewritten
//! atomically after every stage.
use crate::error::Error;
use crate::provenance::hash;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the state inside a run directory.
pub const STATE_FILE: &str = crate::record::RUN_STATE_FILE;
/// Format tag of `run.json`.
pub const SCHEMA: &str = "crambench.run/v1";

/// A stage of `crambench run`, named in `run.json` by [`Stage::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Fingerprint,
    Data,
    Pretrain,
    Glue,
    Manifest,
    Sign,
    Report,
}

/// The stages in order.
pub const STAGES: [Stage; 7] = [
    Stage::Fingerprint,
    Stage::Data,
    Stage::Pretrain,
    Stage::Glue,
    Stage::Manifest,
    Stage::Sign,
    Stage::Report,
];

impl Stage {
    /// Its key in `run.json` and its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Fingerprint => "fingerprint",
            Stage::Data => "data",
            Stage::Pretrain => "pretrain",
            Stage::Glue => "glue",
            Stage::Manifest => "manifest",
            Stage::Sign => "sign",
            Stage::Report => "report",
        }
    }

    /// The stage named `name`.
    pub fn parse(name: &str) -> Option<Stage> {
        STAGES.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One finished stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRecord {
    /// When it finished (RFC 3339).
    pub completed: String,
    /// Wall seconds it took (summed over invocations for pretraining).
    pub seconds: f64,
    /// Output path (relative to the run directory, or absolute outside it) → `sha256:<hex>` or
    /// `dirHash:<hex>`.
    pub outputs: BTreeMap<String, String>,
    /// What later stages need from this one.
    #[serde(default)]
    pub info: Value,
}

/// One `crambench run` invocation on this directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invocation {
    pub started: String,
    pub hardware_class: String,
    pub crambench_version: String,
    /// How this invocation was launched (local, torchrun, Slurm with job and array ids…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<Value>,
}

/// A check that `--force` overrode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Forced {
    pub what: String,
    pub recorded: String,
    pub now: String,
    pub at: String,
}

/// The whole of `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    pub schema: String,
    pub recipe_name: String,
    pub recipe_path: String,
    /// sha256 of the resolved recipe's canonical JSON (budget override included).
    pub recipe_sha256: String,
    /// The hardware class of the first invocation.
    pub hardware_class: String,
    pub master_seed: u64,
    pub master_from_os: bool,
    pub created: String,
    pub invocations: Vec<Invocation>,
    #[serde(default)]
    pub forced: Vec<Forced>,
    pub stages: BTreeMap<String, StageRecord>,
}

impl RunState {
    /// Read `dir/run.json` if it exists.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = crate::io::read_limited(&path, 16 << 20)?;
        let st: RunState = serde_json::from_slice(&bytes).map_err(|e| {
            Error::input(
                path.display(),
                format!("not a crambench run state ({e}); the run directory is damaged"),
            )
        })?;
        if st.schema != SCHEMA {
            return Err(Error::input(
                format!("{}: schema", path.display()),
                format!("is {:?}, expected {SCHEMA:?}", st.schema),
            )
            .into());
        }
        // Messages slice the digest (`[..16]`): only a well-formed one gets that far.
        if !hash::is_sha256_hex(&st.recipe_sha256) {
            return Err(Error::input(
                format!("{}: recipe_sha256", path.display()),
                format!(
                    "{:?} is not 64 lowercase hex digits; the run directory is damaged",
                    st.recipe_sha256
                ),
            )
            .into());
        }
        crate::ident::check(format!("{}: recipe_name", path.display()), &st.recipe_name)?;
        if let Some(unknown) = st.stages.keys().find(|k| Stage::parse(k).is_none()) {
            return Err(Error::input(
                format!("{}: stages.{unknown}", path.display()),
                format!(
                    "not a stage of crambench run ({}); the run directory is damaged or from \
                     another version",
                    STAGES.map(Stage::name).join(", ")
                ),
            )
            .into());
        }
        Ok(Some(st))
    }

    /// Write `dir/run.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::io::write_atomic(&dir.join(STATE_FILE), &bytes, None)
    }

    /// The record of `stage` if it completed.
    pub fn stage(&self, stage: Stage) -> Option<&StageRecord> {
        self.stages.get(stage.name())
    }

    /// Forget `stage` and every stage after it (they are redone).
    pub fn invalidate_from(&mut self, stage: Stage) {
        for s in STAGES.into_iter().filter(|s| *s >= stage) {
            self.stages.remove(s.name());
        }
    }
}

/// The digest string recorded for `path` (`sha256:` for a file, `dirHash:` for a directory).
pub fn digest_of(path: &Path) -> Result<String> {
    let d = hash::hash_path(path, &|_| {})?;
    let set = d.digest_set();
    Ok(match (set.get("sha256"), set.get("dirHash")) {
        (Some(h), _) => format!("sha256:{h}"),
        (_, Some(h)) => format!("dirHash:{h}"),
        _ => anyhow::bail!("{}: no digest", path.display()),
    })
}

/// Resolve an output key of a stage record to a path (relative keys are under `dir`).
pub fn output_path(dir: &Path, key: &str) -> PathBuf {
    let p = Path::new(key);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Check a completed stage's outputs. Returns the first output that is missing or changed,
/// with what was found.
pub fn check_outputs(dir: &Path, rec: &StageRecord) -> Result<Option<(String, String)>> {
    for (key, want) in &rec.outputs {
        let p = output_path(dir, key);
        if !p.exists() {
            return Ok(Some((key.clone(), "missing".into())));
        }
        let got = digest_of(&p)?;
        if &got != want {
            return Ok(Some((key.clone(), format!("{got}, recorded {want}"))));
        }
    }
    Ok(None)
}
