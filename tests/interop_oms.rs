//! Checkpoint signatures in the OpenSSF model-signing (OMS) format, checked against the real
//! `model_signing` CLI (PyPI, pinned in reference/interop/requirements.txt, installed in
//! `.venv-interop` by scripts/pyenv.sh): it accepts crambench's `model.sig`, crambench accepts
//! one it made, and both reject a flipped byte, a missing file, an extra file and a changed
//! serialization parameter.
mod common;
use common::{interop_python, run_in};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `model_signing` CLI of the interop venv.
fn model_signing() -> Option<PathBuf> {
    let py = interop_python()?;
    Some(py.parent().unwrap().join("model_signing"))
}

/// `model_signing ARGS` in `dir`: (success, stdout + stderr).
fn ms(tool: &Path, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run model_signing");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ms_verify(tool: &Path, dir: &Path, model: &str, sig: &str) -> (bool, String) {
    ms(
        tool,
        dir,
        &[
            "verify",
            "key",
            model,
            "--signature",
            sig,
            "--public_key",
            "keys/crambench.pub",
        ],
    )
}

fn cb_verify(dir: &Path, sig_or_dir: &str, model: Option<&str>) -> i32 {
    let mut args = vec!["verify", sig_or_dir, "--key", "keys/crambench.pub"];
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    let (c, o, e) = run_in(dir, &args);
    assert!(c == 0 || c == 1, "exit {c}: {o} {e}");
    c
}

/// A pretend checkpoint: weights, metadata, a nested file, a hidden file and git files (which
/// both tools ignore).
fn checkpoint(dir: &Path, name: &str) {
    let ck = dir.join(name);
    std::fs::create_dir_all(ck.join("tokenizer")).unwrap();
    std::fs::create_dir_all(ck.join(".git")).unwrap();
    std::fs::write(ck.join("model.safetensors"), vec![7u8; 70_000]).unwrap();
    std::fs::write(ck.join("meta.json"), b"{\"step\": 3}\n").unwrap();
    std::fs::write(ck.join("tokenizer/tokenizer.json"), "{\"é\": 1}").unwrap();
    std::fs::write(ck.join(".hidden"), b"h").unwrap();
    std::fs::write(ck.join(".git/HEAD"), b"ref: main").unwrap();
    std::fs::write(ck.join(".gitignore"), b"*.tmp").unwrap();
}

/// Each of the four changes is rejected by both tools, and the restored checkpoint verifies
/// again. `sig` is the signature's path relative to `dir`, `model` the checkpoint's.
fn both_reject_changes(tool: &Path, dir: &Path, model: &str, sig: &str) {
    let both = |want: bool, what: &str| {
        let (ok, out) = ms_verify(tool, dir, model, sig);
        assert_eq!(ok, want, "model_signing, {what}: {out}");
        let c = cb_verify(dir, sig, Some(model));
        assert_eq!(c == 0, want, "crambench, {what}");
    };
    both(true, "as signed");
    let ck = dir.join(model);
    let weights = ck.join("model.safetensors");
    let orig = std::fs::read(&weights).unwrap();
    let mut flipped = orig.clone();
    flipped[65_537] ^= 0x01;
    std::fs::write(&weights, &flipped).unwrap();
    both(false, "a flipped byte");
    std::fs::write(&weights, &orig).unwrap();
    std::fs::rename(ck.join("meta.json"), dir.join("meta.json.aside")).unwrap();
    both(false, "a missing file");
    std::fs::rename(dir.join("meta.json.aside"), ck.join("meta.json")).unwrap();
    std::fs::write(ck.join("tokenizer/extra.bin"), b"").unwrap();
    both(false, "an extra file");
    std::fs::remove_file(ck.join("tokenizer/extra.bin")).unwrap();
    both(true, "restored");
    // a changed serialization parameter in the signed statement (ignore the weights)
    let sig_path = dir.join(sig);
    let before = std::fs::read(&sig_path).unwrap();
    let mut b: serde_json::Value = serde_json::from_slice(&before).unwrap();
    let payload =
        crambench::manifest::dsse::b64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
    let mut st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    st["predicate"]["serialization"]["ignore_paths"]
        .as_array_mut()
        .unwrap()
        .push("model.safetensors".into());
    b["dsseEnvelope"]["payload"] =
        crambench::manifest::dsse::b64_encode(&serde_json::to_vec(&st).unwrap()).into();
    std::fs::write(&sig_path, serde_json::to_vec(&b).unwrap()).unwrap();
    both(false, "a changed serialization parameter");
    std::fs::write(&sig_path, &before).unwrap();
    both(true, "restored signature");
}

