//! Seeds: one master seed per run derives every other seed.
//!
//! The derivation is a stable, documented function of `(master, label)`:
//!
//! ```text
//! derive(master, label) = u64_be(SHA-256("crambench/seed/v1" 0x00 decimal(master) 0x00 label)[0..8])
//!                         & (2^53 - 1)
//! ```
//!
//! `decimal(master)` is the master seed in base 10 without leading zeros; `label` is UTF-8, e.g.
//! `init`, `data-order`, `masking`, `finetune/<task>/<trial>`. Every seed is at most 2^53 − 1, so
//! it survives RFC 8785 canonical JSON (and any JSON reader that parses numbers as doubles)
//! exactly. A master seed not given by the user is drawn from the operating system and recorded.
//! Any language with SHA-256 can recompute a run's seeds from its manifest.
use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The largest seed crambench writes: 2^53 − 1, the largest integer RFC 8785 accepts.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// Domain separation tag of version 1 of the derivation.
const TAG: &[u8] = b"crambench/seed/v1";

/// The seed for `label` under `master`. See the module docs for the formula.
pub fn derive(master: u64, label: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(TAG);
    h.update([0u8]);
    h.update(master.to_string().as_bytes());
    h.update([0u8]);
    h.update(label.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) & MAX_SEED
}

/// A master seed from the operating system's random source, at most [`MAX_SEED`].
pub fn random_master() -> Result<u64> {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("reading OS randomness: {e}"))?;
    Ok(u64::from_le_bytes(buf) & MAX_SEED)
}

/// Check that a label is usable: non-empty, at most 200 bytes, and made of printable ASCII
/// without spaces (labels appear as JSON keys and in file names).
pub fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty() && label.len() <= 200 && label.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Error::input(
            format!("seed label {label:?}"),
            "labels are 1-200 printable ASCII characters without spaces, e.g. finetune/mnli/0",
        )
        .into())
    }
}

/// The master seed of a run and every seed derived from it so far, in label order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// The master seed; `derived` follows from it.
    pub master: u64,
    /// Whether the master seed was drawn from the OS (true) or given by the user.
    pub master_from_os: bool,
    /// Name of the derivation function (module docs), so a reader knows how to recompute.
    pub derivation: String,
    /// Every seed handed out, by label.
    pub derived: BTreeMap<String, u64>,
}

impl Seeds {
    /// Seeds under a given master seed, refused above [`MAX_SEED`].
    pub fn new(master: u64) -> Result<Self> {
        if master > MAX_SEED {
            return Err(Error::input(
                "master seed",
                format!("{master} is above 2^53-1 = {MAX_SEED}; seeds must survive canonical JSON"),
            )
            .into());
        }
        Ok(Seeds {
            master,
            master_from_os: false,
            derivation: "crambench/seed/v1".into(),
            derived: BTreeMap::new(),
        })
    }

    /// Seeds under `master` if given, else under a fresh random master seed.
    pub fn from_option(master: Option<u64>) -> Result<Self> {
        match master {
            Some(m) => Seeds::new(m),
            None => {
                let mut s = Seeds::new(random_master()?)?;
                s.master_from_os = true;
                Ok(s)
            }
        }
    }

    /// The seed for `label`, recorded for the manifest.
    pub fn get(&mut self, label: &str) -> Result<u64> {
        check_label(label)?;
        let seed = derive(self.master, label);
        self.derived.insert(label.to_string(), seed);
        Ok(seed)
    }

    /// Recompute every recorded seed from the master seed; false if any differs (a manifest
    /// whose seeds were edited by hand).
    pub fn consistent(&self) -> bool {
        self.derived
            .iter()
            .all(|(label, &seed)| derive(self.master, label) == seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed independently with Python's hashlib:
    /// `int.from_bytes(sha256(b"crambench/seed/v1\0" + str(m).encode() + b"\0" + l.encode())
    ///  .digest()[:8], "big") & (2**53 - 1)`.
    #[test]
    fn derivation_matches_independent_reference() {
        let cases: &[(u64, &str, u64)] = &[
            (0, "init", 6625541036930852),
            (42, "init", 6202699756563707),
            (42, "data-order", 6606877200641522),
            (42, "masking", 1164177631098696),
            (42, "finetune/mnli/0", 5758491101837149),
            (MAX_SEED, "finetune/cola/4", 2037376206824502),
        ];
        for &(m, l, want) in cases {
            assert_eq!(derive(m, l), want, "derive({m}, {l:?})");
        }
    }

    #[test]
    fn seeds_are_bounded_and_recorded() {
        let mut s = Seeds::new(7).unwrap();
        for t in 0..1000 {
            let v = s.get(&format!("finetune/rte/{t}")).unwrap();
            assert!(v <= MAX_SEED);
        }
        assert_eq!(s.derived.len(), 1000);
        assert!(s.consistent());
        s.derived.insert("init".into(), 1);
        assert!(!s.consistent());
    }

    #[test]
    fn random_masters_are_bounded_and_differ() {
        let a = random_master().unwrap();
        let b = random_master().unwrap();
        assert!(a <= MAX_SEED && b <= MAX_SEED);
        assert_ne!(a, b);
        assert!(Seeds::from_option(None).unwrap().master_from_os);
    }

    #[test]
    fn bad_master_and_labels_are_refused() {
        assert!(Seeds::new(MAX_SEED + 1).is_err());
        let mut s = Seeds::new(1).unwrap();
        assert!(s.get("").is_err());
        assert!(s.get("has space").is_err());
        assert!(s.get("ümlaut").is_err());
    }
}
