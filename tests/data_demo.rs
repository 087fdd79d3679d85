//! The embedded demo corpus end to end through the CLI: identical root digest across runs and
//! thread counts, reuse, and the saved tokenizer.json against Python `tokenizers`.
mod common;

use crambench::data::tokenizer::{Encoder, EncoderCache};
use std::path::Path;

fn prepare(out: &Path, threads: &str) -> serde_json::Value {
    let recipe = common::repo_root().join("baselines/demo-cpu.toml");
    let (code, stdout, stderr) = common::run_in(
        &common::repo_root(),
        &[
            "data",
            "prepare",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--threads",
            threads,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// (text) of the first `n` SOTU addresses, from the embedded corpus.
fn sotu_texts() -> Vec<String> {
    let raw = zstd::decode_all(crambench::data::source::SOTU_ZST).unwrap();
    raw.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn demo_corpus_is_deterministic_and_tokenizer_matches_python() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| prepare(&d.path().join("one"), "1"));
        let b = s.spawn(|| prepare(&d.path().join("two"), "2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a["reused"], false);
    let root = a["dataset"]["root_digest"].as_str().unwrap();
    assert_eq!(
        root,
        b["dataset"]["root_digest"].as_str().unwrap(),
        "1 vs 2 threads"
    );
    assert_eq!(a["dataset"], b["dataset"]);
    let m = &a["dataset"];
    assert_eq!(m["sources"][0]["name"], "embedded:sotu");
    assert_eq!(m["processing"]["counts"]["documents_kept"], 233);
    assert_eq!(m["vocab_size"], 4096);
    assert_eq!(m["seq_len"], 64);
    let again = prepare(&d.path().join("one"), "2");
    assert_eq!(again["reused"], true);
    assert_eq!(again["dataset"]["root_digest"].as_str().unwrap(), root);

    // the reader opens it (cached verification) and blocks decode to SOTU text
    let dir = Path::new(a["dir"].as_str().unwrap());
    let ds = crambench::data::PackedDataset::open(dir).unwrap();
    assert_eq!(ds.root_digest(), root);
    let tok = crambench::data::load_tokenizer(&ds.tokenizer_path()).unwrap();
    let mut block = vec![0i64; 64];
    ds.block(ds.num_blocks() - 1, &mut block);
    let ids: Vec<u32> = block.iter().map(|&x| x as u32).collect();
    assert!(!tok.decode(&ids, true).unwrap().is_empty());

    // Fast encoder = tokenizers' encode on real text (a sample of whole addresses).
    let texts = sotu_texts();
    assert_eq!(texts.len(), 233);
    let sample: Vec<&String> = texts.iter().step_by(23).collect();
    let enc = Encoder::new(&tok).unwrap();
    assert!(enc.has_fast_path());
    let mut cache = EncoderCache::default();
    let mut rust_ids = Vec::new();
    for t in &sample {
        let mut fast = Vec::new();
        enc.encode_into(t, &mut cache, &mut fast).unwrap();
        let slow = tok.encode(t.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(fast, slow);
        rust_ids.push(slow);
    }

    // Python tokenizers loads the same file and gives the same ids.
    let Some(py) = common::interop_python() else {
        return;
    };
    let inputs = d.path().join("sample.json");
    let mut extra: Vec<String> = sample.iter().map(|s| s.to_string()).collect();
    let tricky = [
        "``Héllo''  WORLD ☃  naïve café — “quotes”",
        "x <sep> y <mask>",
        "İstanbul ﬁne \u{1F600}",
    ];
    extra.extend(tricky.iter().map(|s| s.to_string()));
    for t in tricky {
        rust_ids.push(tok.encode(t, true).unwrap().get_ids().to_vec());
    }
    std::fs::write(&inputs, serde_json::to_vec(&extra).unwrap()).unwrap();
    let script = "import json,sys\nfrom tokenizers import Tokenizer\nt=Tokenizer.from_file(sys.argv[1])\ntexts=json.load(open(sys.argv[2]))\nprint(json.dumps([e.ids for e in t.encode_batch(texts)]))\n";
    let out = std::process::Command::new(py)
        .args([
            "-c",
            script,
            ds.tokenizer_path().to_str().unwrap(),
            inputs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py_ids: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(py_ids.len(), rust_ids.len());
    for (i, (p, r)) in py_ids.iter().zip(&rust_ids).enumerate() {
        assert_eq!(p, r, "text {i}");
    }
}
