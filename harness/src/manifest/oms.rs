//! Checkpoint signatures in the OpenSSF model-signing (OMS) format, as the `model_signing`
//! package (PyPI, 1.1.1) writes them for `model_signing sign key` and checks them for
//! `model_signing verify key`. Written from the format as that release computes it (read in
//! `model_signing/_signing/signing.py` `Payload`, `_signing/sign_ec_key.py`,
//! `_signing/sign_sigstore_pb.py`, `_serialization/file.py`, `manifest.py`, `_cli.py`):
//!
//! * The model (a directory) is serialized by files: every regular file under it, found
//!   recursively (hidden files too), except the ignored paths, is one resource named by its
//!   path relative to the directory with `/` separators, digest SHA-256 of its bytes. A
//!   symbolic link or special file anywhere under it, ignored or not, is refused
//!   (`allow_symlinks` false).
//! * Resources are sorted by path components; the root digest is SHA-256 of the concatenated
//!   raw 32-byte digests in that order.
//! * The payload is an in-toto Statement v1 with one subject (the directory's name, digest
//!   `{"sha256": root}`), predicate type `https://model_signing/signature/v1.0`, and predicate
//!   `{"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
//!   "ignore_paths": [...]}, "resources": [{"name", "algorithm": "sha256", "digest"}...]}`.
//!   The ignored paths are those the CLI uses by default: the signature file when it lies inside
//!   the directory, `.git`, `.gitattributes`, `.github`, `.gitignore`; a path ignores itself and
//!   everything under it.
//! * The signature is a Sigstore bundle (media type v0.3) holding a DSSE envelope (one
//!   signature, DER ECDSA over SHA-256 of the PAE, empty `keyid`), verification material
//!   `publicKey.hint` = hex SHA-256 of the signer's SPKI PEM text, no transparency log entries.
//!   `model_signing`'s key mode takes only ECDSA keys, so crambench signs with P-256 keys only.
//!
//! Verification checks the bundle's media type, the signature under a trusted key, the
//! statement's types and the root digest against its resources, then re-hashes the directory
//! with the statement's serialization parameters (plus the default ignores, as the CLI adds)
//! and requires exactly the signed files with exactly their digests.
use super::dsse::{b64_decode, b64_encode, pae, PAYLOAD_TYPE_IN_TOTO};
use super::keys::{Algorithm, PublicKey, SigningKey, VerifyingKey};
use crate::error::Error;
use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Media type of the Sigstore bundle `model_signing` writes.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Predicate type of OMS v1.0 statements.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The signature file's conventional name.
pub const SIGNATURE_FILE: &str = "model.sig";
/// `annotations.role` of the run-manifest subject that records a checkpoint's OMS root digest
/// (the digest `model.sig` signs), linking the run manifest to the model signature.
pub const SUBJECT_ROLE: &str = "checkpoint-oms";
/// Paths `model_signing` ignores by default (`--ignore-git-paths`).
pub const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];
/// Largest bundle read (a bundle lists one line per file; checkpoints have a handful).
const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// One file of a model and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub name: String,
    pub sha256: String,
}

/// An ignore path as components, or `None` when it can never name a file under the model
/// (absolute, or with `..`: `model_signing` compares paths lexically).
fn ignore_components(p: &str) -> Option<Vec<&str>> {
    if p.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    (!parts.contains(&"..")).then_some(parts)
}

fn is_ignored(rel: &[String], ignore: &[Vec<&str>]) -> bool {
    ignore
        .iter()
        .any(|ig| ig.len() <= rel.len() && ig.iter().zip(rel).all(|(a, b)| a == b))
}

/// Hash every regular file under `dir` except those under `ignore_paths` (relative paths),
/// sorted as `model_signing` sorts them.
pub fn hash_model(dir: &Path, ignore_paths: &[String]) -> Result<Vec<Resource>> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::input(
            dir.display(),
            "not a directory (a checkpoint is signed as a directory)",
        )
        .into());
    }
    let ignore: Vec<Vec<&str>> = ignore_paths
        .iter()
        .filter_map(|p| ignore_components(p))
        .collect();
    let mut found: Vec<(Vec<String>, PathBuf)> = Vec::new();
    walk(dir, &mut Vec::new(), &mut found)?;
    let mut out: Vec<(Vec<String>, Resource)> = Vec::new();
    for (rel, path) in found {
        if is_ignored(&rel, &ignore) {
            continue;
        }
        let d = crate::provenance::hash::hash_file(&path, &|_| {})?;
        out.push((
            rel.clone(),
            Resource {
                name: rel.join("/"),
                sha256: d.sha256,
            },
        ));
    }
    // Python sorts PurePosixPath by components, each compared by code points (= UTF-8 bytes).
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

