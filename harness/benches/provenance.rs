//! Micro-benchmarks of the provenance core: SHA-256 streaming throughput, RFC 8785
//! canonicalisation of a manifest-sized document, and DSSE signing and verification.
//! The side-by-side comparison with coreutils is `crambench bench hash` (see README).
use crambench::manifest::{dsse, jcs, keys};
use crambench::provenance::hash;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn sha256(c: &mut Criterion) {
    let data = vec![0x5au8; 64 << 20];
    let mut g = c.benchmark_group("sha256_reader");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(BenchmarkId::from_parameter("64MiB"), |b| {
        b.iter(|| hash::sha256_reader(&data[..], &|_| {}).unwrap())
    });
    g.finish();
}

fn manifest_doc() -> serde_json::Value {
    let tasks: serde_json::Map<String, serde_json::Value> =
        ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"]
            .iter()
            .map(|t| {
                let trials: Vec<_> = (0..5)
                    .map(|i| serde_json::json!({"seed": 1000 + i, "score": 0.8 + i as f64 * 0.001}))
                    .collect();
                (
                    t.to_string(),
                    serde_json::json!({"metrics": {"accuracy": 0.81}, "trials": trials}),
                )
            })
            .collect();
    serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "predicate": {"glue": {"tasks": tasks}, "env": {"OMP_NUM_THREADS": "2"}}})
}

fn canonical_and_dsse(c: &mut Criterion) {
    let doc = manifest_doc();
    c.bench_function("jcs_manifest", |b| b.iter(|| jcs::to_vec(&doc).unwrap()));
    let payload = jcs::to_vec(&doc).unwrap();
    let sk = keys::SigningKey::from(ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]));
    let pk = keys::PublicKey::new(sk.verifying_key(), "bench");
    c.bench_function("dsse_sign", |b| {
        b.iter(|| {
            let mut env = dsse::Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, &payload);
            env.sign(&sk, "bench").unwrap();
            env
        })
    });
    let mut env = dsse::Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, &payload);
    env.sign(&sk, "bench").unwrap();
    let decoded = env.decode("bench").unwrap();
    c.bench_function("dsse_verify", |b| {
        b.iter(|| assert!(dsse::verify(&decoded, std::slice::from_ref(&pk), 1).ok))
    });
}

criterion_group!(benches, sha256, canonical_and_dsse);
criterion_main!(benches);
