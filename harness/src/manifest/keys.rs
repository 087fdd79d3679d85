//! Ed25519 keys for signing manifests.
//!
//! * Private keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), written with mode 0600 and
//!   never over an existing file. A private key that the group or others can read is refused.
//! * Public keys are SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the form
//!   OpenSSL, Python's `cryptography` and securesystemslib load.
//! * A key's id is securesystemslib's default: the SHA-256 (hex) of the canonical JSON
//!   `{"keytype":"ed25519","keyval":{"public":"<hex of the 32 raw bytes>"},"scheme":"ed25519"}`.
use crate::error::Error;
use anyhow::{Context, Result};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::path::{Path, PathBuf};

/// Largest key file read (a PEM key is a few hundred bytes).
const KEY_FILE_LIMIT: u64 = 64 * 1024;

/// A public key with its id and where it came from.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub keyid: String,
    /// The file it was read from (for messages).
    pub source: String,
}

/// securesystemslib's default key id of an Ed25519 public key.
pub fn keyid(key: &VerifyingKey) -> String {
    let doc = serde_json::json!({
        "keytype": "ed25519",
        "keyval": {"public": hex::encode(key.to_bytes())},
        "scheme": "ed25519",
    });
    let bytes = super::jcs::to_vec(&doc).expect("key document is plain strings");
    crate::provenance::hash::sha256_hex(&bytes)
}

/// Files written by [`generate`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyPairFiles {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub keyid: String,
}

/// Generate a key pair into `dir` as `<name>.key` (0600) and `<name>.pub`, both published
/// together ([`crate::io::write_all_new_atomic`]: a full disk leaves neither). Refuses if
/// either file exists — except that `<name>.pub` is re-derived when only `<name>.key` exists
/// (a pair written by an older crambench, or a public key deleted), see
/// [`rederive_public_key`]. Creates `dir` (mode 0700) if needed.
pub fn generate(dir: &Path, name: &str) -> Result<KeyPairFiles> {
    generate_or_repair(dir, name).map(|(files, _)| files)
}

/// [`generate`], also saying whether the public key was re-derived from an existing private key
/// (`true`) instead of a new pair being made.
pub fn generate_or_repair(dir: &Path, name: &str) -> Result<(KeyPairFiles, bool)> {
    crate::ident::check("--name", name)?;
    let private_key = dir.join(format!("{name}.key"));
    let public_key = dir.join(format!("{name}.pub"));
    if private_key.exists() && !public_key.exists() {
        return rederive_public_key(&private_key, &public_key).map(|f| (f, true));
    }
    new_pair(dir, name).map(|f| (f, false))
}

/// Write the public key of the private key at `private_key` to `public_key` (which must not
/// exist). The private key is loaded with the usual checks (mode 0600, PKCS#8 Ed25519) and never
/// written.
pub fn rederive_public_key(private_key: &Path, public_key: &Path) -> Result<KeyPairFiles> {
    let sk = load_signing_key(private_key)?;
    let pub_pem = sk
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| anyhow::anyhow!("encoding public key: {e}"))?;
    crate::io::write_new_atomic(public_key, pub_pem.as_bytes(), Some(0o644))?;
    Ok(KeyPairFiles {
        private_key: private_key.to_path_buf(),
        public_key: public_key.to_path_buf(),
        keyid: keyid(&sk.verifying_key()),
    })
}

fn new_pair(dir: &Path, name: &str) -> Result<KeyPairFiles> {
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
    }
    let private_key = dir.join(format!("{name}.key"));
    let public_key = dir.join(format!("{name}.pub"));
    for p in [&private_key, &public_key] {
        if p.exists() {
            return Err(Error::Refused(format!(
                "{} already exists; keygen never overwrites a key (choose another --out or --name)",
                p.display()
            ))
            .into());
        }
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("reading OS randomness: {e}"))?;
    let sk = SigningKey::from_bytes(&secret);
    secret.fill(0);
    let pem = sk
        .to_pkcs8_pem(Default::default())
        .map_err(|e| anyhow::anyhow!("encoding private key: {e}"))?;
    let pub_pem = sk
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| anyhow::anyhow!("encoding public key: {e}"))?;
    crate::io::write_all_new_atomic(&[
        (&private_key, pem.as_bytes(), Some(0o600)),
        (&public_key, pub_pem.as_bytes(), Some(0o644)),
    ])?;
    Ok(KeyPairFiles {
        private_key,
        public_key,
        keyid: keyid(&sk.verifying_key()),
    })
}

/// Trusted public keys from `paths`, each a `.pub` file or a directory of them; an empty
/// result is bad input naming `what` (the option).
pub fn load_trusted(paths: &[PathBuf], what: &str) -> Result<Vec<PublicKey>> {
    let mut trusted = Vec::new();
    for p in paths {
        if p.is_dir() {
            trusted.extend(load_public_key_dir(p)?);
        } else {
            trusted.push(load_public_key(p)?);
        }
    }
    if trusted.is_empty() {
        return Err(Error::input(what, "no public keys found").into());
    }
    Ok(trusted)
}