fn walk(dir: &Path, rel: &mut Vec<String>, out: &mut Vec<(Vec<String>, PathBuf)>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|n| {
            Error::input(
                path.display(),
                format!("file name {n:?} is not UTF-8; OMS names files by UTF-8 paths"),
            )
        })?;
        let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
        rel.push(name);
        if ft.is_symlink() {
            return Err(Error::input(
                path.display(),
                "is a symbolic link; OMS file serialization (allow_symlinks false, as \
                 model_signing verifies by default) refuses links",
            )
            .into());
        } else if ft.is_dir() {
            walk(&path, rel, out)?;
        } else if ft.is_file() {
            out.push((rel.clone(), path));
        } else {
            return Err(Error::input(
                path.display(),
                "is neither a regular file nor a directory (OMS refuses special files)",
            )
            .into());
        }
        rel.pop();
    }
    Ok(())
}

/// The root digest: SHA-256 of the resources' raw digests in order.
pub fn root_digest(resources: &[Resource]) -> Result<String> {
    let mut h = Sha256::new();
    for r in resources {
        let raw = hex::decode(&r.sha256)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                Error::input(
                    format!("resource {}", r.name),
                    "digest is not 64 hex digits",
                )
            })?;
        h.update(raw);
    }
    Ok(hex::encode(h.finalize()))
}

/// The ignore paths the `model_signing` CLI uses when it signs or verifies `dir` with the
/// signature at `signature`: the signature (when inside `dir`) and the git paths.
pub fn default_ignore_paths(dir: &Path, signature: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(rel) = relative_inside(dir, signature) {
        v.push(rel);
    }
    v.extend(GIT_PATHS.iter().map(|s| s.to_string()));
    v
}

/// `path` relative to `dir` when it lies inside it (after resolving both as far as they exist).
fn relative_inside(dir: &Path, path: &Path) -> Option<String> {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        // A file not yet written: its parent resolved, plus its name.
        let parent = p.parent().filter(|x| !x.as_os_str().is_empty());
        let parent = match parent {
            Some(x) => x.canonicalize().ok()?,
            None => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    };
    let (d, p) = (canon(dir)?, canon(path)?);
    let rel = p.strip_prefix(&d).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_string),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The model's name in the statement: the directory's last component.
fn model_name(dir: &Path) -> String {
    let name = dir.file_name().and_then(|n| n.to_str()).map(str::to_string);
    match name {
        Some(n) if n != ".." => n,
        _ => dir
            .canonicalize()
            .ok()
            .and_then(|c| c.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .unwrap_or_default(),
    }
}

/// The OMS statement of a serialized model.
pub fn statement(name: &str, resources: &[Resource], ignore_paths: &[String]) -> Result<Value> {
    let res: Vec<Value> = resources
        .iter()
        .map(|r| json!({"name": r.name, "algorithm": "sha256", "digest": r.sha256}))
        .collect();
    let mut serialization = json!({
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": false,
    });
    if !ignore_paths.is_empty() {
        serialization["ignore_paths"] = json!(ignore_paths);
    }
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root_digest(resources)?}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": serialization, "resources": res},
    }))
}

/// The `publicKey.hint` of a key: hex SHA-256 of its SPKI PEM text.
pub fn key_hint(key: &VerifyingKey) -> Result<String> {
    Ok(crate::provenance::hash::sha256_hex(
        key.to_public_key_pem()?.as_bytes(),
    ))
}

/// A model signature made by [`sign_model`].
#[derive(Debug, Clone, Serialize)]
pub struct SignedModel {
    /// The bundle's JSON text.
    #[serde(skip)]
    pub bundle: String,
    pub model_name: String,
    pub root_digest: String,
    pub files: usize,
    pub keyid: String,
}

