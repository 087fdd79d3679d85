//! `crambench leaderboard build`: good entries are accepted and ranked by their aggregate; every
//! kind of bad entry is rejected with its reasons, listed in all three outputs.
//!
//! Entries are fake runs (`tests/common/fake_run.rs`), bundled with `crambench submit`. Their
//! demo-set rows are synthetic (not the embedded dev sets), so these builds pass
//! `--gold column`, except the test that shows the embedded gold catches exactly that.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use crambench::leaderboard::submit::{submit, SubmitOptions};
use crambench::manifest::{dsse, jcs, keys};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fake run's dataset root digest, allowed by the test tracks.
fn fake_digest() -> String {
    "ab".repeat(32)
}

/// The shipped tracks file with the fake digest allowed in `demo-cpu`.
fn tracks_toml() -> String {
    let text = std::fs::read_to_string(common::repo_root().join("manifests/tracks.toml")).unwrap();
    let (head, demo) = text.split_once("name = \"demo-cpu\"").unwrap();
    // The fake runs' dataset digest joins the shipped allowlist.
    let demo = demo.replacen(
        "data_root_digests = [",
        &format!("data_root_digests = [\"{}\", ", fake_digest()),
        1,
    );
    format!("{head}name = \"demo-cpu\"{demo}")
}

struct Board {
    _dir: tempfile::TempDir,
    root: PathBuf,
    trusted: PathBuf,
    untrusted: PathBuf,
    entries: PathBuf,
}

impl Board {
    fn new() -> Board {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (trusted, trusted_pub) = keypair(&root.join("private"), "trusted");
        let (untrusted, _) = keypair(&root.join("private"), "untrusted");
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::copy(&trusted_pub, root.join("keys/trusted.pub")).unwrap();
        std::fs::write(root.join("tracks.toml"), tracks_toml()).unwrap();
        std::fs::create_dir_all(root.join("entries")).unwrap();
        Board {
            entries: root.join("entries"),
            _dir: dir,
            root,
            trusted,
            untrusted,
        }
    }

    /// A fake run signed by `key`, the statement changed by `edit` and re-signed, submitted as
    /// `entries/<name>`.
    fn entry(
        &self,
        name: &str,
        spec: &FakeRun,
        key: &Path,
        edit: impl FnOnce(&mut Value),
    ) -> PathBuf {
        let run = self.root.join("runs").join(name);
        let mut st = write_fake_run(&run, spec, key);
        let before = st.clone();
        edit(&mut st);
        if st != before {
            resign(&run, &st, key);
        }
        let entry = self.entries.join(name);
        submit(&run, &entry, &SubmitOptions::default()).unwrap();
        entry
    }

    fn build(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "leaderboard",
            "build",
            "entries",
            "--keys",
            "keys",
            "--tracks",
            "tracks.toml",
            "--out",
            "site",
            "--json",
        ];
        args.extend_from_slice(extra);
        common::run_in(&self.root, &args)
    }
}

fn resign(run: &Path, statement: &Value, key: &Path) {
    let bytes = jcs::to_vec(statement).unwrap();
    std::fs::write(run.join("manifest.json"), &bytes).unwrap();
    let mut env = dsse::Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, &bytes);
    env.sign(&keys::load_signing_key(key).unwrap(), "test")
        .unwrap();
    std::fs::write(run.join("manifest.dsse.json"), env.to_json()).unwrap();
}

/// Per trial, 200 rows, wrong where `(i + t) % period == 0`.
fn rows(period: usize, trials: usize) -> Vec<Vec<(usize, usize)>> {
    (0..trials)
        .map(|t| {
            (0..200)
                .map(|i| {
                    let gold = (i * 7 + 3) % 2;
                    (
                        if (i + t) % period == 0 {
                            1 - gold
                        } else {
                            gold
                        },
                        gold,
                    )
                })
                .collect()
        })
        .collect()
}

fn spec_with(period_sentiment: usize, period_next: usize) -> FakeRun {
    let mut s = FakeRun::default();
    s.sets
        .insert("demo-sentiment".into(), rows(period_sentiment, 3));
    s.sets
        .insert("demo-next-sentence".into(), rows(period_next, 3));
    s
}

