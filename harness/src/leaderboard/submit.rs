//! `crambench submit RUN_DIR --out ENTRY`: pack a signed run into a leaderboard entry.
//!
//! An entry (a *bundle*) is a directory with the run directory's layout, so
//! [`crate::record::RunRecord::open`] opens it like the run itself:
//!
//! ```text
//! ENTRY/
//!   manifest.dsse.json        the signed envelope, byte for byte
//!   recipe.resolved.json      the resolved recipe (copied; written from the signed manifest's
//!                             `recipe.resolved` when the run directory has none)
//!   *.toml                    the recipe TOML files found at the top of the run directory
//!   pretrain/metrics.jsonl    the pretraining metrics log
//!   glue/glue.json            GLUE results
//!   glue/predictions/**       every predictions file
//!   report.md, report.html    the report, when present
//!   bundle.json               index: every other file with its SHA-256 and size
//! ```
//!
//! A directory, not an archive: it can be committed, diffed and served as is (`tar` it to ship).
//!
//! Before anything is written, the run must be signed (an envelope with at least one
//! signature; exit 2 otherwise), be a full run (`kind = "run"`), and every predictions file the
//! signed manifest names must exist with the `predictions_sha256` the manifest gives (exit 1,
//! naming the file); the `glue/predictions` directory must also match the signed `predictions`
//! subject's `dirHash`, so no file was added or removed. Signatures themselves are checked by
//! `crambench verify` and by the leaderboard, against the keys they trust.
//!
//! The bundle is built in a hidden temporary directory beside `ENTRY`, every file and directory
//! fsynced, then renamed into place with `RENAME_NOREPLACE`: a failure (or a crash) leaves no
//! `ENTRY`, and an existing `ENTRY` is never touched (exit 4).
use super::manifest_predictions;
use crate::error::Error;
use crate::record::{RunRecord, ENVELOPE_FILE, GLUE_DIR, METRICS_LOG};
use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use crate::record::{read_index, BundleFile, BUNDLE_FORMAT, BUNDLE_INDEX};
/// The resolved recipe's file name.
pub const RECIPE_RESOLVED: &str = "recipe.resolved.json";
/// GLUE results file, relative to the run root.
pub const GLUE_JSON: &str = "glue/glue.json";
/// Report files copied when present.
pub const REPORT_FILES: [&str; 2] = ["report.md", "report.html"];

/// What [`submit`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Bundle {
    /// The entry directory.
    pub entry: PathBuf,
    pub recipe: Option<String>,
    /// SHA-256 of the signed statement (the envelope's payload).
    pub payload_sha256: String,
    /// Aggregate (rule, percent points) as signed.
    pub aggregate: Option<(String, f64)>,
    /// Every file but `bundle.json`, in path order.
    pub files: Vec<BundleFile>,
}

/// Options of [`submit`].
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Fault injection for tests: fail with an I/O error after copying this many files, as a
    /// full disk would. Not exposed on the command line.
    #[doc(hidden)]
    pub fault_after_files: Option<usize>,
}

