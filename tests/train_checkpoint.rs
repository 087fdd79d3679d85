//! Checkpoints and resume through the library: a stopped-and-resumed run ends bit-identical to
//! an uninterrupted one (also when stopped in the middle of a gradient accumulation), damaged or
//! half-written checkpoints are refused, and a run directory is never silently reused.
use crambench::train::checkpoint::{self, checkpoints_dir};
use crambench::train::masking::MaskingKind;
use crambench::train::schedule::SchedulerKind;
use crambench::train::synthetic::{SyntheticStream, TinyMlm};
use crambench::train::{pretrain, Pretrain, PretrainSummary, StopReason, TrainConfig};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{nn, Device, Tensor};

const VOCAB: i64 = 64;
const SEQ: usize = 16;

/// libtorch's generator is global to the process and the tests run on parallel threads: each
/// test holds this for its whole length, so that its seeded trainings are reproducible.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(steps: u64, batch_size: u64) -> TrainConfig {
    TrainConfig {
        budget: "1h".into(),
        steps,
        scheduler: SchedulerKind::Constant,
        batch_size,
        microbatch_size: 4,
        batch_size_ramp: 0.0,
        masking: MaskingKind::V2Exact,
        seq_len: SEQ,
        checkpoint_every_minutes: 0.0,
        log_every: 1,
        loss_window: 8,
        ..TrainConfig::default()
    }
}

/// Run (or resume) a tiny training in `out`; `stop_after` sets the stop flag after that many
/// forward passes (as SIGTERM would).
fn run(
    out: &Path,
    cfg: &TrainConfig,
    resume: bool,
    stop_after: Option<usize>,
) -> (anyhow::Result<PretrainSummary>, Vec<f32>) {
    tch::manual_seed(5);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = TinyMlm::new(&vs.root(), VOCAB, 16, SEQ as i64);
    let data = SyntheticStream::new(SEQ, VOCAB as usize, 77);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Cell::new(0usize);
    let loss = |ids: &Tensor, labels: &Tensor, t: bool| {
        calls.set(calls.get() + 1);
        if Some(calls.get()) == stop_after {
            stop.store(true, Ordering::SeqCst);
        }
        model.mlm_loss(ids, labels, t)
    };
    let r = pretrain(Pretrain {
        recipe_name: "tiny-test".into(),
        recipe_resolved: serde_json::to_value(cfg).unwrap(),
        train: cfg.clone(),
        budget_hours: 1.0,
        vs: &mut vs,
        loss: &loss,
        arch_json: serde_json::json!({"stand_in": "TinyMlm"}),
        data: &data,
        out: out.to_path_buf(),
        master_seed: 1234,
        resume,
        device: Device::Cpu,
        progress: false,
        stop: stop.clone(),
        setup_seconds: 0.0,
    });
    let w = vs.variables()["encoder.layers.0.ffn.dense_in.weight"].shallow_clone();
    (r, Vec::<f32>::try_from(w.flatten(0, -1)).unwrap())
}

fn resume_is_exact(batch_size: u64, stop_after: usize) {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(24, batch_size);
    let (a, wa) = run(&d.path().join("a"), &cfg, false, None);
    let a = a.unwrap();
    assert_eq!(a.stop_reason, StopReason::Steps);
    assert_eq!(a.micro_steps, 24);

    let (b1, _) = run(&d.path().join("b"), &cfg, false, Some(stop_after));
    let b1 = b1.unwrap();
    assert_eq!(b1.stop_reason, StopReason::Signal);
    let per_step = batch_size / 4;
    assert_eq!(
        b1.micro_steps,
        (stop_after as u64 / per_step) * per_step,
        "checkpoint at the last optimizer step"
    );
    let (b2, wb) = run(&d.path().join("b"), &cfg, true, None);
    let b2 = b2.unwrap();
    assert_eq!(b2.stop_reason, StopReason::Steps);
    assert_eq!(b2.micro_steps, 24);
    assert_eq!(b2.tokens_seen, a.tokens_seen);
    assert!(b2.resumed_from.is_some());
    assert!(
        b2.budget.used_device_hours >= b1.budget.used_device_hours,
        "elapsed budget carried over"
    );
    assert_eq!(
        wa, wb,
        "resumed run must end bit-identical to the uninterrupted one"
    );
    assert_eq!(a.final_mlm_loss, b2.final_mlm_loss);
}

#[test]
fn resume_after_stop_is_bit_identical() {
    let _serial = serial();
    resume_is_exact(4, 10);
}

#[test]
fn resume_after_stop_mid_accumulation_replays_the_partial_step() {
    let _serial = serial();
    resume_is_exact(8, 11);
}

