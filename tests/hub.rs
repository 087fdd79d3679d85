//! Hub files through a loopback hub (tests/common/hub_server.rs; `HF_ENDPOINT` points at it, no
//! test reaches the internet): downloads into the standard cache layout, resume, digest
//! checks, offline mode, the lock file and `--locked`, upstream changes, named errors,
//! preflight, and a readymade recipe from an empty cache to a signed manifest.
mod common;
#[path = "fixtures/glue/gen.rs"]
mod gen;
use common::hub_server::{FixtureFile, FixtureRepo, HubServer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn corpus(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "the", "union", "state", "peace", "war", "law", "trade", "year", "public", "we", "shall",
        "must", "our", "and", "of", "to", "in", "for", "great", "new", "federal",
    ];
    let mut x = seed | 1;
    let mut out = Vec::new();
    for i in 0..n {
        let mut s = String::new();
        for k in 0..(8 + i % 17) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if k > 0 {
                s.push(' ');
            }
            s.push_str(words[(x % words.len() as u64) as usize]);
        }
        s.push('.');
        out.extend(serde_json::json!({ "text": s }).to_string().bytes());
        out.push(b'\n');
    }
    out
}

/// A text corpus repository: two LFS shards and a small non-LFS README.
fn corpus_repo() -> FixtureRepo {
    let mut r = FixtureRepo::dataset("test/corpus", 0xc1);
    r.files
        .insert("train/00.jsonl".into(), FixtureFile::lfs(corpus(300, 7)));
    r.files
        .insert("train/01.jsonl".into(), FixtureFile::lfs(corpus(200, 11)));
    r.files
        .insert("README.md".into(), FixtureFile::git(b"# corpus\n".to_vec()));
    r
}

const CORPUS_RECIPE: &str = r#"
[data]
sources = [{ hub = { repo = "test/corpus", revision = "main", path = "train/*.jsonl" } }]
vocab_size = 150
seq_len = 16
shard_blocks = 7
"#;

struct Env {
    _d: tempfile::TempDir,
    w: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(server: &HubServer) -> Env {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().to_path_buf();
        let vars = vec![
            ("HF_ENDPOINT".to_string(), server.url.clone()),
            (
                "HF_HUB_CACHE".to_string(),
                w.join("hub").display().to_string(),
            ),
            ("HF_TOKEN".to_string(), String::new()),
            (
                "HF_TOKEN_PATH".to_string(),
                w.join("no-token").display().to_string(),
            ),
            ("HF_HUB_OFFLINE".to_string(), String::new()),
            (
                "CRAMBENCH_CONFIG_DIR".to_string(),
                w.join("cfg").display().to_string(),
            ),
        ];
        Env { _d: d, w, vars }
    }
    fn set(&mut self, k: &str, v: &str) {
        self.vars.retain(|(a, _)| a != k);
        self.vars.push((k.into(), v.into()));
    }
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let env: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        common::run_in_env(&self.w, &env, args)
    }
    fn recipe(&self, name: &str, body: &str) -> PathBuf {
        let p = self.w.join(format!("{name}.toml"));
        std::fs::write(&p, body).unwrap();
        p
    }
    fn repo_dir(&self, id: &str) -> PathBuf {
        self.w
            .join("hub")
            .join(format!("datasets--{}", id.replace('/', "--")))
    }
}

