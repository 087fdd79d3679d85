//! `crambench checkpoint import|export` against checkpoints made by upstream cramming's own code
//! and by `transformers` (tests/fixtures/checkpoints/, written by
//! reference/upstream/make_fixtures.py; each fixture's expected.json names the commit or library
//! version that made it and the loss upstream / transformers computed on its batch).
//!
//! Import: crambench's loss on the imported checkpoint equals the source's within 1e-5 (the
//! batch's token ids go through the id remap import.json records). Export: the Python side
//! (transformers for hf-bert, the project's reference for cramming; upstream's own code is not
//! in a fresh clone) loads the exported directory and gets crambench's loss within 1e-5; needs
//! `.venv-torch` with transformers (scripts/torchenv.sh), skipped without it unless
//! CRAMBENCH_REQUIRE_TORCH=1.
mod common;

use crambench::model::{self, ArchConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    common::repo_root()
        .join("tests/fixtures/checkpoints")
        .join(name)
}

fn import(src: &str, out: &Path) -> serde_json::Value {
    let (code, stdout, stderr) = common::run_in(
        &common::repo_root(),
        &[
            "checkpoint",
            "import",
            src,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "import {src}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Map source token ids to crambench's with import.json's `token_id_map`.
fn remap(t: &Tensor, rec: &serde_json::Value) -> Tensor {
    let map = rec["token_id_map"].as_object().unwrap();
    let v: Vec<i64> = Vec::<i64>::try_from(t.reshape([-1])).unwrap();
    let mapped: Vec<i64> = v
        .iter()
        .map(|&x| {
            if x < 0 {
                x
            } else {
                map.get(&x.to_string())
                    .map(|n| n.as_i64().unwrap())
                    .unwrap_or(x)
            }
        })
        .collect();
    Tensor::from_slice(&mapped).reshape(t.size())
}

fn load_batch(dir: &Path) -> (Tensor, Tensor) {
    let t: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("batch.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    (t["input_ids"].shallow_clone(), t["labels"].shallow_clone())
}

fn expected_loss(dir: &Path) -> f64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    v["loss"].as_f64().unwrap()
}

/// crambench's loss on a checkpoint directory (as `glue run` loads it: verified, then built
/// from arch.json and model.safetensors).
fn crambench_loss(ckpt: &Path, ids: &Tensor, labels: &Tensor) -> f64 {
    crambench::train::checkpoint::verify_files(ckpt).unwrap();
    let cfg: ArchConfig =
        serde_json::from_slice(&std::fs::read(ckpt.join("arch.json")).unwrap()).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let m = model::build(&vs.root(), &cfg).unwrap();
    vs.load(ckpt.join("model.safetensors")).unwrap();
    tch::no_grad(|| m.mlm_loss(ids, labels, false)).double_value(&[])
}

fn check_import(name: &str) -> (PathBuf, tempfile::TempDir, Tensor, Tensor, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ckpt");
    let src = fixture(name);
    let rec = import(src.to_str().unwrap(), &out);
    let (ids, labels) = load_batch(&src);
    let (ids, labels) = (remap(&ids, &rec), remap(&labels, &rec));
    let loss = crambench_loss(&out, &ids, &labels);
    let want = expected_loss(&src);
    eprintln!("{name}: crambench loss {loss} after import, source loss {want}");
    assert!(
        (loss - want).abs() <= 1e-5 * want.abs(),
        "{name}: imported loss {loss}, source loss {want}"
    );
    // The import is a checkpoint GLUE fine-tuning takes, and it records its source.
    let ck = crambench::glue::finetune::Checkpoint::load(&out).unwrap();
    assert!(
        ck.files.iter().any(|f| f.path.starts_with("source:")),
        "{name}: the checkpoint's files name no source: {:?}",
        ck.files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    let (meta, _) = crambench::train::checkpoint::verify_files(&out).unwrap();
    assert!(meta.files.contains_key("import.json"));
    (out, tmp, ids, labels, loss)
}

#[test]
fn import_upstream_v2_local_save() {
    let (_, _t, ..) = check_import("upstream-v2-local");
}

#[test]
fn import_upstream_v2_hub_layout() {
    let (_, _t, ..) = check_import("upstream-v2-hub");
}

#[test]
fn import_upstream_v1_hub_layout() {
    let (_, _t, ..) = check_import("upstream-v1-hub");
}

#[test]
fn import_hf_bert() {
    let (_, _t, ..) = check_import("hf-bert");
}

#[test]
fn special_tokens_move_to_fixed_ids() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["upstream-v2-hub", "hf-bert"] {
        let out = tmp.path().join(name);
        import(fixture(name).to_str().unwrap(), &out);
        let tok = crambench::data::tokenizer::load_tokenizer(&out.join("tokenizer.json")).unwrap();
        for (i, t) in crambench::data::tokenizer::special::TOKENS
            .iter()
            .enumerate()
        {
            assert_eq!(tok.token_to_id(t), Some(i as u32), "{name}: {t}");
        }
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn untranslatable_config_fields_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (fixture_name, file, pointer, value, field) in [
        (
            "upstream-v2-local",
            "model_config.json",
            "/attention/rotary_embedding",
            serde_json::json!(true),
            "arch.attention.rotary_embedding",
        ),
        (
            "upstream-v2-hub",
            "config.json",
            "/arch/nonlin",
            serde_json::json!("ReLUglu"),
            "arch.nonlin",
        ),
        (
            "hf-bert",
            "config.json",
            "/hidden_act",
            serde_json::json!("relu"),
            "config.hidden_act",
        ),
        (
            "hf-bert",
            "config.json",
            "/position_embedding_type",
            serde_json::json!("relative_key"),
            "config.position_embedding_type",
        ),
    ] {
        let src = tmp.path().join(format!("src-{field}"));
        copy_dir(&fixture(fixture_name), &src);
        let path = src.join(file);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        *v.pointer_mut(pointer).unwrap() = value;
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let out = tmp.path().join(format!("out-{field}"));
        let (code, _, stderr) = common::run_in(
            &common::repo_root(),
            &[
                "checkpoint",
                "import",
                src.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 2, "{field}: {stderr}");
        assert!(
            stderr.contains(field) && stderr.contains(file),
            "{field}: {stderr}"
        );
        assert!(
            !out.exists(),
            "{field}: a failed import left {}",
            out.display()
        );
    }
}

#[test]
fn untied_decoder_in_a_tied_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_dir(&fixture("upstream-v2-local"), &src);
    let w = src.join("model.safetensors");
    let mut t: Vec<(String, Tensor)> = Tensor::read_safetensors(&w).unwrap();
    for (k, v) in t.iter_mut() {
        if k == "decoder.weight" {
            *v = &*v + 0.01;
        }
    }
    Tensor::write_safetensors(&t, &w).unwrap();
    let out = tmp.path().join("out");
    let (code, _, stderr) = common::run_in(
        &common::repo_root(),
        &[
            "checkpoint",
            "import",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("decoder.weight") && stderr.contains("ties"),
        "{stderr}"
    );
}

#[test]
fn hub_source_resolves_through_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--JonasGeiping--crammed-bert");
    copy_dir(
        &fixture("upstream-v2-hub"),
        &repo.join("snapshots").join(commit),
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let out = tmp.path().join("ckpt");
    let (code, stdout, stderr) = common::run_in_env(
        &common::repo_root(),
        &[("HF_HUB_CACHE", cache.to_str().unwrap())],
        &[
            "checkpoint",
            "import",
            "hf:JonasGeiping/crammed-bert",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let rec: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        rec["source"],
        format!("hf:JonasGeiping/crammed-bert@{commit}")
    );
    // A repository the cache does not hold: exit 2 saying what to download.
    let (code, _, stderr) = common::run_in_env(
        &common::repo_root(),
        &[("HF_HUB_CACHE", cache.to_str().unwrap())],
        &[
            "checkpoint",
            "import",
            "hf:JonasGeiping/crammed-bert-legacy",
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("huggingface-cli download"), "{stderr}");
}

fn torch_python() -> Option<PathBuf> {
    let py = common::repo_root().join(".venv-torch/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import transformers"])
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        Some(py)
    } else if std::env::var("CRAMBENCH_REQUIRE_TORCH").as_deref() == Ok("1") {
        panic!(
            "{} with transformers is missing: run scripts/torchenv.sh (make test does)",
            py.display()
        );
    } else {
        eprintln!(
            "SKIPPED: {} with transformers missing; run scripts/torchenv.sh",
            py.display()
        );
        None
    }
}

fn python_loss(py: &Path, args: &[&str]) -> f64 {
    let script = common::repo_root().join("reference/upstream/check_export.py");
    let out = Command::new(py).arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "check_export.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("check_export.py: {v}");
    v["loss"].as_f64().unwrap()
}

fn export(ckpt: &Path, format: &str, out: &Path) -> (i32, String) {
    let (code, _, stderr) = common::run_in(
        &common::repo_root(),
        &[
            "checkpoint",
            "export",
            ckpt.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    (code, stderr)
}

fn export_round_trip(fixture_name: &str, format: &str) {
    let (ckpt, tmp, ids, labels, loss) = check_import(fixture_name);
    let Some(py) = torch_python() else { return };
    let out = tmp.path().join(format!("export-{format}"));
    let (code, stderr) = export(&ckpt, format, &out);
    assert_eq!(code, 0, "{stderr}");
    let batch = tmp.path().join("batch.safetensors");
    Tensor::write_safetensors(
        &[
            ("input_ids", &ids.to_kind(Kind::Int64)),
            ("labels", &labels.to_kind(Kind::Int64)),
        ],
        &batch,
    )
    .unwrap();
    let arch = ckpt.join("arch.json");
    let mut args = vec![format, out.to_str().unwrap(), batch.to_str().unwrap()];
    if format == "cramming" {
        args.extend(["--reference", arch.to_str().unwrap()]);
    }
    let py_loss = python_loss(&py, &args);
    eprintln!("{fixture_name} -> {format}: crambench loss {loss}, Python loss {py_loss}");
    assert!(
        (py_loss - loss).abs() <= 1e-5 * loss.abs(),
        "{fixture_name} -> {format}: crambench {loss}, Python {py_loss}"
    );
    // And back: importing the export gives crambench's loss again.
    let back = tmp.path().join("back");
    let rec = import(out.to_str().unwrap(), &back);
    let again = crambench_loss(&back, &remap(&ids, &rec), &remap(&labels, &rec));
    assert!(
        (again - loss).abs() <= 1e-5 * loss.abs(),
        "{fixture_name} -> {format} -> import: {again} vs {loss}"
    );
}

#[test]
fn export_hf_bert_loads_in_transformers() {
    export_round_trip("hf-bert", "hf-bert");
}

#[test]
fn export_cramming_loads_in_reference() {
    export_round_trip("upstream-v2-hub", "cramming");
}

#[test]
fn export_refuses_what_the_format_cannot_express() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("c5");
    import(fixture("upstream-v1-hub").to_str().unwrap(), &ckpt);
    let (code, stderr) = export(&ckpt, "cramming", &tmp.path().join("o1"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("arch.json: arch.qkv_layout"), "{stderr}");
    let (code, stderr) = export(&ckpt, "hf-bert", &tmp.path().join("o2"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("arch.json: arch.norm"), "{stderr}");
}

#[test]
fn glue_run_takes_an_imported_checkpoint_and_names_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    let rec = import(fixture("upstream-v2-hub").to_str().unwrap(), &ckpt);
    let recipe = tmp.path().join("r.toml");
    std::fs::write(
        &recipe,
        "[glue]\nbatch_size = 2\nepochs = 1\ntrials = 1\nmax_seq_len = 16\nhead_dim = 32\n",
    )
    .unwrap();
    let out = tmp.path().join("glue");
    let data = common::repo_root().join("tests/fixtures/glue/tsv");
    let (code, stdout, stderr) = common::run_in_env(
        tmp.path(),
        &[("OMP_NUM_THREADS", "1")],
        &[
            "glue",
            "run",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--tasks",
            "rte",
            "--data",
            data.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
            "--seed",
            "3",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["tasks"]["rte"]["metrics"]["accuracy"].is_number(), "{v}");
    let files: Vec<String> = v["checkpoint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let source = rec["source"].as_str().unwrap();
    for want in [
        "import.json",
        &format!("source:{source}/model.safetensors"),
        &format!("source:{source}/config.json"),
    ] {
        assert!(files.iter().any(|f| f == want), "{want} not in {files:?}");
    }
}

/// A checkpoint crambench itself made (random weights of a preset, the tokenizer of an
/// imported fixture), sealed as `glue run` expects.
fn native_checkpoint(dir: &Path, preset: &str) -> (PathBuf, ArchConfig) {
    native_checkpoint_with(dir, preset, |_| {})
}

fn native_checkpoint_with(
    dir: &Path,
    preset: &str,
    edit: impl Fn(&mut ArchConfig),
) -> (PathBuf, ArchConfig) {
    let imported = dir.join("imported");
    if !imported.exists() {
        import(fixture("upstream-v2-hub").to_str().unwrap(), &imported);
    }
    let ck = dir.join(preset);
    std::fs::create_dir_all(&ck).unwrap();
    tch::manual_seed(11);
    let mut cfg = ArchConfig::preset(preset).unwrap();
    edit(&mut cfg);
    let vs = VarStore::new(Device::Cpu);
    model::build(&vs.root(), &cfg).unwrap();
    // Move LayerNorms and biases off their init so every tensor's mapping matters.
    tch::no_grad(|| {
        for (_, v) in vs.variables() {
            if v.requires_grad() {
                let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.05));
            }
        }
    });
    vs.save(ck.join("model.safetensors")).unwrap();
    std::fs::write(
        ck.join("arch.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    std::fs::copy(imported.join("tokenizer.json"), ck.join("tokenizer.json")).unwrap();
    crambench::train::checkpoint::seal(&ck, 0).unwrap();
    (ck, cfg)
}

fn native_export(preset: &str, format: &str) {
    native_export_with(preset, format, |_| {})
}

fn native_export_with(preset: &str, format: &str, edit: impl Fn(&mut ArchConfig)) {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, cfg) = native_checkpoint_with(tmp.path(), preset, edit);
    let Some(py) = torch_python() else { return };
    let (b, s) = (2, 16);
    let ids = Tensor::randint(90, [b, s], (Kind::Int64, Device::Cpu)) + 7;
    let labels = Tensor::full([b, s], -100, (Kind::Int64, Device::Cpu));
    // Exactly round(p·B·S) targets for a static row count.
    let n = ((cfg.sparse_prediction.unwrap_or(0.25) * (b * s) as f64).round()) as i64;
    labels
        .view([-1])
        .narrow(0, 0, n)
        .copy_(&ids.view([-1]).narrow(0, 0, n));
    let loss = crambench_loss(&ck, &ids, &labels);
    let out = tmp.path().join("export");
    let (code, stderr) = export(&ck, format, &out);
    assert_eq!(code, 0, "{stderr}");
    let batch = tmp.path().join("batch.safetensors");
    Tensor::write_safetensors(&[("input_ids", &ids), ("labels", &labels)], &batch).unwrap();
    let arch = ck.join("arch.json");
    let mut args = vec![format, out.to_str().unwrap(), batch.to_str().unwrap()];
    if format == "cramming" {
        args.extend(["--reference", arch.to_str().unwrap()]);
    }
    let py_loss = python_loss(&py, &args);
    eprintln!("{preset} -> {format}: crambench loss {loss}, Python loss {py_loss}");
    assert!(
        (py_loss - loss).abs() <= 1e-5 * loss.abs(),
        "{preset} -> {format}: crambench {loss}, Python {py_loss}"
    );
}

#[test]
fn native_bert_original_exports_to_transformers() {
    // bert-original keeps the per-head QKV layout and a token-type table: the export splits
    // the fused projection per head.
    native_export("bert-original-tiny", "hf-bert");
}

#[test]
fn native_crammed_bert_exports_to_cramming() {
    native_export("crammed-bert-tiny", "cramming");
}

#[test]
fn native_izsak_with_static_rows_exports_to_cramming() {
    // v2's crammed-large-izsak: learned positions (the export adds upstream's position_ids
    // buffer), biases, the BERT head, a static row count.
    native_export_with("izsak-tiny", "cramming", |c| c.sparse_static = true);
}

#[test]
fn native_izsak_is_refused_by_the_cramming_format() {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, _) = native_checkpoint(tmp.path(), "izsak-tiny");
    // The izsak preset follows v1 (dynamic rows), which v2's code cannot express.
    let (code, stderr) = export(&ck, "cramming", &tmp.path().join("x"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("arch.sparse_static"), "{stderr}");
}