#[test]
fn identical_trainings_give_identical_checkpoint_digests() {
    let _serial = serial();
    // Same recipe, seed, data and step count: weights, optimizer state and counters are
    // bit-identical, and so must be the checkpoint's dirHash (the run manifest's checkpoint
    // subject). Wall-clock time differs between the two and lives outside the directory.
    let d = tempfile::tempdir().unwrap();
    let cfg = config(8, 4);
    let mut digests = Vec::new();
    for name in ["a", "b"] {
        let out = d.path().join(name);
        run(&out, &cfg, false, None).0.unwrap();
        let ck = checkpoint::load_latest(&out)
            .unwrap()
            .expect("a checkpoint");
        assert!(ck.state.elapsed_s > 0.0, "the budget used is still known");
        let h = crambench::provenance::hash::hash_dir(&ck.dir, &|_| {}).unwrap();
        digests.push((h.dir_hash, h.entries));
    }
    assert_eq!(digests[0], digests[1]);
    // The clock is bound to its checkpoint: another checkpoint's clock file is refused.
    let a = checkpoint::load_latest(&d.path().join("a"))
        .unwrap()
        .unwrap();
    let clock = checkpoint::clock_path(&a.dir);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&clock).unwrap()).unwrap();
    v["meta_sha256"] = serde_json::Value::from("0".repeat(64));
    std::fs::write(&clock, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = checkpoint::load_latest(&d.path().join("a")).err().unwrap();
    assert!(format!("{e:#}").contains("another checkpoint"), "{e:#}");
    std::fs::remove_file(&clock).unwrap();
    let e = checkpoint::load_latest(&d.path().join("a")).err().unwrap();
    assert!(format!("{e:#}").contains("no clock file"), "{e:#}");
}

#[test]
fn damaged_checkpoint_and_reused_out_dir_are_refused() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let cfg = config(6, 4);
    run(&out, &cfg, false, None).0.unwrap();
    let ck = checkpoint::load_latest(&out)
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(ck.state.micro_step, 6);
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "arch.json",
        "meta.json",
    ] {
        assert!(ck.dir.join(f).is_file(), "{f}");
    }

    // Same directory without --resume: refused.
    let e = run(&out, &cfg, false, None).0.unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");

    // A different recipe cannot resume this run.
    let e = run(&out, &config(7, 4), true, None)
        .0
        .unwrap_err()
        .to_string();
    assert!(e.contains("recipe"), "{e}");

    // A leftover temp dir (crash while writing) is not a checkpoint.
    let tmp = checkpoints_dir(&out).join(".tmp-ckpt-0000000099-1");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"half").unwrap();
    assert_eq!(
        checkpoint::load_latest(&out)
            .unwrap()
            .unwrap()
            .state
            .micro_step,
        6
    );

    // A checkpoint without meta.json is refused.
    let stray = checkpoints_dir(&out).join("ckpt-0000000100");
    std::fs::create_dir_all(&stray).unwrap();
    assert!(checkpoint::load_dir(&stray).is_err());

    // Flip one byte of the weights: the digest check refuses it.
    let model = ck.dir.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&model, bytes).unwrap();
    let e = checkpoint::load_latest(&out)
        .err()
        .expect("damaged checkpoint refused")
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("damaged"),
        "{e}"
    );
    let e = run(&out, &cfg, true, None).0.unwrap_err().to_string();
    assert!(e.contains("damaged"), "{e}");
}

#[test]
fn persistent_nonfinite_loss_aborts_naming_the_step() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        nonfinite_patience: 3,
        ..config(50, 4)
    };
    tch::manual_seed(5);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = TinyMlm::new(&vs.root(), VOCAB, 16, SEQ as i64);
    let data = SyntheticStream::new(SEQ, VOCAB as usize, 77);
    let calls = Cell::new(0usize);
    let loss = |ids: &Tensor, labels: &Tensor, t: bool| {
        calls.set(calls.get() + 1);
        let l = model.mlm_loss(ids, labels, t);
        if calls.get() > 5 {
            l * f64::NAN
        } else {
            l
        }
    };
    let e = pretrain(Pretrain {
        recipe_name: "nan".into(),
        recipe_resolved: serde_json::json!({}),
        train: cfg.clone(),
        budget_hours: 1.0,
        vs: &mut vs,
        loss: &loss,
        arch_json: serde_json::json!({}),
        data: &data,
        out: d.path().join("nan"),
        master_seed: 1,
        resume: false,
        device: Device::Cpu,
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        setup_seconds: 0.0,
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("non-finite") && msg.contains("micro-step 7"),
        "{msg}"
    );
    assert_eq!(
        crambench::error::exit_code_of(&e),
        crambench::ExitCode::CheckFailed
    );
}

#[test]
fn summary_predicates_match_the_manifest_schema() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let (s, _) = run(&d.path().join("run"), &config(8, 4), false, None);
    let s = s.unwrap();
    let schema_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/schema/crambench-manifest-v0.1.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(schema_path).unwrap()).unwrap();
    for (def, value) in [
        ("pretraining", s.predicate_pretraining()),
        ("budget", s.predicate_budget()),
    ] {
        let sub = serde_json::json!({"$defs": schema["$defs"], "$ref": format!("#/$defs/{def}")});
        let v = jsonschema::validator_for(&sub).unwrap();
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{def}: {errors:?}\n{value}");
    }
    assert_eq!(s.predicate_pretraining()["steps"], 8);
    assert_eq!(s.predicate_pretraining()["tokens_seen"], 8 * 4 * SEQ as u64);
    assert!(s.predicate_budget()["used_device_hours"].as_f64().unwrap() > 0.0);
}
