//! The optimiser against an independent NumPy implementation of `torch.optim.AdamW` and
//! `torch.optim.Adam(weight_decay=…)` (coupled L2), the reference no-decay substring rule, and
//! `clip_grad_norm_`.
mod common;

use crambench::train::optim::{
    clip_coefficient, clip_grad_norm, global_grad_norm, is_no_decay, Adam, AdamConfig, FlatAdam,
    FlatKernel, OptimizerKind, StepOptions,
};
use tch::{Kind, Tensor};

const NAMES: [&str; 4] = [
    "encoder.embedding.word_embedding.weight",
    "encoder.layers.0.norm1.weight",
    "encoder.layers.0.ffn.dense_in.bias",
    "encoder.embedding.pos_embedding.scale_factor",
];

fn v2_no_decay() -> Vec<String> {
    ["bias", "LayerNorm.bias", "LayerNorm.weight", "norm"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn no_decay_rule_is_a_substring_match() {
    let v2 = v2_no_decay();
    let v1: Vec<String> = v2[..3].to_vec();
    assert!(!is_no_decay("encoder.embedding.word_embedding.weight", &v2));
    assert!(!is_no_decay(
        "encoder.embedding.pos_embedding.scale_factor",
        &v2
    ));
    assert!(is_no_decay("encoder.layers.3.norm1.weight", &v2));
    assert!(is_no_decay("encoder.final_norm.bias", &v2));
    assert!(is_no_decay("encoder.embedding.norm.weight", &v2));
    // v1: LayerNorm weights (named norm1/norm2/norm) were decayed, only biases exempt.
    assert!(!is_no_decay("encoder.layers.3.norm1.weight", &v1));
    assert!(is_no_decay("encoder.layers.3.norm1.bias", &v1));
}

/// Parameters and per-step gradients, deterministic.
fn setup() -> (Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>) {
    let shapes = [6usize, 4, 3, 1];
    let p: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            (0..n)
                .map(|i| ((i as f32 + 1.0) * 0.37 + k as f32).sin())
                .collect()
        })
        .collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..4)
        .map(|step| {
            shapes
                .iter()
                .enumerate()
                .map(|(k, &n)| {
                    (0..n)
                        .map(|i| ((i * 3 + k * 5 + step * 7) as f32 * 0.61).cos() * 0.1)
                        .collect()
                })
                .collect()
        })
        .collect();
    (p, grads)
}

fn run_rust(kind: OptimizerKind, lrs: &[f64]) -> Vec<Vec<f32>> {
    let (p0, grads) = setup();
    let params: Vec<(String, Tensor)> = NAMES
        .iter()
        .zip(&p0)
        .map(|(n, v)| (n.to_string(), Tensor::from_slice(v).set_requires_grad(true)))
        .collect();
    let handles: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut opt = Adam::new(
        AdamConfig {
            kind,
            betas: [0.9, 0.98],
            eps: 1e-6,
            weight_decay: 0.1,
            no_decay: v2_no_decay(),
        },
        params,
    );
    for (step, lr) in lrs.iter().enumerate() {
        opt.zero_grad();
        let loss = handles
            .iter()
            .zip(&grads[step])
            .map(|(p, g)| (p * Tensor::from_slice(g)).sum(Kind::Float))
            .fold(
                Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
                |a, b| a + b,
            );
        loss.backward();
        opt.step(*lr);
    }
    assert_eq!(opt.steps_taken(), lrs.len() as u64);
    handles
        .iter()
        .map(|t| Vec::<f32>::try_from(t.detach()).unwrap())
        .collect()
}

const NUMPY_ADAM: &str = r#"
import json, sys, numpy as np
d = json.loads(sys.stdin.read())
b1, b2, eps, wd = 0.9, 0.98, 1e-6, 0.1
nodecay = ["bias", "LayerNorm.bias", "LayerNorm.weight", "norm"]
out = []
for name, p in zip(d["names"], d["p0"]):
    p = np.array(p, dtype=np.float64)
    m = np.zeros_like(p); v = np.zeros_like(p)
    w = 0.0 if any(k in name for k in nodecay) else wd
    k = d["names"].index(name)
    for t, lr in enumerate(d["lrs"], start=1):
        g = np.array(d["grads"][t - 1][k], dtype=np.float64)
        if d["kind"] == "adam-l2":
            g = g + w * p
        else:
            p = p * (1 - lr * w)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps
        p = p - (lr / (1 - b1 ** t)) * m / denom
    out.append(p.tolist())
