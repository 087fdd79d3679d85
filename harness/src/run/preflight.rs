//! Preflight: everything a whole `crambench run` will need, checked in seconds before the first
//! long stage, so that nothing that can be known up front is discovered after hours of
//! pretraining. Each failure is the usual named error (file and field) with its exit code.
//!
//! Checked, in order: the recipe's `name` is a string; the `[data]` table is valid; every hub
//! file the run needs (corpus, tokenizer, GLUE Parquet from `hf:`) is resolved and written to
//! the lock file (GLUE files, small, are downloaded now; the corpus in the data stage); every
//! local source exists (with its pinned size); the `[glue]` task list names known tasks,
//! the aggregate rule's sets are all run, and every GLUE task's files exist under `--glue-data`;
//! the device is available; the signing key loads (or the default key can be created); the
//! output directory is writable; the disks hold the estimated dataset and checkpoints.
use crate::data::config::DataConfig;
use crate::error::Error;
use crate::glue::{config::GlueConfig, tasks::Task};
use crate::recipe::Recipe;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use tch::Device;

/// What the preflight found (for the progress line).
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// GLUE and demo tasks the run will fine-tune.
    pub tasks: Vec<String>,
    /// Bytes of corpus the data stage will read (local sources; embedded corpora).
    pub corpus_bytes: u64,
    /// Estimated bytes the run writes: prepared dataset plus checkpoints.
    pub estimated_write_bytes: u64,
    /// Hub files the run uses, their bytes, and the bytes still to download into the cache.
    pub hub_files: usize,
    pub hub_bytes: u64,
    pub download_bytes: u64,
    /// The lock file, when the run uses hub files.
    pub lock: Option<std::path::PathBuf>,
    /// The GLUE data root the run reads (`--glue-data`, `glue.data`, or the hub snapshot).
    pub glue_data: Option<std::path::PathBuf>,
}

/// What [`resolve_hub`] found.
#[derive(Debug, Default)]
pub struct HubPlan {
    pub files: usize,
    pub bytes: u64,
    /// Estimated text bytes of the hub corpus (compressed files counted 4x).
    pub corpus_text_bytes: u64,
    pub download_bytes: u64,
    /// The largest corpus file still to download (what `--delete-raw-shards` keeps at once
    /// for pre-tokenised data, read in one pass).
    pub largest_download: u64,
    pub lock: Option<std::path::PathBuf>,
    pub glue_root: Option<std::path::PathBuf>,
}

/// `hf:owner/name[@revision]` → (repo, revision).
pub fn parse_hf(spec: &str) -> Option<(String, String)> {
    let rest = spec.strip_prefix("hf:")?;
    let (repo, rev) = rest.split_once('@').unwrap_or((rest, "main"));
    Some((repo.to_string(), rev.to_string()))
}

/// The lock file of a run: `--lock`, else `<recipe>.lock`.
pub fn lock_path(recipe: &Recipe, opts: &super::RunOptions) -> std::path::PathBuf {
    opts.lock
        .clone()
        .unwrap_or_else(|| crate::data::hub::lock::default_path(&recipe.path))
}

/// How [`resolve_hub`] treats the lock.
#[derive(Debug, Clone)]
pub struct LockOptions {
    pub path: std::path::PathBuf,
    /// Refuse what the lock does not hold.
    pub locked: bool,
    /// Resolve every entry again (`data lock --update`).
    pub update: bool,
    pub progress: bool,
    /// Download the GLUE files now (a run reads them; `data lock` only pins them).
    pub fetch_glue: bool,
}

