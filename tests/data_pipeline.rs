//! Data pipeline: sources of every format, pins, bad input, determinism, the reader.
mod common;

use crambench::data::config::{DataConfig, Ordering};
use crambench::data::source::pin_toml;
use crambench::data::tokenizer::special;
use crambench::data::{prepare, PackedDataset, PrepareOptions};
use crambench::error::{exit_code_of, ExitCode};
use std::io::Write;
use std::path::Path;

/// A small, varied English corpus (generated; deterministic).
fn corpus_lines(n: usize) -> Vec<String> {
    let words = [
        "the",
        "union",
        "congress",
        "people",
        "nation",
        "state",
        "peace",
        "war",
        "law",
        "trade",
        "year",
        "public",
        "government",
        "we",
        "shall",
        "must",
        "our",
        "and",
        "of",
        "to",
        "in",
        "for",
        "with",
        "great",
        "new",
        "federal",
    ];
    let mut x = 12345u64;
    (0..n)
        .map(|i| {
            let mut s = String::new();
            let len = 8 + i % 23;
            for k in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if k > 0 {
                    s.push(' ');
                }
                s.push_str(words[(x % words.len() as u64) as usize]);
                if x % 7 == 0 {
                    s.push(if x % 2 == 0 { '.' } else { ',' });
                }
            }
            s.push('.');
            s
        })
        .collect()
}

fn opts(out: &Path, base: &Path, threads: usize) -> PrepareOptions {
    PrepareOptions {
        out_root: out.to_path_buf(),
        base_dir: base.to_path_buf(),
        hub_root: Some(base.join("hub")),
        lock_file: None,
        locked: false,
        delete_raw: false,
        hub_env: Some(crambench::data::hub::client::HubEnv {
            endpoint: "https://huggingface.co".into(),
            token: None,
            offline: true,
            cache: base.join("hub"),
        }),
        threads: Some(threads),
        progress: false,
        stop: None,
    }
}

/// A `[data]` table for `sources` (TOML array items) with a tiny vocabulary.
fn config(sources: &str, extra: &str) -> DataConfig {
    let t = format!(
        "sources = [{sources}]\nvocab_size = 200\nseq_len = 16\nshard_blocks = 7\n{extra}\n"
    );
    toml::from_str(&t).unwrap_or_else(|e| panic!("{e}\n{t}"))
}

fn pin(path: &Path, extra: &str) -> String {
    let p = pin_toml(path, &|_| {}).unwrap();
    // `{ path = "/abs/…", … }` → insert extra keys
    if extra.is_empty() {
        p
    } else {
        p.replacen("{ ", &format!("{{ {extra}, "), 1)
    }
}

fn write_jsonl(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{}", serde_json::json!({ "text": l, "meta": {"n": 1} })).unwrap();
    }
}

fn err_of(r: anyhow::Result<crambench::data::Prepared>) -> (String, ExitCode) {
    let e = r.expect_err("expected an error");
    (format!("{e:#}"), exit_code_of(&e))
}