print(json.dumps(out))
"#;

fn run_numpy(py: &std::path::Path, kind: &str, lrs: &[f64]) -> Vec<Vec<f64>> {
    use std::io::Write;
    let (p0, grads) = setup();
    let input =
        serde_json::json!({"names": NAMES, "p0": p0, "grads": grads, "lrs": lrs, "kind": kind});
    let mut child = std::process::Command::new(py)
        .args(["-c", NUMPY_ADAM])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn compare(kind: OptimizerKind, name: &str) {
    let Some(py) = common::interop_python() else {
        return;
    };
    let lrs = [1e-3, 5e-3, 2e-2, 1e-2];
    let got = run_rust(kind, &lrs);
    let want = run_numpy(&py, name, &lrs);
    let (p0, _) = setup();
    for ((g, w), p) in got.iter().zip(&want).zip(&p0) {
        for ((a, b), init) in g.iter().zip(w).zip(p) {
            assert!((*a as f64 - b).abs() < 2e-6, "{name}: {a} vs {b}");
            assert!((*a - init).abs() > 1e-4, "the parameter moved");
        }
    }
}

#[test]
fn adamw_matches_numpy_reference() {
    compare(OptimizerKind::AdamW, "adamw");
}

#[test]
fn adam_coupled_l2_matches_numpy_reference() {
    compare(OptimizerKind::AdamL2, "adam-l2");
    // And the two differ (coupled vs decoupled decay).
    assert_ne!(
        run_rust(OptimizerKind::AdamW, &[1e-2; 3]),
        run_rust(OptimizerKind::AdamL2, &[1e-2; 3])
    );
}

#[test]
fn clip_grad_norm_scales_to_max_norm() {
    let a = Tensor::from_slice(&[3.0f32, 0.0]);
    let b = Tensor::from_slice(&[0.0f32, 4.0]);
    assert!((global_grad_norm(&[a.shallow_clone(), b.shallow_clone()]) - 5.0).abs() < 1e-6);
    let before = clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 0.5);
    assert!((before - 5.0).abs() < 1e-6);
    // coef = 0.5 / (5 + 1e-6)
    let coef = 0.5 / (5.0 + 1e-6);
    assert!((a.double_value(&[0]) - 3.0 * coef).abs() < 1e-7);
    assert!((b.double_value(&[1]) - 4.0 * coef).abs() < 1e-7);
    // Below the limit nothing changes.
    let c = Tensor::from_slice(&[0.1f32]);
    clip_grad_norm(&[c.shallow_clone()], 0.5);
    assert_eq!(c.double_value(&[0]), 0.1f32 as f64);
}

/// D12 of issue 13: bit for bit what `torch.nn.utils.clip_grad_norm_` (torch 2.11, CPU) does
/// to 200 random sets of gradients (`tests/golden/clip_grad_norm.safetensors`, written by
/// `reference/pytorch/clip_golden.py`), clipped and unclipped ones. An f64 clip factor (the
/// old code) differs in the last bit for about a fifth of them.
#[test]
fn clip_grad_norm_equals_torch_bit_for_bit() {
    let path = common::repo_root().join("tests/golden/clip_grad_norm.safetensors");
    let t: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    let mut clipped = 0;
    for k in 0..200 {
        let grads: Vec<Tensor> = (0..3)
            .map(|i| t[&format!("case{k}.in.{i}")].copy())
            .collect();
        let norm = clip_grad_norm(&grads, 0.5);
        let torch_norm = t[&format!("case{k}.norm")].double_value(&[0]);
        assert_eq!(norm, torch_norm, "case {k}: norm");
        if norm > 0.5 {
            clipped += 1;
        }
        for (i, g) in grads.iter().enumerate() {
            assert!(
                g.equal(&t[&format!("case{k}.out.{i}")]),
                "case {k}: gradient {i} differs from torch's clip_grad_norm_"
            );
        }
    }
    assert!((50..150).contains(&clipped), "{clipped} of 200 clipped");
}

