//! DSSE v1 envelopes (secure-systems-lab/dsse), signed with Ed25519 or ECDSA P-256.
//!
//! ```text
//! {"payload": base64(BODY), "payloadType": TYPE, "signatures": [{"keyid": ID, "sig": base64(SIG)}]}
//! SIG = Ed25519(PAE(TYPE, BODY))  or  DER(ECDSA-P256(SHA-256(PAE(TYPE, BODY))))
//! PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
//! ```
//!
//! `LEN` is the byte length in decimal ASCII without leading zeros. crambench writes padded
//! standard base64 and always writes `keyid` (securesystemslib requires it); it reads standard or
//! URL-safe base64, padded or not, but never with non-zero trailing bits (so one payload has one
//! encoding per alphabet). Verification runs over the exact decoded payload bytes; nothing is
//! re-serialised. `keyid` is an unauthenticated hint: a signature counts for the trusted key it
//! verifies under, and a key counts once however many of its signatures an envelope holds. One
//! envelope may hold signatures of both algorithms.
use crate::error::Error;
use anyhow::Result;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::{keyid, PublicKey, SigningKey};

/// The payload type of in-toto Statements.
pub const PAYLOAD_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";

/// Largest envelope crambench reads. Manifests are kilobytes; this only guards against feeding
/// it the wrong file.
pub const MAX_ENVELOPE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest signature kept: a DER ECDSA P-256 signature is at most 72 bytes (Ed25519: 64).
const MAX_SIGNATURE_BYTES: usize = 72;

/// Pre-Authentication Encoding of DSSE v1.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature as written in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    pub sig: String,
}

/// A DSSE envelope as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

/// An envelope whose base64 fields have been decoded.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub payload_type: String,
    pub payload: Vec<u8>,
    /// (keyid hint, signature bytes or `None` when the signature is not base64 of a size any
    /// supported algorithm writes: 64 bytes for Ed25519, at most 72 bytes of DER for P-256)
    pub signatures: Vec<(Option<String>, Option<Vec<u8>>)>,
}

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);
const URL_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);

/// Decode standard or URL-safe base64, padded or not.
pub fn b64_decode(s: &str) -> std::result::Result<Vec<u8>, base64::DecodeError> {
    STD_ANY_PAD
        .decode(s)
        .or_else(|e| URL_ANY_PAD.decode(s).map_err(|_| e))
}

/// Padded standard base64.
pub fn b64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

impl Envelope {
    /// A new, unsigned envelope around `payload`.
    pub fn new(payload_type: &str, payload: &[u8]) -> Self {
        Envelope {
            payload: b64_encode(payload),
            payload_type: payload_type.to_string(),
            signatures: Vec::new(),
        }
    }

    /// Parse envelope JSON. `source` names the input in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Self> {
        if bytes.len() as u64 > MAX_ENVELOPE_BYTES {
            return Err(Error::input(
                source,
                format!(
                    "{} bytes is larger than any envelope crambench reads ({MAX_ENVELOPE_BYTES})",
                    bytes.len()
                ),
            )
            .into());
        }
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::input(source, format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::input(source, "a DSSE envelope is a JSON object"))?;
        for field in ["payload", "payloadType", "signatures"] {
            if !obj.contains_key(field) {
                return Err(Error::input(
                    source,
                    format!("not a DSSE envelope: field `{field}` is missing"),
                )
                .into());
            }
        }
        serde_json::from_value(v)
            .map_err(|e| Error::input(source, format!("malformed DSSE envelope: {e}")).into())
    }

    /// Read an envelope file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = crate::io::read_limited(path, MAX_ENVELOPE_BYTES)?;
        Envelope::parse(&bytes, &path.display().to_string())
    }

    /// Pretty JSON text of the envelope (the signed bytes are inside `payload`, so layout does
    /// not matter for verification).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("envelope is strings");
        s.push('\n');
        s
    }

    /// Decode the payload and signatures. A payload that is not base64 is malformed input; a
    /// signature that is not base64 of 8 to 72 bytes is kept as `None` (it verifies under no
    /// key).
    pub fn decode(&self, source: &str) -> Result<Decoded> {
        let payload = b64_decode(&self.payload)
            .map_err(|e| Error::input(format!("{source}: payload"), format!("not base64: {e}")))?;
        let signatures = self
            .signatures
            .iter()
            .map(|s| {
                let sig = b64_decode(&s.sig)
                    .ok()
                    .filter(|b| (8..=MAX_SIGNATURE_BYTES).contains(&b.len()));
                (s.keyid.clone(), sig)
            })
            .collect();
        Ok(Decoded {
            payload_type: self.payload_type.clone(),
            payload,
            signatures,
        })
    }

    /// Add a signature by `key`. Returns false (and changes nothing) when the envelope already
    /// holds a valid signature by this key.
    pub fn sign(&mut self, key: &SigningKey, source: &str) -> Result<bool> {
        let decoded = self.decode(source)?;
        let vk = key.verifying_key();
        let message = pae(&decoded.payload_type, &decoded.payload);
        let already = decoded
            .signatures
            .iter()
            .any(|(_, sig)| sig.as_ref().is_some_and(|s| vk.verify(&message, s)));
        if already {
            return Ok(false);
        }
        let sig = key.sign(&message);
        self.signatures.push(Signature {
            keyid: Some(keyid(&vk)),
            sig: b64_encode(&sig),
        });
        Ok(true)
    }
}

