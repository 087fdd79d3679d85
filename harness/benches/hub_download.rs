//! Download throughput from a hub-shaped loopback server (the tests' fixture server,
//! tests/common/hub_server.rs): crambench's client against `huggingface_hub`'s
//! `hf_hub_download` on the same files, side by side, each into a fresh cache, several repeats
//! (median and range). Both go through the same protocol: HEAD on `resolve/` (302 to the LFS
//! store with `X-Linked-Etag`), then GET of the bytes; crambench also checks every byte against
//! the SHA-256 before the blob enters the cache.
//!
//! `cargo bench --bench hub_download` (`make bench-hub`); options by environment:
//! `HUB_BENCH_FILES` (default 2), `HUB_BENCH_MB` (MiB per file, default 256), `HUB_BENCH_RUNS`
//! (default 5), `HUB_BENCH_PYTHON` (default `.venv-interop/bin/python`; skipped when absent).
#[path = "../../tests/common/hub_server.rs"]
mod hub_server;

use crambench::data::hub::client::{Hub, HubEnv, Repo, Want};
use hub_server::{FixtureFile, FixtureRepo, HubServer};
use std::time::Instant;

fn env_or(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn summary(name: &str, bytes: u64, secs: &mut [f64]) {
    secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = secs[secs.len() / 2];
    let mb = bytes as f64 / 1e6;
    println!(
        "{name:<34} median {:>7.1} MB/s  ({:.3} s; range {:.1}–{:.1} MB/s over {} runs)",
        mb / med,
        med,
        mb / secs[secs.len() - 1],
        mb / secs[0],
        secs.len()
    );
}

fn main() {
    let files = env_or("HUB_BENCH_FILES", 2);
    let mib = env_or("HUB_BENCH_MB", 256);
    let runs = env_or("HUB_BENCH_RUNS", 5);
    let mut repo = FixtureRepo::dataset("bench/corpus", 0xbe);
    let mut x = 0x9e3779b97f4a7c15u64;
    for i in 0..files {
        let mut data = vec![0u8; mib << 20];
        for c in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        repo.files
            .insert(format!("train/{i:02}.bin"), FixtureFile::lfs(data));
    }
    let want: Vec<(String, String, u64)> = repo
        .files
        .iter()
        .map(|(p, f)| (p.clone(), f.sha256(), f.data.len() as u64))
        .collect();
    let commit = repo.commit.clone();
    let total: u64 = want.iter().map(|w| w.2).sum();
    let server = HubServer::start(vec![repo]);
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "hub download: {files} file(s) x {mib} MiB from {} (loopback), fresh cache each run",
        server.url
    );

    let py = std::env::var("HUB_BENCH_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-interop/bin/python").into()
    });
    let have_py = std::path::Path::new(&py).exists();
    let script = format!(
        "import sys, time, huggingface_hub as h\n\
         files = sys.argv[1:]\n\
         t = time.perf_counter()\n\
         for f in files:\n    h.hf_hub_download('bench/corpus', f, repo_type='dataset', revision='{commit}')\n\
         print(time.perf_counter() - t)\n\
         print(h.__version__)\n"
    );
    let curl = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut raw = Vec::new();
    let mut version = String::new();
    // Alternating, so that both see the same machine load.
    for k in 0..runs {
        let cache = tmp.path().join(format!("c{k}"));
        let hub = Hub::new(
            HubEnv {
                endpoint: server.url.clone(),
                token: None,
                offline: false,
                cache: cache.clone(),
            },
            false,
        );
        let t = Instant::now();
        for (p, sha, size) in &want {
            hub.fetch(
                &Repo::new("bench/corpus", "dataset"),
                &commit,
                p,
                &Want {
                    size: Some(*size),
                    sha256: Some(sha.clone()),
                    blob_id: None,
                },
            )
            .unwrap();
        }
        ours.push(t.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&cache).unwrap();
        if curl {
            // The bare transfer of the same bytes (resolve, redirect, body to a file; no
            // checks, no cache): what the server and this machine allow.
            let dir = tmp.path().join(format!("r{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            let t = Instant::now();
            for (i, (p, _, _)) in want.iter().enumerate() {
                let ok = std::process::Command::new("curl")
                    .args(["-sfL", "-o"])
                    .arg(dir.join(i.to_string()))
                    .arg(format!(
                        "{}/datasets/bench/corpus/resolve/{commit}/{p}",
                        server.url
                    ))
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "curl failed");
            }
            raw.push(t.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&dir).unwrap();
        }
        if !have_py {
            continue;
        }
        let cache = tmp.path().join(format!("p{k}"));
        let out = std::process::Command::new(&py)
            .arg("-c")
            .arg(&script)
            .args(want.iter().map(|w| &w.0))
            .env("HF_ENDPOINT", &server.url)
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .env("HF_HUB_DISABLE_XET", "1")
            .env_remove("HF_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        theirs.push(lines.next().unwrap().trim().parse::<f64>().unwrap());
        version = lines.next().unwrap_or("?").to_string();
        // Same bytes in the same layout.
        for (p, sha, _) in &want {
            let snap = cache.join(format!("datasets--bench--corpus/snapshots/{commit}/{p}"));
            let d = crambench::provenance::hash::hash_file(&snap, &|_| {}).unwrap();
            assert_eq!(&d.sha256, sha);
        }
        std::fs::remove_dir_all(&cache).unwrap();
    }
    summary("crambench", total, &mut ours);
    if curl {
        summary("curl -L (bare transfer, reference)", total, &mut raw);
    }
    if !have_py {
        println!("huggingface_hub: skipped ({py} missing; scripts/pyenv.sh installs it)");
        return;
    }
    summary(&format!("huggingface_hub {version}"), total, &mut theirs);
}
