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

/// The trainable variables of `vs` with their names: what an optimizer steps.
pub fn trainable(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect()
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

/// Bias corrections of step `t` (1-based) as torch's single-tensor Adam computes them, in f64:
/// `(-lr / (1 - β1ᵗ), sqrt(1 - β2ᵗ))`.
fn corrections(cfg: &AdamConfig, lr: f64, t: u64) -> (f64, f64) {
    let t = t as i32;
    let [beta1, beta2] = cfg.betas;
    (-(lr / (1.0 - beta1.powi(t))), (1.0 - beta2.powi(t)).sqrt())
}

/// One step's scalars for one tensor (or flat buffer) and its weight decay.
struct Update {
    kind: OptimizerKind,
    lr: f64,
    weight_decay: f64,
    betas: [f64; 2],
    eps: f64,
    neg_step: f64,
    bc2_sqrt: f64,
}

impl Update {
    fn new(cfg: &AdamConfig, weight_decay: f64, lr: f64, neg_step: f64, bc2_sqrt: f64) -> Self {
        Update {
            kind: cfg.kind,
            lr,
            weight_decay,
            betas: cfg.betas,
            eps: cfg.eps,
            neg_step,
            bc2_sqrt,
        }
    }

    /// The AdamW (or coupled-L2 Adam) update of `param` and its moments from `grad`, as
    /// libtorch operations with f64 scalars (torch.optim's single-tensor step): what
    /// [`Adam::step`] runs per parameter and [`FlatAdam`] per buffer when nothing is masked.
    fn apply(
        &self,
        param: &mut Tensor,
        grad: Tensor,
        exp_avg: &mut Tensor,
        exp_avg_sq: &mut Tensor,
    ) {
        let [beta1, beta2] = self.betas;
        let wd = self.weight_decay;
        let grad = match self.kind {
            OptimizerKind::AdamL2 if wd != 0.0 => grad + &*param * wd,
            _ => grad,
        };
        if self.kind == OptimizerKind::AdamW && wd != 0.0 {
            let _ = param.g_mul_scalar_(1.0 - self.lr * wd);
        }
        let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
        let _ = exp_avg_sq.g_mul_scalar_(beta2);
        let _ = exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
        let mut denom = exp_avg_sq.sqrt() / self.bc2_sqrt;
        let _ = denom.g_add_scalar_(self.eps);
        let _ = param.addcdiv_(&(&*exp_avg * self.neg_step), &denom);
    }
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
        let (neg_step, bc2_sqrt) = corrections(&self.cfg, lr, self.step);
        tch::no_grad(|| {
            for s in &mut self.slots {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let u = Update::new(&self.cfg, s.weight_decay, lr, neg_step, bc2_sqrt);
                u.apply(&mut s.param, grad, &mut s.exp_avg, &mut s.exp_avg_sq);
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

/// How [`FlatAdam`] runs its element-wise update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlatKernel {
    /// Two passes over each flat buffer in Rust (CPU only) around libtorch's `sqrt`, with the
    /// same IEEE operations, in the same order, as libtorch's kernels (fused multiply-adds where
    /// `lerp`/`addcmul` use them), and no temporaries.
    Fused,
    /// libtorch operations on the flat buffers: about a dozen kernels per buffer, whatever the
    /// number of parameters (the CUDA path; also runs on the CPU).
    Tensor,
}

impl FlatKernel {
    /// The default for `device`: fused on the CPU, tensor operations on CUDA.
    pub fn for_device(device: tch::Device) -> Self {
        if device.is_cuda() {
            FlatKernel::Tensor
        } else {
            FlatKernel::Fused
        }
    }
}

/// Where one parameter lives in its group's flat buffers.
struct FlatSlot {
    name: String,
    offset: i64,
    numel: i64,
    shape: Vec<i64>,
}

/// Parameters of one dtype and one weight decay, as views of contiguous flat buffers.
struct FlatGroup {
    kind: tch::Kind,
    weight_decay: f64,
    slots: Vec<FlatSlot>,
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// `sqrt(exp_avg_sq)` of the fused kernel, allocated on first use.
    scratch: Option<Tensor>,
}

impl FlatGroup {
    fn view(&self, t: &Tensor, s: &FlatSlot) -> Tensor {
        t.narrow(0, s.offset, s.numel).view(s.shape.as_slice())
    }
}

/// What [`FlatAdam::step`] does besides the update, all on the device.
#[derive(Default)]
pub struct StepOptions<'a> {
    /// Multiply the gradients by this first (`1 / loss scale`, 0-dim, fp16).
    pub inv_scale: Option<&'a Tensor>,
    /// Clip to this global L2 norm (`clip_grad_norm_`).
    pub max_norm: Option<f64>,
}

/// The device-side results of a step (0-dim tensors; read them only when needed).
pub struct StepOutcome {
    /// Global L2 norm of the (unscaled) gradients before clipping, f32.
    pub grad_norm: Tensor,
    /// Bool: a gradient was inf/NaN, so the step was skipped (parameters and moments unchanged,
    /// the step counter not advanced).
    pub found_inf: Tensor,
}

/// [`Adam`] with its parameters, gradients and moments as views of flat buffers, one set per
/// (dtype, weight decay) group, so that a step is a few operations over the flat buffers
/// instead of ~10 per parameter. Same maths and same checkpoint format as [`Adam`]: the
/// element-wise update is bit-identical on the CPU (tests/train_optim.rs checks both kernels).
///
/// Construction moves every parameter's storage into its group's buffer (`set_data`) and makes
/// its `.grad` a view of the gradient buffer, which autograd then accumulates into in place.
/// Tied parameters (one tensor under two names) appear once. Gradients are zeroed in place,
/// never set to `None`. The inf check, clip coefficient, skip decision and step counter stay
/// on the device (PyTorch's fused AdamW with `found_inf` does the same, `torch/optim/adamw.py`
/// `_fused_adamw`); the host keeps a guess of the step count ([`FlatAdam::sync_steps`]) so the
/// bias corrections of an unskipped step are computed in f64 on the host exactly as [`Adam`]
/// computes them.
pub struct FlatAdam {
    cfg: AdamConfig,
    groups: Vec<FlatGroup>,
    device: tch::Device,
    kernel: FlatKernel,
    /// Steps taken (f64, 0-dim, on the device).
    step_dev: Tensor,
    /// The host's guess of `step_dev`: exact unless a step was skipped since the last sync.
    steps_guess: u64,
}

/// A gradient view lives in `param.grad()` only after autograd has allocated one; a backward
/// pass through `Σ 0·p` allocates zero gradients for every parameter.
fn allocate_grads(params: &[Tensor]) {
    let total = params
        .iter()
        .map(|p| (p * 0.0).sum(tch::Kind::Float))
        .fold(None::<Tensor>, |acc, t| {
            Some(acc.map_or(t.shallow_clone(), |a| a + t))
        });
    if let Some(t) = total {
        t.backward();
    }
}

impl FlatAdam {
    /// A flat optimiser over `params` (name, trainable tensor), sorted by name like [`Adam`],
    /// with the default kernel for the parameters' device.
    pub fn new(cfg: AdamConfig, params: Vec<(String, Tensor)>) -> Result<Self> {
        let device = params
            .first()
            .map(|(_, t)| t.device())
            .unwrap_or(tch::Device::Cpu);
        Self::with_kernel(cfg, params, FlatKernel::for_device(device))
    }

    /// As [`FlatAdam::new`] with an explicit kernel (`Fused` needs CPU parameters).
    pub fn with_kernel(
        cfg: AdamConfig,
        mut params: Vec<(String, Tensor)>,
        kernel: FlatKernel,
    ) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen = std::collections::HashSet::new();
        params.retain(|(_, t)| seen.insert(t.data_ptr() as usize));
        let device = params
            .first()
            .map(|(_, t)| t.device())
            .unwrap_or(tch::Device::Cpu);
        if kernel == FlatKernel::Fused && device.is_cuda() {
            anyhow::bail!("the fused optimizer kernel runs on the CPU only");
        }
        // Groups in first-appearance order of (dtype, weight decay).
        let mut keys: Vec<(tch::Kind, u64)> = Vec::new();
        let mut members: Vec<Vec<(String, Tensor)>> = Vec::new();
        for (name, t) in params {
            if t.device() != device {
                anyhow::bail!("parameter {name} is on {:?}, not {device:?}", t.device());
            }
            let wd = if is_no_decay(&name, &cfg.no_decay) {
                0.0
            } else {
                cfg.weight_decay
            };
            let key = (t.kind(), wd.to_bits());
            let i = match keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    keys.push(key);
                    members.push(Vec::new());
                    keys.len() - 1
                }
            };
            members[i].push((name, t));
        }
        let handles: Vec<Tensor> = members
            .iter()
            .flatten()
            .map(|(_, t)| t.shallow_clone())
            .collect();
        allocate_grads(&handles);
        let mut groups = Vec::new();
        for ((kind, wd_bits), group) in keys.into_iter().zip(members) {
            let total: i64 = group.iter().map(|(_, t)| t.numel() as i64).sum();
            let opts = (kind, device);
            let flat_p = Tensor::zeros([total], opts);
            let flat_g = Tensor::zeros([total], opts);
            let mut slots = Vec::new();
            let mut offset = 0;
            for (name, mut t) in group {
                let numel = t.numel() as i64;
                let shape = t.size();
                let pv = flat_p.narrow(0, offset, numel).view(shape.as_slice());
                tch::no_grad(|| pv.shallow_clone().copy_(&t));
                t.set_data(&pv);
                let mut g = t.grad();
                if !g.defined() {
                    anyhow::bail!("parameter {name} got no gradient buffer");
                }
                let gv = flat_g.narrow(0, offset, numel).view(shape.as_slice());
                g.set_data(&gv);
                if t.data_ptr() != pv.data_ptr() || t.grad().data_ptr() != gv.data_ptr() {
                    anyhow::bail!("parameter {name} could not be made a view of a flat buffer");
                }
                slots.push(FlatSlot {
                    name,
                    offset,
                    numel,
                    shape,
                });
                offset += numel;
            }
            groups.push(FlatGroup {
                kind,
                weight_decay: f64::from_bits(wd_bits),
                slots,
                exp_avg: flat_p.zeros_like(),
                exp_avg_sq: flat_p.zeros_like(),
                param: flat_p,
                grad: flat_g,
                scratch: None,
            });
        }
        Ok(FlatAdam {
            cfg,
            groups,
            device,
            kernel,
            step_dev: Tensor::zeros([], (tch::Kind::Double, device)),
            steps_guess: 0,
        })
    }

    /// The kernel in use.
    pub fn kernel(&self) -> FlatKernel {
        self.kernel
    }

    /// Number of flat buffer groups (dtype × weight decay).
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// Names of parameters with weight decay and without, for logs.
    pub fn groups(&self) -> (Vec<&str>, Vec<&str>) {
        let (mut d, mut n) = (Vec::new(), Vec::new());
        for g in &self.groups {
            let names = g.slots.iter().map(|s| s.name.as_str());
            if g.weight_decay != 0.0 {
                d.extend(names);
            } else {
                n.extend(names);
            }
        }
        (d, n)
    }

    /// Steps taken, on the device (f64, 0-dim).
    pub fn step_counter(&self) -> &Tensor {
        &self.step_dev
    }

    /// Tell the optimiser the value of [`FlatAdam::step_counter`] read on the host.
    pub fn sync_steps(&mut self, steps_taken: u64) {
        self.steps_guess = steps_taken;
    }

    /// The flat gradient buffers, one per group (shallow handles: writing into them writes the
    /// parameters' gradients; the data-parallel all-reduce averages them in place).
    pub fn flat_grads(&self) -> Vec<Tensor> {
        self.groups.iter().map(|g| g.grad.shallow_clone()).collect()
    }

    /// Zero the flat gradient buffers (one kernel per group).
    pub fn zero_grad(&mut self) {
        for g in &mut self.groups {
            let _ = g.grad.zero_();
        }
    }

    /// Global L2 norm of all gradients (f32, 0-dim, on the device).
    pub fn grad_norm(&self) -> Tensor {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .groups
                .iter()
                .map(|g| g.grad.to_kind(tch::Kind::Float).norm())
                .collect();
            match norms.len() {
                0 => Tensor::zeros([], (tch::Kind::Float, self.device)),
                _ => Tensor::stack(&norms, 0).norm(),
            }
        })
    }

    /// One step with learning rate `lr`: unscale, inf check, clip, update — skipped on the
    /// device when a gradient is inf/NaN. No host synchronisation.
    pub fn step(&mut self, lr: f64, opts: &StepOptions<'_>) -> StepOutcome {
        tch::no_grad(|| {
            if let Some(inv) = opts.inv_scale {
                for g in &mut self.groups {
                    let _ = g.grad.g_mul_(inv);
                }
            }
            let grad_norm = self.grad_norm();
            let keep = grad_norm.isfinite();
            let found_inf = keep.logical_not();
            // `clip_grad_norm_`'s coefficient, in f32 as torch computes it (see
            // `clip_coefficient`).
            let coef = opts
                .max_norm
                .map(|max| ((&grad_norm + 1e-6).reciprocal() * max).clamp_max(1.0));
            match self.kernel {
                // CPU tensors: reading the flag is a memory load, not a device transfer.
                FlatKernel::Fused => {
                    if bool::try_from(&keep).unwrap_or(false) {
                        let coef = coef.map_or(1.0f32, |c| f32::try_from(&c).unwrap_or(f32::NAN));
                        self.step_fused(lr, coef);
                    }
                }
                FlatKernel::Tensor => self.step_tensor(lr, &keep, &found_inf, coef.as_ref()),
            }
            self.steps_guess += 1;
            StepOutcome {
                grad_norm,
                found_inf,
            }
        })
    }

    /// One step as `torch.optim.AdamW.step()` takes it: no unscaling, no clipping and no inf
    /// check — no gradient norm is computed, and a non-finite gradient goes into the moments
    /// as it does in torch. For callers that need none of them (GLUE fine-tuning in fp32 or
    /// bf16, as upstream's `eval.py` steps); same update as [`FlatAdam::step`] otherwise.
    pub fn step_unchecked(&mut self, lr: f64) {
        tch::no_grad(|| {
            match self.kernel {
                FlatKernel::Fused => self.step_fused(lr, 1.0),
                FlatKernel::Tensor => {
                    // Nothing to mask: the plain update per buffer, its bias corrections from
                    // the host's step count (exact: an unchecked step never skips; after a
                    // skipped checked step, call `sync_steps` first).
                    let t = self.steps_guess + 1;
                    let (neg_step, bc2_sqrt) = corrections(&self.cfg, lr, t);
                    for g in &mut self.groups {
                        let u = Update::new(&self.cfg, g.weight_decay, lr, neg_step, bc2_sqrt);
                        let grad = g.grad.shallow_clone();
                        u.apply(&mut g.param, grad, &mut g.exp_avg, &mut g.exp_avg_sq);
                    }
                    self.step_dev = &self.step_dev + 1.0;
                }
            }
            self.steps_guess += 1;
        })
    }

    fn step_tensor(&mut self, lr: f64, keep: &Tensor, found_inf: &Tensor, coef: Option<&Tensor>) {
        let dev = self.device;
        let [beta1, beta2] = self.cfg.betas;
        let f64s = |v: f64| Tensor::full([], v, (tch::Kind::Double, dev));
        let keep64 = keep.to_kind(tch::Kind::Double);
        let step_new = &self.step_dev + &keep64;
        // The host's exact corrections for its guess of t; the device's own (pow in f64) only
        // after an unsynchronised skip.
        let t = self.steps_guess + 1;
        let (neg_step, bc2_sqrt) = corrections(&self.cfg, lr, t);
        let guessed = step_new.eq(t as f64);
        let dev_bc1: Tensor = 1.0 - Tensor::pow_scalar(beta1, &step_new);
        let dev_neg_step = (f64s(lr) / dev_bc1).neg();
        let dev_bc2: Tensor = 1.0 - Tensor::pow_scalar(beta2, &step_new);
        let dev_bc2_sqrt = dev_bc2.sqrt();
        let neg_step = f64s(neg_step)
            .where_self(&guessed, &dev_neg_step)
            .where_self(keep, &f64s(0.0));
        let bc2_sqrt = f64s(bc2_sqrt)
            .where_self(&guessed, &dev_bc2_sqrt)
            .where_self(keep, &f64s(1.0));
        let beta2_eff = &keep64 * (beta2 - 1.0) + 1.0;
        let eps = self.cfg.eps;
        let kind = self.cfg.kind;
        for g in &mut self.groups {
            let mut grad = g.grad.shallow_clone();
            if let Some(c) = coef {
                let _ = grad.g_mul_(c);
            }
            let _ = grad.masked_fill_(found_inf, 0.0);
            let wd = g.weight_decay;
            let grad = match kind {
                OptimizerKind::AdamL2 if wd != 0.0 => &grad + &g.param * wd,
                _ => grad,
            };
            if kind == OptimizerKind::AdamW && wd != 0.0 {
                let _ = g.param.g_mul_(&(&keep64 * (-(lr * wd)) + 1.0));
            }
            let weight = keep.to_kind(g.kind) * (1.0 - beta1);
            let _ = g.exp_avg.lerp_tensor_(&grad, &weight);
            let _ = g.exp_avg_sq.g_mul_(&beta2_eff);
            let _ = g.exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
            let mut denom = g.exp_avg_sq.sqrt() / &bc2_sqrt;
            let _ = denom.g_add_scalar_(eps);
            let _ = g.param.addcdiv_(&(&g.exp_avg * &neg_step), &denom);
        }
        self.step_dev = step_new;
    }

    /// The fused CPU update with gradients multiplied by `coef` (the clip coefficient, 1 when
    /// not clipping).
    fn step_fused(&mut self, lr: f64, coef: f32) {
        let taken = f64::try_from(&self.step_dev).unwrap_or(0.0) as u64 + 1;
        let (neg_step, bc2_sqrt) = corrections(&self.cfg, lr, taken);
        for g in &mut self.groups {
            if g.kind != tch::Kind::Float {
                // Not f32: libtorch's operations for this group.
                let grad = if coef == 1.0 {
                    g.grad.shallow_clone()
                } else {
                    &g.grad * coef as f64
                };
                let u = Update::new(&self.cfg, g.weight_decay, lr, neg_step, bc2_sqrt);
                u.apply(&mut g.param, grad, &mut g.exp_avg, &mut g.exp_avg_sq);
                continue;
            }
            let h = fused::Hyper::new(&self.cfg, g.weight_decay, lr, neg_step, bc2_sqrt, coef);
            let n = g.param.numel();
            // SAFETY: the four buffers are distinct contiguous f32 CPU tensors of `n` elements
            // owned by this group; nothing else runs on them during the step.
            unsafe {
                let p = std::slice::from_raw_parts_mut(g.param.data_ptr() as *mut f32, n);
                let gr = std::slice::from_raw_parts(g.grad.data_ptr() as *const f32, n);
                let m = std::slice::from_raw_parts_mut(g.exp_avg.data_ptr() as *mut f32, n);
                let v = std::slice::from_raw_parts_mut(g.exp_avg_sq.data_ptr() as *mut f32, n);
                fused::moments_all(p, gr, m, v, &h);
            }
            // libtorch's f32 sqrt is not the IEEE one everywhere (MKL's vectorised sqrt): take
            // it from libtorch, into a buffer kept between steps.
            let scratch = g.scratch.get_or_insert_with(|| g.exp_avg_sq.empty_like());
            let _ = g.exp_avg_sq.sqrt_out(scratch);
            // SAFETY: as above; `scratch` is a fourth distinct buffer of `n` f32.
            unsafe {
                let p = std::slice::from_raw_parts_mut(g.param.data_ptr() as *mut f32, n);
                let m = std::slice::from_raw_parts(g.exp_avg.data_ptr() as *const f32, n);
                let sq = std::slice::from_raw_parts(scratch.data_ptr() as *const f32, n);
                fused::apply_all(p, m, sq, &h);
            }
        }
        self.step_dev = &self.step_dev + 1.0;
    }

    /// Save the moments in [`Adam::save`]'s format (`exp_avg.<name>`, `exp_avg_sq.<name>`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for g in &self.groups {
            for s in &g.slots {
                named.push((format!("exp_avg.{}", s.name), g.view(&g.exp_avg, s)));
                named.push((format!("exp_avg_sq.{}", s.name), g.view(&g.exp_avg_sq, s)));
            }
        }
        Tensor::write_safetensors(&named, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Restore moments saved by [`FlatAdam::save`] or [`Adam::save`], and the count of steps
    /// taken.
    pub fn load(&mut self, path: &Path, steps_taken: u64) -> Result<()> {
        let named: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .collect();
        for g in &self.groups {
            for s in &g.slots {
                for (prefix, buf) in [("exp_avg", &g.exp_avg), ("exp_avg_sq", &g.exp_avg_sq)] {
                    let key = format!("{prefix}.{}", s.name);
                    let src = named.get(&key).ok_or_else(|| {
                        crate::error::Error::input(path.display(), format!("missing tensor {key}"))
                    })?;
                    if src.size() != s.shape {
                        return Err(crate::error::Error::input(
                            path.display(),
                            format!("{key} has shape {:?}, expected {:?}", src.size(), s.shape),
                        )
                        .into());
                    }
                    tch::no_grad(|| g.view(buf, s).copy_(src));
                }
            }
        }
        self.step_dev = Tensor::full([], steps_taken as f64, (tch::Kind::Double, self.device));
        self.steps_guess = steps_taken;
        Ok(())
    }
}

