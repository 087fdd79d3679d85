//! Signing keys for manifests and checkpoints: Ed25519 and ECDSA P-256.
//!
//! * Private keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), written with mode 0600 and
//!   never over an existing file. A private key that the group or others can read is refused.
//! * Public keys are SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the form
//!   OpenSSL, Python's `cryptography`, securesystemslib and `model_signing` load.
//! * The algorithm is read from the key file (the PKCS#8/SPKI algorithm identifier).
//! * A key's id is securesystemslib's default (`compute_default_keyid` in
//!   securesystemslib 1.6.0 `signer/_utils.py`, fed by `SSlibKey._from_crypto` in
//!   `signer/_key.py`): the SHA-256 (hex) of securesystemslib's canonical JSON of
//!   `{"keytype":K,"keyval":{"public":P},"scheme":S}` where, for Ed25519, K = S = `ed25519` and P
//!   is the hex of the 32 raw bytes, and for P-256, K = `ecdsa`, S = `ecdsa-sha2-nistp256` and P
//!   is the SPKI PEM text (newline-terminated lines of 64 characters). securesystemslib's
//!   canonical JSON escapes only `\` and `"`, so the PEM's newlines are hashed as raw bytes
//!   (not as `\n`, as RFC 8785 would write them).
//! * ECDSA signatures are DER-encoded over SHA-256 of the message (what securesystemslib's
//!   `ecdsa-sha2-nistp256` scheme, Sigstore and `model_signing` write and check); they are made
//!   deterministically (RFC 6979) and both low- and high-S signatures are accepted, as OpenSSL
//!   does.
use crate::error::Error;
use anyhow::{Context, Result};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use std::path::{Path, PathBuf};

/// Largest key file read (a PEM key is a few hundred bytes).
const KEY_FILE_LIMIT: u64 = 64 * 1024;

/// A key algorithm crambench signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    Ed25519,
    EcdsaP256,
}

impl Algorithm {
    /// The algorithm of new keys (`crambench keygen` without `--algorithm`, and the key
    /// `crambench run` creates on first use): ECDSA P-256, because `model_signing`'s key mode
    /// accepts only ECDSA keys and cosign does not verify Ed25519 keys (README "Keys").
    pub const DEFAULT: Algorithm = Algorithm::EcdsaP256;

    /// The name on the command line and in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256 => "ecdsa-p256",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ed25519" => Ok(Algorithm::Ed25519),
            "ecdsa-p256" => Ok(Algorithm::EcdsaP256),
            _ => Err(Error::input(
                "--algorithm",
                format!("unknown algorithm `{s}` (ed25519 or ecdsa-p256)"),
            )
            .into()),
        }
    }
}

/// A private signing key.
#[derive(Clone)]
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    EcdsaP256(p256::ecdsa::SigningKey),
}

/// A public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

/// Names the algorithm and key id, never the secret.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey({}, keyid {})",
            self.algorithm().as_str(),
            keyid(&self.verifying_key())
        )
    }
}

impl From<ed25519_dalek::SigningKey> for SigningKey {
    fn from(k: ed25519_dalek::SigningKey) -> Self {
        SigningKey::Ed25519(k)
    }
}

impl From<p256::ecdsa::SigningKey> for SigningKey {
    fn from(k: p256::ecdsa::SigningKey) -> Self {
        SigningKey::EcdsaP256(k)
    }
}

impl SigningKey {
    /// A new key from the OS's randomness.
    pub fn generate(algorithm: Algorithm) -> Result<Self> {
        loop {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| anyhow::anyhow!("reading OS randomness: {e}"))?;
            let key = match algorithm {
                Algorithm::Ed25519 => Some(SigningKey::Ed25519(
                    ed25519_dalek::SigningKey::from_bytes(&secret),
                )),
                // A scalar of zero or at least the group order is refused; draw again (the
                // chance is about 2^-32).
                Algorithm::EcdsaP256 => p256::ecdsa::SigningKey::from_slice(&secret)
                    .ok()
                    .map(SigningKey::EcdsaP256),
            };
            secret.fill(0);
            if let Some(k) = key {
                return Ok(k);
            }
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Ed25519(_) => Algorithm::Ed25519,
            SigningKey::EcdsaP256(_) => Algorithm::EcdsaP256,
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
            SigningKey::EcdsaP256(k) => VerifyingKey::EcdsaP256(*k.verifying_key()),
        }
    }

    /// Sign `message`: 64 bytes for Ed25519, DER-encoded ECDSA over SHA-256 for P-256.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match self {
            SigningKey::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
            SigningKey::EcdsaP256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(k, message);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }

    /// PKCS#8 PEM text.
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        let pem = match self {
            SigningKey::Ed25519(k) => k.to_pkcs8_pem(Default::default()),
            SigningKey::EcdsaP256(k) => {
                p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(k, Default::default())
            }
        }
        .map_err(|e| anyhow::anyhow!("encoding private key: {e}"))?;
        Ok(pem.to_string())
    }
}

