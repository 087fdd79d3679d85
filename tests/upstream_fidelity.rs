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

fn resolve(
    text: &str,
) -> anyhow::Result<(
    crambench::model::ArchConfig,
    crambench::train::config::TrainConfig,
)> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("r.toml");
    std::fs::write(&p, text).unwrap();
    let r = crambench::recipe::Recipe::load(&p)?;
    let (a, t, _) = crambench::train::run::resolved(&r, None, None)?;
    Ok((a, t))
}

/// D2 and D8: the izsak-2021 recipe follows upstream v1 (`arch/bert-large-izsak.yaml`,
/// `train/bert-izsak.yaml` at Last1.13release): Bernoulli masking, every masked position decoded
/// (not a static round(p·B·S) rows, which dropped targets), and v1's no-decay list (v2's adds
/// `norm`).
#[test]
fn izsak_recipe_follows_v1_decoding_every_target() {
    use crambench::model::{ArchConfig, ArchKind};
    use crambench::train::masking::MaskingKind;
    let base = common::repo_root().join("baselines/izsak-2021.toml");
    for name in ["izsak-2021", "izsak-2021-tiny"] {
        let p = common::repo_root().join(format!("baselines/{name}.toml"));
        let r = crambench::recipe::Recipe::load(&p).unwrap();
        let (arch, t, _) = crambench::train::run::resolved(&r, None, None).unwrap();
        assert_eq!(arch.kind, ArchKind::Izsak);
        assert_eq!(
            (arch.sparse_prediction, arch.sparse_static),
            (Some(0.15), false),
            "{name}"
        );
        assert_eq!(t.masking, MaskingKind::V1Bernoulli, "{name}");
        assert_eq!(
            t.no_decay,
            ["bias", "LayerNorm.bias", "LayerNorm.weight"],
            "{name}"
        );
    }
    // The preset itself decodes every target.
    assert!(!ArchConfig::for_kind(ArchKind::Izsak).sparse_static);

    // More targets than round(0.15·B·S) = round(4.8) = 5: all 8 are decoded.
    tch::manual_seed(3);
    let mut arch = ArchConfig::preset("izsak-tiny").unwrap();
    arch.max_seq_len = 16;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = crambench::model::build(&vs.root(), &arch).unwrap();
    let ids = tch::Tensor::arange(32, (tch::Kind::Int64, tch::Device::Cpu)).view([2, 16]) + 7;
    let mut labels = vec![-100i64; 32];
    for (k, pos) in [0usize, 1, 2, 3, 17, 20, 25, 31].iter().enumerate() {
        labels[*pos] = 10 + k as i64;
    }
    let labels = tch::Tensor::from_slice(&labels).view([2, 16]);
    let (logits, selected) = model.mlm_logits(&ids, &labels, false);
    assert_eq!(selected.size(), [8]);
    assert_eq!(logits.size()[0], 8);
    assert_eq!(selected.ne(-100).sum(tch::Kind::Int64).int64_value(&[]), 8);

    // The combination that drops targets is refused.
    let e = resolve(&format!(
        "extends = {:?}\n[arch]\nsparse_static = true\n",
        base.display().to_string()
    ))
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("sparse_static") && msg.contains("v2"), "{msg}");
    assert!(
        matches!(
            e.downcast_ref::<crambench::error::Error>(),
            Some(crambench::error::Error::Input { .. })
        ),
        "{msg}"
    );
    // v2 masking with static rows is fine.
    resolve(&format!(
        "extends = {:?}\n[arch]\nsparse_static = true\n[train]\nmasking = \"v2\"\n",
        base.display().to_string()
    ))
    .unwrap();
}