/// The fused CPU update of [`FlatAdam`]: per element exactly the operations of [`Adam::step`]
/// as libtorch's CPU kernels perform them (checked bit for bit by tests/train_optim.rs):
/// `lerp_` is `fma(w, g − m, m)` for `w < 0.5` (else `fma(w − 1, g − m, g)`, ATen's
/// `lerp_vec`), `addcmul_` is `fma(t1, t2, self)`, `addcdiv_` is `self + t1 / t2`, and each
/// scalar is rounded to f32 before use.
mod fused {
    use super::{AdamConfig, OptimizerKind};
    use rayon::prelude::*;

    pub(super) struct Hyper {
        coef: f32,
        l2: Option<f32>,
        decay: Option<f32>,
        lerp_w: f32,
        beta2: f32,
        one_minus_beta2: f32,
        bc2_sqrt: f32,
        eps: f32,
        neg_step: f32,
    }

    impl Hyper {
        pub(super) fn new(
            cfg: &AdamConfig,
            wd: f64,
            lr: f64,
            neg_step: f64,
            bc2_sqrt: f64,
            coef: f32,
        ) -> Self {
            let [beta1, beta2] = cfg.betas;
            Hyper {
                coef,
                l2: (cfg.kind == OptimizerKind::AdamL2 && wd != 0.0).then_some(wd as f32),
                decay: (cfg.kind == OptimizerKind::AdamW && wd != 0.0)
                    .then_some((1.0 - lr * wd) as f32),
                lerp_w: (1.0 - beta1) as f32,
                beta2: beta2 as f32,
                one_minus_beta2: (1.0 - beta2) as f32,
                bc2_sqrt: bc2_sqrt as f32,
                eps: cfg.eps as f32,
                neg_step: neg_step as f32,
            }
        }
    }