impl VerifyingKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::Ed25519(_) => Algorithm::Ed25519,
            VerifyingKey::EcdsaP256(_) => Algorithm::EcdsaP256,
        }
    }

    /// Whether `sig` is a valid signature of `message` by this key. Ed25519 signatures are
    /// checked strictly (`verify_strict`); ECDSA signatures must be DER.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            VerifyingKey::Ed25519(k) => <[u8; 64]>::try_from(sig).is_ok_and(|b| {
                k.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&b))
                    .is_ok()
            }),
            VerifyingKey::EcdsaP256(k) => p256::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| p256::ecdsa::signature::Verifier::verify(k, message, &s).is_ok()),
        }
    }

    /// SubjectPublicKeyInfo PEM text (LF line ends, 64-character lines, final newline): the
    /// same bytes OpenSSL and Python's `cryptography` write.
    pub fn to_public_key_pem(&self) -> Result<String> {
        match self {
            VerifyingKey::Ed25519(k) => k.to_public_key_pem(Default::default()),
            VerifyingKey::EcdsaP256(k) => {
                p256::pkcs8::EncodePublicKey::to_public_key_pem(k, Default::default())
            }
        }
        .map_err(|e| anyhow::anyhow!("encoding public key: {e}"))
    }

    /// Parse SPKI PEM of either algorithm.
    pub fn from_public_key_pem(text: &str) -> std::result::Result<Self, String> {
        let ed = match ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
            Ok(k) => return Ok(VerifyingKey::Ed25519(k)),
            Err(e) => e,
        };
        match <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(text)
        {
            Ok(k) => Ok(VerifyingKey::EcdsaP256(k)),
            Err(ec) => Err(format!("as Ed25519: {ed}; as P-256: {ec}")),
        }
    }
}

impl SigningKey {
    /// Parse PKCS#8 PEM of either algorithm.
    pub fn from_pkcs8_pem(text: &str) -> std::result::Result<Self, String> {
        let ed = match ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            Ok(k) => return Ok(SigningKey::Ed25519(k)),
            Err(e) => e,
        };
        match <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(text) {
            Ok(k) => Ok(SigningKey::EcdsaP256(k)),
            Err(ec) => Err(format!("as Ed25519: {ed}; as P-256: {ec}")),
        }
    }
}

/// A public key with its id and where it came from.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub keyid: String,
    /// The file it was read from (for messages).
    pub source: String,
}

impl PublicKey {
    /// A public key named `source` (for messages), with its securesystemslib key id.
    pub fn new(key: VerifyingKey, source: impl Into<String>) -> Self {
        PublicKey {
            keyid: keyid(&key),
            key,
            source: source.into(),
        }
    }
}

/// securesystemslib's canonical JSON of a string: quoted, escaping only `\` and `"`
/// (securesystemslib 1.6.0 `formats.py` `_canonical_string_encoder`).
fn sslib_canonical_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// securesystemslib's default key id of a public key (see the module documentation).
pub fn keyid(key: &VerifyingKey) -> String {
    let (keytype, scheme, public) = match key {
        VerifyingKey::Ed25519(k) => ("ed25519", "ed25519", hex::encode(k.to_bytes())),
        VerifyingKey::EcdsaP256(_) => (
            "ecdsa",
            "ecdsa-sha2-nistp256",
            key.to_public_key_pem()
                .expect("a P-256 point always encodes as SPKI"),
        ),
    };
    // Keys sorted as canonical JSON sorts them: keytype, keyval, scheme.
    let doc = format!(
        "{{\"keytype\":{},\"keyval\":{{\"public\":{}}},\"scheme\":{}}}",
        sslib_canonical_string(keytype),
        sslib_canonical_string(&public),
        sslib_canonical_string(scheme)
    );
    crate::provenance::hash::sha256_hex(doc.as_bytes())
}

