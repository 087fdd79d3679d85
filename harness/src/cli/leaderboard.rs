//! `crambench leaderboard build ENTRIES --trust DIR --out site/`: verify entries and render the
//! leaderboard (see `crambench::leaderboard`).
use super::args::{GlueDataArg, JsonArg, TrustArgs};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use crambench::leaderboard::{self, BuildOptions, GoldPolicy, Tracks};
use crambench::ExitCode;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum LeaderboardCmd {
    /// Verify every entry (signature by a trusted key, track rules, predictions re-scored) and
    /// write leaderboard.md, index.html and leaderboard.json to --out. Exit 0 when the site is
    /// built, even with rejected entries (listed with their reasons).
    Build(BuildArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Gold {
    /// Embedded demo dev sets; GLUE dev files from --glue-data (the gold column without it).
    Trusted,
    /// The predictions files' own gold column.
    Column,
}

#[derive(Args)]
#[command(after_help = "--trust is required: an entry counts only when a trusted key signed it.")]
pub struct BuildArgs {
    /// Bundle directories (`crambench submit` output), or directories holding bundles.
    #[arg(value_name = "ENTRY")]
    pub entries: Vec<PathBuf>,
    // The keys an entry's manifest must be signed by (required).
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The older name of --trust (a directory of *.pub/*.pem keys).
    #[arg(long, value_name = "DIR", hide = true)]
    pub keys: Vec<PathBuf>,
    /// Track rules (default: the manifests/tracks.toml built into crambench).
    #[arg(long, value_name = "FILE")]
    pub tracks: Option<PathBuf>,
    /// Put every entry in this track (default: the first track whose aggregate rule is the
    /// entry's).
    #[arg(long)]
    pub track: Option<String>,
    #[command(flatten)]
    pub glue_data: GlueDataArg,
    /// Gold labels for re-scoring.
    #[arg(long, value_enum, default_value = "trusted")]
    pub gold: Gold,
    /// Output directory (created; only leaderboard.md, index.html, leaderboard.json are written).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(cmd: LeaderboardCmd) -> Result<ExitCode> {
    match cmd {
        LeaderboardCmd::Build(a) => build(a),
    }
}

fn build(a: BuildArgs) -> Result<ExitCode> {
    let mut entries = leaderboard::expand_entries(&a.entries)?;
    // The output directory is never an entry (it may sit among them).
    if let Ok(out) = std::fs::canonicalize(&a.out) {
        entries.retain(|e| std::fs::canonicalize(e).ok().as_ref() != Some(&out));
    }
    let paths = a.trust.paths(&a.keys);
    if paths.is_empty() {
        return Err(crambench::Error::input(
            "--trust",
            "give the trusted public keys (--trust PUB: a .pub file or a directory of them)",
        )
        .into());
    }
    let keys = crambench::manifest::keys::load_public_keys(&paths)?;
    let tracks = match &a.tracks {
        Some(p) => Tracks::load(p)?,
        None => Tracks::embedded(),
    };
    let opts = BuildOptions {
        keys,
        tracks,
        track: a.track,
        glue_data: a.glue_data.glue_data,
        gold: match a.gold {
            Gold::Trusted => GoldPolicy::Trusted,
            Gold::Column => GoldPolicy::Column,
        },
    };
    let site = leaderboard::build(&entries, &opts)?;
    let written = leaderboard::write_site(&site, &a.out)?;
    if a.json.enabled {
        outln!("{}", serde_json::to_string_pretty(&site)?);
        return Ok(ExitCode::Ok);
    }
    for t in &site.tracks {
        if t.entries.is_empty() {
            continue;
        }
        outln!("{} ({})", t.track.title, t.track.name);
        for e in &t.entries {
            let (rule, v) = e.aggregate.clone().unwrap_or_default();
            outln!(
                "  {:>3}. {:<32} {:>7.2} ({rule})  {}",
                e.rank.unwrap_or(0),
                e.name,
                v,
                e.recipe.as_deref().unwrap_or("?")
            );
        }
    }
    for e in &site.rejected {
        outln!("rejected {}:", e.entry);
        for r in &e.reasons {
            outln!("  - {r}");
        }
    }
    outln!(
        "{} accepted, {} rejected; wrote {}",
        site.accepted(),
        site.rejected.len(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::Ok)
}
