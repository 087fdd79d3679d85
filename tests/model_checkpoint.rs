//! Checkpoints written with `VarStore::save("model.safetensors")` load onto the PyTorch reference
//! model under the reference's state-dict names and give the same loss. Needs `.venv-torch`
//! (scripts/torchenv.sh, a full PyTorch); skipped without it unless CRAMBENCH_REQUIRE_TORCH=1 (as `make test` sets) — the committed goldens
//! (model_conformance.rs) are the hard requirement and need no Python.
mod common;

use crambench::model::{self, ArchConfig};
use std::process::Command;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn torch_python() -> Option<std::path::PathBuf> {
    let py = common::repo_root().join(".venv-torch/bin/python");
    if py.exists() {
        Some(py)
    } else if std::env::var("CRAMBENCH_REQUIRE_TORCH").as_deref() == Ok("1") {
        panic!(
            "{} is missing: run scripts/torchenv.sh (make test does)",
            py.display()
        );
    } else {
        eprintln!("SKIPPED: {} missing; run scripts/torchenv.sh", py.display());
        None
    }
}

fn roundtrip(preset: &str) {
    let Some(py) = torch_python() else { return };
    tch::manual_seed(7);
    let cfg = ArchConfig::preset(preset).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let m = model::build(&vs.root(), &cfg).unwrap();
    let (b, s) = (2, 32);
    let ids = Tensor::randint(cfg.vocab_size, [b, s], (Kind::Int64, Device::Cpu));
    // Exactly round(p·S) targets per row when the arch selects a static count.
    let per_row = ((cfg.sparse_prediction.unwrap_or(0.25) * s as f64).round() as i64).max(1);
    let labels = Tensor::full([b, s], -100, (Kind::Int64, Device::Cpu));
    labels
        .narrow(1, 0, per_row)
        .copy_(&ids.narrow(1, 0, per_row));
    let loss = tch::no_grad(|| m.mlm_loss(&ids, &labels, false)).double_value(&[]);

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("model.safetensors");
    vs.save(&ckpt).unwrap();
    let batch = dir.path().join("batch.safetensors");
    Tensor::write_safetensors(&[("input_ids", &ids), ("labels", &labels)], &batch).unwrap();
    let arch = dir.path().join("arch.json");
    std::fs::write(&arch, serde_json::to_vec(&cfg).unwrap()).unwrap();

    let script = common::repo_root().join("reference/pytorch/load_checkpoint.py");
    let out = Command::new(py)
        .arg(script)
        .arg(&arch)
        .arg(&ckpt)
        .arg(&batch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{preset}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let py_loss = v["loss"].as_f64().unwrap();
    assert!(
        (py_loss - loss).abs() <= 1e-5 * loss.abs(),
        "{preset}: tch loss {loss}, reference loss on the loaded checkpoint {py_loss}"
    );
}

#[test]
fn crammed_bert_checkpoint_loads_in_reference() {
    roundtrip("crammed-bert-tiny");
}

#[test]
fn bert_c5_checkpoint_loads_in_reference() {
    roundtrip("bert-c5-tiny");
}

#[test]
fn bert_original_checkpoint_loads_in_reference() {
    roundtrip("bert-original-tiny");
}

#[test]
fn izsak_checkpoint_loads_in_reference() {
    roundtrip("izsak-tiny");
}