#[test]
fn jsonl_text_and_compressed_give_identical_datasets_and_reader_works() {
    let d = tempfile::tempdir().unwrap();
    let lines = corpus_lines(400);
    let plain = d.path().join("c.jsonl");
    write_jsonl(&plain, &lines);
    let raw = std::fs::read(&plain).unwrap();
    let gz = d.path().join("c.jsonl.gz");
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all(&raw).unwrap();
    e.finish().unwrap();
    let zst = d.path().join("c.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    // the same entries as a text directory, one entry per line
    let txt = d.path().join("c.txt");
    std::fs::write(&txt, lines.join("\n") + "\n").unwrap();

    let mut roots = Vec::new();
    for (i, (p, extra)) in [
        (&plain, ""),
        (&gz, ""),
        (&zst, ""),
        (&txt, "split = \"line\""),
    ]
    .iter()
    .enumerate()
    {
        let cfg = config(&pin(p, extra), "ordering = \"as-is\"");
        let out = d.path().join(format!("out{i}"));
        let r = prepare(&cfg, "test", &opts(&out, d.path(), 2)).unwrap();
        assert!(!r.reused);
        let m = r.dataset.manifest();
        assert_eq!(m.processing.counts.documents_kept, 400);
        assert_eq!(m.dtype, "u16le");
        roots.push(m.root_digest.clone());
    }
    // Different sources give different names, but the same token stream: the shards are equal
    // and so is the root digest.
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");

    // The reader: blocks decode back to the text, ids in range, sep present, tokenizer loads.
    let ds = PackedDataset::open(
        &d.path().join("out0").join(
            std::fs::read_dir(d.path().join("out0"))
                .unwrap()
                .find_map(|e| {
                    let n = e.unwrap().file_name().into_string().unwrap();
                    (!n.starts_with('.')).then_some(n)
                })
                .unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(ds.seq_len(), 16);
    assert_eq!(ds.vocab_size(), 200);
    let tok = crambench::data::load_tokenizer(&ds.tokenizer_path()).unwrap();
    let mut all = Vec::new();
    let mut b = vec![0i64; 16];
    for i in 0..ds.num_blocks() {
        ds.block(i, &mut b);
        assert!(b.iter().all(|&x| (0..200).contains(&x)));
        all.extend(b.iter().map(|&x| x as u32));
    }
    // as-is order: the concatenation of the blocks is the encoding of the documents in order
    let mut want = Vec::new();
    for l in &lines {
        want.extend_from_slice(tok.encode(l.as_str(), true).unwrap().get_ids());
    }
    assert_eq!(all[..], want[..all.len()]);
    assert_eq!(
        want.len() - all.len(),
        ds.manifest().processing.counts.tokens_dropped_remainder as usize
    );
    assert!(want.len() - all.len() < 16);
    assert_eq!(
        all.iter().filter(|&&x| x == special::SEP).count(),
        lines.len()
            - want[all.len()..]
                .iter()
                .filter(|&&x| x == special::SEP)
                .count()
    );
}

#[test]
fn reruns_reuse_and_threads_do_not_change_the_root_digest() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.jsonl");
    let mut lines = corpus_lines(300);
    lines.extend(corpus_lines(50)); // 50 exact duplicates
    write_jsonl(&p, &lines);
    let cfg = config(
        &pin(&p, ""),
        "deduplicate = true\nremove_trash = true\nconcatenate_successive_entries = 2",
    );
    let a = prepare(&cfg, "t", &opts(&d.path().join("a"), d.path(), 1)).unwrap();
    let b = prepare(&cfg, "t", &opts(&d.path().join("b"), d.path(), 2)).unwrap();
    assert_eq!(a.dataset.root_digest(), b.dataset.root_digest());
    assert_eq!(a.dir.file_name(), b.dir.file_name());
    assert_eq!(
        std::fs::read(a.dir.join("dataset.json")).unwrap(),
        std::fs::read(b.dir.join("dataset.json")).unwrap()
    );
    let c = a.dataset.manifest().processing.counts.clone();
    // pairs of lines: 350 entries → 175 documents; duplicates are whole repeated pairs
    assert_eq!(c.documents, 175);
    assert_eq!(c.duplicates_removed, 25);
    let again = prepare(&cfg, "t", &opts(&d.path().join("a"), d.path(), 2)).unwrap();
    assert!(again.reused);
    assert_eq!(again.dataset.root_digest(), a.dataset.root_digest());
    // a different seed changes the order, hence the root digest and the name
    let mut cfg2 = cfg.clone();
    cfg2.seed = 1;
    let s = prepare(&cfg2, "t", &opts(&d.path().join("a"), d.path(), 2)).unwrap();
    assert_ne!(s.dataset.root_digest(), a.dataset.root_digest());
    assert_ne!(s.dir, a.dir);
    // the root digest is the dirHash of the shards and the tokenizer (sha256sum-style lines)
    let m = a.dataset.manifest();
    let mut names: Vec<String> = m.shards.iter().map(|s| s.name.clone()).collect();
    names.push("tokenizer.json".into());
    names.sort();
    let text: String = names
        .iter()
        .map(|n| {
            format!(
                "{}  {n}\n",
                crambench::provenance::hash::hash_file(&a.dir.join(n), &|_| {})
                    .unwrap()
                    .sha256
            )
        })
        .collect();
    assert_eq!(
        crambench::provenance::hash::sha256_hex(text.as_bytes()),
        m.root_digest
    );
}

#[test]
fn curriculum_orders_by_descending_periods_and_cap_applies() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.jsonl");
    write_jsonl(&p, &corpus_lines(300));
    let cfg = config(
        &pin(&p, ""),
        "ordering = \"sentence-length-curriculum\"\nmax_blocks = 20",
    );
    assert_eq!(cfg.ordering, Ordering::SentenceLengthCurriculum);
    let r = prepare(&cfg, "t", &opts(&d.path().join("o"), d.path(), 2)).unwrap();
    let ds = &r.dataset;
    assert_eq!(ds.num_blocks(), 20);
    let c = &ds.manifest().processing.counts;
    assert_eq!(c.blocks_packed - 20, c.blocks_dropped_by_cap);
    let period = ds.manifest().processing.period_token_id.unwrap() as i64;
    let mut b = vec![0i64; 16];
    let mut prev = usize::MAX;
    for i in 0..20 {
        ds.block(i, &mut b);
        let n = b.iter().filter(|&&x| x == period).count();
        assert!(n <= prev);
        prev = n;
    }
    // shards of 7 blocks: 7 + 7 + 6
    assert_eq!(
        ds.manifest()
            .shards
            .iter()
            .map(|s| s.blocks)
            .collect::<Vec<_>>(),
        vec![7, 7, 6]
    );
}

#[test]
fn pins_are_checked_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.jsonl");
    write_jsonl(&p, &corpus_lines(50));
    let good = pin(&p, "");
    let bad = good.replace(
        &good[good.find("sha256 = \"").unwrap() + 10..good.find("sha256 = \"").unwrap() + 14],
        "0000",
    );
    let (msg, code) = err_of(prepare(
        &config(&bad, ""),
        "t",
        &opts(&d.path().join("o"), d.path(), 1),
    ));
    assert_eq!(code, ExitCode::CheckFailed, "{msg}");
    assert!(
        msg.contains("c.jsonl")
            && msg.contains("expected sha256 0000")
            && msg.contains("actual sha256"),
        "{msg}"
    );
    assert!(
        !d.path().join("o").exists(),
        "nothing may be written on a pin mismatch"
    );
    // missing pin: the error prints the pin to paste
    let (msg, code) = err_of(prepare(
        &config("{ path = \"c.jsonl\" }", ""),
        "t",
        &opts(&d.path().join("o"), d.path(), 1),
    ));
    assert_eq!(code, ExitCode::BadInput);
    assert!(
        msg.contains("not pinned") && msg.contains("sha256 = \""),
        "{msg}"
    );
    // wrong size
    let (msg, _) = err_of(prepare(
        &config(&good.replace("size = ", "size = 1"), ""),
        "t",
        &opts(&d.path().join("o"), d.path(), 1),
    ));
    assert!(msg.contains("pin mismatch"), "{msg}");
}