/// Where a file of the bundle comes from.
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Pack the signed run in `run_dir` into the new directory `entry`.
pub fn submit(run_dir: &Path, entry: &Path, opts: &SubmitOptions) -> Result<Bundle> {
    if entry.symlink_metadata().is_ok() {
        return Err(Error::Refused(format!(
            "{} already exists; refusing to overwrite it (choose another --out)",
            entry.display()
        ))
        .into());
    }
    if !run_dir.is_dir() {
        return Err(Error::input(run_dir.display(), "not a run directory").into());
    }
    let record = RunRecord::open(run_dir)?;
    let env = record.envelope.as_ref().ok_or_else(|| {
        Error::input(
            run_dir.display(),
            format!(
                "unsigned run: no {ENVELOPE_FILE} (sign the manifest with `crambench sign` first)"
            ),
        )
    })?;
    if env.signatures.is_empty() {
        return Err(Error::input(
            run_dir.join(ENVELOPE_FILE).display(),
            "unsigned run: the envelope has no signatures (`crambench sign --key K` adds one)",
        )
        .into());
    }
    record.require_run()?;

    // The run's artifacts against the signed manifest, before anything is written: every
    // predictions file at its signed digest and re-scoring to the signed metrics, the
    // predictions directory at the signed dirHash (nothing added or removed), the subjects
    // present in the run directory (one implementation with `verify`, `gate`, `leaderboard`).
    let preds = manifest_predictions(&record).map_err(|e| Error::input(&record.source, e))?;
    // Digests only: the leaderboard re-scores against trusted gold.
    let a = crate::audit::audit(
        &record,
        &crate::audit::Options {
            digests_only: true,
            ..Default::default()
        },
        &mut crate::audit::GoldCache::default(),
    );
    crate::audit::require_ok(&a, &run_dir.display().to_string())?;
    if let Some(i) = a.unverified(crate::audit::Kind::Predictions).next() {
        return Err(Error::Check(format!(
            "{}: {} {} {}: a bundle needs every predictions file the manifest names",
            run_dir.display(),
            i.name,
            i.status.as_str(),
            i.detail
        ))
        .into());
    }
    let expected: std::collections::BTreeMap<String, String> = preds
        .iter()
        .map(|p| (format!("{GLUE_DIR}/{}", p.rel), p.sha256.clone()))
        .collect();
    let pred_dir = run_dir.join(GLUE_DIR).join("predictions");
    let listed = if pred_dir.is_dir() {
        crate::provenance::hash::hash_dir(&pred_dir, &|_| {})?
    } else {
        return Err(Error::input(pred_dir.display(), "no predictions directory").into());
    };
    if let Some(l) = listed.skipped_symlinks.first() {
        return Err(Error::input(
            pred_dir.join(l).display(),
            "a symbolic link; bundles hold regular files only",
        )
        .into());
    }

    // What goes in, by relative path.
    let mut plan: Vec<(String, Source)> = vec![(
        ENVELOPE_FILE.into(),
        Source::File(run_dir.join(ENVELOPE_FILE)),
    )];
    let resolved = run_dir.join(RECIPE_RESOLVED);
    if resolved.is_file() {
        plan.push((RECIPE_RESOLVED.into(), Source::File(resolved)));
    } else {
        let r = record
            .predicate
            .recipe
            .as_ref()
            .map(|x| &x.resolved)
            .filter(|v| v.is_object())
            .ok_or_else(|| {
                Error::input(
                    &record.source,
                    format!("no {RECIPE_RESOLVED} and no recipe.resolved in the manifest"),
                )
            })?;
        let mut bytes = serde_json::to_vec_pretty(r)?;
        bytes.push(b'\n');
        plan.push((RECIPE_RESOLVED.into(), Source::Bytes(bytes)));
    }
    let mut tomls: Vec<String> = std::fs::read_dir(run_dir)
        .map_err(|e| Error::io(run_dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".toml") && !n.starts_with('.'))
        .collect();
    tomls.sort();
    for n in tomls {
        plan.push((n.clone(), Source::File(run_dir.join(&n))));
    }
    for required in [METRICS_LOG, GLUE_JSON] {
        let p = run_dir.join(required);
        if !p.is_file() {
            return Err(Error::input(p.display(), "missing: a run directory has it").into());
        }
        plan.push((required.into(), Source::File(p)));
    }
    for e in &listed.entries {
        let rel = format!("{GLUE_DIR}/predictions/{}", e.path);
        plan.push((rel, Source::File(pred_dir.join(&e.path))));
    }
    // The no-pretraining control's predictions (a signed subject of their own), when it ran.
    let controls_dir = run_dir.join(GLUE_DIR).join("controls");
    let signed_controls = record.subject("control-predictions").is_some();
    if signed_controls && controls_dir.is_dir() {
        let c = crate::provenance::hash::hash_dir(&controls_dir, &|_| {})?;
        if let Some(l) = c.skipped_symlinks.first() {
            return Err(Error::input(
                controls_dir.join(l).display(),
                "a symbolic link; bundles hold regular files only",
            )
            .into());
        }
        for e in &c.entries {
            let rel = format!("{GLUE_DIR}/controls/{}", e.path);
            plan.push((rel, Source::File(controls_dir.join(&e.path))));
        }
    }
    for r in REPORT_FILES {
        let p = run_dir.join(r);
        if p.symlink_metadata().is_ok() {
            plan.push((r.into(), Source::File(p)));
        }
    }

    // Build beside ENTRY, then rename into place.
    let parent = match entry.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".crambench-submit-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let mut files = Vec::with_capacity(plan.len());
    let mut dirs = std::collections::BTreeSet::new();
    for (n, (rel, src)) in plan.iter().enumerate() {
        if opts.fault_after_files == Some(n) {
            return Err(Error::io(
                tmp.path().join(rel),
                std::io::Error::other("simulated failure (no space left on device)"),
            )
            .into());
        }
        let dst = tmp.path().join(rel);
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            let mut a = d.to_path_buf();
            while a.starts_with(tmp.path()) && dirs.insert(a.clone()) {
                if !a.pop() {
                    break;
                }
            }
        }
        let (sha256, size) = match src {
            Source::File(p) => copy_hashed(p, &dst)?,
            Source::Bytes(b) => {
                write_synced(&dst, b)?;
                (crate::provenance::hash::sha256_hex(b), b.len() as u64)
            }
        };
        if let Some(want) = expected.get(rel) {
            if *want != sha256 {
                return Err(Error::Check(format!(
                    "{rel}: changed while bundling (sha256 {sha256}, signed {want})"
                ))
                .into());
            }
        }
        files.push(BundleFile {
            path: rel.clone(),
            sha256,
            size,
        });
    }
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let payload_sha256 = crate::provenance::hash::sha256_hex(&record.payload);
    let aggregate = record.aggregate().map(|(r, v)| (r.to_string(), v));
    let index = json!({
        "format": BUNDLE_FORMAT,
        "crambench_version": crate::VERSION,
        "created": crate::manifest::statement::now_rfc3339(),
        "recipe": record.recipe_name(),
        "payload_sha256": payload_sha256,
        "aggregate": aggregate.as_ref().map(|(r, v)| json!({"rule": r, "value": v})),
        "files": files,
    });
    let mut bytes = serde_json::to_vec_pretty(&index)?;
    bytes.push(b'\n');
    write_synced(&tmp.path().join(BUNDLE_INDEX), &bytes)?;
    // Directories deepest first, so every entry is durable before the rename.
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }
    sync_dir(tmp.path())?;
    rename_noreplace(tmp.path(), entry)?;
    // The directory now lives at `entry`; nothing is left to clean up.
    let _ = tmp.keep();
    sync_dir(&parent)?;
    Ok(Bundle {
        entry: entry.to_path_buf(),
        recipe: record.recipe_name().map(str::to_string),
        payload_sha256,
        aggregate,
        files,
    })
}

