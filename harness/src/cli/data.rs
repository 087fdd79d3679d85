//! `crambench data …`: prepare a recipe's dataset, print source pins.
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
            json,
        } => prepare(recipe, data_dir.data_dir.or(out), threads, json.enabled),
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

fn prepare(
    recipe: PathBuf,
    out: Option<PathBuf>,
    threads: Option<usize>,
    json: bool,
) -> Result<ExitCode> {
    let r = crambench::recipe::Recipe::load(&recipe)?;
    let cfg: DataConfig = r.section("data")?;
    let opts = PrepareOptions::for_recipe(
        &recipe,
        crambench::data::prepare::data_root(out),
        threads,
        !json,
    );
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
