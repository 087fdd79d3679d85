//! `crambench submit`: a signed run becomes a bundle that opens and verifies like the run; an
//! unsigned run, an existing ENTRY, predictions changed after signing and a failure half-way
//! are refused, and leave no ENTRY behind.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use crambench::leaderboard::submit::{self, SubmitOptions};
use crambench::manifest::{dsse, keys};
use crambench::record::RunRecord;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    run: PathBuf,
    public: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (sk, pk) = keypair(&root.join("keys"), "submitter");
    let run = root.join("run");
    write_fake_run(&run, &FakeRun::default(), &sk);
    Fixture {
        _dir: dir,
        root,
        run,
        public: pk,
    }
}

/// Every file below `dir` (relative, `/`-separated), sorted.
fn files_below(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Nothing named ENTRY and no leftover temporaries beside it.
fn assert_nothing_written(root: &Path, entry: &str) {
    assert!(!root.join(entry).exists(), "{entry} was created");
    let leftovers: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".crambench"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}

/// Flip the prediction of the first row of a (binary) predictions file.
fn flip_first_prediction(p: &Path) {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let f: Vec<&str> = lines[1].split('\t').collect();
    let flipped = if f[1] == "0" { "1" } else { "0" };
    lines[1] = format!("{}\t{}\t{}", f[0], flipped, f[2]);
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

#[test]
fn bundle_holds_the_run_and_an_index_of_digests() {
    let f = fixture();
    std::fs::write(f.run.join("report.md"), "# report\n").unwrap();
    std::fs::write(f.run.join("demo-cpu.toml"), "name = \"demo-cpu\"\n").unwrap();
    let (code, out, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let entry = f.root.join("entry");
    let got = files_below(&entry);
    for want in [
        "bundle.json",
        "manifest.dsse.json",
        "recipe.resolved.json",
        "demo-cpu.toml",
        "report.md",
        "pretrain/metrics.jsonl",
        "glue/glue.json",
        "glue/predictions/demo-sentiment/trial-0.tsv",
        "glue/predictions/demo-next-sentence/trial-2.tsv",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
    }
    // Copied byte for byte.
    for rel in [
        "manifest.dsse.json",
        "pretrain/metrics.jsonl",
        "glue/predictions/demo-sentiment/trial-1.tsv",
    ] {
        assert_eq!(
            std::fs::read(entry.join(rel)).unwrap(),
            std::fs::read(f.run.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // The resolved recipe, from the signed manifest (the fake run has no recipe.resolved.json).
    let resolved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("recipe.resolved.json")).unwrap())
            .unwrap();
    assert_eq!(resolved["glue"]["epochs"], 5);
    // bundle.json lists every other file with its SHA-256 (computed here independently).
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(index["format"], "crambench-bundle/v1");
    let listed: Vec<(String, String)> = index["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut names: Vec<String> = listed.iter().map(|(p, _)| p.clone()).collect();
    names.sort();
    let mut expected = got.clone();
    expected.retain(|p| p != "bundle.json");
    assert_eq!(names, expected);
    for (p, sha) in &listed {
        let bytes = std::fs::read(entry.join(p)).unwrap();
        assert_eq!(&hex::encode(Sha256::digest(&bytes)), sha, "{p}");
    }
    // The bundle opens and verifies like the run.
    let rec = RunRecord::open(&entry).unwrap();
    rec.require_run().unwrap();
    rec.verify(&[keys::load_public_key(&f.public).unwrap()], 1)
        .unwrap();
    assert!(rec.predictions_file("demo-sentiment", 0).unwrap().is_file());
    // Nothing beside it.
    assert_nothing_written(&f.root, "no-such-entry");
}

#[test]
fn unsigned_runs_are_refused() {
    let f = fixture();
    // An envelope without signatures.
    let env_path = f.run.join("manifest.dsse.json");
    let mut env = dsse::Envelope::read(&env_path).unwrap();
    env.signatures.clear();
    std::fs::write(&env_path, env.to_json()).unwrap();
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unsigned"), "{err}");
    assert_nothing_written(&f.root, "entry");
    // No envelope at all (a bare manifest.json).
    std::fs::remove_file(&env_path).unwrap();
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unsigned") && err.contains("manifest.dsse.json"),
        "{err}"
    );
    assert_nothing_written(&f.root, "entry");
}

#[test]
fn an_existing_entry_is_never_overwritten() {
    let f = fixture();
    std::fs::create_dir(f.root.join("entry")).unwrap();
    std::fs::write(f.root.join("entry/keep.txt"), "mine").unwrap();
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(files_below(&f.root.join("entry")), vec!["keep.txt"]);
    assert_eq!(
        std::fs::read_to_string(f.root.join("entry/keep.txt")).unwrap(),
        "mine"
    );
    // An empty directory too (rename(2) would silently replace it).
    std::fs::create_dir(f.root.join("empty")).unwrap();
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "empty"]);
    assert_eq!(code, 4, "{err}");
    assert!(files_below(&f.root.join("empty")).is_empty());
}

#[test]
fn predictions_changed_after_signing_are_refused() {
    let f = fixture();
    let p = f
        .run
        .join("glue/predictions/demo-next-sentence/trial-1.tsv");
    flip_first_prediction(&p);
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("demo-next-sentence/trial-1.tsv") && err.contains("predictions_sha256"),
        "{err}"
    );
    assert_nothing_written(&f.root, "entry");
}

#[test]
fn a_file_added_to_the_predictions_is_refused() {
    let f = fixture();
    std::fs::write(
        f.run.join("glue/predictions/demo-sentiment/trial-9.tsv"),
        "idx\tprediction\tgold\n",
    )
    .unwrap();
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("dirHash") && err.contains("trial-9.tsv"),
        "{err}"
    );
    assert_nothing_written(&f.root, "entry");
}

