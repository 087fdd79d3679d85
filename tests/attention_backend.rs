//! The attention backend (issue #15 item 7): `--attention` / `train.attention` for pretraining,
//! libtorch's switches behind it, and `bench conformance` against the goldens on the CPU.
//! (GLUE's `--attention` is tested in glue_finetune.rs.) The switches are process-wide, so the
//! test that sets them in-process lives in this binary of its own.
mod common;

use crambench::model::attention::{self, AttentionBackend, Probe};
use tch::{Device, Kind};

fn tiny() -> String {
    common::repo_root()
        .join("baselines/crammed-bert-tiny.toml")
        .display()
        .to_string()
}

#[test]
fn switches_follow_the_backend_and_auto_restores_libtorchs_defaults() {
    let defaults = attention::current();
    let f = attention::select(AttentionBackend::Math);
    assert_eq!(f, attention::current());
    assert!(f.math && !f.flash && !f.mem_efficient && !f.cudnn, "{f:?}");
    let f = attention::select(AttentionBackend::Flash);
    assert!(f.flash && !f.math, "{f:?}");
    assert_eq!(attention::select(AttentionBackend::Auto), defaults);
    // On the CPU: math and libtorch's flash kernel run; the CUDA-only kernels are named errors.
    let probe = Probe {
        device: Device::Cpu,
        kind: Kind::Float,
        heads: 4,
        head_dim: 16,
        masked: true,
        backward: true,
        dropout: 0.0,
    };
    for b in [
        AttentionBackend::Auto,
        AttentionBackend::Math,
        AttentionBackend::Flash,
    ] {
        attention::check(b, &probe, "t").unwrap_or_else(|e| panic!("{b}: {e}"));
    }
    for b in [AttentionBackend::Efficient, AttentionBackend::Cudnn] {
        let e = attention::check(b, &probe, "recipe.toml: train.attention").unwrap_err();
        assert_eq!(
            crambench::error::exit_code_of(&e),
            crambench::ExitCode::BadInput
        );
        let m = e.to_string();
        assert!(m.starts_with("recipe.toml: train.attention: "), "{m}");
        assert!(m.contains(&format!("`{b}` cannot run on the CPU")), "{m}");
    }
    attention::select(AttentionBackend::Auto);
}

#[test]
fn pretrain_refuses_an_unsupported_backend_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = common::run_in(
        d.path(),
        &[
            "pretrain",
            &tiny(),
            "--synthetic",
            "--budget",
            "2s",
            "--out",
            "run",
            "--device",
            "cpu",
            "--attention",
            "cudnn",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--attention"), "{err}");
    assert!(err.contains("`cudnn` cannot run on the CPU"), "{err}");
    assert!(!d.path().join("run").exists(), "nothing was written");
    let (code, _, err) = common::run_in(
        d.path(),
        &["pretrain", &tiny(), "--synthetic", "--attention", "fast"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("auto, flash, efficient, cudnn, math"), "{err}");
    // The recipe key, named by file and key.
    let r = d.path().join("r.toml");
    std::fs::write(
        &r,
        format!(
            "extends = {:?}\nname = \"r\"\n[train]\nattention = \"efficient\"\n",
            tiny()
        ),
    )
    .unwrap();
    let (code, _, err) = common::run_in(
        d.path(),
        &[
            "pretrain",
            r.to_str().unwrap(),
            "--synthetic",
            "--out",
            "run2",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train.attention"), "{err}");
}

#[test]
fn pretrain_with_math_attention_records_it() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = common::run_in(
        d.path(),
        &[
            "pretrain",
            &tiny(),
            "--synthetic",
            "--budget",
            "2s",
            "--out",
            "run",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--attention",
            "math",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(s["steps"].as_u64().unwrap() > 0, "{s}");
    // The flag becomes part of the resolved recipe the checkpoints are pinned to.
    let recipe = crambench::recipe::Recipe::load(std::path::Path::new(&tiny())).unwrap();
    let (_, _, mut resolved) = crambench::train::run::resolved(&recipe, Some("2s"), None).unwrap();
    let auto = crambench::recipe::resolved_sha256(&resolved).unwrap();
    resolved["train"]["attention"] = serde_json::json!("math");
    let math = crambench::recipe::resolved_sha256(&resolved).unwrap();
    assert_ne!(auto, math);
    assert_eq!(s["recipe_sha256"], math.as_str(), "{s}");
}

#[test]
fn conformance_on_the_cpu_passes_against_the_goldens() {
    let (code, out, err) = common::run_in(
        &common::repo_root(),
        &[
            "bench",
            "conformance",
            "--device",
            "cpu",
            "--attention",
            "auto,math,efficient",
            "--precision",
            "fp32",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}\n{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["pass"], true);
    assert_eq!(r["failed"], 0);
    let cases = r["cases"].as_array().unwrap();
    // Five goldens x three backends x (unmasked, masked).
    assert_eq!(cases.len(), 30);
    for c in cases {
        let b = c["attention"].as_str().unwrap();
        let status = c["status"].as_str().unwrap();
        if b == "efficient" {
            assert_eq!(status, "unsupported", "{c}");
        } else {
            assert_eq!(status, "pass", "{c}");
            for e in c["errors"].as_array().unwrap() {
                assert!(e[1].as_f64().unwrap() <= 1e-4, "{c}");
            }
        }
    }
}