#[test]
fn hub_files_resolve_from_the_cache_or_say_where_to_put_them() {
    let d = tempfile::tempdir().unwrap();
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let rel = format!("hub/datasets--org--corpus/snapshots/{rev}/data/train.jsonl");
    let p = d.path().join(&rel);
    let lines = corpus_lines(100);
    let spec = |sha: &str, size: u64| {
        format!("{{ hub = {{ repo = \"org/corpus\", revision = \"{rev}\", path = \"data/train.jsonl\" }}, sha256 = \"{sha}\", size = {size} }}")
    };
    let (msg, code) = err_of(prepare(
        &config(&spec(&"a".repeat(64), 1), ""),
        "t",
        &opts(&d.path().join("o"), d.path(), 1),
    ));
    assert_eq!(code, ExitCode::BadInput);
    assert!(
        msg.contains(&p.display().to_string())
            && msg.contains("huggingface.co/datasets/org/corpus/resolve"),
        "{msg}"
    );
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    write_jsonl(&p, &lines);
    let f = crambench::provenance::hash::hash_file(&p, &|_| {}).unwrap();
    let r = prepare(
        &config(&spec(&f.sha256, f.size), ""),
        "t",
        &opts(&d.path().join("o"), d.path(), 1),
    )
    .unwrap();
    let src = &r.dataset.manifest().sources[0];
    assert_eq!(src.hub.as_ref().unwrap().revision, rev);
    assert_eq!(src.digest["sha256"], f.sha256);
    // a branch is a revision the lock pins; a glob cannot carry a hand pin
    let bad: DataConfig = toml::from_str(
        "sources = [{ hub = { repo = \"org/corpus\", revision = \"main\", path = \"d/*.jsonl\" }, size = 1 }]",
    )
    .unwrap();
    let e = bad.validate("r.toml").unwrap_err().to_string();
    assert!(e.contains("hub.path") && e.contains("glob"), "{e}");
}