/// What became of one signature during verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    pub index: usize,
    /// The `keyid` the envelope claims (unauthenticated).
    pub keyid_hint: Option<String>,
    /// `valid`, `invalid` (matches no trusted key) or `malformed` (not base64 of a signature's
    /// size).
    pub status: String,
    /// The trusted key it verified under.
    pub verified_keyid: Option<String>,
    pub verified_key_source: Option<String>,
    /// True when an earlier signature already counted for the same key.
    pub duplicate: bool,
}

/// The outcome of verifying an envelope against trusted keys.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub payload_type: String,
    pub payload_sha256: String,
    pub threshold: usize,
    /// Distinct trusted keys with a valid signature.
    pub valid_keys: Vec<String>,
    pub signatures: Vec<SignatureCheck>,
    pub ok: bool,
}

/// Verify `decoded` against `keys`: ok when at least `threshold` distinct trusted keys signed.
pub fn verify(decoded: &Decoded, keys: &[PublicKey], threshold: usize) -> Verification {
    let message = pae(&decoded.payload_type, &decoded.payload);
    let mut valid_keys: Vec<String> = Vec::new();
    let mut checks = Vec::new();
    for (index, (hint, sig)) in decoded.signatures.iter().enumerate() {
        let mut check = SignatureCheck {
            index,
            keyid_hint: hint.clone(),
            status: "invalid".into(),
            verified_keyid: None,
            verified_key_source: None,
            duplicate: false,
        };
        match sig {
            None => check.status = "malformed".into(),
            Some(sig) => {
                // Try the key the hint names first, then every other trusted key.
                let mut order: Vec<&PublicKey> = keys
                    .iter()
                    .filter(|k| Some(&k.keyid) == hint.as_ref())
                    .collect();
                order.extend(keys.iter().filter(|k| Some(&k.keyid) != hint.as_ref()));
                if let Some(k) = order.into_iter().find(|k| k.key.verify(&message, sig)) {
                    check.status = "valid".into();
                    check.verified_keyid = Some(k.keyid.clone());
                    check.verified_key_source = Some(k.source.clone());
                    if valid_keys.contains(&k.keyid) {
                        check.duplicate = true;
                    } else {
                        valid_keys.push(k.keyid.clone());
                    }
                }
            }
        }
        checks.push(check);
    }
    Verification {
        payload_type: decoded.payload_type.clone(),
        payload_sha256: crate::provenance::hash::sha256_hex(&decoded.payload),
        threshold,
        ok: threshold > 0 && valid_keys.len() >= threshold,
        valid_keys,
        signatures: checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> (SigningKey, PublicKey) {
        let sk = SigningKey::from(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]));
        let pk = PublicKey::new(sk.verifying_key(), format!("key{seed}"));
        (sk, pk)
    }

    fn p256_key(seed: u8) -> (SigningKey, PublicKey) {
        let sk = SigningKey::from(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap());
        let pk = PublicKey::new(sk.verifying_key(), format!("p256-key{seed}"));
        (sk, pk)
    }

    /// One envelope signed by an Ed25519 and a P-256 key: each signature counts for its own
    /// key, the threshold counts both, and a P-256 signature moved under the other key's hint
    /// still counts only for the key it verifies under.
    #[test]
    fn mixed_algorithm_envelope() {
        let (ed, ed_pk) = key(1);
        let (ec, ec_pk) = p256_key(2);
        let (_, other_ec) = p256_key(3);
        let mut env = Envelope::new(PAYLOAD_TYPE_IN_TOTO, br#"{"a":1}"#);
        assert!(env.sign(&ed, "t").unwrap());
        assert!(env.sign(&ec, "t").unwrap());
        assert!(!env.sign(&ec, "t").unwrap(), "P-256 duplicate not added");
        let d = env.decode("t").unwrap();
        let both = [ed_pk.clone(), ec_pk.clone(), other_ec.clone()];
        let v = verify(&d, &both, 2);
        assert!(v.ok);
        assert_eq!(v.valid_keys, vec![ed_pk.keyid.clone(), ec_pk.keyid.clone()]);
        assert!(!verify(&d, &both, 3).ok);
        assert!(verify(&d, std::slice::from_ref(&ec_pk), 1).ok);
        assert!(!verify(&d, std::slice::from_ref(&other_ec), 1).ok);
        // a wrong hint does not make a signature count for the hinted key
        env.signatures[1].keyid = Some(ed_pk.keyid.clone());
        let d = env.decode("t").unwrap();
        let v = verify(&d, &both, 1);
        assert_eq!(v.signatures[1].verified_keyid, Some(ec_pk.keyid.clone()));
        // every single-byte change of the P-256 signature is rejected
        let sig = d.signatures[1].1.clone().unwrap();
        for i in 0..sig.len() {
            for delta in 1..=255u8 {
                let mut s = sig.clone();
                s[i] = s[i].wrapping_add(delta);
                let mut d2 = d.clone();
                d2.signatures[1].1 = Some(s);
                assert!(
                    !verify(&d2, std::slice::from_ref(&ec_pk), 1).ok,
                    "byte {i} +{delta}"
                );
            }
        }
    }

    #[test]
    fn pae_matches_spec_test_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn base64_accepts_both_alphabets_and_refuses_trailing_bits() {
        let bytes = [0xfbu8, 0xff, 0xbf];
        assert_eq!(b64_decode("+/+/").unwrap(), bytes);
        assert_eq!(b64_decode("-_-_").unwrap(), bytes);
        assert_eq!(b64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(b64_decode("aGk").unwrap(), b"hi");
        assert!(
            b64_decode("aGl=").is_err(),
            "non-zero trailing bits must be refused"
        );
        assert!(b64_decode("+_").is_err(), "mixed alphabets must be refused");
    }

    #[test]
    fn round_trip_threshold_and_duplicates() {
        let (sk1, pk1) = key(1);
        let (sk2, pk2) = key(2);
        let (_, pk3) = key(3);
        let mut env = Envelope::new(PAYLOAD_TYPE_IN_TOTO, br#"{"a":1}"#);
        assert!(env.sign(&sk1, "t").unwrap());
        assert!(
            !env.sign(&sk1, "t").unwrap(),
            "second signature by the same key is not added"
        );
        // a duplicate signature smuggled in counts once
        env.signatures.push(env.signatures[0].clone());
        let d = env.decode("t").unwrap();
        let v = verify(&d, &[pk1.clone(), pk2.clone()], 1);
        assert!(v.ok);
        assert!(v.signatures[1].duplicate);
        assert!(
            !verify(&d, &[pk1.clone(), pk2.clone()], 2).ok,
            "one key signing twice is not two keys"
        );
        assert!(!verify(&d, std::slice::from_ref(&pk3), 1).ok, "wrong key");
        assert!(
            !verify(&d, std::slice::from_ref(&pk1), 0).ok,
            "threshold 0 never passes"
        );
        env.sign(&sk2, "t").unwrap();
        let d = env.decode("t").unwrap();
        assert!(verify(&d, &[pk1, pk2, pk3], 2).ok);
    }

    /// Every single-byte change of the payload, the payload type or the signature is rejected:
    /// exhaustive over positions and all 255 other byte values.
    #[test]
    fn every_single_byte_change_is_rejected() {
        let (sk, pk) = key(7);
        let payload = br#"{"_type":"x","n":42}"#.to_vec();
        let ptype = "application/vnd.in-toto+json".to_string();
        let mut env = Envelope::new(&ptype, &payload);
        env.sign(&sk, "t").unwrap();
        let good = env.decode("t").unwrap();
        assert!(verify(&good, std::slice::from_ref(&pk), 1).ok);
        let sig = good.signatures[0].1.clone().unwrap();
        let keys = [pk];
        for (i, &orig) in payload.iter().enumerate() {
            for delta in 1..=255u8 {
                let mut d = good.clone();
                d.payload[i] = orig.wrapping_add(delta);
                assert!(!verify(&d, &keys, 1).ok, "payload byte {i} +{delta}");
            }
        }
        for i in 0..ptype.len() {
            for delta in 1..=255u8 {
                let mut bytes = ptype.clone().into_bytes();
                bytes[i] = bytes[i].wrapping_add(delta);
                let mut d = good.clone();
                // Payload types that are not UTF-8 cannot come out of JSON; use the lossy form.
                d.payload_type = String::from_utf8_lossy(&bytes).into_owned();
                assert!(!verify(&d, &keys, 1).ok, "payloadType byte {i} +{delta}");
            }
        }
        for i in 0..64 {
            for delta in 1..=255u8 {
                let mut s = sig.clone();
                s[i] = s[i].wrapping_add(delta);
                let mut d = good.clone();
                d.signatures[0].1 = Some(s);
                assert!(!verify(&d, &keys, 1).ok, "signature byte {i} +{delta}");
            }
        }
    }

    /// The same at the level of the envelope's text: changing any one character inside the
    /// payload, payloadType or sig string either makes the envelope malformed or fails
    /// verification. (Swapping a `+`/`/` for its URL-safe twin `-`/`_` is not a change of the
    /// encoded bytes, and DSSE requires accepting both alphabets, so those swaps are skipped.)
    #[test]
    fn every_single_character_change_of_the_envelope_text_is_rejected() {
        let (sk, pk) = key(9);
        let mut env = Envelope::new(PAYLOAD_TYPE_IN_TOTO, b"{\"subject\":[],\"x\":\"\xc3\xa9\"}");
        env.sign(&sk, "t").unwrap();
        let text = serde_json::to_vec(&env).unwrap();
        let keys = [pk];
        let ok = |bytes: &[u8]| -> bool {
            match Envelope::parse(bytes, "t").and_then(|e| e.decode("t")) {
                Ok(d) => verify(&d, &keys, 1).ok,
                Err(_) => false,
            }
        };
        assert!(ok(&text));
        // byte ranges of the three string values
        let find = |needle: &str| {
            let start = String::from_utf8_lossy(&text).find(needle).unwrap();
            start..start + needle.len()
        };
        let ranges = [
            find(&env.payload),
            find(&env.payload_type),
            find(&env.signatures[0].sig),
        ];
        for range in ranges {
            for i in range {
                for b in 0u8..=255 {
                    let orig = text[i];
                    let twins = matches!((orig, b), (b'+', b'-') | (b'/', b'_'));
                    if b == orig || twins {
                        continue;
                    }
                    let mut t = text.clone();
                    t[i] = b;
                    assert!(!ok(&t), "byte {i} {orig:#x} -> {b:#x} still verifies");
                }
            }
        }
    }

    #[test]
    fn garbage_and_truncation_are_malformed_not_panics() {
        let (sk, _) = key(3);
        let mut env = Envelope::new(PAYLOAD_TYPE_IN_TOTO, b"{}");
        env.sign(&sk, "t").unwrap();
        let text = serde_json::to_vec(&env).unwrap();
        for cut in 0..text.len() {
            assert!(
                Envelope::parse(&text[..cut], "t").is_err(),
                "truncated at {cut}"
            );
        }
        for junk in [
            &b"\xff\xfe\x00"[..],
            b"[]",
            b"null",
            b"{\"payload\":1,\"payloadType\":\"x\",\"signatures\":[]}",
        ] {
            assert!(Envelope::parse(junk, "t").is_err());
        }
        let deep = "[".repeat(100_000);
        assert!(Envelope::parse(deep.as_bytes(), "t").is_err());
    }
}
