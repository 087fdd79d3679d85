//! The training loop's GPU-path properties that a CPU can check (issue 15 items 1–4): bf16
//! autocast runs on the CPU without a warning, no host reads on non-logging steps, the loader
//! thread delivers exactly the inline micro-batches in order (also from a resume position and
//! across the end of the data), and initial weights come from the CPU generator (a committed
//! golden digest).
mod common;

use crambench::train::loader::{prepare, BatchSpec, Loader};
use crambench::train::masking::{Masker, MaskingKind};
use crambench::train::schedule::SchedulerKind;
use crambench::train::synthetic::{BlockSource, SyntheticStream, TinyMlm};
use crambench::train::trainer::trace_host_reads;
use crambench::train::{pretrain, Pretrain, TrainConfig};
use sha2::{Digest, Sha256};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::{nn, Device, Tensor};

const VOCAB: i64 = 64;
const SEQ: usize = 16;

/// Non-logging optimizer steps read nothing from the device: every host read happens at a
/// step that is a multiple of `log_every`, or at the end.
#[test]
fn no_host_reads_on_non_logging_steps() {
    let d = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        budget: "1h".into(),
        steps: 48,
        scheduler: SchedulerKind::Constant,
        batch_size: 8,
        microbatch_size: 4,
        batch_size_ramp: 0.0,
        masking: MaskingKind::V2Exact,
        seq_len: SEQ,
        checkpoint_every_minutes: 0.0,
        log_every: 5,
        ..TrainConfig::default()
    };
    tch::manual_seed(5);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = TinyMlm::new(&vs.root(), VOCAB, 16, SEQ as i64);
    let data = SyntheticStream::new(SEQ, VOCAB as usize, 77);
    let loss = |ids: &Tensor, labels: &Tensor, t: bool| model.mlm_loss(ids, labels, t);
    trace_host_reads(true);
    let s = pretrain(Pretrain {
        recipe_name: "reads".into(),
        recipe_resolved: serde_json::json!({}),
        train: cfg,
        budget_hours: 1.0,
        vs: &mut vs,
        loss: &loss,
        arch_json: serde_json::json!({}),
        data: &data,
        out: d.path().join("run"),
        master_seed: 1,
        resume: false,
        device: Device::Cpu,
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        setup_seconds: 0.0,
    })
    .unwrap();
    let reads = trace_host_reads(false);
    assert_eq!(s.steps, 24);
    assert!(!reads.is_empty());
    for step in &reads {
        assert!(
            step % 5 == 0 || *step == s.steps,
            "a host read at optimizer step {step}, not a logging step: {reads:?}"
        );
    }
    // One read per logging step and one at the end.
    assert_eq!(reads.len(), 24 / 5 + 1, "{reads:?}");
    // The losses read at the syncs are all accounted for.
    assert!(s.final_mlm_loss.unwrap().is_finite());
}

/// Five blocks, so that micro-batches wrap around the end of the data.
struct FiveBlocks;

impl BlockSource for FiveBlocks {
    fn seq_len(&self) -> usize {
        SEQ
    }
    fn vocab_size(&self) -> usize {
        VOCAB as usize
    }
    fn num_blocks(&self) -> u64 {
        5
    }
    fn block(&self, i: u64, out: &mut [i64]) -> anyhow::Result<()> {
        for (k, x) in out.iter_mut().enumerate() {
            *x = 7 + ((i as i64 * 13 + k as i64 * 5) % (VOCAB - 7));
        }
        Ok(())
    }
    fn digest(&self) -> String {
        "five".into()
    }
}

/// The trainer's data path before the loader thread: blocks `position..position+B` (wrapping)
/// then the masking stream of the micro-step, written out independently of `prepare`.
fn inline_old(data: &dyn BlockSource, masker: &Masker, b: usize, k: u64, pos: u64) -> Vec<i64> {
    let mut ids = vec![0i64; b * SEQ];
    let mut labels = vec![0i64; b * SEQ];
    for r in 0..b {
        let i = (pos + r as u64) % data.num_blocks();
        data.block(i, &mut ids[r * SEQ..(r + 1) * SEQ]).unwrap();
    }
    masker.mask(&mut ids, &mut labels, SEQ, k);
    ids.extend(labels);
    ids
}

