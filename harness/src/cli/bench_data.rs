//! `crambench bench data`: raw text → packed token blocks, crambench against the Python
//! `tokenizers` library encoding the same text with the same tokenizer.json, side by side.
//!
//! crambench is timed end to end: read and parse the JSONL, normalise, tokenise, append
//! `<sep>`, pack into blocks, write the block file ([`crambench::data::prepare::tokenize_and_pack`]).
//! Python is timed on `Tokenizer.encode_batch` alone, texts already in memory
//! (`reference/bench_tokenize.py`; its end-to-end time is reported too). Both use `--threads`
//! threads; runs alternate so drift hits both alike.
use anyhow::{Context, Result};
use crambench::data::config::{DataConfig, SourceSpec};
use crambench::data::{prepare, source, tokenizer};
use crambench::error::{Error, ExitCode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn stats(xs: &[f64]) -> serde_json::Value {
    match crambench::stats::Spread::of(xs) {
        Some(s) => {
            serde_json::json!({ "runs_s": xs, "median_s": s.median, "min_s": s.min, "max_s": s.max })
        }
        None => serde_json::json!({ "runs_s": xs }),
    }
}

fn median(xs: &[f64]) -> f64 {
    crambench::stats::median(xs).unwrap_or(f64::NAN)
}

/// Run the benchmark.
pub fn run(
    copies: usize,
    runs: usize,
    threads: usize,
    vocab: u32,
    python: &Path,
    json: bool,
) -> Result<ExitCode> {
    if runs == 0 || copies == 0 || threads == 0 {
        return Err(Error::input(
            "bench data",
            "--runs, --copies and --threads must be at least 1",
        )
        .into());
    }
    let dir = tempfile::tempdir().context("temporary directory")?;
    // The corpus: the embedded State of the Union addresses, `copies` times.
    let raw = zstd::decode_all(source::SOTU_ZST).context("decompressing the embedded corpus")?;
    let corpus = dir.path().join("corpus.jsonl");
    {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&corpus).map_err(|e| Error::io(&corpus, e))?,
        );
        for _ in 0..copies {
            f.write_all(&raw).map_err(|e| Error::io(&corpus, e))?;
        }
        f.flush().map_err(|e| Error::io(&corpus, e))?;
    }
    let texts: Vec<String> = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).ok()?["text"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    eprintln!("training a WordPiece tokenizer of {vocab} tokens on the corpus …");
    let tok = tokenizer::train(texts.iter(), vocab, tokenizer::NormalizerOptions::default())?;
    let tok_path = dir.path().join("tokenizer.json");
    tokenizer::save(&tok, &tok_path)?;
    let d = crambench::provenance::hash::hash_file(&corpus, &|_| {})?;
    let cfg = DataConfig {
        vocab_size: vocab,
        sources: vec![SourceSpec {
            path: Some("corpus.jsonl".into()),
            hub: None,
            embedded: None,
            format: None,
            field: None,
            split: None,
            sha256: Some(d.sha256.clone()),
            dir_hash: None,
            size: Some(d.size),
            concatenate_successive_entries: None,
        }],
        ..DataConfig::default()
    };
    let src = source::resolve(0, &cfg.sources[0], dir.path(), dir.path(), &|_| {})?;
    let sources = vec![src];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let blocks = dir.path().join("blocks.bin");
    let ours = || -> Result<(f64, u64, u64)> {
        let t = Instant::now();
        let p = pool.install(|| {
            prepare::tokenize_and_pack(&cfg, &sources, &tok, None, &blocks, false, None)
        })?;
        Ok((
            t.elapsed().as_secs_f64(),
            p.counts.tokens,
            p.read.read.iter().map(|r| r.text_bytes).sum(),
        ))
    };
    let script = crambench_script()?;
    let theirs = || -> Result<serde_json::Value> {
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(&tok_path)
            .arg(&corpus)
            .env("RAYON_NUM_THREADS", threads.to_string())
            .env("TOKENIZERS_PARALLELISM", "true")
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "{} {}: {}",
                python.display(),
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    // Warm-up, and both must produce the same number of tokens from the same bytes.
    let (_, our_tokens, bytes) = ours()?;
    let w = theirs()?;
    if w["tokens"].as_u64() != Some(our_tokens) || w["bytes"].as_u64() != Some(bytes) {
        anyhow::bail!(
            "outputs differ: crambench {our_tokens} tokens from {bytes} bytes, Python {w}"
        );
    }
    let (mut t_ours, mut t_enc, mut t_e2e) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let mut py = || -> Result<()> {
            let v = theirs()?;
            t_enc.push(v["encode_seconds"].as_f64().unwrap_or(f64::NAN));
            t_e2e.push(v["end_to_end_seconds"].as_f64().unwrap_or(f64::NAN));
            Ok(())
        };
        if i % 2 == 0 {
            t_ours.push(ours()?.0);
            py()?;
        } else {
            py()?;
            t_ours.push(ours()?.0);
        }
        eprintln!(
            "round {}/{runs}: crambench {:.3} s, python encode_batch {:.3} s",
            i + 1,
            t_ours[i],
            t_enc[i]
        );
    }
    let mb = bytes as f64 / 1e6;
    let ratio = median(&t_enc) / median(&t_ours);
    if json {
        let v = serde_json::json!({
            "bytes": bytes, "tokens": our_tokens, "threads": threads, "vocab_size": vocab,
            "tokenizers_version": w["tokenizers_version"],
            "crambench_end_to_end": stats(&t_ours),
            "python_encode_batch": stats(&t_enc),
            "python_end_to_end": stats(&t_e2e),
            "speed_ratio_crambench_over_python_encode": ratio,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!("{bytes} bytes of text ({copies} x State of the Union), {our_tokens} tokens, vocab {vocab}, {threads} thread(s), {runs} alternating runs");
        outln!(
            "{:<34} {:>9} {:>9} {:>9} {:>12}",
            "",
            "median s",
            "min s",
            "max s",
            "median MB/s"
        );
        for (name, xs) in [
            ("crambench (read+tokenise+pack)", &t_ours),
            ("python tokenizers encode_batch", &t_enc),
            ("python (read+parse+encode_batch)", &t_e2e),
        ] {
            let s = stats(xs);
            outln!(
                "{:<34} {:>9.3} {:>9.3} {:>9.3} {:>12.1}",
                name,
                s["median_s"].as_f64().unwrap_or(f64::NAN),
                s["min_s"].as_f64().unwrap_or(f64::NAN),
                s["max_s"].as_f64().unwrap_or(f64::NAN),
                mb / s["median_s"].as_f64().unwrap_or(f64::NAN)
            );
        }
        outln!(
            "crambench is {ratio:.2}x the speed of Python tokenizers {} encode_batch (by median)",
            w["tokenizers_version"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::Ok)
}

/// `reference/bench_tokenize.py` of this source tree.
fn crambench_script() -> Result<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/bench_tokenize.py");
    if !p.is_file() {
        return Err(Error::input(p.display(), "the reference script is missing").into());
    }
    Ok(p)
}