#[test]
fn a_failure_half_way_leaves_no_entry() {
    let f = fixture();
    // Simulated full disk after three files were copied.
    let e = submit::submit(
        &f.run,
        &f.root.join("entry"),
        &SubmitOptions {
            fault_after_files: Some(3),
        },
    )
    .unwrap_err();
    assert_eq!(crambench::error::exit_code_of(&e), crambench::ExitCode::Io);
    assert!(format!("{e:#}").contains("simulated failure"), "{e:#}");
    assert_nothing_written(&f.root, "entry");
    // A real failure late in the copy: report.html is not a regular file.
    std::fs::create_dir(f.run.join("report.html")).unwrap();
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("report.html"), "{err}");
    assert_nothing_written(&f.root, "entry");
    // The run itself is untouched and still submits once the fault is gone.
    std::fs::remove_dir(f.run.join("report.html")).unwrap();
    let (code, _, err) = common::run_in(&f.root, &["submit", "run", "--out", "entry"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_signed_control_predictions_travel_with_the_bundle() {
    let f = fixture();
    let (sk, _) = keypair(&f.root.join("keys2"), "s2");
    let run = f.root.join("ctl");
    write_fake_run(
        &run,
        &FakeRun {
            control_files: true,
            ..FakeRun::default()
        },
        &sk,
    );
    let (code, out, err) = common::run_in(&f.root, &["submit", "ctl", "--out", "entry", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let got = files_below(&f.root.join("entry"));
    let want = "glue/controls/no-pretraining/predictions/demo-sentiment/trial-0.tsv";
    assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
    // In the bundle the control subject verifies at its signed digest.
    let rec = RunRecord::open(&f.root.join("entry")).unwrap();
    let a = crambench::audit::audit(
        &rec,
        &Default::default(),
        &mut crambench::audit::GoldCache::default(),
    );
    let item = a
        .items
        .iter()
        .find(|i| i.role.as_deref() == Some("control-predictions"))
        .expect("the control subject is audited");
    assert_eq!(
        item.status,
        crambench::audit::Status::Verified,
        "{}",
        item.detail
    );
    // A control file changed after signing is refused like any signed subject.
    flip_first_prediction(
        &run.join("glue/controls/no-pretraining/predictions/demo-sentiment/trial-1.tsv"),
    );
    let (code, out, err) = common::run_in(&f.root, &["submit", "ctl", "--out", "entry2"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(!f.root.join("entry2").exists());
}