/// Files written by [`generate`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyPairFiles {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub keyid: String,
    pub algorithm: Algorithm,
}

/// Generate a key pair into `dir` as `<name>.key` (0600) and `<name>.pub`, both published
/// together ([`crate::io::write_all_new_atomic`]: a full disk leaves neither). Refuses if
/// either file exists — except that `<name>.pub` is re-derived when only `<name>.key` exists
/// (a pair written by an older crambench, or a public key deleted), see
/// [`rederive_public_key`]. Creates `dir` (mode 0700) if needed.
pub fn generate(dir: &Path, name: &str) -> Result<KeyPairFiles> {
    generate_or_repair(dir, name, Algorithm::DEFAULT).map(|(files, _)| files)
}

/// [`generate`] with the given algorithm.
pub fn generate_with(dir: &Path, name: &str, algorithm: Algorithm) -> Result<KeyPairFiles> {
    generate_or_repair(dir, name, algorithm).map(|(files, _)| files)
}

/// [`generate`], also saying whether the public key was re-derived from an existing private key
/// (`true`, whatever its algorithm) instead of a new pair being made with `algorithm`.
pub fn generate_or_repair(
    dir: &Path,
    name: &str,
    algorithm: Algorithm,
) -> Result<(KeyPairFiles, bool)> {
    crate::ident::check("--name", name)?;
    let private_key = dir.join(format!("{name}.key"));
    let public_key = dir.join(format!("{name}.pub"));
    if private_key.exists() && !public_key.exists() {
        return rederive_public_key(&private_key, &public_key).map(|f| (f, true));
    }
    new_pair(dir, name, algorithm).map(|f| (f, false))
}

/// Write the public key of the private key at `private_key` to `public_key` (which must not
/// exist). The private key is loaded with the usual checks (mode 0600, PKCS#8 Ed25519 or P-256)
/// and never written.
pub fn rederive_public_key(private_key: &Path, public_key: &Path) -> Result<KeyPairFiles> {
    let sk = load_signing_key(private_key)?;
    let pub_pem = sk.verifying_key().to_public_key_pem()?;
    crate::io::write_new_atomic(public_key, pub_pem.as_bytes(), Some(0o644))?;
    Ok(KeyPairFiles {
        private_key: private_key.to_path_buf(),
        public_key: public_key.to_path_buf(),
        keyid: keyid(&sk.verifying_key()),
        algorithm: sk.algorithm(),
    })
}

fn new_pair(dir: &Path, name: &str, algorithm: Algorithm) -> Result<KeyPairFiles> {
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
    let sk = SigningKey::generate(algorithm)?;
    let pem = sk.to_pkcs8_pem()?;
    let pub_pem = sk.verifying_key().to_public_key_pem()?;
    crate::io::write_all_new_atomic(&[
        (&private_key, pem.as_bytes(), Some(0o600)),
        (&public_key, pub_pem.as_bytes(), Some(0o644)),
    ])?;
    Ok(KeyPairFiles {
        private_key,
        public_key,
        keyid: keyid(&sk.verifying_key()),
        algorithm,
    })
}

/// The public keys in `paths`: PEM files, or directories of `.pub`/`.pem` files (possibly none).
pub fn load_public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for p in paths {
        if p.is_dir() {
            keys.extend(load_public_key_dir(p)?);
        } else {
            keys.push(load_public_key(p)?);
        }
    }
    Ok(keys)
}