/// Copy `src` (a regular file, links not followed) to the new file `dst`, hashing as it goes;
/// fsynced.
fn copy_hashed(src: &Path, dst: &Path) -> Result<(String, u64)> {
    let meta = src.symlink_metadata().map_err(|e| Error::io(src, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::input(src.display(), "not a regular file").into());
    }
    let mut input = crate::io::open_input(src)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| Error::io(dst, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(dst, e))?;
        size += n as u64;
    }
    out.sync_all().map_err(|e| Error::io(dst, e))?;
    Ok((hex::encode(hasher.finalize()), size))
}

fn write_synced(dst: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| Error::io(dst, e))?;
    out.write_all(bytes).map_err(|e| Error::io(dst, e))?;
    out.sync_all().map_err(|e| Error::io(dst, e))?;
    Ok(())
}

fn sync_dir(d: &Path) -> Result<()> {
    let f = std::fs::File::open(d).map_err(|e| Error::io(d, e))?;
    f.sync_all().map_err(|e| Error::io(d, e))?;
    Ok(())
}

/// Rename `from` to `to`, failing (exit 4) if `to` exists — atomically where the kernel
/// supports `RENAME_NOREPLACE`.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let exists = || {
        anyhow::Error::new(Error::Refused(format!(
            "{} already exists; refusing to overwrite it",
            to.display()
        )))
    };
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let a = CString::new(from.as_os_str().as_bytes())
            .map_err(|_| Error::input(from.display(), "path contains NUL"))?;
        let b = CString::new(to.as_os_str().as_bytes())
            .map_err(|_| Error::input(to.display(), "path contains NUL"))?;
        // SAFETY: both are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => return Err(exists()),
            // Filesystems without RENAME_NOREPLACE: fall through to check-then-rename.
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {}
            _ => return Err(Error::io(to, err).into()),
        }
    }
    if to.symlink_metadata().is_ok() {
        return Err(exists());
    }
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    Ok(())
}
