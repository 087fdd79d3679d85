//! End-to-end signing through the CLI: keygen → manifest new → validate → sign → verify, with
//! tampering, wrong keys, thresholds, and malformed input (exit codes 0 / 1 / 2 / 4).
mod common;
use common::run_in;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn setup(dir: &Path) {
    std::fs::write(dir.join("weights.bin"), b"pretend checkpoint").unwrap();
    std::fs::create_dir(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/a.txt"), b"alpha\n").unwrap();
    // alice has an Ed25519 key, bob a P-256 key (the default): co-signed envelopes mix both
    let (c, _, e) = run_in(
        dir,
        &[
            "keygen",
            "--out",
            "keys",
            "--name",
            "alice",
            "--algorithm",
            "ed25519",
        ],
    );
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_in(dir, &["keygen", "--out", "keys", "--name", "bob"]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_in(
        dir,
        &[
            "manifest",
            "new",
            "--subject",
            "weights.bin",
            "--material",
            "data",
            "--seed",
            "42",
            "--label",
            "init",
            "--label",
            "finetune/mnli/0",
            "--out",
            "m.json",
        ],
    );
    assert_eq!(c, 0, "{e}");
}

#[test]
fn sign_verify_round_trip_and_tamper() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    setup(dir);
    let (c, o, _) = run_in(dir, &["manifest", "validate", "m.json"]);
    assert_eq!(c, 0, "{o}");

    let (c, _, e) = run_in(dir, &["sign", "--key", "keys/alice.key", "m.json"]);
    assert_eq!(c, 0, "{e}");
    assert!(dir.join("m.dsse.json").exists());
    let (c, o, _) = run_in(dir, &["verify", "m.dsse.json", "--key", "keys/alice.pub"]);
    assert_eq!(c, 0, "{o}");
    assert!(o.contains("VALID") && o.contains("weights.bin"), "{o}");
    let (c, _, _) = run_in(dir, &["manifest", "validate", "m.dsse.json"]);
    assert_eq!(c, 0);

    // wrong key → 1
    let (c, o, _) = run_in(dir, &["verify", "m.dsse.json", "--key", "keys/bob.pub"]);
    assert_eq!(c, 1, "{o}");
    // threshold 2 with one signer → 1; after bob co-signs → 0; signing twice adds nothing
    let (c, _, _) = run_in(
        dir,
        &["verify", "m.dsse.json", "--key", "keys", "--threshold", "2"],
    );
    assert_eq!(c, 1);
    let (c, _, e) = run_in(dir, &["sign", "--key", "keys/bob.key", "m.dsse.json"]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = run_in(dir, &["sign", "--key", "keys/bob.key", "m.dsse.json"]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("nothing added"), "{e}");
    let (c, o, _) = run_in(
        dir,
        &[
            "verify",
            "m.dsse.json",
            "--key",
            "keys",
            "--threshold",
            "2",
            "--json",
        ],
    );
    assert_eq!(c, 0, "{o}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["valid_keys"].as_array().unwrap().len(), 2);
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2);

    // tamper with the payload: change one character of the statement and re-encode
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("m.dsse.json")).unwrap()).unwrap();
    let payload = crambench::manifest::dsse::b64_decode(env["payload"].as_str().unwrap()).unwrap();
    let text = String::from_utf8(payload)
        .unwrap()
        .replace("\"master\":42", "\"master\":43");
    let mut bad = env.clone();
    bad["payload"] = crambench::manifest::dsse::b64_encode(text.as_bytes()).into();
    std::fs::write(dir.join("bad.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    let (c, o, _) = run_in(dir, &["verify", "bad.json", "--key", "keys"]);
    assert_eq!(c, 1, "{o}");
    assert!(o.contains("NOT VALID"), "{o}");
    // …and the edited seeds no longer follow from the master seed: schema check fails too
    let (c, o, _) = run_in(dir, &["manifest", "validate", "bad.json"]);
    assert_eq!(c, 1, "{o}");
    assert!(o.contains("does not follow from master seed"), "{o}");
}

#[test]
fn malformed_truncated_and_huge_inputs_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    setup(dir);
    let (c, _, e) = run_in(dir, &["sign", "--key", "keys/alice.key", "m.json"]);
    assert_eq!(c, 0, "{e}");
    let good = std::fs::read(dir.join("m.dsse.json")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffnot json at all".to_vec()),
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("array", b"[1,2,3]".to_vec()),
        (
            "no-payload",
            br#"{"payloadType":"x","signatures":[]}"#.to_vec(),
        ),
        (
            "bad-base64",
            br#"{"payload":"!!!","payloadType":"x","signatures":[]}"#.to_vec(),
        ),
        ("deep", "[".repeat(1_000_000).into_bytes()),
    ];
    for (name, bytes) in cases {
        let p = dir.join(format!("{name}.json"));
        std::fs::write(&p, bytes).unwrap();
        let (c, _, e) = run_in(
            dir,
            &["verify", p.to_str().unwrap(), "--key", "keys/alice.pub"],
        );
        assert_eq!(c, 2, "{name}: {e}");
        assert!(
            e.contains(&format!("{name}.json")),
            "{name}: message must name the file: {e}"
        );
        assert!(!e.contains("panicked"), "{name}: {e}");
    }
    // huge: a sparse 100 MiB file is refused before it is read
    let huge = dir.join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let (c, _, e) = run_in(dir, &["verify", "huge.json", "--key", "keys/alice.pub"]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("limit"), "{e}");
    // missing envelope, missing key, a private key given as public key → 2
    let (c, _, e) = run_in(dir, &["verify", "nope.json", "--key", "keys/alice.pub"]);
    assert_eq!(c, 2, "{e}");
    let (c, _, e) = run_in(dir, &["verify", "m.dsse.json", "--key", "keys/alice.key"]);
    assert_eq!(c, 2, "{e}");
    // an envelope with no signatures is not valid: 1, not 2
    let mut env: serde_json::Value = serde_json::from_slice(&good).unwrap();
    env["signatures"] = serde_json::json!([]);
    std::fs::write(dir.join("unsigned.json"), serde_json::to_vec(&env).unwrap()).unwrap();
    let (c, o, _) = run_in(dir, &["verify", "unsigned.json", "--key", "keys/alice.pub"]);
    assert_eq!(c, 1, "{o}");
}

#[test]
fn keys_are_protected() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (c, _, e) = run_in(dir, &["keygen", "--out", "k"]);
    assert_eq!(c, 0, "{e}");
    let key = dir.join("k/crambench.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&key).unwrap();
    // never overwrites: exit 4, key unchanged
    let (c, _, e) = run_in(dir, &["keygen", "--out", "k"]);
    assert_eq!(c, 4, "{e}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    // a group-readable private key is refused: exit 4
    std::fs::write(dir.join("s.json"), b"{}").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (c, _, e) = run_in(dir, &["sign", "--key", "k/crambench.key", "s.json"]);
    assert_eq!(c, 4, "{e}");
    assert!(e.contains("chmod 600"), "{e}");
    // an invalid statement is not signed: exit 2, names the problem
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (c, _, e) = run_in(dir, &["sign", "--key", "k/crambench.key", "s.json"]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("s.json") && e.contains("_type"), "{e}");
    assert!(!dir.join("s.dsse.json").exists());
}

/// `keygen --algorithm`: ecdsa-p256 by default, ed25519 on request, the algorithm in the output
/// and in the key files (PKCS#8 / SPKI with the algorithm's identifier); anything else is bad
/// input (exit 2) and writes nothing.
#[test]
fn keygen_algorithms() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (c, o, e) = run_in(dir, &["keygen", "--out", "k", "--name", "p", "--json"]);
    assert_eq!(c, 0, "{e}");
    let j: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(j["algorithm"], "ecdsa-p256", "{o}");
    let (c, o, e) = run_in(
        dir,
        &[
            "keygen",
            "--out",
            "k",
            "--name",
            "e",
            "--algorithm",
            "ed25519",
            "--json",
        ],
    );
    assert_eq!(c, 0, "{e}");
    let j2: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(j2["algorithm"], "ed25519");
    let p = crambench::manifest::keys::load_public_key(&dir.join("k/p.pub")).unwrap();
    let e = crambench::manifest::keys::load_public_key(&dir.join("k/e.pub")).unwrap();
    use crambench::manifest::keys::Algorithm;
    assert_eq!(p.key.algorithm(), Algorithm::EcdsaP256);
    assert_eq!(e.key.algorithm(), Algorithm::Ed25519);
    assert_eq!(p.keyid, j["keyid"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(dir.join("k/p.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let pem = std::fs::read_to_string(dir.join("k/p.key")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    let (c, _, e) = run_in(
        dir,
        &["keygen", "--out", "k", "--name", "x", "--algorithm", "rsa"],
    );
    assert_eq!(c, 2, "{e}");
    assert!(!dir.join("k/x.key").exists());
}