    /// Pass 1: decay, coupled L2, first and second moments (`p`, `m`, `v` updated in place).
    #[inline(always)]
    fn moments(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &Hyper) {
        let n = p.len().min(g.len()).min(m.len()).min(v.len());
        let small = h.lerp_w.abs() < 0.5;
        for i in 0..n {
            let mut gi = g[i] * h.coef;
            let mut pi = p[i];
            if let Some(wd) = h.l2 {
                gi += pi * wd;
            }
            if let Some(d) = h.decay {
                pi *= d;
            }
            let mi = m[i];
            m[i] = if small {
                h.lerp_w.mul_add(gi - mi, mi)
            } else {
                (h.lerp_w - 1.0).mul_add(gi - mi, gi)
            };
            v[i] = (gi * h.one_minus_beta2).mul_add(gi, v[i] * h.beta2);
            p[i] = pi;
        }
    }

    /// Pass 2 (after libtorch's `sqrt(v)` into `s`): `p += (m·(−step)) / (s / bc2 + eps)`.
    #[inline(always)]
    fn apply(p: &mut [f32], m: &[f32], s: &[f32], h: &Hyper) {
        let n = p.len().min(m.len()).min(s.len());
        for i in 0..n {
            let denom = s[i] / h.bc2_sqrt + h.eps;
            p[i] += (m[i] * h.neg_step) / denom;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn moments_fma(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &Hyper) {
        moments(p, g, m, v, h)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn apply_avx2(p: &mut [f32], m: &[f32], s: &[f32], h: &Hyper) {
        apply(p, m, s, h)
    }

    fn has_fma() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("avx2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    fn moments_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &Hyper) {
        #[cfg(target_arch = "x86_64")]
        if has_fma() {
            // SAFETY: the CPU has the features `moments_fma` is compiled for.
            return unsafe { moments_fma(p, g, m, v, h) };
        }
        moments(p, g, m, v, h)
    }

    fn apply_chunk(p: &mut [f32], m: &[f32], s: &[f32], h: &Hyper) {
        #[cfg(target_arch = "x86_64")]
        if has_fma() {
            // SAFETY: as above.
            return unsafe { apply_avx2(p, m, s, h) };
        }
        apply(p, m, s, h)
    }

    /// Elements per parallel task.
    const CHUNK: usize = 1 << 16;
    /// Buffers shorter than this are updated on the calling thread (spreading them over
    /// rayon's threads costs more than it saves, and competes with libtorch's spinning OpenMP
    /// workers).
    const PARALLEL_MIN: usize = 1 << 20;

    pub(super) fn moments_all(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &Hyper) {
        if p.len() < PARALLEL_MIN {
            return moments_chunk(p, g, m, v, h);
        }
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| moments_chunk(p, g, m, v, h));
    }

    pub(super) fn apply_all(p: &mut [f32], m: &[f32], s: &[f32], h: &Hyper) {
        if p.len() < PARALLEL_MIN {
            return apply_chunk(p, m, s, h);
        }
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(s.par_chunks(CHUNK))
            .for_each(|((p, m), s)| apply_chunk(p, m, s, h));
    }
}
