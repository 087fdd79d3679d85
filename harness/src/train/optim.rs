//! The optimiser, written on tensors so that its state can be checkpointed (the state of tch's
//! `nn::Optimizer` lives inside libtorch and cannot be saved).
//!
//! * `adamw` — `torch.optim.AdamW`: decoupled weight decay `p ← p·(1 − lr·wd)`, then Adam.
//! * `adam-l2` — `torch.optim.Adam(weight_decay=wd)`: classic Adam with *coupled* L2, the
//!   decay term added to the gradient (`g ← g + wd·p`) before the moments (bert-original).
//!
//! Both follow PyTorch's single-tensor update exactly:
//!
//! ```text
//! m ← lerp(m, g, 1 − β1)            v ← β2·v + (1 − β2)·g²
//! p ← p − lr/(1 − β1ᵗ) · m / (sqrt(v)/sqrt(1 − β2ᵗ) + ε)
//! ```
//!
//! Parameters whose name contains any of the `no_decay` substrings get weight decay 0 (the
//! reference's `group_parameters`: `bias`, `LayerNorm.bias`, `LayerNorm.weight`, plus `norm` in
//! v2). Gradient clipping is `torch.nn.utils.clip_grad_norm_` (global L2 norm, coefficient
//! `max/(norm + 1e-6)` clamped to 1).
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

/// Which optimiser (`train.optimizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// Decoupled weight decay (`torch.optim.AdamW`).
    #[serde(rename = "adamw")]
    AdamW,
    /// Coupled L2 (`torch.optim.Adam` with `weight_decay`).
    #[serde(rename = "adam-l2")]
    AdamL2,
}

/// Hyperparameters of [`Adam`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdamConfig {
    pub kind: OptimizerKind,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    pub no_decay: Vec<String>,
}

/// Whether parameter `name` is exempt from weight decay: it contains one of `no_decay`.
pub fn is_no_decay(name: &str, no_decay: &[String]) -> bool {
    no_decay.iter().any(|k| name.contains(k.as_str()))
}

struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    weight_decay: f64,
}

/// Adam / AdamW over named parameters, with checkpointable state.
pub struct Adam {
    cfg: AdamConfig,
    slots: Vec<Slot>,
    /// Optimizer steps taken (PyTorch's per-parameter `step`; equal for all parameters here).
    step: u64,
}