fn lock_of(p: &Path) -> toml::Table {
    std::fs::read_to_string(p.with_extension("lock"))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_glob_on_a_branch_is_locked_downloaded_into_the_hf_layout_and_reused() {
    let server = HubServer::start(vec![corpus_repo()]);
    let env = Env::new(&server);
    let recipe = env.recipe("c", CORPUS_RECIPE);
    let r = recipe.to_str().unwrap();
    let (code, out, err) = env.run(&["data", "lock", r]);
    assert_eq!(code, 0, "{out}{err}");
    let lock = lock_of(&recipe);
    let src = &lock["source"].as_array().unwrap()[0];
    assert_eq!(src["commit"].as_str().unwrap(), "c1".repeat(20));
    let files = src["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["train/00.jsonl", "train/01.jsonl"]);
    let want = FixtureFile::lfs(corpus(300, 7)).sha256();
    assert_eq!(files[0]["sha256"].as_str().unwrap(), want);
    // Locking lists, it does not download the LFS shards.
    assert!(!server.log().iter().any(|l| l.contains("/lfs-store/")));

    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    // The huggingface_hub layout: blobs by digest, refs, relative snapshot links.
    let repo = env.repo_dir("test/corpus");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        "c1".repeat(20)
    );
    let snap = repo.join(format!("snapshots/{}/train/00.jsonl", "c1".repeat(20)));
    let link = std::fs::read_link(&snap).unwrap();
    assert_eq!(link, Path::new(&format!("../../../blobs/{want}")));
    assert!(repo.join("blobs").join(&want).is_file());
    // The API was asked once (by `data lock`); prepare went by the lock.
    let api = |log: &[String]| log.iter().filter(|l| l.contains("/api/")).count();
    assert_eq!(api(&server.log()), 1, "{:?}", server.log());
    // A second prepare reuses the cache: no request at all.
    let before = server.log().len();
    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(reused)"), "{out}");
    assert_eq!(server.log().len(), before, "{:?}", server.log());
}

#[test]
fn a_cut_download_resumes_and_a_partial_file_left_behind_is_continued() {
    let mut repo = corpus_repo();
    repo.files.get_mut("train/00.jsonl").unwrap().cut_once = true;
    let shard1 = repo.files["train/01.jsonl"].clone();
    let server = HubServer::start(vec![repo]);
    let env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    // A partial file of shard 01 left by an interrupted earlier download (either tool's).
    let blobs = env.repo_dir("test/corpus").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = shard1.data.len() / 3;
    std::fs::write(
        blobs.join(format!("{}.incomplete", shard1.sha256())),
        &shard1.data[..half],
    )
    .unwrap();
    let (code, out, err) = env.run(&["data", "prepare", r.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    let log = server.log();
    let s0 = FixtureFile::lfs(corpus(300, 7));
    let gets0: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains(&s0.sha256()))
        .collect();
    // Cut halfway, then continued from where the bytes stopped.
    assert_eq!(gets0.len(), 2, "{log:?}");
    assert!(
        gets0[1].contains(&format!("range={}-", s0.data.len() / 2)),
        "{log:?}"
    );
    // The partial file was continued, not downloaded again.
    let gets1: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains(&shard1.sha256()))
        .collect();
    assert_eq!(gets1.len(), 1, "{log:?}");
    assert!(gets1[0].contains(&format!("range={half}-")), "{log:?}");
    for f in [&s0, &shard1] {
        let b = std::fs::read(blobs.join(f.sha256())).unwrap();
        assert_eq!(b, *f.data);
        assert!(!blobs.join(format!("{}.incomplete", f.sha256())).exists());
    }
}

#[test]
fn bytes_that_do_not_match_the_hub_sha256_are_rejected_and_not_cached() {
    let mut repo = corpus_repo();
    repo.files.get_mut("train/01.jsonl").unwrap().corrupt = true;
    let bad = repo.files["train/01.jsonl"].sha256();
    let server = HubServer::start(vec![repo]);
    let env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    let (code, out, err) = env.run(&["data", "prepare", r.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("train/01.jsonl") && err.contains("do not match") && err.contains(&bad),
        "{err}"
    );
    let repo = env.repo_dir("test/corpus");
    assert!(!repo.join("blobs").join(&bad).exists());
    assert!(!repo
        .join("blobs")
        .join(format!("{bad}.incomplete"))
        .exists());
    assert!(!repo
        .join(format!("snapshots/{}/train/01.jsonl", "c1".repeat(20)))
        .exists());
    assert!(!env.w.join("dc").read_dir().is_ok_and(|mut d| d.any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("wp"))));
}

#[test]
fn offline_mode_works_from_the_cache_and_fails_clearly_without_it() {
    let server = HubServer::start(vec![corpus_repo()]);
    let mut env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    let r = r.to_str().unwrap();
    // Nothing cached, no lock: offline is a named error saying what to do.
    env.set("HF_HUB_OFFLINE", "1");
    let (code, _, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("test/corpus@main"),
        "{err}"
    );
    assert!(server.log().is_empty(), "{:?}", server.log());
    // Online once; then offline, even with no lock file (the cache's refs/ and snapshot).
    env.set("HF_HUB_OFFLINE", "");
    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(env.w.join("c.lock")).unwrap();
    env.set("HF_HUB_OFFLINE", "1");
    env.set("HF_ENDPOINT", "http://127.0.0.1:9"); // nothing listens there
    let n = server.log().len();
    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(reused)"), "{out}");
    assert_eq!(server.log().len(), n);
    assert_eq!(
        lock_of(&env.w.join("c.toml"))["source"][0]["commit"].as_str(),
        Some("c1".repeat(20).as_str())
    );
    // Offline with a file missing from the cache: named, with where to put it.
    let snap = env
        .repo_dir("test/corpus")
        .join(format!("snapshots/{}/train/01.jsonl", "c1".repeat(20)));
    std::fs::remove_file(&snap).unwrap();
    let (code, _, err) = env.run(&["data", "prepare", r, "--out", "dc2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn locked_refuses_what_the_lock_lacks_and_an_upstream_change_is_exit_1_naming_the_file() {
    let server = HubServer::start(vec![corpus_repo()]);
    let env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    let r = r.to_str().unwrap();
    // No lock yet: --locked refuses to resolve.
    let (code, _, err) = env.run(&["data", "prepare", r, "--out", "dc", "--locked"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--locked") && err.contains("hub:test/corpus@main:train/*.jsonl"),
        "{err}"
    );
    assert!(!env.w.join("c.lock").exists());
    let (code, _, err) = env.run(&["data", "lock", r]);
    assert_eq!(code, 0, "{err}");
    let locked = std::fs::read(env.w.join("c.lock")).unwrap();
    // `data lock --locked` checks without writing; a recipe that adds a source is refused.
    let (code, _, err) = env.run(&["data", "lock", r, "--locked"]);
    assert_eq!(code, 0, "{err}");
    let more = CORPUS_RECIPE.replace(
        "path = \"train/*.jsonl\" } }]",
        "path = \"train/*.jsonl\" } }, { hub = { repo = \"test/corpus\", revision = \"main\", path = \"README.md\" }, format = \"text\" }]",
    );
    let r2 = env.recipe("c2", &more);
    std::fs::copy(env.w.join("c.lock"), env.w.join("c2.lock")).unwrap();
    let (code, _, err) = env.run(&["data", "lock", r2.to_str().unwrap(), "--locked"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("README.md") && err.contains("--locked"),
        "{err}"
    );
    // Upstream rewrites a shard after locking: the download is refused, naming it.
    server.with(|s| {
        let f = s.repos[0].files.get_mut("train/01.jsonl").unwrap();
        f.data = Arc::new(corpus(200, 99));
    });
    let (code, _, err) = env.run(&["data", "prepare", r, "--out", "dc", "--locked"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("test/corpus")
            && err.contains("train/01.jsonl")
            && err.contains("changed upstream"),
        "{err}"
    );
    assert_eq!(std::fs::read(env.w.join("c.lock")).unwrap(), locked);
    // Pins by hand (a commit, sha256 and size on the source) keep working, through the lock.
    let f0 = FixtureFile::lfs(corpus(300, 7));
    let pinned = format!(
        "[data]\nsources = [{{ hub = {{ repo = \"test/corpus\", revision = \"{}\", path = \"train/00.jsonl\" }}, sha256 = \"{}\", size = {} }}]\nvocab_size = 150\nseq_len = 16\n",
        "c1".repeat(20),
        f0.sha256(),
        f0.data.len()
    );
    let rp = env.recipe("pinned", &pinned);
    let (code, out, err) = env.run(&["data", "prepare", rp.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    let wrong = pinned.replace(&f0.sha256(), &"0".repeat(64));
    let rw = env.recipe("wrong", &wrong);
    let (code, _, err) = env.run(&["data", "prepare", rw.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn gated_missing_and_unreachable_hubs_are_named_errors_and_the_token_stays_with_the_hub() {
    let mut gated = corpus_repo();
    gated.gated_token = Some("secret".into());
    let server = HubServer::start(vec![gated]);
    let mut env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    let r = r.to_str().unwrap();
    let (code, _, err) = env.run(&["data", "lock", r]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gated") && err.contains("HF_TOKEN"), "{err}");
    env.set("HF_TOKEN", "secret");
    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    // The token went to the hub, never to the LFS storage a redirect named.
    let log = server.log();
    assert!(log
        .iter()
        .any(|l| l.contains("/resolve/") && l.ends_with(" auth")));
    assert!(
        log.iter()
            .filter(|l| l.contains("/lfs-store/"))
            .all(|l| !l.ends_with(" auth")),
        "{log:?}"
    );
    // A repository that does not exist; a path that matches nothing.
    let missing = env.recipe("m", &CORPUS_RECIPE.replace("test/corpus", "test/nothing"));
    let (code, _, err) = env.run(&["data", "lock", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("test/nothing") && err.contains("does not exist"),
        "{err}"
    );
    let nomatch = env.recipe("n", &CORPUS_RECIPE.replace("train/*.jsonl", "val/*.jsonl"));
    let (code, _, err) = env.run(&["data", "lock", nomatch.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("matches no file") && err.contains("train/00.jsonl"),
        "{err}"
    );
    // No hub at all: exit 3, saying how to work offline.
    env.set("HF_ENDPOINT", "http://127.0.0.1:9");
    let other = env.recipe(
        "o",
        &CORPUS_RECIPE.replace("revision = \"main\"", "revision = \"v2\""),
    );
    let (code, _, err) = env.run(&["data", "lock", other.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// A readymade (pre-tokenised) recipe and GLUE from the hub, end to end.

const SEQ: usize = 32;
const VOCAB: usize = 160;

/// A tokenizer and pre-tokenised Parquet rows in the published layout (`input_ids:
/// list<int32>`, rows of SEQ ids in stored order), made with crambench's own pipeline on a tiny
/// corpus.
fn readymade_files(w: &Path) -> (Vec<u8>, Vec<u8>) {
    use parquet::data_type::Int32Type;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let text = corpus(600, 5);
    let c = w.join("tok-corpus.jsonl");
    std::fs::write(&c, &text).unwrap();
    let sha = crambench::provenance::hash::sha256_hex(&text);
    let cfg: crambench::data::DataConfig = toml::from_str(&format!(
        "sources = [{{ path = {:?}, sha256 = \"{sha}\", size = {} }}]\nvocab_size = {VOCAB}\nseq_len = {SEQ}\n",
        c.display().to_string(),
        text.len()
    ))
    .unwrap();
    let mut opts = crambench::data::PrepareOptions::for_recipe(
        &w.join("x.toml"),
        w.join("tok-dc"),
        Some(1),
        false,
    );
    opts.lock_file = None;
    let p = crambench::data::prepare(&cfg, "tok", &opts).unwrap();
    let tok_path = p.dataset.tokenizer_path();
    let tok = tokenizers::Tokenizer::from_file(&tok_path).unwrap();
    let mut ids: Vec<i32> = Vec::new();
    for line in String::from_utf8(text).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let e = tok.encode(v["text"].as_str().unwrap(), false).unwrap();
        ids.extend(e.get_ids().iter().map(|&i| i as i32));
    }
    let rows = ids.len() / SEQ;
    let out = w.join("ready.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { OPTIONAL group input_ids (LIST) { REPEATED group list { OPTIONAL INT32 element; } } }",
        )
        .unwrap(),
    );
    let mut wr = SerializedFileWriter::new(
        std::fs::File::create(&out).unwrap(),
        schema,
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut rg = wr.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    let vals = &ids[..rows * SEQ];
    let def = vec![3i16; vals.len()];
    let rep: Vec<i16> = (0..vals.len())
        .map(|i| if i % SEQ == 0 { 0 } else { 1 })
        .collect();
    col.typed::<Int32Type>()
        .write_batch(vals, Some(&def), Some(&rep))
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    wr.close().unwrap();
    (
        std::fs::read(tok_path).unwrap(),
        std::fs::read(out).unwrap(),
    )
}

/// The GLUE fixtures in the `nyu-mll/glue` Parquet layout, as a hub repository.
fn glue_repo(w: &Path) -> FixtureRepo {
    let root = w.join("glue-parquet");
    gen::write_parquet_layout(&root, &gen::tsv_root());
    let mut r = FixtureRepo::dataset("test/glue", 0x61);
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(&root).unwrap().display().to_string();
                r.files
                    .insert(rel, FixtureFile::lfs(std::fs::read(e.path()).unwrap()));
            }
        }
    }
    r.files
        .insert("README.md".into(), FixtureFile::git(b"# glue\n".to_vec()));
    r
}

fn ready_recipe(glue: &str) -> String {
    format!(
        r#"extends = {:?}
name = "ready"
[arch]
vocab_size = {VOCAB}
[data]
sources = [{{ hub = {{ repo = "test/readymade", revision = "main", path = "data/train-*.parquet" }}, format = "parquet-ids" }}]
tokenizer = {{ hub = {{ repo = "test/readymade", revision = "main", path = "tokenizer/tokenizer.json" }} }}
vocab_size = {VOCAB}
seq_len = {SEQ}
ordering = "as-is"
[train]
budget = "4s"
seq_len = {SEQ}
[glue]
tasks = ["all"]
aggregate = "cramming"
epochs = 1
trials = 1
batch_size = 2
{glue}
"#,
        common::repo_root()
            .join("baselines/crammed-bert-tiny.toml")
            .display()
            .to_string()
    )
}

#[test]
fn a_readymade_recipe_runs_from_an_empty_cache_to_a_signed_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let (tok, rows) = readymade_files(tmp.path());
    let mut ready = FixtureRepo::dataset("test/readymade", 0x2e);
    ready.files.insert(
        "data/train-00000-of-00001-abc.parquet".into(),
        FixtureFile::lfs(rows),
    );
    ready
        .files
        .insert("tokenizer/tokenizer.json".into(), FixtureFile::git(tok));
    ready.files.insert(
        "tokenizer/special_tokens_map.json".into(),
        FixtureFile::git(b"{}".to_vec()),
    );
    let server = HubServer::start(vec![ready, glue_repo(tmp.path())]);
    let env = Env::new(&server);
    let recipe = env.recipe("ready", &ready_recipe("data = \"hf:test/glue\""));
    let (code, out, err) = env.run(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        "o",
        "--data-dir",
        "dc",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("preflight:") && err.contains("hub file(s)"),
        "{err}"
    );
    // The lock lists every file the run read: the shard, the tokenizer, every GLUE split.
    let lock = lock_of(&recipe);
    let files: Vec<String> = lock["source"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["files"].as_array().unwrap().iter())
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(files.contains(&"data/train-00000-of-00001-abc.parquet".to_string()));
    assert!(files.contains(&"tokenizer/tokenizer.json".to_string()));
    for f in [
        "cola/train-00000-of-00001.parquet",
        "mnli/validation_mismatched-00000-of-00001.parquet",
        "rte/validation-00000-of-00001.parquet",
    ] {
        assert!(files.contains(&f.to_string()), "{f} not in {files:?}");
    }
    assert!(!files
        .iter()
        .any(|f| f.contains("README") || f.contains("special_tokens")));
    // The signed manifest records the lock: a material and its content.
    let o: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.w.join(o["manifest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert!(env.w.join(o["envelope"].as_str().unwrap()).is_file());
    let lock_sha =
        crambench::provenance::hash::sha256_hex(&std::fs::read(env.w.join("ready.lock")).unwrap());
    let mats = m["predicate"]["materials"].as_array().unwrap();
    assert!(
        mats.iter()
            .any(|x| x["role"] == "lock" && x["digest"]["sha256"] == lock_sha.as_str()),
        "{mats:?}"
    );
    assert_eq!(m["predicate"]["data"]["lock"]["sha256"], lock_sha.as_str());
    assert_eq!(
        m["predicate"]["data"]["lock"]["content"]["source"]
            .as_array()
            .unwrap()
            .len(),
        lock["source"].as_array().unwrap().len()
    );
    // The hub corpus is a material at its commit.
    assert!(
        mats.iter().any(|x| x["name"]
            .as_str()
            .is_some_and(|n| n.contains("test/readymade@") && n.contains(&"2e".repeat(20)))),
        "{mats:?}"
    );
    // `verify` checks the lock file against the signed manifest.
    let run_dir = env.w.join("o/ready");
    let (code, vout, verr) = env.run(&["verify", run_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{vout}{verr}");
    assert!(vout.contains("ready.lock"), "{vout}");
    let lock_text = std::fs::read_to_string(env.w.join("ready.lock")).unwrap();
    std::fs::write(env.w.join("ready.lock"), format!("{lock_text}# edited\n")).unwrap();
    let (code, vout, verr) = env.run(&["verify", run_dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{vout}{verr}");
    std::fs::write(env.w.join("ready.lock"), &lock_text).unwrap();
    // A second run with --locked from the now warm cache: no download, same lock.
    let n = server
        .log()
        .iter()
        .filter(|l| l.contains("/lfs-store/"))
        .count();
    let (code, out, err) = env.run(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        "o",
        "--data-dir",
        "dc",
        "--device",
        "cpu",
        "--locked",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        server
            .log()
            .iter()
            .filter(|l| l.contains("/lfs-store/"))
            .count(),
        n
    );
}

#[test]
fn preflight_fails_before_pretraining_on_missing_glue_data_or_a_missing_hub_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ready = FixtureRepo::dataset("test/readymade", 0x2e);
    ready.files.insert(
        "data/train-00000-of-00001.parquet".into(),
        FixtureFile::lfs(vec![1, 2, 3]),
    );
    // The tokenizer is missing upstream.
    let mut glue = glue_repo(tmp.path());
    glue.files.retain(|p, _| !p.starts_with("qnli/"));
    let server = HubServer::start(vec![ready, glue]);
    let env = Env::new(&server);
    let cases = [
        (ready_recipe(""), "--glue-data", 2),
        (
            ready_recipe("data = \"hf:test/glue\""),
            "tokenizer/tokenizer.json",
            2,
        ),
    ];
    for (i, (body, needle, want)) in cases.iter().enumerate() {
        let r = env.recipe(&format!("p{i}"), body);
        let (code, out, err) = env.run(&[
            "run",
            r.to_str().unwrap(),
            "--out",
            "o",
            "--data-dir",
            "dc",
            "--device",
            "cpu",
        ]);
        assert_eq!(code, *want, "{out}{err}");
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!env.w.join("o/ready/run.json").exists(), "{err}");
        // Nothing large was downloaded.
        assert!(
            !server.log().iter().any(|l| l.contains("/lfs-store/")),
            "{:?}",
            server.log()
        );
    }
    // A GLUE task whose files the hub does not have.
    let ok_tok = env.recipe(
        "p3",
        &ready_recipe("data = \"hf:test/glue\"").replace(
            "path = \"tokenizer/tokenizer.json\"",
            "path = \"data/train-00000-of-00001.parquet\"",
        ),
    );
    let (code, out, err) = env.run(&[
        "run",
        ok_tok.to_str().unwrap(),
        "--out",
        "o",
        "--data-dir",
        "dc",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("qnli/train-*.parquet"), "{err}");
    assert!(!env.w.join("o/ready/run.json").exists());
    // A corpus larger than the disk: refused (exit 4) before anything is downloaded.
    server.with(|s| {
        let f = s.repos[0]
            .files
            .get_mut("data/train-00000-of-00001.parquet")
            .unwrap();
        f.claimed_size = Some(1 << 60);
        s.repos[1].files.insert(
            "qnli/train-00000-of-00001.parquet".into(),
            FixtureFile::lfs(vec![0]),
        );
        s.repos[1].files.insert(
            "qnli/validation-00000-of-00001.parquet".into(),
            FixtureFile::lfs(vec![0]),
        );
    });
    let _ = std::fs::remove_file(env.w.join("p3.lock"));
    let (code, out, err) = env.run(&[
        "run",
        ok_tok.to_str().unwrap(),
        "--out",
        "o",
        "--data-dir",
        "dc",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        err.contains("Hugging Face cache (downloads)") && err.contains("free"),
        "{err}"
    );
    assert!(!env.w.join("o/ready/run.json").exists());
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("/lfs-store/")
                && l.contains(&FixtureFile::lfs(vec![1, 2, 3]).sha256())),
        "{:?}",
        server.log()
    );
}

#[test]
fn raw_shards_stream_through_the_cache_and_are_removed_once_processed() {
    let server = HubServer::start(vec![corpus_repo()]);
    let env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    let r = r.to_str().unwrap();
    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc", "--delete-raw-shards"]);
    assert_eq!(code, 0, "{out}{err}");
    let repo = env.repo_dir("test/corpus");
    let snap = repo.join(format!("snapshots/{}", "c1".repeat(20)));
    for f in ["train/00.jsonl", "train/01.jsonl"] {
        assert!(std::fs::symlink_metadata(snap.join(f)).is_err(), "{f} kept");
    }
    let blobs: Vec<_> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    // The dataset does not need them any more; a new build downloads them again.
    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(reused)"), "{out}");
    let lfs = |s: &HubServer| s.log().iter().filter(|l| l.contains("/lfs-store/")).count();
    assert_eq!(lfs(&server), 2);
    let (code, out, err) = env.run(&["data", "prepare", r, "--out", "dc2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(lfs(&server), 4);
    assert!(snap.join("train/01.jsonl").is_file());
}

#[test]
fn the_cache_is_shared_with_huggingface_hub_both_ways() {
    let Some(py) = common::interop_python() else {
        return;
    };
    let server = HubServer::start(vec![corpus_repo()]);
    let mut env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    let (code, out, err) = env.run(&["data", "prepare", r.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    let hf = |cache: &Path, offline: &str, files: &[&str]| {
        let out = std::process::Command::new(&py)
            .arg("-c")
            .arg(
                "import sys, huggingface_hub as h\n\
                 for f in sys.argv[1:]:\n    print(h.hf_hub_download('test/corpus', f, repo_type='dataset', revision='main'))\n",
            )
            .args(files)
            .env("HF_ENDPOINT", &server.url)
            .env("HF_HUB_CACHE", cache)
            .env("HF_HUB_OFFLINE", offline)
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_XET", "1")
            .env_remove("HF_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // huggingface_hub, offline, finds what crambench downloaded (refs/main, the snapshot).
    let n = server.log().len();
    let (ok, out, err) = hf(&env.w.join("hub"), "1", &["train/00.jsonl"]);
    assert!(ok, "{err}");
    let got = std::fs::read(out.trim()).unwrap();
    assert_eq!(got, corpus(300, 7));
    assert_eq!(server.log().len(), n, "huggingface_hub went online");
    // And crambench, offline and without a lock, finds what huggingface_hub downloaded.
    let cache2 = env.w.join("hub2");
    let (ok, _, err) = hf(
        &cache2,
        "",
        &["train/00.jsonl", "train/01.jsonl", "README.md"],
    );
    assert!(ok, "{err}");
    env.set("HF_HUB_CACHE", cache2.to_str().unwrap());
    env.set("HF_HUB_OFFLINE", "1");
    let r2 = env.recipe("c2", CORPUS_RECIPE);
    let n = server.log().len();
    let (code, out, err) = env.run(&["data", "prepare", r2.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(reused)"), "the same dataset: {out}");
    assert_eq!(server.log().len(), n);
}

#[test]
fn a_moved_branch_stays_at_the_locked_commit_until_update() {
    let server = HubServer::start(vec![corpus_repo()]);
    let env = Env::new(&server);
    let r = env.recipe("c", CORPUS_RECIPE);
    let r = r.to_str().unwrap();
    let (code, _, err) = env.run(&["data", "lock", r]);
    assert_eq!(code, 0, "{err}");
    let old = "c1".repeat(20);
    // main moves: a new commit with a third shard.
    server.with(|s| {
        let repo = &mut s.repos[0];
        repo.commit = "d2".repeat(20);
        repo.files
            .insert("train/02.jsonl".into(), FixtureFile::lfs(corpus(50, 3)));
    });
    let (code, out, err) = env.run(&["data", "lock", r]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(
        lock_of(&env.w.join("c.toml"))["source"][0]["commit"].as_str(),
        Some(old.as_str())
    );
    // This hub forgets the old commit (history rewritten): the locked files are gone, exit 1.
    let (code, _, err) = env.run(&["data", "prepare", r, "--out", "dc"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("changed upstream") && err.contains(&old),
        "{err}"
    );
    let (code, out, err) = env.run(&["data", "lock", r, "--update"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote"), "{out}");
    let lock = lock_of(&env.w.join("c.toml"));
    let src = &lock["source"][0];
    assert_eq!(src["commit"].as_str(), Some("d2".repeat(20).as_str()));
    assert_eq!(src["files"].as_array().unwrap().len(), 3);
}