#[test]
fn clip_coefficient_is_f32_like_torch() {
    // 0.5 / (1.3 + 1e-6) in f32 operations (torch: 0.38461512) vs in f64 then rounded
    // (0.3846151): they differ in the last bit.
    let t = 1.3f32;
    let f32_ops = (1.0f32 / (t + 1e-6f64 as f32)) * 0.5f32;
    assert_eq!(clip_coefficient(t, 0.5), f32_ops);
    assert_eq!(f32_ops, 0.384_615_12_f32);
    assert_ne!(f32_ops, (0.5 / (t as f64 + 1e-6)) as f32);
    assert_eq!(clip_coefficient(0.1, 0.5), 1.0);
    assert!(clip_coefficient(f32::NAN, 0.5).is_nan());
}

#[test]
fn optimizer_state_round_trips_through_safetensors() {
    let d = tempfile::tempdir().unwrap();
    let mk = || {
        let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let opt = Adam::new(
            AdamConfig {
                kind: OptimizerKind::AdamW,
                betas: [0.9, 0.98],
                eps: 1e-12,
                weight_decay: 0.01,
                no_decay: v2_no_decay(),
            },
            vec![("w".to_string(), p.shallow_clone())],
        );
        (p, opt)
    };
    let step = |p: &Tensor, opt: &mut Adam| {
        opt.zero_grad();
        (p * p).sum(Kind::Float).backward();
        opt.step(1e-2);
    };
    let (p1, mut o1) = mk();
    step(&p1, &mut o1);
    o1.save(&d.path().join("opt.safetensors")).unwrap();
    let (p2, mut o2) = mk();
    tch::no_grad(|| p2.shallow_clone().copy_(&p1));
    o2.load(&d.path().join("opt.safetensors"), o1.steps_taken())
        .unwrap();
    step(&p1, &mut o1);
    step(&p2, &mut o2);
    assert_eq!(
        Vec::<f32>::try_from(p1.detach()).unwrap(),
        Vec::<f32>::try_from(p2.detach()).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// The flat optimiser (issue 15 item 5) against the per-parameter one.

/// Parameters of assorted sizes (odd ones, so that elements fall on libtorch's vectorised main
/// loop and its scalar tails at different offsets than in the flat buffer), with names that
/// put them in both decay groups.
fn flat_setup(seed: i64) -> (Vec<(String, Tensor)>, Vec<Vec<Tensor>>) {
    tch::manual_seed(seed);
    let shapes: [&[i64]; 6] = [&[257, 33], &[100_003], &[7], &[31, 3], &[1], &[70_001]];
    let names = [
        "encoder.embedding.word_embedding.weight",
        "encoder.layers.0.attn.dense.weight",
        "encoder.layers.0.norm1.weight",
        "encoder.layers.0.ffn.dense_in.weight",
        "encoder.embedding.pos_embedding.scale_factor",
        "encoder.layers.0.ffn.dense_in.bias",
    ];
    let params: Vec<(String, Tensor)> = names
        .iter()
        .zip(shapes)
        .map(|(n, s)| {
            (
                n.to_string(),
                Tensor::randn(s, (Kind::Float, tch::Device::Cpu)),
            )
        })
        .collect();
    let grads = (0..6)
        .map(|_| {
            shapes
                .iter()
                .map(|s| Tensor::randn(*s, (Kind::Float, tch::Device::Cpu)) * 0.05)
                .collect()
        })
        .collect();
    (params, grads)
}

fn cfg(kind: OptimizerKind) -> AdamConfig {
    AdamConfig {
        kind,
        betas: [0.9, 0.98],
        eps: 1e-12,
        weight_decay: 0.01,
        no_decay: v2_no_decay(),
    }
}

fn leaves(params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|(n, t)| (n.clone(), t.copy().set_requires_grad(true)))
        .collect()
}

/// `Σ p·g` so that backward leaves exactly `g` in `p.grad`.
fn backward_with(handles: &[Tensor], grads: &[Tensor]) {
    handles
        .iter()
        .zip(grads)
        .map(|(p, g)| (p * g).sum(Kind::Float))
        .fold(
            Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
            |a, b| a + b,
        )
        .backward();
}

fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(t.detach().flatten(0, -1))
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// The element-wise update of both flat kernels equals the per-parameter optimiser bit for bit
/// (parameters and saved moments), for AdamW and coupled-L2 Adam, over six steps with changing
/// learning rates.
#[test]
fn flat_optimizer_updates_bit_identical_to_per_parameter() {
    for kind in [OptimizerKind::AdamW, OptimizerKind::AdamL2] {
        for kernel in [FlatKernel::Fused, FlatKernel::Tensor] {
            let (p0, grads) = flat_setup(3);
            let old_params = leaves(&p0);
            let old_handles: Vec<Tensor> =
                old_params.iter().map(|(_, t)| t.shallow_clone()).collect();
            let mut old = Adam::new(cfg(kind), old_params);
            let new_params = leaves(&p0);
            let new_handles: Vec<Tensor> =
                new_params.iter().map(|(_, t)| t.shallow_clone()).collect();
            let mut new = FlatAdam::with_kernel(cfg(kind), new_params, kernel).unwrap();
            assert_eq!(new.num_groups(), 2, "decay and no-decay groups");
            // The unchecked step (no norm, no inf check; GLUE's) takes the same update.
            let unc_params = leaves(&p0);
            let unc_handles: Vec<Tensor> =
                unc_params.iter().map(|(_, t)| t.shallow_clone()).collect();
            let mut unc = FlatAdam::with_kernel(cfg(kind), unc_params, kernel).unwrap();
            for (step, g) in grads.iter().enumerate() {
                let lr = [1e-3, 4e-3, 2e-2, 1e-2, 7e-3, 3e-3][step];
                old.zero_grad();
                backward_with(&old_handles, g);
                old.step(lr);
                new.zero_grad();
                backward_with(&new_handles, g);
                let out = new.step(lr, &StepOptions::default());
                assert!(!bool::try_from(&out.found_inf).unwrap());
                unc.zero_grad();
                backward_with(&unc_handles, g);
                unc.step_unchecked(lr);
                for (i, (a, b)) in old_handles.iter().zip(&new_handles).enumerate() {
                    assert!(
                        bits(a) == bits(b),
                        "{kind:?} {kernel:?}: parameter {i} differs after step {}",
                        step + 1
                    );
                    assert!(
                        bits(a) == bits(&unc_handles[i]),
                        "{kind:?} {kernel:?}: unchecked step: parameter {i} differs after step {}",
                        step + 1
                    );
                }
            }
            // Same moments, in the same file format.
            let d = tempfile::tempdir().unwrap();
            old.save(&d.path().join("old.safetensors")).unwrap();
            new.save(&d.path().join("new.safetensors")).unwrap();
            let read = |f: &str| -> std::collections::BTreeMap<String, Vec<u32>> {
                Tensor::read_safetensors(d.path().join(f))
                    .unwrap()
                    .into_iter()
                    .map(|(k, t)| (k, bits(&t)))
                    .collect()
            };
            assert_eq!(read("old.safetensors"), read("new.safetensors"));
        }
    }
}

/// The global gradient norm of the flat buffers equals the per-parameter one within fp32
/// rounding; clipping scales the update as `clip_grad_norm_` does.
#[test]
fn flat_grad_norm_and_clip_match_per_parameter() {
    let (p0, grads) = flat_setup(4);
    let params = leaves(&p0);
    let handles: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut flat = FlatAdam::new(cfg(OptimizerKind::AdamW), params).unwrap();
    for g in &grads {
        flat.zero_grad();
        backward_with(&handles, g);
        let want = global_grad_norm(g);
        let got = f64::try_from(flat.grad_norm()).unwrap();
        assert!(
            ((got - want) / want).abs() < 4.0 * f32::EPSILON as f64,
            "{got} vs {want}"
        );
    }
    // Clipping: the flat step with max_norm equals the per-parameter optimiser fed gradients
    // clipped with the flat norm's coefficient.
    let (p0, grads) = flat_setup(5);
    let old_params = leaves(&p0);
    let old_handles: Vec<Tensor> = old_params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut old = Adam::new(cfg(OptimizerKind::AdamW), old_params);
    let new_params = leaves(&p0);
    let new_handles: Vec<Tensor> = new_params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut new = FlatAdam::new(cfg(OptimizerKind::AdamW), new_params).unwrap();
    new.zero_grad();
    backward_with(&new_handles, &grads[0]);
    let norm = f32::try_from(new.grad_norm()).unwrap();
    let coef = clip_coefficient(norm, 0.5);
    assert!(coef < 1.0, "the case clips");
    new.step(
        1e-3,
        &StepOptions {
            max_norm: Some(0.5),
            ..Default::default()
        },
    );
    old.zero_grad();
    let clipped: Vec<Tensor> = grads[0].iter().map(|g| g * coef as f64).collect();
    backward_with(&old_handles, &clipped);
    old.step(1e-3);
    for (a, b) in old_handles.iter().zip(&new_handles) {
        assert!(bits(a) == bits(b));
    }
}

/// An inf/NaN gradient skips the step on the device: parameters and moments stay, the step
/// counter does not advance, and the next steps equal the per-parameter optimiser's, which
/// never took the skipped one (after the host learns the step count, bit for bit).
#[test]
fn flat_optimizer_skips_nonfinite_steps_on_the_device() {
    for kernel in [FlatKernel::Fused, FlatKernel::Tensor] {
        let (p0, grads) = flat_setup(6);
        let old_params = leaves(&p0);
        let old_handles: Vec<Tensor> = old_params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let mut old = Adam::new(cfg(OptimizerKind::AdamW), old_params);
        let new_params = leaves(&p0);
        let new_handles: Vec<Tensor> = new_params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let mut new = FlatAdam::with_kernel(cfg(OptimizerKind::AdamW), new_params, kernel).unwrap();
        let poisoned: Vec<Tensor> = grads[1].iter().map(|g| g.copy()).collect();
        let _ = poisoned[1].get(17).fill_(f64::NAN);
        for (step, g) in [&grads[0], &poisoned, &grads[2], &grads[3]]
            .iter()
            .enumerate()
        {
            new.zero_grad();
            backward_with(&new_handles, g);
            let before: Vec<Vec<u32>> = new_handles.iter().map(bits).collect();
            let out = new.step(2e-3, &StepOptions::default());
            let skipped = bool::try_from(&out.found_inf).unwrap();
            assert_eq!(skipped, step == 1);
            if skipped {
                let after: Vec<Vec<u32>> = new_handles.iter().map(bits).collect();
                assert_eq!(
                    before, after,
                    "{kernel:?}: a skipped step changed a parameter"
                );
                let taken = f64::try_from(new.step_counter()).unwrap();
                assert_eq!(taken, 1.0);
                new.sync_steps(taken as u64);
                continue;
            }
            old.zero_grad();
            backward_with(&old_handles, g);
            old.step(2e-3);
            for (a, b) in old_handles.iter().zip(&new_handles) {
                assert!(bits(a) == bits(b), "{kernel:?}: step {step}");
            }
        }
    }
}

/// Checkpoints of the per-parameter optimiser load into the flat one and the other way round.
#[test]
fn flat_optimizer_reads_and_writes_the_per_parameter_format() {
    let d = tempfile::tempdir().unwrap();
    let (p0, grads) = flat_setup(7);
    let old_params = leaves(&p0);
    let old_handles: Vec<Tensor> = old_params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut old = Adam::new(cfg(OptimizerKind::AdamW), old_params);
    backward_with(&old_handles, &grads[0]);
    old.step(1e-3);
    let path = d.path().join("o.safetensors");
    old.save(&path).unwrap();
    let mut flat = FlatAdam::new(cfg(OptimizerKind::AdamW), leaves(&p0)).unwrap();
    flat.load(&path, 1).unwrap();
    let path2 = d.path().join("f.safetensors");
    flat.save(&path2).unwrap();
    let a: Vec<(String, Tensor)> = Tensor::read_safetensors(&path).unwrap();
    let b: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&path2)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        assert!(bits(t) == bits(&b[k]), "{k}");
    }
    assert_eq!(f64::try_from(flat.step_counter()).unwrap(), 1.0);
}