/// crambench's configuration directory: `$CRAMBENCH_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/crambench`, else `$HOME/.config/crambench`.
pub fn config_dir() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("CRAMBENCH_CONFIG_DIR") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Ok(d.join("crambench"));
    }
    var("HOME")
        .map(|h| h.join(".config/crambench"))
        .ok_or_else(|| {
            Error::input(
                "configuration directory",
                "neither CRAMBENCH_CONFIG_DIR, XDG_CONFIG_HOME nor HOME is set; pass --key",
            )
            .into()
        })
}

/// The signing key for a command: `explicit` when given, else the user's default key
/// `<config_dir>/keys/default.key`, created on first use. Returns the key, its path, and
/// whether it was just created (callers announce that on stderr, with the public key's path).
pub fn signing_key_or_default(explicit: Option<&Path>) -> Result<(SigningKey, PathBuf, bool)> {
    if let Some(p) = explicit {
        return Ok((load_signing_key(p)?, p.to_path_buf(), false));
    }
    let dir = config_dir()?.join("keys");
    let path = dir.join("default.key");
    // A default key whose public half is missing gets it back (the announcement names it).
    let created = if path.exists() && dir.join("default.pub").exists() {
        false
    } else {
        !generate_or_repair(&dir, "default")?.1
    };
    Ok((load_signing_key(&path)?, path, created))
}

/// The user's default public key (`<config dir>/keys/default.pub`, written beside the key that
/// `crambench run` creates on first use), when it exists.
pub fn default_public_key() -> Option<PathBuf> {
    let p = config_dir().ok()?.join("keys").join("default.pub");
    p.is_file().then_some(p)
}

/// Load a private key, refusing one that the group or others can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Refused(format!(
            "{}: private key is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ))
        .into());
    }
    let bytes = crate::io::read_limited(path, KEY_FILE_LIMIT)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::input(path.display(), "not a PEM file (not UTF-8)"))?;
    SigningKey::from_pkcs8_pem(text).map_err(|e| {
        Error::input(
            path.display(),
            format!("not an Ed25519 PKCS#8 PEM private key ({e})"),
        )
        .into()
    })
}

/// Load a public key (SPKI PEM).
pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let bytes = crate::io::read_limited(path, KEY_FILE_LIMIT)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::input(path.display(), "not a PEM file (not UTF-8)"))?;
    if text.contains("PRIVATE KEY") {
        return Err(Error::input(
            path.display(),
            "this is a private key; pass the public key (.pub) to verify",
        )
        .into());
    }
    let key = VerifyingKey::from_public_key_pem(text).map_err(|e| {
        Error::input(
            path.display(),
            format!("not an Ed25519 public key in PEM (SubjectPublicKeyInfo) form ({e})"),
        )
    })?;
    Ok(PublicKey {
        keyid: keyid(&key),
        key,
        source: path.display().to_string(),
    })
}

/// Load every public key under `dir` (files ending in `.pub` or `.pem`), sorted by file name.
pub fn load_public_key_dir(dir: &Path) -> Result<Vec<PublicKey>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pub" | "pem")))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            load_public_key(p)
                .with_context(|| format!("loading trusted keys from {}", dir.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyid_matches_securesystemslib_definition() {
        // RFC 8032 test 1 public key. The expected id is sha256 of the JCS document, computed
        // independently: printf '%s' '{"keytype":"ed25519","keyval":{"public":"d75a98…"},"scheme":"ed25519"}' | sha256sum
        let pk = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap();
        let vk = VerifyingKey::from_bytes(&pk.try_into().unwrap()).unwrap();
        let doc = r#"{"keytype":"ed25519","keyval":{"public":"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"},"scheme":"ed25519"}"#;
        assert_eq!(
            keyid(&vk),
            crate::provenance::hash::sha256_hex(doc.as_bytes())
        );
    }

    #[test]
    fn generate_load_and_refuse() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let files = generate(d.path(), "k").unwrap();
        let mode = std::fs::metadata(&files.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sk = load_signing_key(&files.private_key).unwrap();
        let pk = load_public_key(&files.public_key).unwrap();
        assert_eq!(pk.key, sk.verifying_key());
        assert_eq!(pk.keyid, files.keyid);
        // never overwrites
        let before = std::fs::read(&files.private_key).unwrap();
        let e = generate(d.path(), "k").unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Refused);
        assert_eq!(std::fs::read(&files.private_key).unwrap(), before);
        // refuses a world-readable private key
        std::fs::set_permissions(&files.private_key, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = load_signing_key(&files.private_key).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Refused);
        // a private key passed as public key is bad input
        assert!(load_public_key(&files.private_key).is_err());
    }
}
