//! `crambench data …`: prepare a recipe's dataset, lock its hub files, print source pins.
use super::args::{DataDirArg, JsonArg};
use anyhow::Result;
use clap::Subcommand;
use crambench::data::{self, DataConfig, PrepareOptions};
use crambench::error::ExitCode;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Turn the recipe's [data] sources into a tokenizer and packed, hashed token shards
    /// (reused when the same sources and settings were prepared before).
    Prepare {
        /// The recipe (TOML).
        recipe: PathBuf,
        #[command(flatten)]
        data_dir: DataDirArg,
        /// The older name of --data-dir.
        #[arg(long, value_name = "DIR", hide = true, conflicts_with = "data_dir")]
        out: Option<PathBuf>,
        /// Worker threads (default: all cores). The result does not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// The lock file of hub sources (default: <recipe>.lock beside the recipe).
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
        /// Refuse to resolve a hub file the lock does not hold (CI).
        #[arg(long)]
        locked: bool,
        /// Remove each raw hub shard from the Hugging Face cache once it has been processed
        /// (bounds the disk for corpora larger than it).
        #[arg(long)]
        delete_raw_shards: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Resolve every hub file the recipe names (corpus, tokenizer, GLUE from `hf:`) to commit,
    /// path, size and SHA-256 and write them to the lock file, without preparing anything.
    /// Entries already locked are kept (unless --update); downloads only the small non-LFS
    /// files whose SHA-256 the hub does not list.
    Lock {
        /// The recipe (TOML).
        recipe: PathBuf,
        /// The lock file (default: <recipe>.lock beside the recipe).
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
        /// Resolve every entry again (branches move): review the diff.
        #[arg(long)]
        update: bool,
        /// Check that the lock holds everything, change nothing (exit 1 if not).
        #[arg(long)]
        locked: bool,
        /// GLUE data: a directory of download_glue_data.py TSVs or a nyu-mll/glue Parquet snapshot
        /// (its dev files also give the gold labels when predictions are re-scored); `run` and
        /// `data lock` also take `hf:owner/name[@revision]`, resolved through the hub cache and lock.
        #[arg(long, value_name = "SPEC")]
        glue_data: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Print TOML pins (sha256 or dirHash, and size) of files or directories, to paste into a
    /// recipe's [data].sources.
    Pin {
        /// Files or directories to pin.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

pub fn run(cmd: DataCmd) -> Result<ExitCode> {
    match cmd {
        DataCmd::Prepare {
            recipe,
            data_dir,
            out,
            threads,
            lock,
            locked,
            delete_raw_shards,
            json,
        } => prepare(
            recipe,
            data_dir.data_dir.or(out),
            threads,
            (lock, locked, delete_raw_shards),
            json.enabled,
        ),
        DataCmd::Lock {
            recipe,
            lock,
            update,
            locked,
            glue_data,
            json,
        } => lock_recipe(recipe, lock, update, locked, glue_data, json.enabled),
        DataCmd::Pin { paths } => {
            let mut text = String::from("sources = [\n");
            for p in &paths {
                text += &format!("  {},\n", data::source::pin_toml(p, &|_| {})?);
            }
            text += "]\n";
            out!("{text}");
            Ok(ExitCode::Ok)
        }
    }
}

fn lock_recipe(
    recipe: PathBuf,
    lock: Option<PathBuf>,
    update: bool,
    locked: bool,
    glue_data: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    use crambench::run::preflight;
    let r = crambench::recipe::Recipe::load(&recipe)?;
    let cfg: DataConfig = r.section("data")?;
    cfg.validate(&recipe.display().to_string())?;
    let glue = crambench::glue::config::GlueConfig::from_recipe(&r)?;
    let tasks = preflight::glue_tasks(&r, &glue)?;
    let glue_spec = glue_data
        .or(glue.data.clone())
        .filter(|g| g.starts_with("hf:"));
    let path = lock.unwrap_or_else(|| data::hub::lock::default_path(&recipe));
    let before = std::fs::read(&path).ok();
    let plan = preflight::resolve_hub(
        &r,
        &cfg,
        &tasks,
        glue_spec.as_deref(),
        &preflight::LockOptions {
            path: path.clone(),
            locked,
            update,
            progress: !json,
            fetch_glue: false,
        },
    )?;
    let changed = std::fs::read(&path).ok() != before;
    if json {
        let v = serde_json::json!({
            "lock": path.display().to_string(),
            "changed": changed,
            "files": plan.files,
            "bytes": plan.bytes,
            "download_bytes": plan.download_bytes,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if plan.lock.is_none() {
        outln!("{}: no hub files to lock", recipe.display());
    } else {
        outln!(
            "{} {}: {} file(s), {}; {} not in the cache yet",
            if changed { "wrote" } else { "up to date" },
            path.display(),
            plan.files,
            preflight::human_bytes(plan.bytes),
            preflight::human_bytes(plan.download_bytes)
        );
    }
    Ok(ExitCode::Ok)
}

fn prepare(
    recipe: PathBuf,
    out: Option<PathBuf>,
    threads: Option<usize>,
    (lock, locked, delete_raw): (Option<PathBuf>, bool, bool),
    json: bool,
) -> Result<ExitCode> {
    let r = crambench::recipe::Recipe::load(&recipe)?;
    let cfg: DataConfig = r.section("data")?;
    let mut opts = PrepareOptions::for_recipe(
        &recipe,
        crambench::data::prepare::data_root(out),
        threads,
        !json,
    );
    opts.locked = locked;
    opts.delete_raw = delete_raw;
    if lock.is_some() {
        opts.lock_file = lock;
    }
    let t = std::time::Instant::now();
    let p = data::prepare(&cfg, &recipe.display().to_string(), &opts)?;
    let m = p.dataset.manifest();
    if json {
        let v = serde_json::json!({
            "dir": p.dir.display().to_string(),
            "reused": p.reused,
            "seconds": t.elapsed().as_secs_f64(),
            "dataset": m,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let c = &m.processing.counts;
        outln!(
            "dataset      {}{}",
            p.dir.display(),
            if p.reused { "  (reused)" } else { "" }
        );
        outln!("root digest  {}", m.root_digest);
        outln!(
            "tokenizer    {}  sha256:{}  vocab {}",
            p.dataset.tokenizer_path().display(),
            m.tokenizer.digest["sha256"],
            m.vocab_size
        );
        outln!(
            "blocks       {} x {} ids ({}), {} shard(s)",
            m.num_blocks,
            m.seq_len,
            m.dtype,
            m.shards.len()
        );
        outln!(
            "documents    {} read, {} duplicates, {} trash, {} kept; {} tokens, {} dropped by cap",
            c.documents,
            c.duplicates_removed,
            c.trash_removed,
            c.documents_kept,
            c.tokens,
            c.blocks_dropped_by_cap
        );
        let bad: u64 = c.read.iter().flat_map(|r| r.bad_records.values()).sum();
        if bad > 0 {
            outln!("skipped      {bad} bad record(s) (see dataset.json processing.counts.read)");
        }
        outln!("time         {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(ExitCode::Ok)
}
