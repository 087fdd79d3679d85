//! Checkpoints: everything needed to continue a run exactly, written so that a crash never
//! leaves a checkpoint that looks valid.
//!
//! Layout under `<out>/checkpoints/`:
//!
//! ```text
//! latest                      name of the newest complete checkpoint (replaced atomically)
//! ckpt-0000001234/            one checkpoint, named by its micro-step
//!   model.safetensors         weights, reference state-dict names (VarStore::save)
//!   optimizer.safetensors     Adam moments: exp_avg.<name>, exp_avg_sq.<name>
//!   state.json                TrainState: counters, elapsed budget, data position, seeds,
//!                             loss scaler, recent losses
//!   arch.json                 the model's ArchConfig
//!   tokenizer.json            copy of the dataset's tokenizer (real data only)
//!   meta.json                 sha256 and size of every file above; written last
//! ckpt-0000001234.clock.json  wall-clock budget used (`elapsed_s`), bound to the checkpoint
//!                             by the sha256 of its meta.json
//! ```
//!
//! The wall-clock time is the only thing two identical trainings (same recipe, seed, data and
//! step count) do not share, so it is kept out of the checkpoint directory: its `dirHash` — the
//! run manifest's `checkpoint` subject — is then the same for both. The clock file is written
//! before the directory is renamed into place, and a checkpoint whose clock file is missing or
//! belongs to another `meta.json` is refused.
//!
//! Writing: all files go into `.tmp-…` in the same directory, each is fsynced, `meta.json` is
//! written last, the directory is fsynced and renamed into place, then `latest` is replaced
//! with [`crate::io::write_atomic`]. Loading verifies every digest in `meta.json`; a checkpoint
//! without `meta.json` or with a wrong digest is refused, and `latest` only ever names a
//! checkpoint whose rename completed.
use crate::error::Error;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::amp::LossScaler;

/// Format tag of `state.json`.
pub const STATE_FORMAT: &str = "crambench-train-state/v1";
/// Format tag of `meta.json`.
pub const META_FORMAT: &str = "crambench-checkpoint/v1";
/// Format tag of a checkpoint's clock file.
pub const CLOCK_FORMAT: &str = "crambench-checkpoint-clock/v1";
/// Suffix of a checkpoint's clock file beside its directory (`ckpt-…` + this).
pub const CLOCK_SUFFIX: &str = ".clock.json";
/// Largest `state.json` / `meta.json` read.
const JSON_LIMIT: u64 = 64 << 20;

/// The trainer's state besides weights and moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    pub format: String,
    /// Recipe name and the sha256 of its resolved canonical JSON (resume refuses another).
    pub recipe_name: String,
    pub recipe_sha256: String,
    /// The master seed and the seeds derived from it.
    pub master_seed: u64,
    pub seeds: BTreeMap<String, u64>,
    /// Micro-batch steps taken (the scheduler's and the masking stream's counter).
    pub micro_step: u64,
    /// Optimizer steps taken.
    pub optimizer_steps: u64,
    /// Sequences and tokens consumed.
    pub sequences_seen: u64,
    pub tokens_seen: u64,
    /// Next block of the data stream to read (blocks wrap around the dataset).
    pub data_position: u64,
    /// Pretraining wall seconds used so far (the budget clock). Not written to `state.json`
    /// (it would make identical trainings' checkpoints differ) but to the checkpoint's clock
    /// file; read from `state.json` only for checkpoints written before the clock file existed.
    #[serde(default, skip_serializing)]
    pub elapsed_s: f64,
    /// Budget in device-hours.
    pub budget_hours: f64,
    /// Batch size in force for the next optimizer step.
    pub batch_size: u64,
    /// Loss scaler (fp16) state.
    pub scaler: LossScaler,
    /// Recent micro-step losses (for the final-loss window).
    pub recent_losses: Vec<f64>,
    /// The first micro-step losses of the run (up to 20).
    pub initial_losses: Vec<f64>,
    /// Digest of the training data (dataset root digest, or a description of the synthetic
    /// stream).
    pub data_digest: String,
}

/// What one checkpoint directory holds.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainState,
}

impl Checkpoint {
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    pub fn optimizer_path(&self) -> PathBuf {
        self.dir.join("optimizer.safetensors")
    }
}

/// `meta.json`: the digest of every file of a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub format: String,
    pub micro_step: u64,
    /// File name → digest and size.
    pub files: BTreeMap<String, FileEntry>,
}

/// A checkpoint's clock file: the budget used, and the sha256 of the `meta.json` it belongs to.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Clock {
    format: String,
    meta_sha256: String,
    elapsed_s: f64,
}

/// The clock file of the checkpoint directory `dir` (beside it, outside its `dirHash`).
pub fn clock_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}{CLOCK_SUFFIX}"))
}

