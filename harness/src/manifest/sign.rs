//! Signing a statement into a DSSE envelope with the user's key: the one path `crambench run`
//! and `crambench gate` take (key lookup, first-use creation and its announcement, signature).
use super::dsse::{self, Envelope};
use super::keys;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// A signed envelope and the key that signed it.
pub struct Signed {
    pub envelope: Envelope,
    /// securesystemslib key id of the signer.
    pub keyid: String,
    /// The private key file.
    pub key_path: PathBuf,
    /// The public key beside it, when present.
    pub public_key: Option<PathBuf>,
    /// Whether the key was created by this call (the user's default key on first use).
    pub created: bool,
}

/// A new DSSE envelope of `payload` (an in-toto Statement's bytes) signed by `key`: the one
/// place a statement becomes an envelope (`run`'s manifest and SLSA provenance, `gate`,
/// `sign`). `what` names the payload in errors.
pub fn envelope_signed_by(key: &keys::SigningKey, payload: &[u8], what: &str) -> Result<Envelope> {
    let mut envelope = Envelope::new(dsse::PAYLOAD_TYPE_IN_TOTO, payload);
    envelope.sign(key, what)?;
    Ok(envelope)
}

/// Sign `payload` (an in-toto Statement's bytes) with `explicit` (`--key`), else the user's
/// default key, created on first use and announced on stderr. `what` names the payload in
/// errors.
pub fn sign_statement(explicit: Option<&Path>, payload: &[u8], what: &str) -> Result<Signed> {
    let (sk, key_path, created) = keys::signing_key_or_default(explicit)?;
    let public = key_path.with_extension("pub");
    let public_key = public.is_file().then_some(public);
    let keyid = keys::keyid(&sk.verifying_key());
    if created {
        eprintln!(
            "crambench: created your signing key {} (public key {}, keyid {keyid}); keep the \
             private key secret and publish the public one",
            key_path.display(),
            public_key
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let envelope = envelope_signed_by(&sk, payload, what)?;
    Ok(Signed {
        envelope,
        keyid,
        key_path,
        public_key,
        created,
    })
}
