//! Adversarial inputs that stay: property-based fuzzing (proptest) of every parser that reads
//! what a user, a pull request or a leaderboard entry hands crambench — DSSE envelopes,
//! manifests, recipes, GLUE dev files (TSV and Parquet) and predictions files. Each target feeds
//! arbitrary bytes and mutations (flipped, inserted, deleted and truncated bytes) of a valid
//! input, and the property is the same everywhere: the parser returns `Ok` or a typed error
//! ([`crambench::Error`], so the binary exits 2, 1 or 3), never panics.
//!
//! Bounded in `make test` (`CRAMBENCH_FUZZ_CASES`, default 256 cases per target); `make fuzz`
//! runs 20000. Each target prints its cases and time on stderr.
mod common;
#[path = "fixtures/glue/gen.rs"]
mod gen;

use crambench::error::{exit_code_of, ExitCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;
use std::time::Instant;

fn cases() -> u32 {
    std::env::var("CRAMBENCH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Arbitrary bytes, or a valid input with a few random edits.
fn inputs(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edits =
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        edits.prop_map(move |edits| {
            let mut b = valid.clone();
            for (at, byte, op) in edits {
                if b.is_empty() {
                    b.push(byte);
                    continue;
                }
                let i = at.index(b.len());
                match op {
                    0 => b[i] ^= byte | 1,
                    1 => b.insert(i, byte),
                    2 => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
            }
            b
        }),
    ]
}

/// Run `check` on `cases()` inputs; an `Err` must be a typed error (not an internal one).
fn fuzz(target: &str, valid: Vec<u8>, check: impl Fn(&[u8]) -> anyhow::Result<()>) {
    let n = cases();
    let t = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&inputs(valid), |bytes| {
        if let Err(e) = check(&bytes) {
            prop_assert_ne!(
                exit_code_of(&e),
                ExitCode::Internal,
                "untyped error: {:#}",
                e
            );
        }
        Ok(())
    });
    eprintln!(
        "fuzz {target}: {n} cases in {:.2} s ({:.0} per second)",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A valid signed run (envelope and statement) to mutate.
fn signed_run(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let keys = dir.join("keys");
    crambench::manifest::keys::generate(&keys, "k").unwrap();
    let run = dir.join("run");
    common::fake_run::write_fake_run(
        &run,
        &common::fake_run::FakeRun::default(),
        &keys.join("k.key"),
    );
    (
        std::fs::read(run.join("manifest.dsse.json")).unwrap(),
        std::fs::read(run.join("manifest.json")).unwrap(),
    )
}

#[test]
fn fuzz_envelopes() {
    let d = tempfile::tempdir().unwrap();
    let (env, _) = signed_run(d.path());
    let key = crambench::manifest::keys::load_public_key(&d.path().join("keys/k.pub")).unwrap();
    fuzz("envelope", env, |b| {
        let e = crambench::manifest::dsse::Envelope::parse(b, "fuzz.dsse.json")?;
        let decoded = e.decode("fuzz.dsse.json")?;
        let _ = crambench::manifest::dsse::verify(&decoded, std::slice::from_ref(&key), 1);
        Ok(())
    });
}

#[test]
fn fuzz_manifests() {
    let d = tempfile::tempdir().unwrap();
    let (env, statement) = signed_run(d.path());
    fuzz("manifest", statement, |b| {
        let loaded = crambench::manifest::schema::load(b, "fuzz.json")?;
        let _ = crambench::manifest::schema::validate_statement(&loaded.statement);
        Ok(())
    });
    // The record reader over a whole run directory whose envelope is mutated.
    let run = d.path().join("run");
    fuzz("run-record", env, |b| {
        std::fs::write(run.join("manifest.dsse.json"), b).unwrap();
        let r = crambench::record::RunRecord::open(&run)?;
        let _ = crambench::audit::audit(
            &r,
            &crambench::audit::Options::default(),
            &mut crambench::audit::GoldCache::default(),
        );
        Ok(())
    });
}

#[test]
fn fuzz_recipes() {
    let d = tempfile::tempdir().unwrap();
    let demo = common::repo_root().join("baselines/demo-cpu.toml");
    let valid = format!(
        "extends = {:?}\nname = \"fuzzed\"\n[train]\nbudget = \"90s\"\n[glue]\ntasks = [\"demo\"]\ntrials = 2\n",
        demo.display().to_string()
    );
    fuzz("recipe", valid.into_bytes(), |b| {
        let p = write(d.path(), "r.toml", b);
        let r = crambench::recipe::Recipe::load(&p)?;
        crambench::run::resolve_recipe(&r, None)?;
        Ok(())
    });
}

#[test]
fn fuzz_glue_tsv_and_predictions() {
    let d = tempfile::tempdir().unwrap();
    let set = crambench::glue::tasks::eval_set("mrpc").unwrap();
    let valid = std::fs::read(gen::tsv_root().join("MRPC/dev.tsv")).unwrap();
    fuzz("glue-tsv", valid, |b| {
        let p = write(d.path(), "dev.tsv", b);
        crambench::glue::data::load_dev_file(&set, &p)?;
        Ok(())
    });
    let stsb = crambench::glue::tasks::eval_set("stsb").unwrap();
    let valid = b"idx\tprediction\tgold\n0\t1.5\t1.0\n1\t2.5\t2.0\n2\t3.5\t3.0\n".to_vec();
    fuzz("predictions", valid, |b| {
        let p = write(d.path(), "pred.tsv", b);
        let rows = crambench::glue::predictions::read(&stsb, &p)?;
        crambench::glue::predictions::score_rows(&stsb, &rows, "pred.tsv")?;
        Ok(())
    });
}

#[test]
fn fuzz_glue_parquet() {
    let d = tempfile::tempdir().unwrap();
    let pq = d.path().join("pq");
    gen::write_parquet_layout(&pq, &gen::tsv_root());
    let file = pq.join("mrpc/validation-00000-of-00001.parquet");
    let valid = std::fs::read(&file).unwrap();
    let set = crambench::glue::tasks::eval_set("mrpc").unwrap();
    fuzz("glue-parquet", valid, |b| {
        let p = write(d.path(), "validation.parquet", b);
        crambench::glue::data::load_dev_file(&set, &p)?;
        Ok(())
    });
}

/// What the fuzzer found: the `parquet` crate panics on some corrupted pages. A corrupted GLUE
/// Parquet file is bad input (exit 2) in the binary too — the panic hook lets the contained
/// panic unwind instead of reporting a crambench bug (exit 70).
#[test]
fn a_parquet_file_that_panics_the_decoder_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let pq = d.path().join("pq");
    gen::write_parquet_layout(&pq, &gen::tsv_root());
    let valid = std::fs::read(pq.join("mrpc/validation-00000-of-00001.parquet")).unwrap();
    let set = crambench::glue::tasks::eval_set("mrpc").unwrap();
    let bad = d.path().join("bad.parquet");
    let mut found = false;
    'search: for i in 0..valid.len() {
        for x in [0xff_u8, 0x80, 0x01] {
            let mut b = valid.clone();
            b[i] ^= x;
            std::fs::write(&bad, &b).unwrap();
            if let Err(e) = crambench::glue::data::load_dev_file(&set, &bad) {
                if format!("{e:#}").contains("the decoder failed") {
                    found = true;
                    break 'search;
                }
            }
        }
    }
    assert!(
        found,
        "no single-byte corruption panics the decoder any more"
    );
    let preds = d.path().join("p.tsv");
    std::fs::write(&preds, "idx\tprediction\tgold\n0\t1\t\n1\t1\t\n2\t0\t\n").unwrap();
    let (code, _, err) = common::run_in(
        d.path(),
        &[
            "glue",
            "score",
            "--task",
            "mrpc",
            "--predictions",
            preds.to_str().unwrap(),
            "--gold",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.parquet") && err.contains("malformed file"),
        "{err}"
    );
    assert!(!err.contains("internal error"), "{err}");
}