fn flip_first_prediction(p: &Path) {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let f: Vec<&str> = lines[1].split('\t').collect();
    let flipped = if f[1] == "0" { "1" } else { "0" };
    lines[1] = format!("{}\t{}\t{}", f[0], flipped, f[2]);
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

/// Rejected entries of a site JSON: name → reasons.
fn rejected(site: &Value) -> BTreeMap<String, Vec<String>> {
    site["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn track<'a>(site: &'a Value, name: &str) -> &'a Value {
    site["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["track"]["name"] == name)
        .unwrap()
}

fn has(reasons: &[String], needle: &str) -> bool {
    reasons.iter().any(|r| r.contains(needle))
}

#[test]
fn good_entries_are_ranked_and_bad_ones_rejected_with_reasons() {
    let b = Board::new();
    let d = FakeRun::default();
    // Accepted: two good runs (better one second alphabetically, so ranking is by value).
    b.entry("a-good", &d, &b.trusted, |_| {});
    b.entry("b-better", &spec_with(10, 10), &b.trusted, |_| {});
    // The same run submitted twice.
    submit(
        &b.root.join("runs/a-good"),
        &b.entries.join("a-good-again"),
        &SubmitOptions::default(),
    )
    .unwrap();
    // Tampered envelope payload: the aggregate raised after signing, signature kept.
    let e = b.entry("tampered", &d, &b.trusted, |_| {});
    let env_path = e.join("manifest.dsse.json");
    let mut env = dsse::Envelope::read(&env_path).unwrap();
    let mut st: Value = serde_json::from_slice(&dsse::b64_decode(&env.payload).unwrap()).unwrap();
    st["predicate"]["glue"]["aggregate"]["value"] = Value::from(99.0);
    env.payload = dsse::b64_encode(&jcs::to_vec(&st).unwrap());
    std::fs::write(&env_path, env.to_json()).unwrap();
    // Signed by a key the leaderboard does not trust.
    b.entry("untrusted", &d, &b.untrusted, |_| {});
    // Unsigned: the signatures stripped from the bundle's envelope.
    let e = b.entry("unsigned", &d, &b.trusted, |_| {});
    let env_path = e.join("manifest.dsse.json");
    let mut env = dsse::Envelope::read(&env_path).unwrap();
    env.signatures.clear();
    std::fs::write(&env_path, env.to_json()).unwrap();
    // A predictions file edited after signing (and after bundling).
    let e = b.entry("edited-predictions", &d, &b.trusted, |_| {});
    flip_first_prediction(&e.join("glue/predictions/demo-sentiment/trial-1.tsv"));
    // Numbers that do not re-score: every demo-sentiment number (trials, median, aggregate)
    // raised consistently to 0.9 and signed; only re-scoring the predictions can tell.
    b.entry("inflated", &d, &b.trusted, |st| {
        let g = &mut st["predicate"]["glue"];
        let t = &mut g["tasks"]["demo-sentiment"];
        for tr in t["trials"].as_array_mut().unwrap() {
            tr["metrics"]["accuracy"] = Value::from(0.9);
        }
        t["metrics"]["accuracy"] = Value::from(0.9);
        let next = g["tasks"]["demo-next-sentence"]["metrics"]["accuracy"]
            .as_f64()
            .unwrap();
        g["aggregate"]["value"] = Value::from(100.0 * (0.9 + next) / 2.0);
    });
    // Track rules.
    let over = FakeRun {
        allowed_device_hours: 2.0,
        used_device_hours: 2.0,
        ..FakeRun::default()
    };
    b.entry("over-budget", &over, &b.trusted, |_| {});
    let overrun = FakeRun {
        allowed_device_hours: 0.5,
        used_device_hours: 0.6,
        ..FakeRun::default()
    };
    b.entry("overrun", &overrun, &b.trusted, |_| {});
    // Past its budget by less than the last-step allowance (30 s): accepted.
    let last_step = FakeRun {
        used_device_hours: 0.025 + 20.0 / 3600.0,
        ..FakeRun::default()
    };
    b.entry("c-last-step", &last_step, &b.trusted, |_| {});
    b.entry(
        "six-epochs",
        &FakeRun {
            epochs: 6,
            ..FakeRun::default()
        },
        &b.trusted,
        |_| {},
    );
    b.entry(
        "other-data",
        &FakeRun {
            dataset_root_digest: "cd".repeat(32),
            ..FakeRun::default()
        },
        &b.trusted,
        |_| {},
    );
    b.entry(
        "no-track-rule",
        &FakeRun {
            rule: "glue-official".into(),
            ..FakeRun::default()
        },
        &b.trusted,
        |_| {},
    );
    // The aggregate disagrees with the signed medians.
    b.entry("wrong-aggregate", &d, &b.trusted, |st| {
        st["predicate"]["glue"]["aggregate"]["value"] = Value::from(90.0);
    });
    // Not from scratch.
    b.entry("no-pretraining", &d, &b.trusted, |st| {
        st["predicate"]["pretraining"]["steps"] = Value::from(0);
    });
    // A directory among the entries that is not a bundle.
    std::fs::create_dir_all(b.entries.join("not-a-bundle")).unwrap();
    std::fs::write(b.entries.join("not-a-bundle/notes.txt"), "hello").unwrap();
    // An unrelated file in the output directory survives.
    std::fs::create_dir_all(b.root.join("site")).unwrap();
    std::fs::write(b.root.join("site/keep.txt"), "mine").unwrap();

    let (code, out, err) = b.build(&["--gold", "column"]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    let demo = track(&site, "demo-cpu");
    let ranked: Vec<(&str, u64)> = demo["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["rank"].as_u64().unwrap()))
        .collect();
    // Ties (a-good and c-last-step score the same) go by name.
    assert_eq!(
        ranked,
        vec![("b-better", 1), ("a-good", 2), ("c-last-step", 3)],
        "{out}"
    );
    let good = &demo["entries"][1];
    assert_eq!(
        good["signers"][0],
        keys::load_public_key(&b.root.join("keys/trusted.pub"))
            .unwrap()
            .keyid
    );
    assert_eq!(good["hardware_class"], "cpu-x86-64-2c");
    assert!(good["notes"].as_array().unwrap().is_empty(), "{good}");
    assert!(track(&site, "1gpu-1day")["entries"]
        .as_array()
        .unwrap()
        .is_empty());

    let rej = rejected(&site);
    let expect: &[(&str, &[&str])] = &[
        ("a-good-again", &["duplicate of entry entries/a-good"]),
        ("not-a-bundle", &["cannot be read", "not a run directory"]),
        ("tampered", &["signature not valid"]),
        ("untrusted", &["signature not valid"]),
        ("unsigned", &["unsigned"]),
        (
            "edited-predictions",
            &["demo-sentiment trial 1", "differs from the signed predictions_sha256", "dirHash"],
        ),
        ("inflated", &["demo-sentiment trial 0 (predictions/demo-sentiment/trial-0.tsv): accuracy re-scores to 0.8, the manifest says 0.9"]),
        ("over-budget", &["declared budget 2 device-hours exceeds the track's 1", "used 2 device-hours, over the track's 1"]),
        ("overrun", &["used 0.6 device-hours, over the run's own budget 0.5 (+ 30 s for the last step)"]),
        ("six-epochs", &["fine-tuning for 6 epochs, the track allows at most 5"]),
        ("other-data", &[&format!("data root digest {} is not in the track's allowlist", "cd".repeat(32))]),
        ("no-track-rule", &["no track takes the aggregate rule glue-official"]),
        ("wrong-aggregate", &["aggregate 90 does not follow from the per-set medians"]),
        ("no-pretraining", &["pretraining from scratch required"]),
    ];
    assert_eq!(rej.len(), expect.len(), "{rej:#?}");
    for (name, needles) in expect {
        let reasons = rej
            .get(*name)
            .unwrap_or_else(|| panic!("{name} not rejected: {rej:#?}"));
        for n in *needles {
            assert!(
                has(reasons, n),
                "{name}: no reason containing {n:?}: {reasons:#?}"
            );
        }
    }
    // Each entry is rejected for its own fault only (the good parts of it pass).
    assert_eq!(rej["six-epochs"].len(), 1, "{:#?}", rej["six-epochs"]);
    assert_eq!(rej["other-data"].len(), 1, "{:#?}", rej["other-data"]);
    // One per trial, and the median of the re-scored trials.
    assert_eq!(rej["inflated"].len(), 4, "{:#?}", rej["inflated"]);
    assert!(has(
        &rej["inflated"],
        "demo-sentiment: median accuracy over the re-scored trials is 0.8, the manifest says 0.9"
    ));
    assert_eq!(rej["untrusted"].len(), 1, "{:#?}", rej["untrusted"]);

    // The three outputs.
    let md = std::fs::read_to_string(b.root.join("site/leaderboard.md")).unwrap();
    let html = std::fs::read_to_string(b.root.join("site/index.html")).unwrap();
    let json: Value =
        serde_json::from_slice(&std::fs::read(b.root.join("site/leaderboard.json")).unwrap())
            .unwrap();
    assert_eq!(json["rejected"].as_array().unwrap().len(), expect.len());
    // Rows name the submitter by key (the directory is only the last column).
    let row_of = |rank: &str, entry: &str| {
        md.lines()
            .position(|l| {
                l.starts_with(&format!("| {rank} | trusted |"))
                    && l.ends_with(&format!("| entries/{entry} |"))
            })
            .expect(&md)
    };
    assert!(row_of("1", "b-better") < row_of("2", "a-good"));
    assert!(
        md.contains("demo-sentiment") && md.contains("(demo)"),
        "{md}"
    );
    assert!(
        md.contains("six-epochs") && md.contains("the track allows at most 5"),
        "{md}"
    );
    assert!(html.starts_with("<!DOCTYPE html>") && !html.contains("<script"));
    assert!(html.contains("<td title=") && html.contains("b-better"));
    assert!(html.contains("no track takes the aggregate rule glue-official"));
    assert_eq!(
        std::fs::read_to_string(b.root.join("site/keep.txt")).unwrap(),
        "mine"
    );
}

/// The ranked entries of the demo track: (entry path, submitter).
fn ranked(site: &Value) -> Vec<(String, String)> {
    track(site, "demo-cpu")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["entry"].as_str().unwrap().to_string(),
                e["submitter"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn copies_never_take_the_rank_and_submitters_are_keys_not_directories() {
    let b = Board::new();
    // A second trusted submitter.
    let (mallory, mallory_pub) = keypair(&b.root.join("private"), "mallory");
    std::fs::copy(&mallory_pub, b.root.join("keys/mallory.pub")).unwrap();

    // Alice's (the `trusted` key's) run, and Mallory's copy of its predictions in a statement
    // of her own, signed later, under a directory that sorts first and claims the original's
    // name.
    let original = b.entry("zz-alice", &FakeRun::default(), &b.trusted, |_| {});
    let copy_run = b.root.join("runs/aa-alice-original");
    let mut st = write_fake_run(&copy_run, &FakeRun::default(), &mallory);
    st["predicate"]["created"] = Value::from("2026-11-29T08:00:00Z");
    resign(&copy_run, &st, &mallory);
    submit(
        &copy_run,
        &b.entries.join("aa-alice-original"),
        &SubmitOptions::default(),
    )
    .unwrap();
    let (code, out, err) = b.build(&["--gold", "column"]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        ranked(&site),
        [("entries/zz-alice".to_string(), "trusted".to_string())],
        "{out}"
    );
    let rej = rejected(&site);
    let reasons = &rej["aa-alice-original"];
    assert!(
        has(reasons, "copy of entry entries/zz-alice") && has(reasons, "signed earlier by trusted"),
        "{reasons:#?}"
    );
    let md = std::fs::read_to_string(b.root.join("site/leaderboard.md")).unwrap();
    assert!(md.contains("| 1 | trusted |"), "{md}");
    assert!(
        md.contains("- **mallory** (entries/aa-alice-original;"),
        "{md}"
    );

    // Alice's statement itself, re-signed by Mallory alone: the same statement from two
    // submitters, the same `created`: nobody can tell whose it is, neither is ranked.
    std::fs::remove_dir_all(b.entries.join("aa-alice-original")).unwrap();
    let stolen_run = b.root.join("runs/aa-stolen");
    std::fs::create_dir_all(&stolen_run).unwrap();
    for f in ["manifest.json", "pretrain", "glue"] {
        let from = b.root.join("runs/zz-alice").join(f);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(stolen_run.join(f))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let statement: Value =
        serde_json::from_slice(&std::fs::read(stolen_run.join("manifest.json")).unwrap()).unwrap();
    resign(&stolen_run, &statement, &mallory);
    submit(
        &stolen_run,
        &b.entries.join("aa-stolen"),
        &SubmitOptions::default(),
    )
    .unwrap();
    let (code, out, err) = b.build(&["--gold", "column"]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    assert!(ranked(&site).is_empty(), "{out}");
    let rej = rejected(&site);
    for entry in ["zz-alice", "aa-stolen"] {
        assert!(has(&rej[entry], "contested"), "{entry}: {:#?}", rej[entry]);
    }

    // An exact copy of Alice's bundle under another name: one entry, credited to her key.
    std::fs::remove_dir_all(b.entries.join("aa-stolen")).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&original)
        .arg(b.entries.join("aa-copy"))
        .status()
        .unwrap();
    assert!(status.success());
    let (code, out, err) = b.build(&["--gold", "column"]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    let r = ranked(&site);
    assert_eq!(r.len(), 1, "{out}");
    assert_eq!(r[0].1, "trusted");
    let rej = rejected(&site);
    assert_eq!(rej.len(), 1, "{rej:#?}");
    assert!(
        rej.values().all(|v| has(v, "duplicate of entry")),
        "{rej:#?}"
    );
}

#[test]
fn embedded_demo_gold_catches_synthetic_gold_columns() {
    // The fake run's rows are not the embedded demo dev sets, so against the trusted gold its
    // predictions do not re-score: the default gold policy rejects it.
    let b = Board::new();
    b.entry("fake", &FakeRun::default(), &b.trusted, |_| {});
    let (code, out, err) = b.build(&[]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    let rej = rejected(&site);
    let reasons = &rej["fake"];
    assert!(
        has(reasons, "demo-sentiment trial 0") && has(reasons, "cannot be re-scored"),
        "{reasons:#?}"
    );
    assert_eq!(
        site["rejected"][0]["gold"]["demo-sentiment"],
        "embedded demo dev set"
    );
}

#[test]
fn glue_data_gold_catches_a_forged_gold_column() {
    // An SST-2 "run" whose gold column was forged to agree with its predictions (all 1): it
    // re-scores to 100% against its own column, but not against the real dev file.
    let b = Board::new();
    let spec = FakeRun {
        sets: BTreeMap::from([("sst2".to_string(), vec![vec![(1, 1), (1, 1), (1, 1)]])]),
        rule: "cramming".into(),
        ..FakeRun::default()
    };
    b.entry("forged", &spec, &b.trusted, |_| {});
    let glue = common::repo_root().join("tests/fixtures/glue/tsv");
    let (code, out, err) = b.build(&["--glue-data", glue.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    let reasons = &rejected(&site)["forged"];
    assert!(
        has(reasons, "gold column 1 disagrees with the gold file's 0"),
        "{reasons:#?}"
    );
    // Against its own column the predictions re-score (it is rejected for the track only).
    let (_, out, _) = b.build(&["--gold", "column"]);
    let site: Value = serde_json::from_str(&out).unwrap();
    let reasons = &rejected(&site)["forged"];
    assert!(!has(reasons, "re-score"), "{reasons:#?}");
    assert!(has(reasons, "missing mnli-m.accuracy"), "{reasons:#?}");
}

#[test]
fn a_track_named_explicitly_checks_its_rule() {
    let b = Board::new();
    b.entry("good", &FakeRun::default(), &b.trusted, |_| {});
    let (code, out, err) = b.build(&["--gold", "column", "--track", "1gpu-1day"]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    let reasons = &rejected(&site)["good"];
    for n in [
        "aggregate rule is demo, the track's is cramming",
        "device kind cpu not allowed",
        "the track lists no data digests yet",
    ] {
        assert!(has(reasons, n), "{n}: {reasons:#?}");
    }
    let (code, _, err) = b.build(&["--track", "no-such-track"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn unusable_invocations_exit_2() {
    let b = Board::new();
    b.entry("good", &FakeRun::default(), &b.trusted, |_| {});
    // No entries.
    std::fs::create_dir_all(b.root.join("empty")).unwrap();
    let (code, _, err) = common::run_in(
        &b.root,
        &["leaderboard", "build", "--keys", "keys", "--out", "site"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = common::run_in(
        &b.root,
        &[
            "leaderboard",
            "build",
            "empty",
            "--keys",
            "keys",
            "--out",
            "site",
        ],
    );
    assert_eq!(code, 2, "{err}");
    // No trusted keys.
    std::fs::create_dir_all(b.root.join("nokeys")).unwrap();
    let (code, _, err) = common::run_in(
        &b.root,
        &[
            "leaderboard",
            "build",
            "entries",
            "--keys",
            "nokeys",
            "--out",
            "site",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no trusted public keys"), "{err}");
    // A tracks file with an unknown key names the file and the key.
    std::fs::write(
        b.root.join("bad.toml"),
        tracks_toml().replace("devices = 1\n", "devices = 1\ngpus = 1\n"),
    )
    .unwrap();
    let (code, _, err) = common::run_in(
        &b.root,
        &[
            "leaderboard",
            "build",
            "entries",
            "--keys",
            "keys",
            "--tracks",
            "bad.toml",
            "--out",
            "site",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml") && err.contains("gpus"), "{err}");
    assert!(!b.root.join("site").exists());
}

/// An entry cannot make the leaderboard read, hash or report on a file outside it: a symbolic
/// link in any component of a path that `bundle.json` or the signed manifest names is refused
/// without following it, and nothing about the target (its digest, or whether it exists) is
/// printed.
#[test]
fn paths_through_links_out_of_the_entry_are_refused_without_an_oracle() {
    let b = Board::new();
    let outside = b.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"the secret").unwrap();
    let secret_sha = crambench::provenance::hash::sha256_hex(b"the secret");
    // A signed subject in the dataset cache, and an unsigned run.json that says the cache is
    // the directory outside: the leaderboard must not look there.
    let e = b.entry("linked", &FakeRun::default(), &b.trusted, |st| {
        st["subject"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": "dataset/outside/secret",
                "digest": {"sha256": "00".repeat(32)},
                "annotations": {"role": "dataset"}
            }));
    });
    std::fs::write(
        e.join("run.json"),
        serde_json::to_vec(&serde_json::json!({
            "stages": {"data": {"info": {"dir": outside.display().to_string()}}}
        }))
        .unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, e.join("lnk")).unwrap();
    let index = e.join("bundle.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    for name in ["secret", "no-such-file"] {
        v["files"].as_array_mut().unwrap().push(serde_json::json!({
            "path": format!("lnk/{name}"), "sha256": "00".repeat(32), "size": 1
        }));
    }
    std::fs::write(&index, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    // The signed predictions path through a link: glue/predictions/<set> replaced by a link to
    // a copy outside the entry.
    let set_dir = e.join("glue/predictions/demo-sentiment");
    let copy = b.root.join("outside-preds");
    std::fs::rename(&set_dir, &copy).unwrap();
    std::os::unix::fs::symlink(&copy, &set_dir).unwrap();

    let (code, out, err) = b.build(&["--gold", "column"]);
    assert_eq!(code, 0, "{err}");
    let site: Value = serde_json::from_str(&out).unwrap();
    let reasons = &rejected(&site)["linked"];
    assert!(
        has(reasons, "lnk/secret: a symbolic link on the way"),
        "{reasons:#?}"
    );
    assert!(
        has(reasons, "lnk/no-such-file: a symbolic link on the way"),
        "{reasons:#?}"
    );
    assert!(
        has(reasons, "demo-sentiment trial 0") && has(reasons, "symbolic link"),
        "{reasons:#?}"
    );
    let all = format!(
        "{out}{}",
        std::fs::read_to_string(b.root.join("site/index.html")).unwrap()
    );
    assert!(!all.contains(&secret_sha), "the target's digest leaked");
    assert!(
        !all.contains("No such file"),
        "whether the target exists leaked"
    );
}