#[test]
fn bad_input_is_named_or_skipped_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let o = |n: &str| opts(&d.path().join(n), d.path(), 1);
    let mut lines: Vec<String> = corpus_lines(200)
        .iter()
        .map(|l| serde_json::json!({ "text": l }).to_string())
        .collect();
    lines[10] = "{\"txt\": \"no field\"}".into();
    lines[20] = "not json".into();
    lines[30] = "{\"text\": 5}".into();
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n{\"text\": \"bad \xff utf8\"}\n");
    let p = d.path().join("bad.jsonl");
    std::fs::write(&p, &bytes).unwrap();
    let (msg, code) = err_of(prepare(&config(&pin(&p, ""), ""), "t", &o("a")));
    assert_eq!(code, ExitCode::BadInput);
    assert!(
        msg.contains("bad.jsonl:11") && msg.contains("no field \"text\""),
        "{msg}"
    );
    let r = prepare(
        &config(&pin(&p, ""), "on_bad_record = \"skip\""),
        "t",
        &o("b"),
    )
    .unwrap();
    let rc = &r.dataset.manifest().processing.counts.read[0];
    assert_eq!(rc.entries, 197);
    assert_eq!(rc.bad_records.get("missing-field"), Some(&1));
    assert_eq!(rc.bad_records.get("not-json-object"), Some(&1));
    assert_eq!(rc.bad_records.get("field-not-string"), Some(&1));
    assert_eq!(rc.bad_records.get("invalid-utf8"), Some(&1));
    assert!(
        rc.bad_examples.iter().any(|e| e.contains("bad.jsonl:201")),
        "{:?}",
        rc.bad_examples
    );

    // invalid UTF-8 in a text file: file and line
    let t = d.path().join("t.txt");
    std::fs::write(&t, b"good line one\ngood line two\nbad \xc3\x28 line\n").unwrap();
    let (msg, _) = err_of(prepare(&config(&pin(&t, ""), ""), "t", &o("c")));
    assert!(
        msg.contains("t.txt:3") && msg.contains("invalid UTF-8"),
        "{msg}"
    );
    // empty file
    let e = d.path().join("e.jsonl");
    std::fs::write(&e, b"").unwrap();
    let (msg, _) = err_of(prepare(&config(&pin(&e, ""), ""), "t", &o("d")));
    assert!(
        msg.contains("e.jsonl") && msg.contains("empty file"),
        "{msg}"
    );
    // truncated gzip and zstd: always an error, never a shorter dataset
    let good: Vec<u8> = corpus_lines(300)
        .iter()
        .flat_map(|l| (serde_json::json!({ "text": l }).to_string() + "\n").into_bytes())
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&good).unwrap();
    let gz = gz.finish().unwrap();
    let zs = zstd::encode_all(&good[..], 3).unwrap();
    for (name, data) in [("x.jsonl.gz", &gz), ("x.jsonl.zst", &zs)] {
        let f = d.path().join(name);
        std::fs::write(&f, &data[..data.len() * 2 / 3]).unwrap();
        for policy in ["", "on_bad_record = \"skip\""] {
            let (msg, code) = err_of(prepare(
                &config(&pin(&f, ""), policy),
                "t",
                &o(&format!("out-{name}")),
            ));
            assert_eq!(code, ExitCode::BadInput, "{msg}");
            assert!(
                msg.contains(name) && msg.contains("truncated or corrupt"),
                "{msg}"
            );
        }
    }
}