/// Sign the model directory `dir` with `key` (ECDSA P-256) for a signature file at
/// `signature` (which decides whether it is ignored). Writes nothing.
pub fn sign_model(dir: &Path, signature: &Path, key: &SigningKey) -> Result<SignedModel> {
    if key.algorithm() != Algorithm::EcdsaP256 {
        return Err(Error::input(
            "--key",
            format!(
                "an OMS model signature needs an ECDSA P-256 key (model_signing's key mode \
                 accepts only ECDSA keys; this one is {}); make one with `crambench keygen \
                 --algorithm ecdsa-p256`",
                key.algorithm().as_str()
            ),
        )
        .into());
    }
    let ignore = default_ignore_paths(dir, signature);
    let resources = hash_model(dir, &ignore)?;
    let name = model_name(dir);
    let st = statement(&name, &resources, &ignore)?;
    let mut payload = serde_json::to_vec_pretty(&st)?;
    payload.push(b'\n');
    let sig = key.sign(&pae(PAYLOAD_TYPE_IN_TOTO, &payload));
    let vk = key.verifying_key();
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(&vk)?}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64_encode(&payload),
            "payloadType": PAYLOAD_TYPE_IN_TOTO,
            "signatures": [{"sig": b64_encode(&sig), "keyid": ""}],
        },
    });
    let mut text = serde_json::to_string_pretty(&bundle)?;
    text.push('\n');
    Ok(SignedModel {
        bundle: text,
        model_name: name,
        root_digest: root_digest(&resources)?,
        files: resources.len(),
        keyid: super::keys::keyid(&vk),
    })
}

/// Sign `dir` and write the bundle to `signature` atomically.
pub fn sign_model_to(dir: &Path, signature: &Path, key: &SigningKey) -> Result<SignedModel> {
    let signed = sign_model(dir, signature, key)?;
    crate::io::write_atomic(signature, signed.bundle.as_bytes(), None)?;
    Ok(signed)
}

/// Whether `bytes` look like a Sigstore bundle (a JSON object with `mediaType`).
pub fn looks_like_bundle(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("mediaType").is_some() && v.get("dsseEnvelope").is_some())
}

/// The outcome of verifying a model signature.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVerification {
    pub signature: String,
    pub model: String,
    /// The trusted key the signature verified under.
    pub verified_keyid: Option<String>,
    pub verified_key_source: Option<String>,
    /// From the verified statement (absent when the signature is not valid).
    pub model_name: Option<String>,
    pub root_digest: Option<String>,
    pub serialization: Option<Value>,
    pub files: usize,
    /// Files on disk the signature does not list.
    pub extra: Vec<String>,
    /// Files the signature lists that are not on disk.
    pub missing: Vec<String>,
    /// Files whose digest differs.
    pub mismatched: Vec<String>,
    /// Why the signature or statement is not valid, when it is not.
    pub problem: Option<String>,
    pub ok: bool,
}

fn field<'a>(v: &'a Value, path: &[&str], src: &str) -> Result<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| Error::input(src, format!("field `{}` is missing", path.join("."))))?;
    }
    Ok(cur)
}

fn string<'a>(v: &'a Value, path: &[&str], src: &str) -> Result<&'a str> {
    field(v, path, src)?.as_str().ok_or_else(|| {
        Error::input(src, format!("field `{}` is not a string", path.join("."))).into()
    })
}

