//! `crambench bench …`: speed measured side by side with a reference tool, in one run, on one
//! machine. Runs alternate between the two tools so that drift (thermal, page cache, other
//! load) hits both alike; every run's time is kept and summarised as median and spread.
use super::args::JsonArg;
use anyhow::{Context, Result};
use clap::Subcommand;
use crambench::error::{Error, ExitCode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// `crambench hash` against coreutils `sha256sum` on one large file (page-cache warm).
    Hash {
        /// Size of the generated test file, e.g. 2G, 512M.
        #[arg(long, default_value = "2G")]
        size: String,
        /// Timed runs per tool (after one untimed warm-up run each).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Directory for the test file (deleted afterwards).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        #[command(flatten)]
        json: JsonArg,
    },
    /// The trainer's optimizer step (loader, autocast, accumulation, flat AdamW), optionally
    /// side by side with the PyTorch reference: tokens/s, step time, MFU.
    TrainStep(crate::cli::bench_train::TrainStepArgs),
    /// The flat AdamW step against the per-parameter one it replaced, alternating.
    Optim(crate::cli::bench_optim::OptimArgs),
    /// Raw text to packed token blocks (crambench, end to end) against Python `tokenizers`
    /// encode_batch with the same tokenizer.json, on the embedded corpus.
    Data {
        /// Copies of the 10.8 MB State of the Union corpus to process.
        #[arg(long, default_value_t = 4)]
        copies: usize,
        /// Timed runs per tool (after one untimed warm-up run each).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Threads for both tools.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// WordPiece vocabulary size of the tokenizer both use.
        #[arg(long, default_value_t = 32768)]
        vocab: u32,
        /// The Python with `tokenizers` installed.
        #[arg(long, default_value = ".venv-interop/bin/python")]
        python: PathBuf,
        #[command(flatten)]
        json: JsonArg,
    },
    /// The models on a device (default: CUDA when available) against the CPU goldens of the
    /// PyTorch reference, per attention backend and precision (fp32 within 1e-4; bf16 within
    /// 3e-2, gradients 1e-1). Exit 1 when a supported case fails.
    Conformance(crate::cli::conformance::ConformanceArgs),
    // [bench:commands] other benchmarks add their variant above this line
}

pub fn run(cmd: BenchCmd) -> Result<ExitCode> {
    match cmd {
        BenchCmd::Hash {
            size,
            runs,
            dir,
            json,
        } => bench_hash(&size, runs, &dir, json.enabled),
        BenchCmd::TrainStep(args) => crate::cli::bench_train::run(args),
        BenchCmd::Optim(args) => crate::cli::bench_optim::run(args),
        BenchCmd::Conformance(args) => crate::cli::conformance::run(args),
        BenchCmd::Data {
            copies,
            runs,
            threads,
            vocab,
            python,
            json,
        } => crate::cli::bench_data::run(copies, runs, threads, vocab, &python, json.enabled), // [bench:dispatch] other benchmarks add their match arm above this line
    }
}

/// Parse `2G`, `512M`, `64K` or plain bytes (binary multiples).
fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1u64 << 30),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Error::input("--size", format!("{s:?} is not a size like 2G or 512M")))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(Error::input("--size", "must be positive").into());
    }
    Ok((n * mult as f64) as u64)
}

/// Median, minimum and maximum of `xs` (seconds).
#[derive(Debug, serde::Serialize)]
struct Summary {
    runs_s: Vec<f64>,
    median_s: f64,
    min_s: f64,
    max_s: f64,
    median_mb_per_s: f64,
}

fn summarise(xs: Vec<f64>, bytes: u64) -> Summary {
    let s = crambench::stats::Spread::of(&xs).expect("at least one run");
    Summary {
        runs_s: xs,
        median_s: s.median,
        min_s: s.min,
        max_s: s.max,
        median_mb_per_s: bytes as f64 / 1e6 / s.median,
    }
}

/// Run a command, return (seconds, first word of stdout).
fn time_command(cmd: &mut Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !output.status.success() {
        anyhow::bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let first = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches("sha256:")
        .to_string();
    Ok((secs, first))
}

fn write_test_file(path: &Path, bytes: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).map_err(|e| Error::io(path, e))?,
    );
    // A cheap xorshift stream: content does not change SHA-256's speed, but keep it non-trivial.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).map_err(|e| Error::io(path, e))?;
        left -= n as u64;
    }
    f.flush().map_err(|e| Error::io(path, e))?;
    Ok(())
}

fn bench_hash(size: &str, runs: usize, dir: &Path, json: bool) -> Result<ExitCode> {
    let bytes = parse_size(size)?;
    if runs == 0 {
        return Err(Error::input("--runs", "must be at least 1").into());
    }
    let file = tempfile::Builder::new()
        .prefix("crambench-bench-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    eprintln!("writing {bytes} bytes to {}", file.path().display());
    write_test_file(file.path(), bytes)?;
    let me = std::env::current_exe().context("locating the crambench binary")?;
    let ours = || {
        let mut c = Command::new(&me);
        c.arg("hash").arg(file.path());
        c
    };
    let theirs = || {
        let mut c = Command::new("sha256sum");
        c.arg(file.path());
        c
    };
    // Warm-up: brings the file into the page cache and checks both tools agree.
    let (_, d_ours) = time_command(&mut ours())?;
    let (_, d_theirs) = time_command(&mut theirs())
        .context("sha256sum (GNU coreutils) is needed for this benchmark")?;
    if d_ours != d_theirs {
        anyhow::bail!("digests differ: crambench {d_ours}, sha256sum {d_theirs}");
    }
    let (mut t_ours, mut t_theirs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which tool goes first in each round.
        if i % 2 == 0 {
            t_ours.push(time_command(&mut ours())?.0);
            t_theirs.push(time_command(&mut theirs())?.0);
        } else {
            t_theirs.push(time_command(&mut theirs())?.0);
            t_ours.push(time_command(&mut ours())?.0);
        }
        eprintln!(
            "round {}/{runs}: crambench {:.3} s, sha256sum {:.3} s",
            i + 1,
            t_ours[i],
            t_theirs[i]
        );
    }
    let ours_s = summarise(t_ours, bytes);
    let theirs_s = summarise(t_theirs, bytes);
    let ratio = theirs_s.median_s / ours_s.median_s;
    let version = Command::new("sha256sum")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "bytes": bytes, "digest": d_ours, "reference": version,
            "crambench": ours_s, "sha256sum": theirs_s,
            "speed_ratio_crambench_over_sha256sum": ratio,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!("file: {bytes} bytes, sha256 {d_ours}; {runs} alternating runs per tool, page cache warm");
        outln!(
            "{:<12} {:>10} {:>10} {:>10} {:>12}",
            "tool",
            "median s",
            "min s",
            "max s",
            "median MB/s"
        );
        for (name, s) in [("crambench", &ours_s), ("sha256sum", &theirs_s)] {
            outln!(
                "{:<12} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
                name,
                s.median_s,
                s.min_s,
                s.max_s,
                s.median_mb_per_s
            );
        }
        outln!("crambench is {ratio:.2}x the speed of {version} (by median)");
    }
    Ok(ExitCode::Ok)
}
