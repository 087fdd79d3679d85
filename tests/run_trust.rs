//! Trust that checks everything (issue: verify the artifacts, fail before long work, exits as
//! documented, nothing left behind):
//!
//! * `crambench run` killed with SIGKILL at 20 points spread over every stage (data preparation,
//!   pretraining steps, checkpoint writes, GLUE trials, manifest, signature, report), rerun each
//!   time: every completed stage stays completed, the final envelope verifies with every
//!   artifact, the budget used is within one optimizer step of the allowance, and no temporary
//!   file or directory is left in the run directory or the dataset cache;
//! * `crambench verify RUN_DIR` re-checks the artifacts: edited predictions are a mismatch
//!   (exit 1) although the signature is valid; an envelope alone is "signature only";
//! * a second `crambench run` into a run directory in use is refused (exit 4) naming the holder;
//! * preflight: GLUE tasks without GLUE data, an unknown task, an aggregate over sets not run,
//!   fail in seconds before any stage; a panic is exit 70 with one line; a closed stdout is a
//!   quiet exit 0.
mod common;
use serde_json::Value;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The crash test's recipe: the demo corpus, 8 s of pretraining with a checkpoint every 0.6 s,
/// one epoch and two trials per demo task.
fn crash_recipe(dir: &Path) -> PathBuf {
    let p = dir.join("crash.toml");
    std::fs::write(
        &p,
        format!(
            "extends = {:?}\nname = \"crash\"\n[train]\nbudget = \"8s\"\ncheckpoint_every_minutes = 0.01\n\
             [glue]\nepochs = 1\ntrials = 2\n",
            common::repo_root()
                .join("baselines/demo-cpu.toml")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    p
}

fn cmd(dir: &Path, cfg: &Path) -> Command {
    let mut c = common::crambench();
    c.current_dir(dir)
        .env("CRAMBENCH_CONFIG_DIR", cfg)
        .env_remove("CRAMBENCH_TEST_CRASH_AT");
    c
}

fn stages(run: &Path) -> Vec<String> {
    let Ok(b) = std::fs::read(run.join("run.json")) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&b).unwrap();
    v["stages"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Temporaries a killed process could leave: atomic-write temp files, checkpoint and dataset
/// build directories, and an unfinished GLUE directory.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.starts_with(".crambench-") && name.ends_with(".tmp"))
                || name.starts_with(".tmp-")
                || name.starts_with(".build-")
                || name == "glue.partial"
            {
                found.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    found
}

#[test]
fn sigkill_at_twenty_points_then_rerun_verifies_within_budget() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let cfg = w.join("cfg");
    let recipe = crash_recipe(w);
    let key = cfg.join("keys/default.pub");
    let run = w.join("out/crash");
    let args = [
        "run",
        recipe.to_str().unwrap(),
        "--out",
        "out",
        "--data-dir",
        "dc",
        "--device",
        "cpu",
        "--seed",
        "11",
    ];
    // In pipeline order: each invocation is killed at the next point (a point already passed
    // by earlier invocations is simply not reached, and that invocation completes its work).
    let points = [
        "write:fingerprint.json",   // fingerprint
        "write:run.json#2",         // its completion record
        "write:tokenizer.json",     // data: the trained tokenizer
        "write:shard-00000.json",   // data: a shard
        "write:dataset.json",       // data: the dataset manifest
        "data-publish",             // data: before the build directory's rename
        "write:run.json#2",         // the data stage's completion record
        "pretrain-step#2",          // pretraining, before the first checkpoint
        "checkpoint-payload#1",     // checkpoint: weights written, no meta.json yet
        "checkpoint-renamed#1",     // checkpoint: renamed, `latest` not yet updated
        "write:latest#2",           // checkpoint: the `latest` pointer
        "pretrain-step#3",          // pretraining, resumed
        "write:summary.json",       // pretraining's summary
        "write:trial-0.tsv",        // GLUE: the first predictions file
        "glue-trial#2",             // GLUE: after the second trial
        "write:glue.json",          // GLUE: the results file
        "glue-publish",             // GLUE: before glue.partial becomes glue
        "write:manifest.json",      // manifest
        "write:manifest.dsse.json", // signature
        "write:report.html",        // report
    ];
    assert_eq!(points.len(), 20);
    let mut killed = 0;
    let mut before: Vec<String> = Vec::new();
    for p in points {
        let out = cmd(w, &cfg)
            .args(args)
            .env("CRAMBENCH_TEST_CRASH_AT", p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "crash point {p}: {:?}, stages {:?}",
            out.status,
            stages(&run)
        );
        match out.status.signal() {
            Some(9) => killed += 1,
            None => assert_eq!(out.status.code(), Some(0), "at {p}: {err}"),
            s => panic!("at {p}: signal {s:?}: {err}"),
        }
        let now = stages(&run);
        for s in &before {
            assert!(
                now.contains(s),
                "at {p}: completed stage {s} lost ({now:?})"
            );
        }
        before = now;
    }
    assert_eq!(killed, 20, "every point is reached in its invocation");
    // Finish, then check everything.
    let out = cmd(w, &cfg).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(stages(&run).len(), 7, "{err}");
    assert!(leftovers(&run).is_empty(), "{:?}", leftovers(&run));
    assert!(
        leftovers(&w.join("dc")).is_empty(),
        "{:?}",
        leftovers(&w.join("dc"))
    );

    let m: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let b = &m["predicate"]["budget"];
    let (used, allowed) = (
        b["used_device_hours"].as_f64().unwrap() * 3600.0,
        b["allowed_device_hours"].as_f64().unwrap() * 3600.0,
    );
    // One optimizer step of this model on 2 cores: the longest step in the metrics log.
    let log = std::fs::read_to_string(run.join("pretrain/metrics.jsonl")).unwrap();
    let mut step_s: f64 = 0.0;
    let mut last_t: Option<f64> = None;
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if let Some(t) = v["elapsed_s"].as_f64().or(v["budget_elapsed_s"].as_f64()) {
            if let Some(p) = last_t {
                step_s = step_s.max(t - p);
            }
            last_t = Some(t);
        }
    }
    assert!(
        used <= allowed + step_s.max(0.5),
        "used {used} s of {allowed} s (+ one step {step_s} s)"
    );

    let (code, o, e) = common::run_in_env(
        w,
        &[("CRAMBENCH_CONFIG_DIR", cfg.to_str().unwrap())],
        &[
            "verify",
            run.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{o}{e}");
    assert!(
        o.contains("result       VALID (signature and artifacts)"),
        "{o}"
    );
    assert!(!o.contains("mismatch"), "{o}");
    // The checkpoint's model-signing root digest is a subject: the link to model.sig.
    assert!(
        o.contains("verified     subject") && o.contains("(checkpoint-oms)"),
        "{o}"
    );

    // Predictions edited to 100% accuracy: the signature is still valid, the artifacts not.
    let p = run.join("glue/predictions/demo-sentiment/trial-0.tsv");
    let orig = std::fs::read_to_string(&p).unwrap();
    let perfect: String = orig
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else {
                let f: Vec<&str> = l.split('\t').collect();
                format!("{}\t{}\t{}\n", f[0], f[2], f[2])
            }
        })
        .collect();
    std::fs::write(&p, perfect).unwrap();
    let (code, o, _) = common::run_in(
        w,
        &[
            "verify",
            run.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{o}");
    assert!(o.contains("signed       VALID"), "{o}");
    assert!(o.contains("mismatch") && o.contains("trial-0.tsv"), "{o}");
    assert!(o.contains("result       NOT VALID"), "{o}");
    let (code, o, _) = common::run_in(
        w,
        &[
            "verify",
            run.join("manifest.dsse.json").to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{o}");
    assert!(o.contains("signature only; artifacts not checked"), "{o}");
    // Without --key: the user's own key, said on stderr.
    let (code, o, e) = common::run_in_env(
        w,
        &[("CRAMBENCH_CONFIG_DIR", cfg.to_str().unwrap())],
        &["verify", run.to_str().unwrap(), "--json"],
    );
    assert_eq!(code, 1, "{o}{e}");
    assert!(e.contains("trusting your own public key"), "{e}");
    let v: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["ok"], false);
    std::fs::write(&p, orig).unwrap();

    // A second run into the directory while one is working in it: refused, naming the holder.
    let mut first = cmd(w, &cfg)
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--out",
            "busy",
            "--data-dir",
            "dc",
            "--device",
            "cpu",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !w.join("busy/crash/run.json").exists() {
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cmd(w, &cfg)
        .args([
            "run",
            recipe.to_str().unwrap(),
            "--out",
            "busy",
            "--data-dir",
            "dc",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("in use by another crambench process")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

fn recipe_with(dir: &Path, name: &str, glue: &str) -> PathBuf {
    recipe_toml(dir, name, &format!("[glue]\n{glue}\n"))
}

fn recipe_toml(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "extends = {:?}\nname = \"{name}\"\n{body}",
            common::repo_root()
                .join("baselines/demo-cpu.toml")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    p
}

#[test]
fn preflight_fails_in_seconds_before_any_stage() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let cfg = w.join("cfg");
    let cases = [
        (
            recipe_with(
                w,
                "needs-glue",
                "tasks = [\"all\"]\naggregate = \"cramming\"",
            ),
            "--glue-data",
        ),
        (
            recipe_with(w, "unknown-task", "tasks = [\"nosuchtask\"]"),
            "nosuchtask",
        ),
        (
            recipe_with(w, "rule-not-run", "tasks = [\"demo-sentiment\"]"),
            "glue.aggregate",
        ),
        (
            recipe_with(w, "mixed", "tasks = [\"sst2\", \"demo\"]"),
            "cannot be mixed",
        ),
        (
            recipe_toml(w, "vocab-disagrees", "[arch]\nvocab_size = 8192\n"),
            "arch.vocab_size",
        ),
        (
            recipe_toml(w, "seq-disagrees", "[train]\nseq_len = 32\n"),
            "train.seq_len",
        ),
        (
            recipe_toml(w, "name-not-a-string", "").with_file_name("x"),
            "name",
        ),
    ];
    // `name = 5` (it fell back to the file stem).
    std::fs::write(
        w.join("x"),
        std::fs::read_to_string(w.join("name-not-a-string.toml"))
            .unwrap()
            .replace("name = \"name-not-a-string\"", "name = 5"),
    )
    .unwrap();
    // --device cuda on a machine without CUDA: found before any stage, not after pretraining.
    if !tch::Cuda::is_available() {
        let ok = recipe_with(w, "ok", "tasks = [\"demo\"]");
        let t = Instant::now();
        let out = cmd(w, &cfg)
            .args([
                "run",
                ok.to_str().unwrap(),
                "--out",
                "o",
                "--data-dir",
                "dc",
                "--device",
                "cuda",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("CUDA is not available"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(20));
        assert!(!w.join("o/ok/run.json").exists());
    }
    for (recipe, needle) in &cases {
        let t = Instant::now();
        let out = cmd(w, &cfg)
            .args([
                "run",
                recipe.to_str().unwrap(),
                "--out",
                "o",
                "--data-dir",
                "dc",
                "--device",
                "cpu",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", recipe.display());
        assert!(err.contains(needle), "{}: {err}", recipe.display());
        assert!(
            err.contains(recipe.file_name().unwrap().to_str().unwrap()) || *needle == "--glue-data",
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert!(
            !w.join("dc").exists() || std::fs::read_dir(w.join("dc")).unwrap().next().is_none()
        );
        let name = recipe.file_stem().unwrap();
        assert!(
            !w.join("o").join(name).join("run.json").exists(),
            "no stage ran"
        );
    }
}

#[test]
fn a_panic_is_exit_70_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = common::crambench()
        .current_dir(d.path())
        .env("CRAMBENCH_TEST_CRASH_AT", "panic:write:f.json")
        .args(["fingerprint", "--out", "f.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{err}");
    assert!(err.contains("internal error (a bug in crambench"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

#[test]
fn a_closed_stdout_is_a_quiet_exit_0() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        &["fingerprint", "--json"][..],
        &["seeds", "--master", "1", "a", "b", "c"][..],
        &["data", "pin", "."][..],
    ] {
        std::fs::write(d.path().join("x.txt"), "x".repeat(1 << 20)).unwrap();
        let mut child = common::crambench()
            .current_dir(d.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away, like `| head -0`
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `submit --json | head` and `leaderboard build --json | head` panicked (exit 101).
#[test]
fn submit_and_leaderboard_into_a_closed_pipe_exit_0() {
    use common::fake_run::{keypair, write_fake_run, FakeRun};
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let (key, public) = keypair(&w.join("private"), "k");
    write_fake_run(&w.join("run"), &FakeRun::default(), &key);
    std::fs::create_dir_all(w.join("keys")).unwrap();
    std::fs::copy(&public, w.join("keys/k.pub")).unwrap();
    for args in [
        &["submit", "run", "--out", "entries/e", "--json"][..],
        &[
            "leaderboard",
            "build",
            "entries",
            "--keys",
            "keys",
            "--gold",
            "column",
            "--out",
            "site",
            "--json",
        ][..],
    ] {
        let mut child = common::crambench()
            .current_dir(w)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(w.join("entries/e/bundle.json").is_file());
}

/// The first SIGTERM stops GLUE fine-tuning and data preparation promptly (CI runners send
/// SIGTERM, wait, then SIGKILL): exit 0 "stopped", completed GLUE trials kept, and the next run
/// continues after them.
#[test]
fn sigterm_stops_glue_and_data_preparation_promptly_and_the_rerun_continues() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let cfg = w.join("cfg");
    let recipe = crash_recipe(w);
    let run_args = |out: &str, dc: &str| {
        vec![
            "run".to_string(),
            recipe.display().to_string(),
            "--out".into(),
            out.into(),
            "--data-dir".into(),
            dc.into(),
            "--device".into(),
            "cpu".into(),
            "--seed".into(),
            "3".into(),
        ]
    };
    let term_when = |args: Vec<String>, ready: &dyn Fn() -> bool| -> (i32, String, Duration) {
        let mut child = cmd(w, &cfg)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !ready() {
            assert!(t.elapsed() < Duration::from_secs(120), "never ready");
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let sent = Instant::now();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
            sent.elapsed(),
        )
    };
    // Data preparation: stopped while the build directory exists.
    let dc = w.join("dc-term");
    let (code, out, took) = term_when(run_args("o-data", "dc-term"), &|| {
        std::fs::read_dir(&dc).is_ok_and(|mut r| {
            r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".build-")))
        })
    });
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stopped"), "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(!stages(&w.join("o-data/crash")).contains(&"data".to_string()));

    // GLUE: stopped after its first trial was kept.
    let trials = w.join("o-glue/crash/glue.partial/trials");
    let (code, out, took) = term_when(run_args("o-glue", "dc"), &|| {
        std::fs::read_dir(&trials).is_ok_and(|r| r.count() >= 1)
    });
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("completed trials are kept"), "{out}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // The no-pretraining control (on for the demo tasks) keeps its trials beside the run's.
    let control_trials = w.join("o-glue/crash/glue.partial/controls/no-pretraining/trials");
    let kept = std::fs::read_dir(&trials).unwrap().count()
        + std::fs::read_dir(&control_trials).map_or(0, |r| r.count());
    assert!(kept >= 1);
    let out = cmd(w, &cfg)
        .args(run_args("o-glue", "dc"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("kept from the stopped run").count(),
        kept,
        "{err}"
    );
    assert_eq!(stages(&w.join("o-glue/crash")).len(), 7, "{err}");
    // An unknown stage in run.json is refused, not ignored.
    let rj = w.join("o-glue/crash/run.json");
    let text = std::fs::read_to_string(&rj).unwrap();
    std::fs::write(&rj, text.replacen("\"stages\": {", "\"stages\": {\n    \"bogus\": {\"completed\": \"x\", \"seconds\": 0, \"outputs\": {}, \"info\": {}},", 1)).unwrap();
    let out = cmd(w, &cfg)
        .args(run_args("o-glue", "dc"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("stages.bogus"), "{err}");
}