/// One file of a checkpoint in `meta.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

fn fsync_path(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(())
}

fn file_sha256(path: &Path) -> Result<(String, u64)> {
    let d = crate::provenance::hash::hash_file(path, &|_| {})?;
    Ok((d.sha256, d.size))
}

/// The directory holding a run's checkpoints.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// Write a checkpoint. `write_payload` writes `model.safetensors` and `optimizer.safetensors`
/// (and anything else) into the directory it is given; `arch` becomes `arch.json`; `tokenizer`
/// is copied as `tokenizer.json`. Returns the final directory. Keeps the newest `keep`
/// checkpoints.
pub fn save(
    out: &Path,
    state: &TrainState,
    arch: &serde_json::Value,
    tokenizer: Option<&Path>,
    keep: usize,
    write_payload: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = checkpoints_dir(out);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let mut name = format!("ckpt-{:010}", state.micro_step);
    let mut k = 1;
    while root.join(&name).exists() {
        name = format!("ckpt-{:010}-{k}", state.micro_step);
        k += 1;
    }
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write_payload(&tmp)?;
    crate::io::crash_point("checkpoint-payload");
    std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)
        .map_err(|e| Error::io(tmp.join("state.json"), e))?;
    std::fs::write(tmp.join("arch.json"), serde_json::to_vec_pretty(arch)?)
        .map_err(|e| Error::io(tmp.join("arch.json"), e))?;
    if let Some(tok) = tokenizer {
        std::fs::copy(tok, tmp.join("tokenizer.json")).map_err(|e| Error::io(tok, e))?;
    }
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
        let entry = entry.map_err(|e| Error::io(&tmp, e))?;
        let path = entry.path();
        let fname = entry.file_name().to_string_lossy().into_owned();
        fsync_path(&path)?;
        let (sha256, size) = file_sha256(&path)?;
        files.insert(fname, FileEntry { sha256, size });
    }
    for required in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "arch.json",
    ] {
        if !files.contains_key(required) {
            anyhow::bail!("checkpoint writer produced no {required}");
        }
    }
    let meta = Meta {
        format: META_FORMAT.into(),
        micro_step: state.micro_step,
        files,
    };
    let meta_path = tmp.join("meta.json");
    if let Some(e) = crate::io::injected_fault(&dir_for_fault(&root, &name)) {
        return Err(Error::io(&meta_path, e).into());
    }
    let meta_bytes = serde_json::to_vec_pretty(&meta)?;
    std::fs::write(&meta_path, &meta_bytes).map_err(|e| Error::io(&meta_path, e))?;
    fsync_path(&meta_path)?;
    fsync_path(&tmp)?;
    let dir = root.join(&name);
    // The clock first: a checkpoint directory never exists without its clock file.
    let clock = Clock {
        format: CLOCK_FORMAT.into(),
        meta_sha256: crate::provenance::hash::sha256_hex(&meta_bytes),
        elapsed_s: state.elapsed_s,
    };
    crate::io::write_atomic(&clock_path(&dir), &serde_json::to_vec_pretty(&clock)?, None)?;
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    fsync_path(&root)?;
    crate::io::crash_point("checkpoint-renamed");
    crate::io::write_atomic(&root.join("latest"), format!("{name}\n").as_bytes(), None)?;
    prune(&root, &name, keep.max(1))?;
    Ok(dir)
}

/// The final path of a checkpoint being written (what fault injection matches against).
fn dir_for_fault(root: &Path, name: &str) -> PathBuf {
    root.join(name).join("meta.json")
}

/// Remove all but the newest `keep` complete checkpoints (never `latest`) and stale temp dirs.
fn prune(root: &Path, latest: &str, keep: usize) -> Result<()> {
    let mut complete = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-ckpt-") {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if name.starts_with("ckpt-") && entry.path().is_dir() {
            complete.push(name);
        }
    }
    complete.sort();
    let n = complete.len();
    for name in complete.iter().take(n.saturating_sub(keep)) {
        if name != latest {
            let _ = std::fs::remove_dir_all(root.join(name));
            let _ = std::fs::remove_file(clock_path(&root.join(name)));
        }
    }
    // Clock files whose checkpoint is gone (removed above, or a write that failed after the
    // clock was written and before the rename).
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ck) = name.strip_suffix(CLOCK_SUFFIX) {
            if ck.starts_with("ckpt-") && !root.join(ck).is_dir() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Write `meta.json` for a checkpoint directory assembled by other means (an imported or a
/// hand-built one): the sha256 and size of every regular file in it, so that every later load
/// verifies them ([`verify_files`]).
pub fn seal(dir: &Path, micro_step: u64) -> Result<()> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "meta.json"
            || name.starts_with('.')
            || !entry.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let (sha256, size) = file_sha256(&entry.path())?;
        files.insert(name, FileEntry { sha256, size });
    }
    let meta = Meta {
        format: META_FORMAT.into(),
        micro_step,
        files,
    };
    crate::io::write_atomic(
        &dir.join("meta.json"),
        &serde_json::to_vec_pretty(&meta)?,
        None,
    )
}

