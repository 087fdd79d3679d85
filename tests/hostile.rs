//! Hostile inputs (issue 12): names that would become paths outside `--out`, sizes and
//! durations that used to panic, FIFOs and devices that used to hang, credentials in recorded
//! environment variables, and messages that named the wrong field. Every case must end with a
//! named error and its exit code, promptly, without writing anything where it should not.
mod common;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Run crambench in `dir` with one libtorch thread; a process still running after `limit` is
/// killed and reported as hung (code -9), so that a regression fails instead of blocking the
/// suite.
fn cb_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let limit = Duration::from_secs(120);
    let mut cmd = common::crambench();
    cmd.current_dir(dir)
        .env("OMP_NUM_THREADS", "1")
        .env("CRAMBENCH_CONFIG_DIR", dir.join("cfg"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn crambench");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (
                -9,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                format!(
                    "HUNG: {args:?} still running after {limit:?}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cb(dir: &Path, args: &[&str]) -> (i32, String, String) {
    cb_env(dir, &[], args)
}

/// A recipe in `dir` extending the demo recipe (embedded corpus, tiny model) with `extra`.
fn recipe(dir: &Path, file: &str, extra: &str) -> PathBuf {
    let base = common::repo_root().join("baselines/demo-cpu.toml");
    let p = dir.join(file);
    std::fs::write(&p, format!("extends = {:?}\n{extra}", base.display())).unwrap();
    p
}

/// Every entry below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            out.push(
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A tiny checkpoint (random weights of crammed-bert-tiny, a WordPiece tokenizer trained here on
/// the demo sentences) for the `glue run` cases.
fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let ck = dir.join("ckpt");
    std::fs::create_dir_all(&ck).unwrap();
    let text = String::from_utf8(crambench::glue::demo::SENTIMENT_TSV.to_vec()).unwrap();
    let texts: Vec<String> = text
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect();
    let tok = crambench::data::tokenizer::train(texts.iter(), 256, Default::default()).unwrap();
    crambench::data::tokenizer::save(&tok, &ck.join("tokenizer.json")).unwrap();
    let mut arch = crambench::model::ArchConfig::preset("crammed-bert-tiny").unwrap();
    arch.vocab_size = 256;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = crambench::model::build(&vs.root(), &arch).unwrap();
    vs.save(ck.join("model.safetensors")).unwrap();
    std::fs::write(
        ck.join("arch.json"),
        serde_json::to_vec_pretty(&arch).unwrap(),
    )
    .unwrap();
    crambench::train::checkpoint::seal(&ck, 0).unwrap();
    ck
}

// ---- item 1: names are identifiers, validated in one place -------------------------------

#[test]
fn recipe_names_never_leave_the_out_directory() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let abs = w.join("abs-target");
    let long = "n".repeat(300);
    for name in [
        "\"../../escape\"".to_string(),
        "\"../escape\"".to_string(),
        format!("{:?}", abs.display().to_string()),
        "\"\"".to_string(),
        "\".\"".to_string(),
        "\"new\\nline\"".to_string(),
        "\".hidden\"".to_string(),
        // An over-long name was ENAMETOOLONG (exit 3); it is bad input.
        format!("{long:?}"),
        // Not a string: no silent fall-back to the file stem.
        "5".to_string(),
    ] {
        let r = recipe(w, "r.toml", &format!("name = {name}\n"));
        for force in [false, true] {
            let mut args = vec![
                "run",
                r.to_str().unwrap(),
                "--out",
                "out",
                "--device",
                "cpu",
            ];
            if force {
                args.push("--force");
            }
            let (code, _, err) = cb(w, &args);
            assert_eq!(code, 2, "name = {name}: {err}");
            assert!(err.contains("r.toml: name"), "name = {name}: {err}");
        }
        assert!(!w.join("out").exists(), "name = {name}");
        assert!(!w.join("escape").exists() && !d.path().parent().unwrap().join("escape").exists());
        assert!(!abs.exists(), "name = {name}");
    }
    // Without `name`, the file stem must be an identifier too.
    let r = w.join("bad stem.toml");
    std::fs::write(&r, "[data]\nsources = [{ embedded = \"sotu\" }]\n").unwrap();
    let (code, _, err) = cb(w, &["run", r.to_str().unwrap(), "--out", "out"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("set `name`"), "{err}");
    assert!(!w.join("out").exists());
}

#[test]
fn key_names_and_checkpoint_names_are_identifiers() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    for name in ["../k", "/tmp/k", "", ".k", "a b", &"k".repeat(300)] {
        let (code, _, err) = cb(w, &["keygen", "--out", "keys", "--name", name]);
        assert_eq!(code, 2, "--name {name:?}: {err}");
        assert!(err.contains("--name"), "{err}");
    }
    assert!(
        tree(w).iter().all(|p| !p.ends_with(".key")),
        "{:?}",
        tree(w)
    );
    // A `latest` pointing out of the checkpoints directory is refused, not followed.
    let ck = w.join("run/checkpoints");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("latest"), "../../elsewhere\n").unwrap();
    let e = crambench::train::checkpoint::load_latest(&w.join("run"))
        .err()
        .expect("refused");
    assert_eq!(
        crambench::error::exit_code_of(&e),
        crambench::ExitCode::BadInput
    );
    assert!(format!("{e:#}").contains("checkpoint name"), "{e:#}");
}