/// Resolve every hub file of the run through the lock (writing it), download the GLUE files
/// from an `hf:` spec, and count what the corpus download will be.
pub fn resolve_hub(
    recipe: &Recipe,
    data: &DataConfig,
    tasks: &[Task],
    glue_spec: Option<&str>,
    lo: &LockOptions,
) -> Result<HubPlan> {
    use crate::data::hub::{client, lock};
    let hf_glue = glue_spec.and_then(parse_hf);
    let hub_specs: Vec<&crate::data::config::SourceSpec> = data
        .sources
        .iter()
        .chain(data.tokenizer.iter())
        .filter(|s| s.hub.is_some())
        .collect();
    let mut plan = HubPlan::default();
    if hub_specs.is_empty() && hf_glue.is_none() {
        return Ok(plan);
    }
    let path = lo.path.clone();
    let mut session = lock::Session::new(
        client::Hub::from_env(lo.progress),
        Some(path.clone()),
        lo.locked,
        lo.update,
    )?;
    for s in hub_specs {
        let h = s.hub.as_ref().expect("filtered");
        let e = match (&s.sha256, s.size) {
            (Some(sha), Some(size))
                if client::is_commit(&h.revision) && !lock::is_glob(&h.path) =>
            {
                session.entry_pinned(h, sha, size)
            }
            _ => session.entry(h)?,
        };
        plan.files += e.files.len();
        plan.bytes += e.bytes();
        plan.download_bytes += session.missing_bytes(&e);
        let repo = e.repo();
        for f in &e.files {
            if session.hub.cached(&repo, &e.commit, &f.path).is_none() {
                plan.largest_download = plan.largest_download.max(f.size);
            }
            let compressed = [".gz", ".zst", ".zstd"].iter().any(|x| f.path.ends_with(x));
            plan.corpus_text_bytes += if compressed { f.size * 4 } else { f.size };
        }
    }
    if let Some((repo, rev)) = hf_glue {
        let what = format!("{}: GLUE data hf:{repo}@{rev}", recipe.path.display());
        let mut root: Option<std::path::PathBuf> = None;
        for t in tasks.iter().filter(|t| t.is_glue()) {
            let dir = crate::glue::layout_parquet::config_dir(*t);
            let mut splits = vec![crate::glue::layout_parquet::TRAIN_SPLIT];
            splits.extend(
                t.eval_sets()
                    .iter()
                    .map(crate::glue::layout_parquet::dev_split),
            );
            for split in splits {
                let h = crate::data::config::HubFile {
                    repo: repo.clone(),
                    repo_type: "dataset".into(),
                    revision: rev.clone(),
                    path: format!("{dir}/{split}-*.parquet"),
                };
                let e = session.entry(&h)?;
                plan.files += e.files.len();
                plan.bytes += e.bytes();
                plan.download_bytes += session.missing_bytes(&e);
                if lo.fetch_glue {
                    session.fetch(&e)?;
                }
                let snap = session.hub.snapshot_dir(&e.repo(), &e.commit);
                match &root {
                    Some(r) if *r != snap => {
                        return Err(Error::Check(format!(
                            "{what}: the lock file {} holds two commits of {repo}; run `crambench                              data lock --update` to resolve GLUE at one commit",
                            path.display()
                        ))
                        .into())
                    }
                    _ => root = Some(snap),
                }
            }
        }
        plan.glue_root = root;
    }
    session.save(true)?;
    plan.lock = Some(path);
    Ok(plan)
}

/// The recipe's `glue.tasks`, parsed, with errors naming the recipe file and field (not the
/// `--tasks` flag of `glue run`).
pub fn glue_tasks(recipe: &Recipe, cfg: &GlueConfig) -> Result<Vec<Task>> {
    Task::parse_list(&cfg.tasks.join(",")).map_err(|e| {
        let msg = match e.downcast_ref::<Error>() {
            Some(Error::Input { msg, .. }) => msg.clone(),
            _ => format!("{e:#}"),
        };
        Error::input(format!("{}: glue.tasks", recipe.path.display()), msg).into()
    })
}

