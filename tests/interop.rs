//! Interoperability with independent implementations, run from `.venv-interop`
//! (scripts/pyenv.sh): securesystemslib verifies crambench's envelopes and crambench verifies
//! securesystemslib's, for Ed25519 and ECDSA P-256 keys and envelopes mixing both; Python
//! `rfc8785` produces the same canonical bytes as crambench.
mod common;
use common::{interop_python, repo_root, run_in};
use std::process::Command;

fn script(name: &str) -> String {
    repo_root()
        .join("reference/interop")
        .join(name)
        .display()
        .to_string()
}

/// Run `reference/interop/<name>` with the interop venv's Python.
fn python(py: &std::path::Path, name: &str, args: &[String]) -> std::process::Output {
    Command::new(py)
        .arg(script(name))
        .args(args)
        .output()
        .expect("run interop python")
}

#[test]
fn securesystemslib_verifies_crambench_envelopes() {
    securesystemslib_verifies_crambench_envelopes_with("ed25519");
}

#[test]
fn securesystemslib_verifies_crambench_p256_envelopes() {
    securesystemslib_verifies_crambench_envelopes_with("ecdsa-p256");
}

fn securesystemslib_verifies_crambench_envelopes_with(algorithm: &str) {
    let Some(py) = interop_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("x.bin"), b"artifact").unwrap();
    assert_eq!(
        run_in(dir, &["keygen", "--out", "keys", "--algorithm", algorithm]).0,
        0
    );
    let (c, _, e) = run_in(
        dir,
        &[
            "manifest",
            "new",
            "--subject",
            "x.bin",
            "--seed",
            "1",
            "--out",
            "m.json",
        ],
    );
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        run_in(dir, &["sign", "--key", "keys/crambench.key", "m.json"]).0,
        0
    );
    let out = python(
        &py,
        "dsse_verify.py",
        &[
            dir.join("m.dsse.json").display().to_string(),
            dir.join("keys/crambench.pub").display().to_string(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "securesystemslib rejected: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // securesystemslib computes the same default keyid crambench wrote
    let (_, o, _) = run_in(
        dir,
        &[
            "verify",
            "m.dsse.json",
            "--key",
            "keys/crambench.pub",
            "--json",
        ],
    );
    let ours: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["keyid"], ours["valid_keys"][0]);
    assert_eq!(v["payload_sha256"], ours["payload_sha256"]);

    // and rejects a tampered copy
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("m.dsse.json")).unwrap()).unwrap();
    let payload = crambench::manifest::dsse::b64_decode(env["payload"].as_str().unwrap()).unwrap();
    let mut payload = payload.clone();
    let last = payload.len() - 2;
    payload[last] ^= 1;
    env["payload"] = crambench::manifest::dsse::b64_encode(&payload).into();
    std::fs::write(dir.join("t.json"), serde_json::to_vec(&env).unwrap()).unwrap();
    let out = python(
        &py,
        "dsse_verify.py",
        &[
            dir.join("t.json").display().to_string(),
            dir.join("keys/crambench.pub").display().to_string(),
        ],
    );
    assert!(!out.status.success());
}

#[test]
fn crambench_verifies_securesystemslib_envelopes() {
    // their Ed25519 envelope, co-signed with a crambench P-256 key
    crambench_verifies_securesystemslib_envelopes_with("ed25519", "ecdsa-p256");
}

#[test]
fn crambench_verifies_securesystemslib_p256_envelopes() {
    // their P-256 envelope, co-signed with a crambench Ed25519 key
    crambench_verifies_securesystemslib_envelopes_with("ecdsa", "ed25519");
}