// ---- item 8: sizes and durations bounded at parse time -----------------------------------

#[test]
fn a_huge_budget_is_refused_before_the_run_directory_exists() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let r = recipe(w, "r.toml", "name = \"huge\"\n");
    for budget in ["100000000000000000000h", "1000000000000000000000000s"] {
        let (code, _, err) = cb(
            w,
            &[
                "run",
                r.to_str().unwrap(),
                "--budget",
                budget,
                "--out",
                "out",
                "--device",
                "cpu",
            ],
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("largest budget"), "{err}");
        assert!(!w.join("out/huge").exists());
    }
}

#[test]
fn a_damaged_run_json_digest_is_a_named_error() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let r = recipe(w, "r.toml", "name = \"dmg\"\n");
    std::fs::create_dir_all(w.join("out/dmg")).unwrap();
    for digest in ["ab", &"é".repeat(32), &"g".repeat(64)] {
        let state = serde_json::json!({
            "schema": "crambench.run/v1",
            "recipe_name": "dmg",
            "recipe_path": "r.toml",
            "recipe_sha256": digest,
            "hardware_class": "x",
            "master_seed": 1,
            "master_from_os": false,
            "created": "2026-01-01T00:00:00Z",
            "invocations": [],
            "stages": {},
        });
        std::fs::write(
            w.join("out/dmg/run.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let (code, _, err) = cb(
            w,
            &[
                "run",
                r.to_str().unwrap(),
                "--out",
                "out",
                "--device",
                "cpu",
            ],
        );
        assert_eq!(code, 2, "{digest:?}: {err}");
        assert!(err.contains("recipe_sha256"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn huge_model_sizes_are_refused_in_recipes_and_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let r = recipe(w, "r.toml", "name = \"big\"\n[arch]\nhidden = 1000000000\n");
    let (code, _, err) = cb(
        w,
        &[
            "run",
            r.to_str().unwrap(),
            "--out",
            "out",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("hidden") && err.contains("limit"), "{err}");
    assert!(!w.join("out/big").exists());
    let (code, _, err) = cb(
        w,
        &[
            "pretrain",
            r.to_str().unwrap(),
            "--out",
            "p",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("hidden") && err.contains("limit"), "{err}");

    // A checkpoint whose arch.json asks for a billion-wide model.
    let ck = w.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let mut arch = serde_json::to_value(crambench::model::ArchConfig::default()).unwrap();
    arch["hidden"] = serde_json::Value::from(1_000_000_000i64);
    arch["heads"] = serde_json::Value::from(1);
    std::fs::write(ck.join("arch.json"), serde_json::to_vec(&arch).unwrap()).unwrap();
    std::fs::write(ck.join("tokenizer.json"), b"{}").unwrap();
    std::fs::write(ck.join("model.safetensors"), b"").unwrap();
    crambench::train::checkpoint::seal(&ck, 0).unwrap();
    let (code, _, err) = cb(
        w,
        &[
            "glue",
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--tasks",
            "demo",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("arch.json") && err.contains("limit"), "{err}");
}

#[test]
fn tiny_sizes_that_used_to_panic_are_named_errors() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let tiny = common::repo_root().join("baselines/crammed-bert-tiny.toml");
    for (extra, field) in [
        ("[arch]\nvocab_size = 3\n", "arch.vocab_size"),
        ("[train]\nseq_len = 1\n", "train.seq_len"),
    ] {
        let r = w.join("t.toml");
        std::fs::write(
            &r,
            format!("extends = {:?}\nname = \"t\"\n{extra}", tiny.display()),
        )
        .unwrap();
        let (code, _, err) = cb(
            w,
            &[
                "pretrain",
                r.to_str().unwrap(),
                "--out",
                "p",
                "--device",
                "cpu",
                "--budget",
                "2s",
                "--synthetic",
            ],
        );
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(err.contains(field) && !err.contains("panicked"), "{err}");
    }
}

// ---- item 9: non-regular files are refused where input is read ---------------------------

#[test]
fn fifos_and_devices_are_refused_not_read() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let fifo = w.join("corpus.jsonl");
    mkfifo(&fifo);
    let zero = w.join("zero.jsonl");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for p in [&fifo, &zero] {
        let p = p.to_str().unwrap();
        for args in [vec!["hash", p], vec!["data", "pin", p]] {
            let (code, _, err) = cb(w, &args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains("expected a regular file"), "{args:?}: {err}");
        }
    }
    // A corpus source that is a FIFO: refused while checking its pin.
    let r = recipe(
        w,
        "fifo.toml",
        &format!(
            "name = \"fifo\"\n[data]\nsources = [{{ path = {:?}, sha256 = \"{}\", size = 0 }}]\n",
            fifo.display(),
            "0".repeat(64)
        ),
    );
    let (code, _, err) = cb(w, &["data", "prepare", r.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FIFO"), "{err}");
}

#[test]
fn a_glue_dev_file_linked_to_dev_zero_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let glue = w.join("glue/SST-2");
    std::fs::create_dir_all(&glue).unwrap();
    let fixture = common::repo_root().join("tests/fixtures/glue/tsv/SST-2");
    std::fs::copy(fixture.join("train.tsv"), glue.join("train.tsv")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", glue.join("dev.tsv")).unwrap();
    let (code, _, err) = cb(w, &["glue", "pin", w.join("glue").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("dev.tsv") && err.contains("character device"),
        "{err}"
    );
    let ck = tiny_checkpoint(w);
    let (code, _, err) = cb(
        w,
        &[
            "glue",
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--tasks",
            "sst2",
            "--data",
            w.join("glue").to_str().unwrap(),
            "--trials",
            "1",
            "--device",
            "cpu",
            "--out",
            "g",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("dev.tsv") && err.contains("character device"),
        "{err}"
    );
    // A FIFO is refused the same way.
    std::fs::remove_file(glue.join("dev.tsv")).unwrap();
    mkfifo(&glue.join("dev.tsv"));
    let (code, _, err) = cb(w, &["glue", "pin", w.join("glue").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FIFO"), "{err}");

    // item 13: `--data FILE` is a bad argument (2), not an OS failure (3).
    let file = w.join("not-a-dir.tsv");
    std::fs::write(&file, "x\n").unwrap();
    let (code, _, err) = cb(
        w,
        &[
            "glue",
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--tasks",
            "sst2",
            "--data",
            file.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            "g2",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a directory"), "{err}");
}

// ---- item 6: no credentials from environment variables in the fingerprint ---------------

#[test]
fn planted_credentials_stay_out_of_the_fingerprint() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let url = "https://plantuser:plantpass@hub.example/hub?token=planttoken";
    let ld = format!(
        "{}:https://plantuser:plantpass@h/x",
        std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
    );
    let mut env: Vec<(String, String)> = vec![
        ("TORCH_HUB_URL".into(), url.into()),
        ("LD_LIBRARY_PATH".into(), ld),
        ("CUBLAS_WORKSPACE_CONFIG".into(), url.into()),
        (
            "CUDA_DEVICE_ORDER".into(),
            "plantuser:plantpass@proxy:3128".into(),
        ),
    ];
    for p in crambench::provenance::fingerprint::ENV_PREFIXES {
        env.push((format!("{p}PLANTED"), url.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = cb_env(w, &env, &["fingerprint", "--json"]);
    assert_eq!(code, 0, "{err}");
    for leak in ["plantuser", "plantpass", "planttoken"] {
        assert!(!out.contains(leak), "{leak} in {out}");
    }
    let fp: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vars = &fp["environment"]["variables"];
    // Recorded unmangled, without the credentials.
    assert_eq!(
        vars["TORCH_HUB_URL"],
        "https://<redacted>@hub.example/hub?token=<redacted>"
    );
}

// ---- item 13: messages name the field that is wrong -------------------------------------

#[test]
fn data_and_glue_errors_name_their_own_fields() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let run = |file: &str, extra: &str| {
        let r = recipe(w, file, &format!("name = \"m\"\n{extra}"));
        cb(
            w,
            &[
                "run",
                r.to_str().unwrap(),
                "--out",
                "out",
                "--device",
                "cpu",
            ],
        )
    };
    let (code, _, err) = run("v0.toml", "[data]\nvocab_size = 0\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("data.vocab_size") && !err.contains("arch"),
        "{err}"
    );

    // Longer blocks than the model's position table: the data's seq_len is at fault.
    let (code, _, err) = run("sl.toml", "[data]\nseq_len = 1024\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("data.seq_len") && !err.contains("train.seq_len"),
        "{err}"
    );

    let (code, _, err) = run("t.toml", "[glue]\ntasks = [\"nosuchtask\"]\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("t.toml") && err.contains("tasks") && !err.contains("--tasks"),
        "{err}"
    );
    assert!(!w.join("out/m").exists(), "refused before the first stage");
}

// ---- item 14: multi-file outputs are published together or not at all -------------------

#[test]
fn keygen_never_leaves_half_a_pair_and_a_retry_works() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let args = ["keygen", "--out", "keys", "--name", "k"];
    // A full disk at the public key: neither file (the private key used to stay behind and
    // the retry was refused).
    let (code, _, err) = cb_env(w, &[("CRAMBENCH_FAULT_ENOSPC", "k.pub")], &args);
    assert_eq!(code, 3, "{err}");
    assert!(!w.join("keys/k.key").exists() && !w.join("keys/k.pub").exists());
    let (code, _, err) = cb(w, &args);
    assert_eq!(code, 0, "{err}");
    let public = std::fs::read(w.join("keys/k.pub")).unwrap();
    // Both exist: refused, as before.
    let (code, _, _) = cb(w, &args);
    assert_eq!(code, 4);
    // A private key without its public key: the public key is re-derived, the key kept.
    let private = std::fs::read(w.join("keys/k.key")).unwrap();
    std::fs::remove_file(w.join("keys/k.pub")).unwrap();
    let (code, _, err) = cb(w, &args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("re-derived"), "{err}");
    assert_eq!(std::fs::read(w.join("keys/k.pub")).unwrap(), public);
    assert_eq!(std::fs::read(w.join("keys/k.key")).unwrap(), private);
    // ... but never from a private key others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::remove_file(w.join("keys/k.pub")).unwrap();
    std::fs::set_permissions(w.join("keys/k.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = cb(w, &args);
    assert_eq!(code, 4, "{err}");
    assert!(!w.join("keys/k.pub").exists());
}

#[test]
fn gate_checks_the_key_before_writing_and_writes_both_files_or_neither() {
    use common::fake_run::{keypair, write_fake_run, FakeRun};
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let (key, _) = keypair(&w.join("k"), "ci");
    let run = w.join("run");
    write_fake_run(&run, &FakeRun::default(), &key);
    let thresholds = common::repo_root().join("CI/gate-thresholds.toml");
    let gate = |key: &Path, out: &str, env: &[(&str, &str)]| {
        cb_env(
            w,
            env,
            &[
                "gate",
                "--baseline",
                run.to_str().unwrap(),
                "--candidate",
                run.to_str().unwrap(),
                "--thresholds",
                thresholds.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--out",
                out,
            ],
        )
    };
    // A private key readable by others: refused (4) before the summary is written.
    use std::os::unix::fs::PermissionsExt;
    let loose = w.join("loose.key");
    std::fs::copy(&key, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = gate(&loose, "g1", &[]);
    assert_eq!(code, 4, "{err}");
    assert!(tree(&w.join("g1")).is_empty(), "{:?}", tree(&w.join("g1")));
    // A full disk at the attestation: no summary without it.
    let (code, _, err) = gate(&key, "g2", &[("CRAMBENCH_FAULT_ENOSPC", "gate.dsse.json")]);
    assert_eq!(code, 3, "{err}");
    assert!(tree(&w.join("g2")).is_empty(), "{:?}", tree(&w.join("g2")));
    let (code, _, err) = gate(&key, "g3", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(&w.join("g3")), ["gate-summary.md", "gate.dsse.json"]);
}

#[test]
fn report_and_leaderboard_pages_are_published_together() {
    use common::fake_run::{keypair, write_fake_run, FakeRun};
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let (key, _) = keypair(&w.join("k"), "sub");
    let run = w.join("run");
    write_fake_run(&run, &FakeRun::default(), &key);
    let before = tree(&run);
    let (code, _, err) = cb_env(
        w,
        &[("CRAMBENCH_FAULT_ENOSPC", "report.html")],
        &["report", "run"],
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(tree(&run), before, "no report.md without report.html");
    let (code, _, err) = cb(w, &["report", "run"]);
    assert_eq!(code, 0, "{err}");
    assert!(run.join("report.md").is_file() && run.join("report.html").is_file());

    let site = |env: &[(&str, &str)]| {
        cb_env(
            w,
            env,
            &[
                "leaderboard",
                "build",
                run.to_str().unwrap(),
                "--keys",
                "k",
                "--out",
                "site",
            ],
        )
    };
    let (code, _, err) = site(&[("CRAMBENCH_FAULT_ENOSPC", "index.html")]);
    assert_eq!(code, 3, "{err}");
    assert!(
        tree(&w.join("site")).is_empty(),
        "{:?}",
        tree(&w.join("site"))
    );
    let (code, _, err) = site(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tree(&w.join("site")),
        ["index.html", "leaderboard.json", "leaderboard.md"]
    );
}

// ---- item 10: per-record size caps ---------------------------------------------------------

#[test]
fn an_over_long_corpus_record_is_a_named_bad_record() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let corpus = w.join("c.jsonl");
    let mut text = String::new();
    for i in 0..400 {
        text += &format!(
            "{{\"text\": \"line {i} of a small corpus with words {}\"}}\n",
            i * 7
        );
    }
    // Line 401: one record of 200 kB (a stand-in for the 1 GB single-line corpus).
    text += &format!("{{\"text\": \"{}\"}}\n", "long ".repeat(40_000));
    text += "{\"text\": \"after the long one\"}\n";
    std::fs::write(&corpus, &text).unwrap();
    let pin = crambench::provenance::hash::hash_file(&corpus, &|_| {}).unwrap();
    let write = |file: &str, extra: &str| {
        let p = w.join(file);
        std::fs::write(
            &p,
            format!(
                "name = \"cap\"\n[data]\nsources = [{{ path = \"c.jsonl\", sha256 = \"{}\", size = {} }}]\nvocab_size = 128\nseq_len = 16\nascii_only = false\nmax_record_bytes = 65536\n{extra}",
                pin.sha256, pin.size
            ),
        )
        .unwrap();
        p
    };
    let r = write("cap.toml", "");
    let (code, _, err) = cb(w, &["data", "prepare", r.to_str().unwrap(), "--out", "dc"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("c.jsonl:401") && err.contains("data.max_record_bytes (65536)"),
        "{err}"
    );
    assert!(
        tree(&w.join("dc")).iter().all(|p| p.starts_with('.')),
        "nothing published"
    );
    // Skipped and counted under on_bad_record = "skip"; the record after it is still read.
    let r = write("skip.toml", "on_bad_record = \"skip\"\n");
    let (code, out, err) = cb(
        w,
        &[
            "data",
            "prepare",
            r.to_str().unwrap(),
            "--out",
            "dc",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("record-too-long"), "{out}");
    // The limit is bounded itself.
    let r = write("zero.toml", "").to_string_lossy().into_owned();
    let t = std::fs::read_to_string(&r)
        .unwrap()
        .replace("max_record_bytes = 65536", "max_record_bytes = 0");
    std::fs::write(&r, t).unwrap();
    let (code, _, err) = cb(w, &["data", "prepare", &r, "--out", "dc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("data.max_record_bytes"), "{err}");
}

#[test]
fn an_over_long_glue_record_is_refused() {
    use crambench::glue::tasks::Task;
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("dev.tsv");
    // A 2 MB sentence (the 50 MB one, smaller): refused at the line limit.
    std::fs::write(
        &dev,
        format!("sentence\tlabel\nfine\t1\n{}\t0\n", "w".repeat(2 << 20)),
    )
    .unwrap();
    let set = Task::Sst2.eval_sets()[0];
    let e = crambench::glue::data::load_dev_file(&set, &dev).unwrap_err();
    assert_eq!(
        crambench::error::exit_code_of(&e),
        crambench::ExitCode::BadInput
    );
    let msg = format!("{e:#}");
    assert!(
        msg.contains("dev.tsv") && msg.contains("line 3 is longer than 1048576 bytes"),
        "{msg}"
    );
}

// ---- item 4: what is read is what was pinned -----------------------------------------------

#[test]
fn a_corpus_rewritten_after_its_pin_check_is_refused() {
    use crambench::data::config::OnBadRecord;
    use crambench::data::source::{read_entries, ReadPolicy};
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let policy = ReadPolicy {
        on_bad_record: OnBadRecord::Error,
        max_record_bytes: 1 << 20,
    };
    for file in ["c.jsonl", "c.jsonl.gz", "dir/c.jsonl"] {
        let path = w.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let write = |text: &str| {
            if file.ends_with(".gz") {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(
                    std::fs::File::create(&path).unwrap(),
                    flate2::Compression::default(),
                );
                e.write_all(text.as_bytes()).unwrap();
                e.finish().unwrap();
            } else {
                std::fs::write(&path, text).unwrap();
            }
        };
        write("{\"text\": \"the pinned text\"}\n");
        let (source, key, digest) = if file.starts_with("dir/") {
            let h = crambench::provenance::hash::hash_dir(&w.join("dir"), &|_| {}).unwrap();
            ("dir", "dir_hash", h.dir_hash)
        } else {
            let h = crambench::provenance::hash::hash_file(&path, &|_| {}).unwrap();
            (file, "sha256", h.sha256)
        };
        let size = crambench::provenance::hash::hash_path(&w.join(source), &|_| {})
            .unwrap()
            .size();
        let cfg: crambench::data::DataConfig = toml::from_str(&format!(
            "sources = [{{ path = {source:?}, format = \"jsonl\", {key} = \"{digest}\", size = {size} }}]"
        ))
        .unwrap();
        let opts = crambench::data::PrepareOptions {
            out_root: w.join("dc"),
            base_dir: w.to_path_buf(),
            hub_root: None,
            lock_file: None,
            locked: false,
            delete_raw: false,
            hub_env: None,
            threads: Some(1),
            progress: false,
            stop: None,
        };
        let (sources, _) = crambench::data::prepare::resolve_sources(&cfg, &opts).unwrap();
        // Unchanged: read, and verified.
        let mut texts = Vec::new();
        read_entries(&sources[0], policy, &|_| {}, &mut |e| {
            if let crambench::data::source::Entry::Text(t) = e {
                texts.push(t);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(texts, ["the pinned text"]);
        // Rewritten between the pin check and the read (same length): refused, exit 1.
        write("{\"text\": \"the swapped text\"}\n");
        let e = read_entries(&sources[0], policy, &|_| {}, &mut |_| Ok(())).unwrap_err();
        assert_eq!(
            crambench::error::exit_code_of(&e),
            crambench::ExitCode::CheckFailed,
            "{file}"
        );
        assert!(
            format!("{e:#}").contains("changed while it was read"),
            "{file}: {e:#}"
        );
    }
}