/// Every evaluation set the aggregate rule needs must be among the sets run.
pub fn check_aggregate_sets(recipe: &Recipe, cfg: &GlueConfig, tasks: &[Task]) -> Result<()> {
    let run: Vec<&str> = tasks
        .iter()
        .flat_map(|t| t.eval_sets())
        .map(|s| s.id)
        .collect();
    let missing: Vec<&str> = cfg
        .aggregate
        .terms()
        .into_iter()
        .flatten()
        .map(|(set, _)| set)
        .filter(|s| !run.contains(s))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        return Err(Error::input(
            format!("{}: glue.aggregate", recipe.path.display()),
            format!(
                "the rule {} needs {}, which glue.tasks does not run",
                cfg.aggregate.name(),
                missing.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

/// Every GLUE (not demo) task's files exist under `glue_data`.
pub fn check_glue_data(
    tasks: &[Task],
    glue_data: Option<&Path>,
    flag: &str,
    what: &str,
) -> Result<()> {
    let glue: Vec<&Task> = tasks.iter().filter(|t| t.is_glue()).collect();
    if glue.is_empty() {
        return Ok(());
    }
    let Some(root) = glue_data else {
        return Err(Error::input(
            what,
            format!(
                "the GLUE tasks {} need GLUE data: pass {flag} DIR (a glue_data/ TSV tree or a \
                 nyu-mll/glue Parquet snapshot) or {flag} hf:nyu-mll/glue (downloaded and \
                 locked), or set glue.data in the recipe",
                glue.iter().map(|t| t.id()).collect::<Vec<_>>().join(", ")
            ),
        )
        .into());
    };
    if !root.is_dir() {
        return Err(Error::input(root.display(), format!("{flag}: not a directory")).into());
    }
    for t in glue {
        crate::glue::data::locate(root, *t)?;
    }
    Ok(())
}

/// The device exists on this machine.
pub fn check_device(device: Device) -> Result<()> {
    if device.is_cuda() && !tch::Cuda::is_available() {
        return Err(Error::input("--device", "CUDA is not available on this machine").into());
    }
    if let Device::Cuda(i) = device {
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            return Err(Error::input(
                format!("--device cuda:{i}"),
                format!("this machine has {n} CUDA device(s)"),
            )
            .into());
        }
    }
    Ok(())
}

/// Local and hub sources exist (directories or regular files; files at their pinned size).
fn check_sources(cfg: &DataConfig, recipe: &Recipe) -> Result<u64> {
    let base = recipe.path.parent().unwrap_or(Path::new("."));
    let mut bytes = 0;
    for (i, s) in cfg.sources.iter().chain(cfg.tokenizer.iter()).enumerate() {
        let field = format!("{}: data.sources[{i}]", recipe.path.display());
        if s.embedded.is_some() {
            // Text bytes the data stage reads: the embedded corpus is zstd-compressed about
            // 4:1, so its compressed size times 4 (an estimate for the disk check only).
            bytes += crate::data::source::SOTU_ZST.len() as u64 * 4;
            continue;
        }
        let path = match &s.path {
            Some(p) => base.join(p),
            // Hub files: resolved through the lock (resolve_hub); local paths and embedded
            // corpora here. DataConfig::validate names what is missing.
            None => continue,
        };
        let meta = std::fs::metadata(&path).map_err(|e| {
            Error::input(
                &field,
                format!(
                    "{}: {} (the data stage reads it)",
                    path.display(),
                    std::io::Error::from(e.kind())
                ),
            )
        })?;
        if meta.is_file() {
            if let Some(want) = s.size {
                if meta.len() != want {
                    return Err(Error::input(
                        format!("{field}.size"),
                        format!(
                            "{} is {} bytes, the pin says {want}",
                            path.display(),
                            meta.len()
                        ),
                    )
                    .into());
                }
            }
            bytes += meta.len();
        } else if meta.is_dir() {
            bytes += s.size.unwrap_or(0);
        } else {
            return Err(Error::input(
                &field,
                format!("{}: not a regular file or directory", path.display()),
            )
            .into());
        }
    }
    Ok(bytes)
}

/// Free bytes on the file system holding `dir` (its nearest existing ancestor).
fn free_bytes(dir: &Path) -> Option<u64> {
    let mut d = dir.to_path_buf();
    while !d.exists() {
        if !d.pop() {
            d = ".".into();
            break;
        }
    }
    if d.as_os_str().is_empty() {
        d = ".".into();
    }
    let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

/// The device id of the file system holding `dir` (its nearest existing ancestor).
fn device_of(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    dir.ancestors()
        .find_map(|d| {
            std::fs::metadata(if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            })
            .ok()
        })
        .map(|m| m.dev())
}

/// The directory can be created and written to.
fn check_writable(dir: &Path, flag: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tempfile::Builder::new()
        .prefix(".crambench-preflight-")
        .tempfile_in(dir)
        .map_err(|e| {
            Error::input(
                format!("{flag} {}", dir.display()),
                format!("not writable: {e}"),
            )
        })?;
    Ok(())
}

/// Everything `crambench run` checks before its first stage (see the module doc).
pub fn check(recipe: &Recipe, opts: &super::RunOptions) -> Result<Preflight> {
    if let Some(v) = recipe.table.get("name") {
        if !v.is_str() {
            return Err(Error::input(
                format!("{}: name", recipe.path.display()),
                format!("must be a string, not {}", v.type_str()),
            )
            .into());
        }
    }
    let data: DataConfig = recipe.section("data")?;
    data.validate(&recipe.path.display().to_string())?;
    let local_bytes = check_sources(&data, recipe)?;

    let glue = GlueConfig::from_recipe(recipe)?;
    let tasks = glue_tasks(recipe, &glue)?;
    let field = format!("{}: glue.tasks", recipe.path.display());
    if tasks.iter().any(|t| t.is_glue()) && tasks.iter().any(|t| !t.is_glue()) {
        return Err(Error::input(
            &field,
            "demo tasks and GLUE tasks cannot be mixed in one run",
        )
        .into());
    }
    // --glue-data, else the recipe's glue.data (a directory relative to the recipe, or hf:).
    let base = recipe.path.parent().unwrap_or(Path::new("."));
    let glue_spec: Option<String> = match (&opts.glue_data, &glue.data) {
        (Some(p), _) => Some(p.display().to_string()),
        (None, Some(d)) if d.starts_with("hf:") => Some(d.clone()),
        (None, Some(d)) => Some(base.join(d).display().to_string()),
        (None, None) => None,
    };
    if tasks.iter().any(|t| t.is_glue()) {
        if let Some(g) = glue_spec.as_deref().filter(|g| g.starts_with("hf:")) {
            if parse_hf(g).is_none_or(|(r, _)| {
                r.split('/').count() != 2 || !r.split('/').all(crate::ident::is_valid)
            }) {
                return Err(Error::input(
                    "--glue-data",
                    format!("{g:?}: expected hf:owner/name or hf:owner/name@revision"),
                )
                .into());
            }
        }
    }
    if glue_spec.is_none() {
        // No GLUE data at all: said before anything is resolved or downloaded.
        check_glue_data(&tasks, None, "--glue-data", &field)?;
    }
    let glue_for_hub = glue_spec
        .as_deref()
        .filter(|g| g.starts_with("hf:") && tasks.iter().any(|t| t.is_glue()));
    let hub = resolve_hub(
        recipe,
        &data,
        &tasks,
        glue_for_hub,
        &LockOptions {
            path: lock_path(recipe, opts),
            locked: opts.locked,
            update: false,
            progress: opts.progress,
            fetch_glue: true,
        },
    )?;
    let corpus_bytes = local_bytes + hub.corpus_text_bytes;
    let glue_root: Option<std::path::PathBuf> = hub.glue_root.clone().or_else(|| {
        glue_spec
            .as_ref()
            .filter(|g| !g.starts_with("hf:"))
            .map(Into::into)
    });
    check_glue_data(&tasks, glue_root.as_deref(), "--glue-data", &field)?;
    check_aggregate_sets(recipe, &glue, &tasks)?;
    check_device(opts.device)?;

    match &opts.key {
        Some(k) => {
            crate::manifest::keys::load_signing_key(k)?;
        }
        None => {
            crate::manifest::keys::config_dir()?;
        }
    }
    check_writable(&opts.out_root, "--out")?;
    check_writable(&opts.data_root, "--data-dir")?;

    // The prepared dataset (token ids: about half the bytes of raw text at 2 bytes a token of
    // about 4 characters) and the checkpoints kept (weights and two Adam moments in fp32).
    let arch: crate::model::ArchConfig = recipe.section("arch")?;
    // Embeddings and the per-layer attention and feed-forward matrices (gated FFNs have one more
    // input matrix; the estimate rounds that up with 3 of them).
    let (h, i, l, v) = (
        arch.hidden.max(0) as u64,
        arch.intermediate.max(0) as u64,
        arch.layers.max(0) as u64,
        arch.vocab_size.max(0) as u64,
    );
    let params = v
        .saturating_mul(h)
        .saturating_add(l.saturating_mul(4 * h * h + 3 * h * i));
    let keep = 2 + 1; // kept checkpoints plus the one being written
                      // What is already done (a resumed run) needs no room again.
    use super::state::Stage;
    let done: Vec<Stage> = super::state::RunState::load(&opts.out_root.join(recipe.name()))
        .ok()
        .flatten()
        .map(|st| st.stages.keys().filter_map(|k| Stage::parse(k)).collect())
        .unwrap_or_default();
    let data_bytes = if done.contains(&Stage::Data) {
        0
    } else {
        corpus_bytes / 2
    };
    let ckpt_bytes = if done.contains(&Stage::Pretrain) {
        0
    } else {
        params.saturating_mul(4 * 3 * keep)
    };
    let estimated_write_bytes = data_bytes.saturating_add(ckpt_bytes);
    // The dataset goes to --data-dir, the checkpoints to --out; on one file system, both.
    // Downloads go to the hub cache. Needs on one file system add up.
    let cache = crate::data::hub::cache_root();
    let pretokenised = data
        .sources
        .iter()
        .all(|s| s.format == Some(crate::data::config::Format::ParquetIds));
    let download = if done.contains(&super::state::Stage::Data) {
        0
    } else if opts.delete_raw && pretokenised {
        // One pass, each shard removed once read: one shard at a time (plus GLUE, small).
        hub.largest_download
            .max(hub.download_bytes.min(hub.largest_download + (64 << 20)))
    } else {
        // Text corpora are read twice (tokenizer training, then packing): every raw shard is
        // on disk before the second pass removes them.
        hub.download_bytes
    };
    let mut needs: Vec<(std::path::PathBuf, String, u64)> = Vec::new();
    for (dir, flag, need) in [
        (
            opts.data_root.clone(),
            "--data-dir (prepared dataset)",
            data_bytes,
        ),
        (opts.out_root.clone(), "--out (checkpoints)", ckpt_bytes),
        (cache, "the Hugging Face cache (downloads)", download),
    ] {
        let dev = device_of(&dir);
        match needs.iter_mut().find(|(d, _, _)| device_of(d) == dev) {
            Some(n) => {
                n.1 = format!("{} and {flag}", n.1);
                n.2 = n.2.saturating_add(need);
            }
            None => needs.push((dir, flag.to_string(), need)),
        }
    }
    for (dir, flag, need) in &needs {
        let (dir, flag, need) = (dir.as_path(), flag.as_str(), *need);
        if let Some(free) = free_bytes(dir) {
            if free < need {
                return Err(Error::Refused(format!(
                    "{} ({flag}): {} free, but this run is estimated to write {} there; free \
                     some space or choose other directories",
                    dir.display(),
                    human_bytes(free),
                    human_bytes(need)
                ))
                .into());
            }
        }
    }
    Ok(Preflight {
        tasks: tasks.iter().map(|t| t.id().to_string()).collect(),
        corpus_bytes,
        estimated_write_bytes: estimated_write_bytes.saturating_add(download),
        hub_files: hub.files,
        hub_bytes: hub.bytes,
        download_bytes: download,
        lock: hub.lock,
        glue_data: glue_root,
    })
}

/// `1.5 GB`-style sizes for messages.
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