/// Check every file `meta.json` lists against its sha256 and size (what every load of a
/// checkpoint does first: resuming, fine-tuning, evaluating). A checkpoint without `meta.json`
/// is incomplete; a wrong digest is a damaged checkpoint ([`Error::Check`]). Returns the
/// parsed `meta.json` and its bytes (what a checkpoint's clock file is bound to).
pub fn verify_files(dir: &Path) -> Result<(Meta, Vec<u8>)> {
    let meta_path = dir.join("meta.json");
    let bytes = crate::io::read_limited(&meta_path, JSON_LIMIT)
        .with_context(|| format!("{} is not a complete checkpoint", dir.display()))?;
    let meta: Meta =
        serde_json::from_slice(&bytes).map_err(|e| Error::input(meta_path.display(), e))?;
    if meta.format != META_FORMAT {
        return Err(Error::input(
            meta_path.display(),
            format!("unknown format {:?}", meta.format),
        )
        .into());
    }
    for (name, entry) in &meta.files {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::input(
                meta_path.display(),
                format!("files: {name:?} is not a file name inside the checkpoint"),
            )
            .into());
        }
        let path = dir.join(name);
        let (sha, size) = file_sha256(&path)?;
        if sha != entry.sha256 || size != entry.size {
            return Err(Error::Check(format!(
                "checkpoint {}: {name} does not match meta.json (sha256 {sha}, expected {}); the checkpoint is damaged",
                dir.display(),
                entry.sha256
            ))
            .into());
        }
    }
    Ok((meta, bytes))
}

/// Verify a checkpoint directory against its `meta.json` and read its state.
pub fn load_dir(dir: &Path) -> Result<Checkpoint> {
    let (meta, bytes) = verify_files(dir)?;
    let meta_path = dir.join("meta.json");
    for required in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "arch.json",
    ] {
        if !meta.files.contains_key(required) {
            return Err(Error::input(meta_path.display(), format!("lists no {required}")).into());
        }
    }
    let state_path = dir.join("state.json");
    let state: TrainState =
        serde_json::from_slice(&crate::io::read_limited(&state_path, JSON_LIMIT)?)
            .map_err(|e| Error::input(state_path.display(), e))?;
    if state.format != STATE_FORMAT {
        return Err(Error::input(
            state_path.display(),
            format!("unknown format {:?}", state.format),
        )
        .into());
    }
    let mut state = state;
    let cpath = clock_path(dir);
    if cpath.exists() {
        let clock: Clock = serde_json::from_slice(&crate::io::read_limited(&cpath, JSON_LIMIT)?)
            .map_err(|e| Error::input(cpath.display(), e))?;
        if clock.format != CLOCK_FORMAT {
            return Err(Error::input(
                cpath.display(),
                format!("unknown format {:?}", clock.format),
            )
            .into());
        }
        if clock.meta_sha256 != crate::provenance::hash::sha256_hex(&bytes) {
            return Err(Error::Check(format!(
                "{}: belongs to another checkpoint (meta.json sha256 {}); the checkpoint is damaged",
                cpath.display(),
                clock.meta_sha256
            ))
            .into());
        }
        if !(clock.elapsed_s.is_finite() && clock.elapsed_s >= 0.0) {
            return Err(Error::input(
                format!("{}: elapsed_s", cpath.display()),
                format!("{} is not a number of seconds", clock.elapsed_s),
            )
            .into());
        }
        state.elapsed_s = clock.elapsed_s;
    } else if state.elapsed_s == 0.0 {
        // Written before the clock file existed, state.json held the time; now it must be here.
        return Err(Error::Check(format!(
            "checkpoint {}: no clock file {}; the budget it used is unknown",
            dir.display(),
            cpath.display()
        ))
        .into());
    }
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
    })
}

/// The newest complete checkpoint of a run (via `latest`), verified; `None` if there is none.
pub fn load_latest(out: &Path) -> Result<Option<Checkpoint>> {
    let root = checkpoints_dir(out);
    let latest = root.join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = String::from_utf8(crate::io::read_limited(&latest, 4096)?)
        .map_err(|_| Error::input(latest.display(), "not UTF-8"))?;
    let name = name.trim();
    crate::ident::check(format!("{}: checkpoint name", latest.display()), name)?;
    load_dir(&root.join(name)).map(Some)
}