/// Verify the signature file `signature` of the model directory `dir` against `trusted` keys.
/// Malformed bundles are bad input; a bundle that does not verify, or a model that differs
/// from the signed one, is a result with `ok: false`.
pub fn verify_model(
    dir: &Path,
    signature: &Path,
    trusted: &[PublicKey],
) -> Result<ModelVerification> {
    let src = signature.display().to_string();
    let bytes = crate::io::read_limited(signature, MAX_BUNDLE_BYTES)?;
    let bundle: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::input(&src, format!("not JSON: {e}")))?;
    let mut out = ModelVerification {
        signature: src.clone(),
        model: dir.display().to_string(),
        verified_keyid: None,
        verified_key_source: None,
        model_name: None,
        root_digest: None,
        serialization: None,
        files: 0,
        extra: vec![],
        missing: vec![],
        mismatched: vec![],
        problem: None,
        ok: false,
    };
    let media = string(&bundle, &["mediaType"], &src)?;
    if media != BUNDLE_MEDIA_TYPE {
        out.problem = Some(format!(
            "media type {media:?} is not {BUNDLE_MEDIA_TYPE} (what model_signing verifies)"
        ));
        return Ok(out);
    }
    let payload_type = string(&bundle, &["dsseEnvelope", "payloadType"], &src)?;
    let payload = b64_decode(string(&bundle, &["dsseEnvelope", "payload"], &src)?)
        .map_err(|e| Error::input(&src, format!("dsseEnvelope.payload is not base64: {e}")))?;
    let sigs = field(&bundle, &["dsseEnvelope", "signatures"], &src)?
        .as_array()
        .ok_or_else(|| Error::input(&src, "dsseEnvelope.signatures is not an array"))?;
    // model_signing checks the first signature, over the in-toto payload type, and then
    // requires that payload type.
    let message = pae(PAYLOAD_TYPE_IN_TOTO, &payload);
    let first = sigs
        .first()
        .and_then(|s| s.get("sig"))
        .and_then(Value::as_str)
        .and_then(|s| b64_decode(s).ok());
    let signer = first
        .as_ref()
        .and_then(|sig| trusted.iter().find(|k| k.key.verify(&message, sig)));
    let Some(signer) = signer else {
        out.problem = Some(format!(
            "the signature does not verify under any trusted key ({} tried)",
            trusted.len()
        ));
        return Ok(out);
    };
    out.verified_keyid = Some(signer.keyid.clone());
    out.verified_key_source = Some(signer.source.clone());
    if payload_type != PAYLOAD_TYPE_IN_TOTO {
        out.problem = Some(format!(
            "payload type {payload_type:?} is not {PAYLOAD_TYPE_IN_TOTO}"
        ));
        return Ok(out);
    }
    let psrc = format!("{src}: signed statement");
    let st: Value = serde_json::from_slice(&payload)
        .map_err(|e| Error::input(&psrc, format!("not JSON: {e}")))?;
    if string(&st, &["_type"], &psrc)? != STATEMENT_TYPE {
        out.problem = Some(format!("statement type is not {STATEMENT_TYPE}"));
        return Ok(out);
    }
    let pt = string(&st, &["predicateType"], &psrc)?;
    if pt != PREDICATE_TYPE {
        out.problem = Some(format!("predicate type {pt:?} is not {PREDICATE_TYPE}"));
        return Ok(out);
    }
    let subjects = field(&st, &["subject"], &psrc)?
        .as_array()
        .ok_or_else(|| Error::input(&psrc, "subject is not an array"))?;
    if subjects.len() != 1 {
        out.problem = Some(format!(
            "{} subjects; OMS signs exactly one",
            subjects.len()
        ));
        return Ok(out);
    }
    let expected_root = string(&subjects[0], &["digest", "sha256"], &psrc)?.to_string();
    out.model_name = subjects[0]["name"].as_str().map(str::to_string);
    let ser = field(&st, &["predicate", "serialization"], &psrc)?.clone();
    out.serialization = Some(ser.clone());
    let method = string(&ser, &["method"], &psrc)?;
    let hash_type = string(&ser, &["hash_type"], &psrc)?;
    if method != "files" || hash_type != "sha256" {
        return Err(Error::input(
            &psrc,
            format!(
                "serialization method {method:?} with hash {hash_type:?}: crambench checks only \
                 the `files` method with sha256 (use model_signing to check this one)"
            ),
        )
        .into());
    }
    if ser.get("allow_symlinks").and_then(Value::as_bool) != Some(false) {
        return Err(Error::input(
            &psrc,
            "serialization.allow_symlinks is not false: crambench checks only signatures that \
             refuse symbolic links",
        )
        .into());
    }
    let mut ignore: Vec<String> = match ser.get("ignore_paths") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::input(&psrc, "serialization.ignore_paths holds a non-string"))?,
        Some(_) => {
            return Err(Error::input(&psrc, "serialization.ignore_paths is not an array").into())
        }
    };
    ignore.extend(default_ignore_paths(dir, signature));
    let mut signed: BTreeMap<String, String> = BTreeMap::new();
    let mut listed = Vec::new();
    for r in field(&st, &["predicate", "resources"], &psrc)?
        .as_array()
        .ok_or_else(|| Error::input(&psrc, "predicate.resources is not an array"))?
    {
        let name = string(r, &["name"], &psrc)?.to_string();
        let alg = string(r, &["algorithm"], &psrc)?;
        let digest = string(r, &["digest"], &psrc)?.to_lowercase();
        if alg != "sha256" {
            return Err(Error::input(
                &psrc,
                format!("resource {name}: algorithm {alg:?} (crambench checks sha256 only)"),
            )
            .into());
        }
        listed.push(Resource {
            name: name.clone(),
            sha256: digest.clone(),
        });
        signed.insert(name, digest);
    }
    let root = root_digest(&listed)?;
    if root != expected_root {
        out.problem = Some(format!(
            "the statement is inconsistent: its subject digest is {expected_root} but its \
             resources hash to {root}"
        ));
        return Ok(out);
    }
    out.root_digest = Some(root);
    let actual = hash_model(dir, &ignore)?;
    out.files = actual.len();
    let mut on_disk: BTreeMap<String, String> = BTreeMap::new();
    for r in actual {
        on_disk.insert(r.name, r.sha256);
    }
    for (name, d) in &on_disk {
        match signed.get(name) {
            None => out.extra.push(name.clone()),
            Some(s) if s != d => out.mismatched.push(name.clone()),
            Some(_) => {}
        }
    }
    out.missing = signed
        .keys()
        .filter(|n| !on_disk.contains_key(*n))
        .cloned()
        .collect();
    out.ok = out.extra.is_empty() && out.missing.is_empty() && out.mismatched.is_empty();
    if !out.ok {
        out.problem = Some("the model differs from the signed one".into());
    }
    Ok(out)
}

