//! Pretraining on a prepared dataset (`--data DIR`): the packed shards are read in order, the
//! dataset's vocabulary and sequence length replace the recipe's, the tokenizer is copied into
//! the checkpoint, and the dataset's root digest pins resume. The dataset is written here in the
//! data module's layout (dataset.json + tokenizer.json + u16 shards), so the test does not
//! depend on the preparation pipeline.
mod common;

use crambench::data::reader::{root_digest, DatasetManifest, FileRecord, Processing, ShardRecord};
use crambench::train::synthetic::{BlockSource, SyntheticStream};
use std::collections::BTreeMap;
use std::path::Path;

const SEQ: usize = 32;
const VOCAB: usize = 256;
const BLOCKS: u64 = 40;

fn sha(bytes: &[u8]) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "sha256".to_string(),
        crambench::provenance::hash::sha256_hex(bytes),
    )])
}

/// Write a dataset of `BLOCKS` blocks of the synthetic stream with `seed`.
fn write_dataset(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let stream = SyntheticStream::new(SEQ, VOCAB, seed);
    let mut shard = Vec::new();
    let mut block = vec![0i64; SEQ];
    for i in 0..BLOCKS {
        stream.block(i, &mut block).unwrap();
        for t in &block {
            shard.extend_from_slice(&(*t as u16).to_le_bytes());
        }
    }
    let tokenizer = format!("{{\"test-tokenizer\": {seed}}}").into_bytes();
    std::fs::write(dir.join("shard-00000.bin"), &shard).unwrap();
    std::fs::write(dir.join("tokenizer.json"), &tokenizer).unwrap();
    let tok = FileRecord {
        name: "tokenizer.json".into(),
        role: "tokenizer".into(),
        digest: sha(&tokenizer),
        size: tokenizer.len() as u64,
    };
    let shards = vec![ShardRecord {
        name: "shard-00000.bin".into(),
        role: "shard".into(),
        digest: sha(&shard),
        size: shard.len() as u64,
        blocks: BLOCKS,
        first_block: 0,
    }];
    let manifest = DatasetManifest {
        schema: crambench::data::prepare::DATASET_SCHEMA.into(),
        name: "test".into(),
        root_digest: root_digest(&tok, &shards),
        seq_len: SEQ as u32,
        vocab_size: VOCAB as u32,
        dtype: "u16le".into(),
        num_blocks: BLOCKS,
        blocks_per_shard: BLOCKS,
        special_tokens: BTreeMap::from([("<mask>".to_string(), 6u32)]),
        sources: vec![],
        tokenizer: tok,
        shards,
        processing: Processing {
            config: serde_json::json!({}),
            sha256: "0".repeat(64),
            tokenizer_source: "test".into(),
            trash_filter: None,
            data_order_seed: None,
            period_token_id: None,
            counts: Default::default(),
        },
    };
    std::fs::write(
        dir.join("dataset.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn pretrains_on_a_packed_dataset_and_pins_it() {
    let d = tempfile::tempdir().unwrap();
    write_dataset(&d.path().join("data"), 5);
    write_dataset(&d.path().join("other"), 6);
    let recipe = common::repo_root().join("baselines/crammed-bert-tiny.toml");
    let args = |data: &str, resume: bool| {
        let mut a = vec![
            "pretrain",
            recipe.to_str().unwrap(),
            "--budget",
            "2s",
            "--out",
            "run",
            "--seed",
            "4",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--json",
            "--data",
        ];
        a.push(if data == "data" { "data" } else { "other" });
        if resume {
            a.push("--resume");
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        common::run_in(d.path(), &a)
    };
    let (code, stdout, stderr) = run(args("data", false));
    assert_eq!(code, 0, "{stderr}");
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("data/dataset.json")).unwrap())
            .unwrap();
    assert_eq!(
        s["data_digest"],
        format!("sha256:{}", manifest["root_digest"].as_str().unwrap())
    );
    assert_eq!(s["tokens_seen"].as_u64().unwrap() % SEQ as u64, 0);
    let ck = Path::new(d.path()).join(s["checkpoint"].as_str().unwrap());
    assert_eq!(
        std::fs::read(ck.join("tokenizer.json")).unwrap(),
        std::fs::read(d.path().join("data/tokenizer.json")).unwrap()
    );
    let arch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("arch.json")).unwrap()).unwrap();
    assert_eq!(
        arch["vocab_size"], VOCAB,
        "the dataset's vocabulary replaces the recipe's"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("meta.json")).unwrap()).unwrap();
    assert!(meta["files"]["tokenizer.json"]["sha256"].is_string());

    // Resuming on other data is refused.
    let (code, _, stderr) = run(args("other", true));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("trained on") || stderr.contains("recipe"),
        "{stderr}"
    );
    // On the same data it continues.
    let (code, stdout, stderr) = run(args("data", true));
    assert_eq!(code, 0, "{stderr}");
    let s2: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(s2["resumed_from"].is_string());
}