#[test]
fn parquet_text_column_and_missing_column() {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    let lines = corpus_lines(300);
    let p = d.path().join("train-00000-of-00001.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { REQUIRED BYTE_ARRAY text (UTF8); }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut w =
        SerializedFileWriter::new(std::fs::File::create(&p).unwrap(), schema, props).unwrap();
    for chunk in lines.chunks(128) {
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let vals: Vec<ByteArray> = chunk.iter().map(|s| ByteArray::from(s.as_str())).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&vals, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
    let r = prepare(
        &config(&pin(&p, ""), "ordering = \"as-is\""),
        "t",
        &opts(&d.path().join("a"), d.path(), 2),
    )
    .unwrap();
    assert_eq!(r.dataset.manifest().processing.counts.documents_kept, 300);
    // same token stream as the JSONL of the same lines
    let j = d.path().join("c.jsonl");
    write_jsonl(&j, &lines);
    let r2 = prepare(
        &config(&pin(&j, ""), "ordering = \"as-is\""),
        "t",
        &opts(&d.path().join("b"), d.path(), 2),
    )
    .unwrap();
    assert_eq!(r.dataset.root_digest(), r2.dataset.root_digest());
    let (msg, code) = err_of(prepare(
        &config(&pin(&p, "field = \"sentence\""), ""),
        "t",
        &opts(&d.path().join("c"), d.path(), 1),
    ));
    assert_eq!(code, ExitCode::BadInput);
    assert!(
        msg.contains("train-00000-of-00001.parquet")
            && msg.contains("no column \"sentence\"")
            && msg.contains("text"),
        "{msg}"
    );
}

#[test]
fn corrupted_shard_is_refused_by_the_reader() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.jsonl");
    write_jsonl(&p, &corpus_lines(200));
    let r = prepare(
        &config(&pin(&p, ""), ""),
        "t",
        &opts(&d.path().join("o"), d.path(), 1),
    )
    .unwrap();
    assert!(r.dir.join(".verified.json").is_file());
    let shard = r.dir.join("shard-00000.bin");
    let mut b = std::fs::read(&shard).unwrap();
    b[3] ^= 1;
    std::fs::write(&shard, &b).unwrap();
    let e = PackedDataset::open(&r.dir).unwrap_err();
    assert_eq!(exit_code_of(&e), ExitCode::CheckFailed);
    assert!(format!("{e:#}").contains("shard-00000.bin"), "{e:#}");
}

#[test]
fn pretokenised_parquet_with_reference_special_order_is_remapped() {
    use parquet::data_type::Int32Type;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    let lines = corpus_lines(300);
    let j = d.path().join("c.jsonl");
    write_jsonl(&j, &lines);
    let ours = prepare(
        &config(&pin(&j, ""), "ordering = \"as-is\""),
        "t",
        &opts(&d.path().join("a"), d.path(), 2),
    )
    .unwrap();
    // A "reference" tokenizer: the same one with the special tokens in another order (as the
    // Cramming reference's hash-random order), ids 0-6 permuted.
    let order = ["<mask>", "<sep>", "<pad>", "<cls>", "</s>", "<unk>", "<s>"];
    let fixed = |t: &str| special::TOKENS.iter().position(|x| *x == t).unwrap() as u64;
    let perm: Vec<u64> = (0..7)
        .map(|old| order.iter().position(|t| fixed(t) == old).unwrap() as u64)
        .collect(); // fixed id -> ref id
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ours.dataset.tokenizer_path()).unwrap()).unwrap();
    for t in special::TOKENS {
        v["model"]["vocab"][t] = perm[fixed(t) as usize].into();
    }
    for t in v["added_tokens"].as_array_mut().unwrap() {
        let id = t["id"].as_u64().unwrap();
        t["id"] = perm[id as usize].into();
    }
    for (_, t) in v["post_processor"]["special_tokens"]
        .as_object_mut()
        .unwrap()
    {
        let id = t["ids"][0].as_u64().unwrap();
        t["ids"][0] = perm[id as usize].into();
    }
    let ref_tok_path = d.path().join("ref-tokenizer.json");
    std::fs::write(&ref_tok_path, serde_json::to_vec(&v).unwrap()).unwrap();
    let ref_tok = tokenizers::Tokenizer::from_file(&ref_tok_path).unwrap();
    assert_eq!(ref_tok.token_to_id("<sep>"), Some(1));
    // pre-tokenised rows of 16 ids, packed like the reference
    let mut ids: Vec<i32> = Vec::new();
    for l in &lines {
        ids.extend(
            ref_tok
                .encode(l.as_str(), true)
                .unwrap()
                .get_ids()
                .iter()
                .map(|&i| i as i32),
        );
    }
    let rows = ids.len() / 16;
    let p = d.path().join("train-00000-of-00001.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { OPTIONAL group input_ids (LIST) { REPEATED group list { OPTIONAL INT32 element; } } }",
        )
        .unwrap(),
    );
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(&p).unwrap(),
        schema,
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    let vals = &ids[..rows * 16];
    let def = vec![3i16; vals.len()];
    let rep: Vec<i16> = (0..vals.len())
        .map(|i| if i % 16 == 0 { 0 } else { 1 })
        .collect();
    col.typed::<Int32Type>()
        .write_batch(vals, Some(&def), Some(&rep))
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    let src = pin(&p, "").replace("format = \"parquet\"", "format = \"parquet-ids\"");
    let cfg = config(
        &src,
        &format!(
            "ordering = \"as-is\"\ntokenizer = {}",
            pin(&ref_tok_path, "")
        ),
    );
    let pre = prepare(&cfg, "t", &opts(&d.path().join("b"), d.path(), 2)).unwrap();
    let (a, b) = (ours.dataset.manifest(), pre.dataset.manifest());
    assert_eq!(b.num_blocks, rows as u64);
    assert_eq!(a.num_blocks, b.num_blocks);
    // the same blocks, with the special ids moved to the fixed ones
    for (sa, sb) in a.shards.iter().zip(&b.shards) {
        assert_eq!(sa.digest, sb.digest, "{}", sa.name);
    }
    let t = crambench::data::load_tokenizer(&pre.dataset.tokenizer_path()).unwrap();
    assert_eq!(
        t.encode("the union", true).unwrap().get_ids(),
        ref_tok
            .encode("the union", true)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&i| if i < 7 {
                fixed(order[i as usize]) as u32
            } else {
                i
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn pin_command_prints_pins_to_paste() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.jsonl"), b"{\"text\": \"x\"}\n").unwrap();
    std::fs::create_dir(d.path().join("dir")).unwrap();
    std::fs::write(d.path().join("dir/b.txt"), b"hello\n").unwrap();
    let (code, out, err) = common::run_in(d.path(), &["data", "pin", "a.jsonl", "dir"]);
    assert_eq!(code, 0, "{err}");
    let want = crambench::provenance::hash::sha256_hex(b"{\"text\": \"x\"}\n");
    assert!(
        out.contains(&format!(
            "{{ path = \"a.jsonl\", format = \"jsonl\", sha256 = \"{want}\", size = 14 }}"
        )),
        "{out}"
    );
    assert!(out.contains("path = \"dir\", dir_hash = \""), "{out}");
    // the printed table parses as a [data] table
    let cfg: DataConfig = toml::from_str(&out).unwrap();
    assert_eq!(cfg.sources.len(), 2);
}

#[test]
fn real_recipe_data_tables_parse_and_demand_real_pins() {
    for (f, ordering, cap) in [
        (
            "the-pile.data.toml",
            Ordering::SentenceLengthCurriculum,
            85_000_000,
        ),
        (
            "bookcorpus-wikipedia.data.toml",
            Ordering::Randomized,
            35_000_000,
        ),
    ] {
        let p = common::repo_root().join("tests/fixtures/data").join(f);
        let r = crambench::recipe::Recipe::load(&p).unwrap();
        let cfg: DataConfig = r.section("data").unwrap();
        assert_eq!(
            (cfg.ordering, cfg.max_blocks, cfg.vocab_size, cfg.seq_len),
            (ordering, cap, 32768, 128)
        );
        let e = cfg.validate(f).unwrap_err().to_string();
        assert!(e.contains("revision") || e.contains("sha256"), "{e}");
    }
}