impl ModelVerification {
    /// Human-readable lines.
    pub fn to_table(&self) -> String {
        let mut t = format!(
            "signature    {} (OMS, {})\nmodel        {}\n",
            self.signature, PREDICATE_TYPE, self.model
        );
        if let (Some(k), Some(s)) = (&self.verified_keyid, &self.verified_key_source) {
            t += &format!("signed by    {k} ({s})\n");
        }
        if let Some(r) = &self.root_digest {
            t += &format!("root digest  sha256:{r} ({} file(s) on disk)\n", self.files);
        }
        for (what, list) in [
            ("extra", &self.extra),
            ("missing", &self.missing),
            ("changed", &self.mismatched),
        ] {
            for f in list {
                t += &format!("{what:<12} {f}\n");
            }
        }
        if let Some(p) = &self.problem {
            t += &format!("problem      {p}\n");
        }
        t += &format!(
            "result       {}\n",
            if self.ok { "VALID" } else { "NOT VALID" }
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256(seed: u8) -> (SigningKey, PublicKey) {
        let sk = SigningKey::from(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap());
        let pk = PublicKey::new(sk.verifying_key(), format!("k{seed}"));
        (sk, pk)
    }

    fn model(d: &Path) -> PathBuf {
        let m = d.join("ck");
        std::fs::create_dir_all(m.join("sub")).unwrap();
        std::fs::create_dir_all(m.join(".git")).unwrap();
        std::fs::write(m.join("a.bin"), b"hello").unwrap();
        std::fs::write(m.join("a-b"), b"y").unwrap();
        std::fs::write(m.join("sub/b"), b"x").unwrap();
        std::fs::write(m.join(".git/HEAD"), b"ref").unwrap();
        m
    }

    /// The digests and order of a model `model_signing sign key` signed (its payload, read
    /// from its model.sig for the same three files): `a-b` sorts before `a.bin` (by bytes) and
    /// `sub/b` after both; the root digest is that tool's.
    #[test]
    fn serialization_matches_model_signing() {
        let d = tempfile::tempdir().unwrap();
        let m = model(d.path());
        let r = hash_model(&m, &default_ignore_paths(&m, &m.join(SIGNATURE_FILE))).unwrap();
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a-b", "a.bin", "sub/b"]);
        assert_eq!(
            r[1].sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(
            root_digest(&r).unwrap(),
            "d35f8b93b2a17dead9cccc02ba9a6c8014f9cf7499e9a0f6e09d4edb81fe02d2"
        );
    }

    /// Sorting is by components: `a/b` before `a-b` although `-` < `/` as bytes.
    #[test]
    fn sorted_by_components() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        std::fs::create_dir_all(m.join("a")).unwrap();
        std::fs::write(m.join("a/b"), b"1").unwrap();
        std::fs::write(m.join("a-b"), b"2").unwrap();
        let r = hash_model(&m, &[]).unwrap();
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a/b", "a-b"]);
    }

    #[test]
    fn sign_verify_and_reject_changes() {
        let d = tempfile::tempdir().unwrap();
        let m = model(d.path());
        let sig = m.join(SIGNATURE_FILE);
        let (sk, pk) = p256(5);
        let (_, other) = p256(6);
        let s = sign_model_to(&m, &sig, &sk).unwrap();
        assert_eq!(s.files, 3);
        let keys = [pk];
        assert!(verify_model(&m, &sig, &keys).unwrap().ok);
        let v = verify_model(&m, &sig, std::slice::from_ref(&other)).unwrap();
        assert!(!v.ok && v.verified_keyid.is_none());
        // a flipped byte, an extra file, a missing file
        std::fs::write(m.join("a.bin"), b"hellp").unwrap();
        let v = verify_model(&m, &sig, &keys).unwrap();
        assert_eq!(
            (v.ok, v.mismatched.clone()),
            (false, vec!["a.bin".to_string()])
        );
        std::fs::write(m.join("a.bin"), b"hello").unwrap();
        std::fs::write(m.join("new"), b"").unwrap();
        let v = verify_model(&m, &sig, &keys).unwrap();
        assert_eq!((v.ok, v.extra.clone()), (false, vec!["new".to_string()]));
        std::fs::remove_file(m.join("new")).unwrap();
        std::fs::remove_file(m.join("sub/b")).unwrap();
        let v = verify_model(&m, &sig, &keys).unwrap();
        assert_eq!(
            (v.ok, v.missing.clone()),
            (false, vec!["sub/b".to_string()])
        );
        std::fs::write(m.join("sub/b"), b"x").unwrap();
        assert!(verify_model(&m, &sig, &keys).unwrap().ok);
        // ignored paths stay ignored
        std::fs::write(m.join(".git/HEAD"), b"changed").unwrap();
        assert!(verify_model(&m, &sig, &keys).unwrap().ok);
        // a changed serialization parameter (unsigned) fails the signature
        let mut b: Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
        let mut st: Value = serde_json::from_slice(
            &b64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        st["predicate"]["serialization"]["ignore_paths"] = json!(["model.sig", "a.bin"]);
        b["dsseEnvelope"]["payload"] = b64_encode(&serde_json::to_vec(&st).unwrap()).into();
        std::fs::write(&sig, serde_json::to_vec(&b).unwrap()).unwrap();
        assert!(!verify_model(&m, &sig, &keys).unwrap().ok);
    }

    #[test]
    fn refuses_links_ed25519_keys_and_wrong_media_type() {
        let d = tempfile::tempdir().unwrap();
        let m = model(d.path());
        let sig = d.path().join("outside.sig");
        let (sk, pk) = p256(7);
        std::os::unix::fs::symlink("a.bin", m.join("link")).unwrap();
        let e = sign_model(&m, &sig, &sk).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::BadInput);
        std::fs::remove_file(m.join("link")).unwrap();
        let ed = SigningKey::from(ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
        let e = sign_model(&m, &sig, &ed).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::BadInput);
        // a signature outside the directory is not an ignored path
        let s = sign_model_to(&m, &sig, &sk).unwrap();
        let b: Value = serde_json::from_str(&s.bundle).unwrap();
        let st: Value = serde_json::from_slice(
            &b64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            st["predicate"]["serialization"]["ignore_paths"],
            json!(GIT_PATHS)
        );
        assert!(
            verify_model(&m, &sig, std::slice::from_ref(&pk))
                .unwrap()
                .ok
        );
        let mut b2 = b.clone();
        b2["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2".into();
        std::fs::write(&sig, serde_json::to_vec(&b2).unwrap()).unwrap();
        assert!(!verify_model(&m, &sig, &[pk]).unwrap().ok);
    }
}