#[test]
fn model_signing_verifies_crambench_checkpoint_signatures() {
    let Some(tool) = model_signing() else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert_eq!(run_in(dir, &["keygen", "--out", "keys"]).0, 0);
    checkpoint(dir, "ck");
    let (c, o, e) = run_in(
        dir,
        &["checkpoint", "sign", "ck", "--key", "keys/crambench.key"],
    );
    assert_eq!(c, 0, "{o} {e}");
    assert!(o.contains("model_signing verify key ck"), "{o}");
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ck/model.sig")).unwrap()).unwrap();
    assert_eq!(
        bundle["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    // the checkpoint directory alone: crambench finds model.sig in it
    assert_eq!(cb_verify(dir, "ck", None), 0);
    both_reject_changes(&tool, dir, "ck", "ck/model.sig");

    // a signature outside the checkpoint
    checkpoint(dir, "ck2");
    let (c, o, e) = run_in(
        dir,
        &[
            "checkpoint",
            "sign",
            "ck2",
            "--key",
            "keys/crambench.key",
            "--signature",
            "ck2.sig",
        ],
    );
    assert_eq!(c, 0, "{o} {e}");
    both_reject_changes(&tool, dir, "ck2", "ck2.sig");
}

#[test]
fn crambench_verifies_model_signing_signatures() {
    let Some(tool) = model_signing() else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert_eq!(run_in(dir, &["keygen", "--out", "keys"]).0, 0);
    checkpoint(dir, "ck");
    let (ok, out) = ms(
        &tool,
        dir,
        &[
            "sign",
            "key",
            "ck",
            "--signature",
            "ck/model.sig",
            "--private_key",
            "keys/crambench.key",
        ],
    );
    assert!(ok, "{out}");
    let (c, o, e) = run_in(
        dir,
        &["verify", "ck", "--key", "keys/crambench.pub", "--json"],
    );
    assert_eq!(c, 0, "{o} {e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["model_name"], "ck");
    // crambench computes the same root digest for the directory (signing in its place)
    std::fs::copy(dir.join("ck/model.sig"), dir.join("theirs.sig")).unwrap();
    let (c, o, e) = run_in(
        dir,
        &[
            "checkpoint",
            "sign",
            "ck",
            "--key",
            "keys/crambench.key",
            "--json",
        ],
    );
    assert_eq!(c, 0, "{o} {e}");
    let ours: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(ours["root_digest"], v["root_digest"]);
    std::fs::rename(dir.join("theirs.sig"), dir.join("ck/model.sig")).unwrap();
    both_reject_changes(&tool, dir, "ck", "ck/model.sig");
    // another key does not verify it
    assert_eq!(run_in(dir, &["keygen", "--out", "other"]).0, 0);
    let (c, _, _) = run_in(dir, &["verify", "ck", "--key", "other/crambench.pub"]);
    assert_eq!(c, 1);
}

/// An Ed25519 key cannot make an OMS signature (model_signing would not verify it): bad input,
/// nothing written.
#[test]
fn ed25519_keys_are_refused_for_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert_eq!(
        run_in(dir, &["keygen", "--out", "keys", "--algorithm", "ed25519"]).0,
        0
    );
    checkpoint(dir, "ck");
    let (c, _, e) = run_in(
        dir,
        &["checkpoint", "sign", "ck", "--key", "keys/crambench.key"],
    );
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("ECDSA"), "{e}");
    assert!(!dir.join("ck/model.sig").exists());
}

/// `crambench verify RUN` checks the run's `model.sig` against the manifest's checkpoint
/// subject: valid when it signs that checkpoint, not valid when it is a valid signature of other
/// content, and the rest of the audit is the same either way. (The fake run's synthetic
/// predictions do not re-score against the embedded demo dev sets, so the run as a whole is
/// NOT VALID in all three cases; the model signature's own verdict is what is compared.)
#[test]
fn verify_of_a_run_checks_its_model_signature() {
    use crambench::manifest::{dsse, jcs, keys};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (sk, _pk) = common::fake_run::keypair(&dir.join("keys"), "crambench");
    let run = dir.join("run");
    let mut st = common::fake_run::write_fake_run(&run, &common::fake_run::FakeRun::default(), &sk);
    checkpoint(&run, "pretrain/checkpoints/ckpt-1");
    std::fs::remove_dir_all(run.join("pretrain/checkpoints/ckpt-1/.git")).unwrap();
    std::fs::remove_file(run.join("pretrain/checkpoints/ckpt-1/.gitignore")).unwrap();
    let ck =
        crambench::provenance::hash::hash_path(&run.join("pretrain/checkpoints/ckpt-1"), &|_| {})
            .unwrap();
    st["subject"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"name": "pretrain/checkpoints/ckpt-1", "digest": ck.digest_set(),
                           "annotations": {"role": "checkpoint"}}),
    );
    let bytes = jcs::to_vec(&st).unwrap();
    std::fs::write(run.join("manifest.json"), &bytes).unwrap();
    let mut env = dsse::Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, &bytes);
    env.sign(&keys::load_signing_key(&sk).unwrap(), "t")
        .unwrap();
    std::fs::write(run.join("manifest.dsse.json"), env.to_json()).unwrap();
    let sign = |model: &str| {
        let (c, o, e) = run_in(
            dir,
            &[
                "checkpoint",
                "sign",
                model,
                "--key",
                "keys/crambench.key",
                "--signature",
                "run/model.sig",
            ],
        );
        assert_eq!(c, 0, "{o} {e}");
    };
    let verify = || -> (i32, serde_json::Value) {
        let (c, o, e) = run_in(
            dir,
            &["verify", "run", "--key", "keys/crambench.pub", "--json"],
        );
        (
            c,
            serde_json::from_str(&o).unwrap_or_else(|_| panic!("{o} {e}")),
        )
    };
    let (_, without) = verify();
    assert!(without["model_signature"].is_null());
    sign("run/pretrain/checkpoints/ckpt-1");
    let (_, v) = verify();
    assert_eq!(v["model_signature"]["ok"], true, "{v}");
    assert_eq!(
        v["model_signature"]["model"],
        "run/pretrain/checkpoints/ckpt-1"
    );
    assert_eq!(v["artifacts"], without["artifacts"]);
    // a valid signature of another checkpoint
    checkpoint(dir, "other");
    std::fs::write(dir.join("other/meta.json"), b"{\"step\": 4}\n").unwrap();
    sign("other");
    let (c, v) = verify();
    assert_eq!(c, 1, "{v}");
    assert_eq!(v["model_signature"]["ok"], false, "{v}");
    assert_eq!(v["model_signature"]["mismatched"][0], "meta.json", "{v}");
    assert_eq!(v["artifacts"], without["artifacts"]);
}
