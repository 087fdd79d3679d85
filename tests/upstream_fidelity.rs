//! Rows of issue 13's divergence table outside GLUE fine-tuning: the tokenizer's normaliser
//! without accent stripping (D16) and the izsak recipe's sparse prediction and no-decay list
//! (D2, D8).
mod common;

use crambench::data::tokenizer::{self, normalizer, Encoder, EncoderCache, NormalizerOptions};
use tokenizers::Normalizer;

fn normalize(o: NormalizerOptions, text: &str) -> String {
    let mut s = tokenizers::NormalizedString::from(text);
    normalizer(o).normalize(&mut s).unwrap();
    s.get().to_string()
}

const SAMPLES: [&str; 10] = [
    "ﬁne ① Ｆｕｌｌｗｉｄｔｈ café",
    "``Héllo''   WORLD  ☃  Ünïcode",
    "e\u{301}te\u{301} a\u{308}",
    "Kelvin \u{212a} Ångström \u{212b} ½ x²",
    "Œuvre ǅ ﬀ ㎒ ℌ",
    "İstanbul ﬁne Ωmega — dash… “x”",
    "plain ascii, nothing to do",
    "tab\there  and   spaces",
    "ＡＢＣ\u{301}",
    "\u{1F600} emoji \u{fe0f}",
];

/// D16: with `strip_accents = false` upstream's `_get_sane_normalizers`
/// (`cramming/data/tokenizer_preparation.py`, cramming 196c991 and Last1.13release) applies NFKC
/// where NFD + StripAccents would be: compatibility characters become their ASCII forms before
/// the ASCII filter.
#[test]
fn normaliser_without_accent_stripping_applies_nfkc() {
    let o = NormalizerOptions {
        lowercase: true,
        strip_accents: false,
        ascii_only: true,
    };
    assert_eq!(normalize(o, "ﬁne ① Ｆｕｌｌ"), "fine 1 full");
    // Composed accents are not stripped but dropped by the ASCII filter, letter included.
    assert_eq!(normalize(o, "café e\u{301}t"), "caf t");
    // With strip_accents the accents go and the letters stay.
    assert_eq!(
        normalize(NormalizerOptions::default(), "café e\u{301}t"),
        "cafe et"
    );
}

/// D16 against Python `tokenizers` building upstream's sequence itself, for every switch
/// combination.
#[test]
fn normaliser_equals_upstreams_sequence_in_python_tokenizers() {
    let Some(py) = common::interop_python() else {
        return;
    };
    let script = r#"
import json, sys
from tokenizers import normalizers, Regex
out = []
for lower, strip, ascii_only, text in json.load(sys.stdin):
    ops = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    ops.append(normalizers.NFD() if strip else normalizers.NFKC())
    if lower:
        ops.append(normalizers.Lowercase())
    if strip:
        ops.append(normalizers.StripAccents())
    ops.append(normalizers.Replace(Regex(" {2,}"), " "))
    if ascii_only:
        ops.append(normalizers.Replace(Regex(r"[^\x00-\x7F]+"), ""))
    out.append(normalizers.Sequence(ops).normalize_str(text))
print(json.dumps(out))
"#;
    let mut cases = Vec::new();
    for lower in [true, false] {
        for strip in [true, false] {
            for ascii_only in [true, false] {
                for t in SAMPLES {
                    cases.push((lower, strip, ascii_only, t));
                }
            }
        }
    }
    use std::io::Write;
    let mut child = std::process::Command::new(py)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let want: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    for ((lowercase, strip_accents, ascii_only, t), w) in cases.iter().zip(&want) {
        let o = NormalizerOptions {
            lowercase: *lowercase,
            strip_accents: *strip_accents,
            ascii_only: *ascii_only,
        };
        assert_eq!(&normalize(o, t), w, "{o:?} {t:?}");
    }
}

/// The fast encoder must not be used with NFKC (it composes across characters): a tokenizer
/// trained without accent stripping encodes exactly as `Tokenizer::encode`.
#[test]
fn encoder_without_accent_stripping_equals_tokenizers_encode() {
    let o = NormalizerOptions {
        lowercase: true,
        strip_accents: false,
        ascii_only: true,
    };
    let lines: Vec<String> = (0..200)
        .map(|i| format!("word{i} fine caf number {i} et {}", i * 7))
        .chain(SAMPLES.iter().map(|s| s.to_string()))
        .collect();
    let tok = tokenizer::train(lines.iter(), 300, o).unwrap();
    let enc = Encoder::new(&tok).unwrap();
    assert!(!enc.has_fast_path());
    let mut cache = EncoderCache::default();
    for t in SAMPLES {
        let mut ids = Vec::new();
        enc.encode_into(t, &mut cache, &mut ids).unwrap();
        assert_eq!(ids, tok.encode(t, true).unwrap().get_ids(), "{t:?}");
    }
}