/// Trusted public keys from `paths`, each a `.pub` file or a directory of them; an empty
/// result is bad input naming `what` (the option).
pub fn load_trusted(paths: &[PathBuf], what: &str) -> Result<Vec<PublicKey>> {
    let trusted = load_public_keys(paths)?;
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
/// `<config_dir>/keys/default.key`, created on first use (with [`Algorithm::DEFAULT`]). Returns the key, its path, and
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
        !generate_or_repair(&dir, "default", Algorithm::DEFAULT)?.1
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
            format!("not an Ed25519 or ECDSA P-256 PKCS#8 PEM private key ({e})"),
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
            format!(
                "not an Ed25519 or ECDSA P-256 public key in PEM (SubjectPublicKeyInfo) form ({e})"
            ),
        )
    })?;
    Ok(PublicKey::new(key, path.display().to_string()))
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
        let vk = VerifyingKey::Ed25519(
            ed25519_dalek::VerifyingKey::from_bytes(&pk.try_into().unwrap()).unwrap(),
        );
        let doc = r#"{"keytype":"ed25519","keyval":{"public":"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"},"scheme":"ed25519"}"#;
        assert_eq!(
            keyid(&vk),
            crate::provenance::hash::sha256_hex(doc.as_bytes())
        );
    }

    /// A P-256 key id is sha256 of securesystemslib's canonical JSON with the SPKI PEM text,
    /// its newlines raw (securesystemslib does not escape them; RFC 8785 would). The PEM is
    /// the SPKI of the private scalar 1 (public point = the generator), whose DER is spelled
    /// out here from SEC 1 / RFC 5480, not produced by crambench's encoder.
    #[test]
    fn ecdsa_keyid_matches_securesystemslib_definition() {
        let mut one = [0u8; 32];
        one[31] = 1;
        let sk = p256::ecdsa::SigningKey::from_slice(&one).unwrap();
        let vk = VerifyingKey::EcdsaP256(*sk.verifying_key());
        let der = hex::decode(concat!(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200",
            "04",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        ))
        .unwrap();
        let b64 = super::super::dsse::b64_encode(&der);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &b64[..64],
            &b64[64..]
        );
        assert_eq!(vk.to_public_key_pem().unwrap(), pem);
        let doc = format!(
            "{{\"keytype\":\"ecdsa\",\"keyval\":{{\"public\":\"{pem}\"}},\"scheme\":\"ecdsa-sha2-nistp256\"}}"
        );
        assert!(doc.contains("KEY-----\n"), "raw newline, not an escape");
        assert_eq!(
            keyid(&vk),
            crate::provenance::hash::sha256_hex(doc.as_bytes())
        );
    }

    #[test]
    fn both_algorithms_sign_and_verify_and_reject_each_other() {
        let msg = b"DSSEv1 1 x 1 y";
        let ed = SigningKey::generate(Algorithm::Ed25519).unwrap();
        let ec = SigningKey::generate(Algorithm::EcdsaP256).unwrap();
        let (sig_ed, sig_ec) = (ed.sign(msg), ec.sign(msg));
        assert_eq!(sig_ed.len(), 64);
        assert_eq!(sig_ec[0], 0x30, "ECDSA signatures are DER SEQUENCEs");
        assert!(ed.verifying_key().verify(msg, &sig_ed));
        assert!(ec.verifying_key().verify(msg, &sig_ec));
        assert!(!ed.verifying_key().verify(msg, &sig_ec));
        assert!(!ec.verifying_key().verify(msg, &sig_ed));
        assert!(!ec.verifying_key().verify(b"other", &sig_ec));
        // ECDSA: SHA-256 of the message, DER: the fixed-size r||s form is not accepted
        let s = p256::ecdsa::Signature::from_der(&sig_ec).unwrap();
        assert!(!ec.verifying_key().verify(msg, &s.to_bytes()));
        // the twin (r, n - s) is valid ECDSA too; high-S is accepted, as OpenSSL does
        let twin = match s.normalize_s() {
            n if n == s => {
                let neg = -*s.s();
                p256::ecdsa::Signature::from_scalars(s.r().to_bytes(), neg.to_bytes()).unwrap()
            }
            n => n,
        };
        assert!(ec.verifying_key().verify(msg, twin.to_der().as_bytes()));
    }

    #[test]
    fn generate_load_and_refuse() {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256] {
            generate_load_and_refuse_with(alg);
        }
    }

    fn generate_load_and_refuse_with(alg: Algorithm) {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let files = generate_with(d.path(), "k", alg).unwrap();
        assert_eq!(files.algorithm, alg);
        let mode = std::fs::metadata(&files.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sk = load_signing_key(&files.private_key).unwrap();
        assert_eq!(sk.algorithm(), alg);
        let pk = load_public_key(&files.public_key).unwrap();
        assert_eq!(pk.key, sk.verifying_key());
        // a lost public key is re-derived, same algorithm and id
        std::fs::remove_file(&files.public_key).unwrap();
        let (again, rederived) = generate_or_repair(d.path(), "k", Algorithm::Ed25519).unwrap();
        assert!(rederived);
        assert_eq!((again.algorithm, &again.keyid), (alg, &files.keyid));
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