impl Adam {
    /// An optimiser over `params` (name, trainable tensor), sorted by name for a stable order.
    pub fn new(cfg: AdamConfig, mut params: Vec<(String, Tensor)>) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                let weight_decay = if is_no_decay(&name, &cfg.no_decay) {
                    0.0
                } else {
                    cfg.weight_decay
                };
                let exp_avg = tch::no_grad(|| param.zeros_like());
                let exp_avg_sq = tch::no_grad(|| param.zeros_like());
                Slot {
                    name,
                    param,
                    exp_avg,
                    exp_avg_sq,
                    weight_decay,
                }
            })
            .collect();
        Adam {
            cfg,
            slots,
            step: 0,
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Names of parameters with weight decay and without, for logs.
    pub fn groups(&self) -> (Vec<&str>, Vec<&str>) {
        let (d, n): (Vec<&Slot>, Vec<&Slot>) =
            self.slots.iter().partition(|s| s.weight_decay != 0.0);
        (
            d.iter().map(|s| s.name.as_str()).collect(),
            n.iter().map(|s| s.name.as_str()).collect(),
        )
    }

    /// Set every gradient to zero.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.param.zero_grad();
        }
    }

    /// The parameters' gradients that exist.
    pub fn grads(&self) -> Vec<Tensor> {
        self.slots
            .iter()
            .map(|s| s.param.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let [beta1, beta2] = self.cfg.betas;
        let bias_correction1 = 1.0 - beta1.powi(t);
        let bias_correction2 = 1.0 - beta2.powi(t);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        let eps = self.cfg.eps;
        let kind = self.cfg.kind;
        tch::no_grad(|| {
            for s in &mut self.slots {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = match kind {
                    OptimizerKind::AdamL2 if s.weight_decay != 0.0 => {
                        grad + &s.param * s.weight_decay
                    }
                    _ => grad,
                };
                if kind == OptimizerKind::AdamW && s.weight_decay != 0.0 {
                    let _ = s.param.g_mul_scalar_(1.0 - lr * s.weight_decay);
                }
                let _ = s.exp_avg.lerp_(&grad, 1.0 - beta1);
                let _ = s.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = s.exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                let mut denom = s.exp_avg_sq.sqrt() / bias_correction2_sqrt;
                let _ = denom.g_add_scalar_(eps);
                let _ = s.param.addcdiv_(&(&s.exp_avg * (-step_size)), &denom);
            }
        });
    }

    /// Save the moments (`exp_avg.<name>`, `exp_avg_sq.<name>`) as safetensors. The step
    /// counter is part of the trainer state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(self.slots.len() * 2);
        for s in &self.slots {
            named.push((format!("exp_avg.{}", s.name), s.exp_avg.shallow_clone()));
            named.push((
                format!("exp_avg_sq.{}", s.name),
                s.exp_avg_sq.shallow_clone(),
            ));
        }
        Tensor::write_safetensors(&named, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Restore moments saved by [`Adam::save`] and the step counter.
    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let named: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .collect();
        for s in &mut self.slots {
            for (prefix, dst) in [
                ("exp_avg", &mut s.exp_avg),
                ("exp_avg_sq", &mut s.exp_avg_sq),
            ] {
                let key = format!("{prefix}.{}", s.name);
                let src = named.get(&key).ok_or_else(|| {
                    crate::error::Error::input(path.display(), format!("missing tensor {key}"))
                })?;
                if src.size() != dst.size() {
                    return Err(crate::error::Error::input(
                        path.display(),
                        format!(
                            "{key} has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        ),
                    )
                    .into());
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        Ok(())
    }
}

/// `clip_grad_norm_`: scale all gradients so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping (non-finite if a gradient is). The factor is torch's, in
/// f32 (see [`clip_coefficient`]).
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> f64 {
    let total = global_grad_norm(grads);
    // The norm is an f32 tensor's value, so this conversion is exact.
    let clip_coef = clip_coefficient(total as f32, max_norm);
    if clip_coef < 1.0 || !total.is_finite() {
        tch::no_grad(|| {
            for g in grads {
                let _ = g.shallow_clone().g_mul_scalar_(clip_coef as f64);
            }
        });
    }
    total
}

/// The factor `torch.nn.utils.clip_grad_norm_` multiplies every gradient by, computed as torch
/// does on the f32 norm tensor: `max_norm / (total_norm + 1e-6)` is `Tensor.__rtruediv__`, i.e.
/// `reciprocal(total_norm + 1e-6) * max_norm`, each operation rounded to f32 (the Python
/// scalars 1e-6 and `max_norm` are converted to f32 first), then `clamp(max=1.0)`, which keeps
/// NaN. Upstream cramming calls it after `scaler.unscale_` (`optimizer_step` in
/// `cramming/backend/torch_default.py`, JonasGeiping/cramming 196c991); an f64 factor differs
/// from it in the last bits for about a fifth of all norms.
pub fn clip_coefficient(total_norm: f32, max_norm: f64) -> f32 {
    let denom = total_norm + 1e-6f64 as f32;
    let coef = (1.0f32 / denom) * max_norm as f32;
    if coef > 1.0 {
        1.0
    } else {
        coef
    }
}

/// Global L2 norm of all gradients.
pub fn global_grad_norm(grads: &[Tensor]) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.to_kind(tch::Kind::Float).norm())
            .collect();
        Tensor::stack(&norms, 0).norm().double_value(&[])
    })
}