#[test]
fn loader_thread_delivers_the_inline_batches_in_order() {
    let masker = Masker {
        kind: MaskingKind::V2Exact,
        p: 0.25,
        vocab_size: VOCAB as u64,
        seed: 99,
    };
    let spec = BatchSpec {
        microbatch_size: 3,
        seq_len: SEQ,
        masker: masker.clone(),
        pin_for: None,
    };
    let synthetic = SyntheticStream::new(SEQ, VOCAB as usize, 4);
    let sources: [&dyn BlockSource; 2] = [&FiveBlocks, &synthetic];
    for data in sources {
        // From the start, and from a resumed position (micro-step 7 at block 21).
        for (k0, pos0) in [(0u64, 0u64), (7, 21)] {
            std::thread::scope(|scope| {
                let loader = Loader::spawn(scope, data, spec.clone(), k0, pos0);
                let (mut k, mut pos) = (k0, pos0);
                for _ in 0..12 {
                    let b = loader.next().unwrap();
                    assert_eq!(b.micro_step, k);
                    let mut got = Vec::<i64>::try_from(b.input_ids.flatten(0, -1)).unwrap();
                    got.extend(Vec::<i64>::try_from(b.labels.flatten(0, -1)).unwrap());
                    assert_eq!(got, inline_old(data, &masker, 3, k, pos), "micro-step {k}");
                    let inline = prepare(data, &spec, k, pos).unwrap();
                    assert!(inline.input_ids.equal(&b.input_ids));
                    assert_eq!(b.next_position, pos + 3);
                    pos = b.next_position;
                    k += 1;
                }
            });
        }
    }
}

/// `precision = "bf16"` on the CPU runs libtorch's CPU autocast (the summary says so), and
/// stderr carries no warning (tch's `autocast` calls deprecated entry points that warn on
/// every call).
#[test]
fn bf16_on_cpu_runs_autocast_without_warnings() {
    let d = tempfile::tempdir().unwrap();
    let recipe = d.path().join("bf16.toml");
    std::fs::write(
        &recipe,
        format!(
            "extends = {:?}\nname = \"tiny-bf16\"\n[train]\nsteps = 8\nprecision = \"bf16\"\nbudget = \"1h\"\n",
            common::repo_root()
                .join("baselines/crammed-bert-tiny.toml")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    let args = [
        "pretrain",
        recipe.to_str().unwrap(),
        "--out",
        "run",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--synthetic",
    ];
    let (code, stdout, stderr) = common::run_in(d.path(), &[&args[..], &["--json"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s["precision"]["precision"], "bf16", "{stdout}");
    assert_eq!(s["precision"]["autocast"], "cpu", "{stdout}");
    for line in stderr.lines() {
        let l = line.to_lowercase();
        assert!(
            !l.contains("warn") && !l.contains("deprecated"),
            "stderr has a warning: {line}"
        );
    }
    // Without --json the run says what precision it trains in.
    let d2 = tempfile::tempdir().unwrap();
    std::fs::copy(&recipe, d2.path().join("bf16.toml")).unwrap();
    let mut args2 = args;
    let r2 = d2.path().join("bf16.toml");
    args2[1] = r2.to_str().unwrap();
    let (code, _, stderr) = common::run_in(d2.path(), &args2);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("precision bf16: cpu autocast"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("warn"), "{stderr}");
}

/// sha256 over (name, shape, f32 bytes) of every variable, sorted by name.
fn init_digest(vs: &nn::VarStore) -> String {
    let mut vars = vs.variables().into_iter().collect::<Vec<_>>();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, t) in vars {
        h.update(name.as_bytes());
        h.update(format!("{:?}", t.size()).as_bytes());
        let v = Vec::<f32>::try_from(t.to_device(Device::Cpu).flatten(0, -1)).unwrap();
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// The initial weights of a seed are the CPU generator's on every device
/// (`model::build_on`): their digest is a committed golden, and the tied decoder has no
/// variable of its own. (On a GPU machine the same test with `--device cuda` must give the
/// same digest; scripts/gpu-check.sh runs that.)
#[test]
fn initial_weights_match_the_committed_golden() {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::repo_root().join("tests/golden/init_digest.json")).unwrap(),
    )
    .unwrap();
    let device = match std::env::var("CRAMBENCH_INIT_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    };
    for preset in ["crammed-bert-tiny", "bert-c5-tiny"] {
        let cfg = crambench::model::ArchConfig::preset(preset).unwrap();
        tch::manual_seed(1234);
        let (vs, _model) = crambench::model::build_on(&cfg, device).unwrap();
        assert_eq!(vs.device(), device);
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert_eq!(
            names.iter().any(|n| n == "decoder.weight"),
            !cfg.tie_weights,
            "{preset}"
        );
        let got = init_digest(&vs);
        if std::env::var_os("CRAMBENCH_PRINT_GOLDEN").is_some() {
            eprintln!("\"{preset}\": \"{got}\"");
        }
        assert_eq!(
            golden[preset].as_str(),
            Some(got.as_str()),
            "{preset}: initial weights changed"
        );
    }
}