/// securesystemslib signs with a fresh `their` key (`ed25519` or `ecdsa`); crambench verifies
/// it, co-signs with a crambench key of algorithm `ours`, and securesystemslib still verifies
/// the mixed envelope with its key.
fn crambench_verifies_securesystemslib_envelopes_with(their: &str, ours: &str) {
    let Some(py) = interop_python() else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("x.bin"), b"artifact").unwrap();
    let (c, _, e) = run_in(
        dir,
        &[
            "manifest",
            "new",
            "--subject",
            "x.bin",
            "--seed",
            "5",
            "--out",
            "m.json",
        ],
    );
    assert_eq!(c, 0, "{e}");
    let out = python(
        &py,
        "dsse_sign.py",
        &[
            dir.join("m.json").display().to_string(),
            "application/vnd.in-toto+json".into(),
            dir.display().to_string(),
            their.into(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let their_keyid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (c, o, e) = run_in(
        dir,
        &["verify", "envelope.json", "--key", "key.pub", "--json"],
    );
    assert_eq!(c, 0, "{o} {e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["valid_keys"][0], their_keyid.as_str());
    // a crambench key is not their key
    assert_eq!(
        run_in(dir, &["keygen", "--out", "k", "--algorithm", ours]).0,
        0
    );
    assert_eq!(
        run_in(
            dir,
            &["verify", "envelope.json", "--key", "k/crambench.pub"]
        )
        .0,
        1
    );
    // crambench can co-sign their envelope, and securesystemslib still verifies it with its key
    assert_eq!(
        run_in(dir, &["sign", "--key", "k/crambench.key", "envelope.json"]).0,
        0
    );
    let out = python(
        &py,
        "dsse_verify.py",
        &[
            dir.join("envelope.json").display().to_string(),
            dir.join("key.pub").display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        run_in(
            dir,
            &[
                "verify",
                "envelope.json",
                "--key",
                "key.pub",
                "--key",
                "k/crambench.pub",
                "--threshold",
                "2"
            ]
        )
        .0,
        0
    );
}

#[test]
fn canonical_json_matches_python_rfc8785() {
    let Some(py) = interop_python() else { return };
    let cases = [
        r#"{"b":[1,2.5,-0.0,1e21,1e-7,123456789012345,0.1,1E+2],"a":{"z":null,"y":true,"é":"\u00e9\u0000\n\"\\"}}"#,
        r#"{"€":1,"\r":2,"דּ":3,"1":4,"😀":5,"\u0080":6,"ö":7}"#,
        r#"[9007199254740991,-9007199254740991,3.141592653589793,5e-324,1.7976931348623157e308]"#,
        r#"{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000001,0.0000001]}"#,
    ];
    for case in cases {
        let ours = crambench::manifest::jcs::canonicalize_str(case).unwrap();
        let mut child = Command::new(&py)
            .arg(script("jcs.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(case.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&out.stdout),
            "case {case}"
        );
    }
    // both refuse integers beyond 2^53-1
    assert!(crambench::manifest::jcs::canonicalize_str("[9007199254740992]").is_err());
    let mut child = Command::new(&py)
        .arg(script("jcs.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[9007199254740992]")
        .unwrap();
    assert!(!child.wait().unwrap().success());
}

/// The SLSA v1 provenance crambench derives from a run manifest parses strictly into the
/// in-toto attestation library's own SLSA v1 Provenance protobuf and has the fields SLSA
/// requires; the checker rejects a statement missing `builder.id`, with an unknown field or
/// with a timestamp that is not RFC 3339 (so it can fail).
#[test]
fn slsa_provenance_matches_the_slsa_v1_definition() {
    let Some(py) = interop_python() else { return };
    let run = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": "pretrain/checkpoints/step-3", "digest": {"dirHash": "ab".repeat(32)},
             "annotations": {"role": "checkpoint"}},
            {"name": "dataset/ds/tokenizer.json", "digest": {"sha256": "cd".repeat(32)},
             "annotations": {"role": "tokenizer"}}
        ],
        "predicateType": "https://crambench.dev/manifest/v0.1",
        "predicate": {
            "crambench_version": "0.1.0",
            "recipe": {"name": "micro", "path": "r.toml", "sha256": "ef".repeat(32),
                       "resolved": {"train": {"lr": 0.001, "steps": 3}}},
            "seeds": {"master": 11, "master_from_os": false, "derived": {"init": 5}},
            "materials": [{"name": "r.toml", "role": "recipe",
                           "digest": {"sha256": "ef".repeat(32)}, "size": 3}],
            "data": {"name": "ds", "shards": [
                {"name": "shard-00000.bin", "digest": {"sha256": "01".repeat(32)}, "size": 9}
            ]},
            "fingerprint": {"software": {
                "libtorch": {"version": "2.11.0+cu130", "tch_version": "0.24.0"},
                "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": false,
                        "diff_sha256": null}
            }}
        }
    });
    let d = tempfile::tempdir().unwrap();
    let check = |v: &serde_json::Value| -> (bool, String) {
        let p = d.path().join("slsa.json");
        std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
        let out = python(&py, "slsa_check.py", &[p.display().to_string()]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let s =
        crambench::manifest::slsa::provenance(&run, "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z")
            .unwrap();
    let (ok, out) = check(&s);
    assert!(ok, "{out}");
    let mut bad = s.clone();
    bad["predicate"]["runDetails"]["builder"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    assert!(!check(&bad).0, "missing builder.id accepted");
    let mut bad = s.clone();
    bad["predicate"]["buildDefinition"]["recipe"] = "x".into();
    assert!(!check(&bad).0, "unknown field accepted");
    let mut bad = s.clone();
    bad["predicate"]["runDetails"]["metadata"]["startedOn"] = "yesterday".into();
    assert!(!check(&bad).0, "bad timestamp accepted");
}
