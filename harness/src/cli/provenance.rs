//! `crambench fingerprint`, `hash`, `seeds`: what a run is pinned to (machine, content,
//! seeds), printed for people or as JSON.
use super::args::{JsonArg, SeedArg};
use super::{json_text, print as out};
use anyhow::Result;
use clap::{Args, Subcommand};
use crambench::provenance::{fingerprint as fp, hash as digest, seeds as seed};
use crambench::ExitCode;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FingerprintArgs {
    #[command(subcommand)]
    diff: Option<FingerprintCmd>,
    #[command(flatten)]
    json: JsonArg,
    /// Include hostname, user name, IP and MAC addresses (off by default: entries are public).
    #[arg(long)]
    include_host: bool,
    /// Also write the JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum FingerprintCmd {
    /// What changed between two fingerprints (files from `fingerprint --json`, manifests or
    /// envelopes), grouped into hardware / software / environment. Exit 1 when the hardware
    /// class differs.
    Diff {
        /// The first fingerprint (JSON file, manifest or envelope).
        a: PathBuf,
        /// The second fingerprint.
        b: PathBuf,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Args)]
pub struct HashArgs {
    /// Files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// List every file of a directory with its digest.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Args)]
pub struct SeedsArgs {
    #[command(flatten)]
    seed: SeedArg,
    /// The older name of --seed.
    #[arg(long, value_name = "SEED", hide = true, conflicts_with = "seed")]
    master: Option<u64>,
    /// Labels, e.g. init data-order masking finetune/mnli/0.
    labels: Vec<String>,
    #[command(flatten)]
    json: JsonArg,
}

pub fn fingerprint(args: FingerprintArgs) -> Result<ExitCode> {
    if let Some(FingerprintCmd::Diff { a, b, json }) = args.diff {
        let va = fp::load(&a)?;
        let vb = fp::load(&b)?;
        let d = fp::diff(&va, &vb);
        out(&if json.enabled {
            json_text(&d)?
        } else {
            d.to_table()
        })?;
        return Ok(if d.hardware_class_changed {
            ExitCode::CheckFailed
        } else {
            ExitCode::Ok
        });
    }
    let fp = fp::collect(&fp::Options {
        include_host: args.include_host,
        ..Default::default()
    });
    if let Some(path) = &args.out {
        crambench::io::write_atomic(path, json_text(&fp)?.as_bytes(), None)?;
    }
    out(&if args.json.enabled {
        json_text(&fp)?
    } else {
        fp.to_table()
    })?;
    Ok(ExitCode::Ok)
}

pub fn hash(args: HashArgs) -> Result<ExitCode> {
    let results = args
        .paths
        .iter()
        .map(|p| digest_of(p))
        .collect::<Result<Vec<_>>>()?;
    if args.json.enabled {
        let mut v = serde_json::to_value(&results)?;
        if !args.list {
            for item in v.as_array_mut().into_iter().flatten() {
                if let Some(o) = item.as_object_mut() {
                    o.remove("entries");
                }
            }
        }
        return out(&json_text(&v)?).map(|_| ExitCode::Ok);
    }
    let mut text = String::new();
    for d in &results {
        match d {
            digest::PathDigest::File(f) => {
                text += &format!("sha256:{}  {:>14}  {}\n", f.sha256, f.size, f.path)
            }
            digest::PathDigest::Dir(dir) => {
                text += &format!(
                    "dirHash:{}  {:>14}  {}/  ({} files)\n",
                    dir.dir_hash, dir.size, dir.path, dir.files
                );
                if args.list {
                    for e in &dir.entries {
                        text += &format!("  sha256:{}  {:>14}  {}\n", e.sha256, e.size, e.path);
                    }
                }
                for l in &dir.skipped_symlinks {
                    text += &format!("  (symbolic link not hashed: {l})\n");
                }
            }
        }
    }
    out(&text)?;
    Ok(ExitCode::Ok)
}

pub fn seeds(args: SeedsArgs) -> Result<ExitCode> {
    let mut s = seed::Seeds::from_option(args.seed.seed.or(args.master))?;
    for l in &args.labels {
        s.get(l)?;
    }
    if args.json.enabled {
        return out(&json_text(&s)?).map(|_| ExitCode::Ok);
    }
    let origin = if s.master_from_os {
        " (drawn from the OS)"
    } else {
        ""
    };
    let mut text = format!("master  {}{origin}\n", s.master);
    for (label, seed) in &s.derived {
        text += &format!("{label}  {seed}\n");
    }
    out(&text)?;
    Ok(ExitCode::Ok)
}

/// The digest of a file or directory, with a progress bar on stderr.
pub fn digest_of(path: &Path) -> Result<digest::PathDigest> {
    let total = std::fs::metadata(path)
        .map(|m| if m.is_file() { m.len() } else { 0 })
        .unwrap_or(0);
    let pb = crambench::io::byte_progress(true, total, &path.display().to_string());
    let d = digest::hash_path(path, &|n| pb.inc(n))?;
    pb.finish_and_clear();
    Ok(d)
}
