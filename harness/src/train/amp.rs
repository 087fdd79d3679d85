//! Mixed precision. The forward pass runs under autocast in bf16 (the default) or fp16 on CUDA,
//! and in bf16 on the CPU too (libtorch's CPU autocast: matmuls and convolutions in bf16,
//! reductions and losses in fp32 — the same code path as on a GPU, so a CPU run exercises it).
//! fp16 needs dynamic loss scaling, which is CUDA-only: an fp16 recipe runs in fp32 on the CPU,
//! and says so. fp16 follows the reference (`torch.cuda.amp.GradScaler` defaults: initial scale
//! 65536, ×0.5 back-off on an inf/NaN gradient — that step is skipped — and ×2 growth after 2000
//! clean steps). Whether TF32 matmuls are allowed is recorded.
//!
//! Autocast is entered and left through libtorch's device-typed entry points
//! (`at::autocast::set_autocast_enabled(DeviceType, bool)`, `is_autocast_enabled(DeviceType)`,
//! `set_autocast_dtype`, `increment_nesting`/`decrement_nesting`/`clear_cache`), exported by
//! `libtorch_cpu.so` and called by their mangled symbols (as toolchain.md §4 does for the
//! deterministic flag). tch's `autocast` calls the device-less `is_enabled()`/`set_enabled()`,
//! deprecated in libtorch 2.11, which print a warning on every call (about five lines per
//! forward pass), and it never enables CPU autocast. PyTorch's `torch.autocast` context manager
//! does what [`AutocastGuard`] does (`torch/amp/autocast_mode.py`, `__enter__`/`__exit__`).
//!
//! [`DeviceScaler`] keeps the loss scale, its growth tracker and the count of skipped steps on
//! the device, so that an optimizer step needs no host synchronisation; [`LossScaler`] is its
//! host copy, written into checkpoints.
//!
//! [`Amp::setup`] (GLUE fine-tuning) keeps the CPU in fp32; [`Amp::setup_autocast`]
//! (pretraining) runs bf16 autocast there.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Precision requested by the recipe (`train.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 autocast (default), on CUDA and on the CPU.
    Bf16,
    /// fp16 autocast with dynamic loss scaling (the reference's setting; CUDA only).
    Fp16,
    /// Full fp32.
    Fp32,
}

#[allow(improper_ctypes)]
extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, scalar_type: i8);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_autocast_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_autocast_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_autocast_clear_cache();
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut std::ffi::c_void;
    #[link_name = "_ZN2at7Context18setAllowTF32CuBLASEb"]
    fn at_ctx_set_allow_tf32_cublas(ctx: *mut std::ffi::c_void, b: bool);
}

impl Precision {
    /// The dtype activations (and attention's queries) have under this precision.
    pub fn kind(&self) -> tch::Kind {
        match self {
            Precision::Bf16 => tch::Kind::BFloat16,
            Precision::Fp16 => tch::Kind::Half,
            Precision::Fp32 => tch::Kind::Float,
        }
    }
}

/// c10::DeviceType::CPU / CUDA (c10/core/DeviceType.h).
const C10_CPU: i8 = 0;
const C10_CUDA: i8 = 1;
/// c10::ScalarType::Half / BFloat16 (c10/core/ScalarType.h).
const C10_HALF: i8 = 5;
const C10_BFLOAT16: i8 = 15;

fn c10_device_type(device: Device) -> i8 {
    if device.is_cuda() {
        C10_CUDA
    } else {
        C10_CPU
    }
}

/// The effective mixed-precision setup on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Amp {
    /// Precision actually used (fp16 becomes fp32 on the CPU).
    pub precision: Precision,
    /// Whether TF32 matmuls are allowed (CUDA only; false on CPU).
    pub tf32: bool,
    /// Where autocast runs: `cuda` or `cpu` (`None` in fp32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autocast: Option<&'static str>,
}

impl Amp {
    /// Configure libtorch for `requested` on `device` and return what is in effect: mixed
    /// precision on CUDA only, fp32 on the CPU (GLUE fine-tuning's setting).
    pub fn setup(requested: Precision, tf32: bool, device: Device) -> Self {
        let requested = if device.is_cuda() {
            requested
        } else {
            Precision::Fp32
        };
        Self::setup_autocast(requested, tf32, device)
    }

    /// As [`Amp::setup`], but bf16 runs as CPU autocast on the CPU too (pretraining and its
    /// benchmark); fp16 still needs CUDA.
    pub fn setup_autocast(requested: Precision, tf32: bool, device: Device) -> Self {
        let precision = match (requested, device.is_cuda()) {
            (Precision::Fp16, false) => Precision::Fp32,
            (p, _) => p,
        };
        let dtype = match precision {
            Precision::Bf16 => Some(C10_BFLOAT16),
            Precision::Fp16 => Some(C10_HALF),
            Precision::Fp32 => None,
        };
        // SAFETY: plain setters of libtorch's global and thread-local autocast state; symbols
        // checked with `nm -D libtorch_cpu.so` (libtorch 2.11).
        unsafe {
            if device.is_cuda() {
                at_ctx_set_allow_tf32_cublas(at_global_context(), tf32);
            }
            if let Some(d) = dtype {
                at_set_autocast_dtype(c10_device_type(device), d);
            }
        }
        Amp {
            precision,
            tf32: tf32 && device.is_cuda(),
            autocast: dtype.map(|_| if device.is_cuda() { "cuda" } else { "cpu" }),
        }
    }

    /// One line for the user: what runs in which precision.
    pub fn describe(&self, requested: Precision) -> String {
        let name = |p: Precision| format!("{p:?}").to_lowercase();
        match (self.autocast, requested == self.precision) {
            (Some(dev), _) => format!(
                "precision {}: {dev} autocast ({} matmuls, fp32 weights and optimizer)",
                name(self.precision),
                name(self.precision)
            ),
            (None, true) => "precision fp32".to_string(),
            (None, false) => format!(
                "precision fp32 (the recipe asks for {}, which needs CUDA loss scaling)",
                name(requested)
            ),
        }
    }

    /// Run `f` (the forward pass) under autocast when mixed precision is on.
    pub fn forward<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.autocast.map(|dev| {
            AutocastGuard::enter(if dev == "cuda" {
                Device::Cuda(0)
            } else {
                Device::Cpu
            })
        });
        f()
    }
}

/// Autocast enabled on one device type for the guard's lifetime (restores the previous state,
/// clears the cast cache when the outermost guard ends).
pub struct AutocastGuard {
    device_type: i8,
    previous: bool,
}

impl AutocastGuard {
    /// Enable autocast for `device`'s type (its dtype as set by [`Amp::setup`]).
    pub fn enter(device: Device) -> Self {
        let device_type = c10_device_type(device);
        // SAFETY: thread-local autocast state of libtorch; see `Amp::setup`.
        let previous = unsafe {
            let previous = at_is_autocast_enabled(device_type);
            at_set_autocast_enabled(device_type, true);
            at_autocast_increment_nesting();
            previous
        };
        AutocastGuard {
            device_type,
            previous,
        }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe {
            if at_autocast_decrement_nesting() == 0 {
                at_autocast_clear_cache();
            }
            at_set_autocast_enabled(self.device_type, self.previous);
        }
    }
}

/// Whether autocast is on for `device`'s type on this thread.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: a getter of thread-local state.
    unsafe { at_is_autocast_enabled(c10_device_type(device)) }
}

/// Dynamic loss scaling (`GradScaler`). Disabled (scale 1, never skips) unless fp16.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub enabled: bool,
    /// Current scale.
    pub scale: f64,
    /// Clean steps since the last growth or back-off.
    pub growth_tracker: u32,
    /// Multiply the scale by this after `growth_interval` clean steps.
    pub growth_factor: f64,
    /// Multiply the scale by this after an inf/NaN gradient.
    pub backoff_factor: f64,
    pub growth_interval: u32,
    /// Steps skipped because of inf/NaN gradients.
    pub skipped_steps: u64,
}

impl LossScaler {
    /// PyTorch's defaults when `enabled`; a pass-through otherwise.
    pub fn new(enabled: bool) -> Self {
        LossScaler {
            enabled,
            scale: if enabled { 65536.0 } else { 1.0 },
            growth_tracker: 0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            skipped_steps: 0,
        }
    }

    /// The loss to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        if self.enabled {
            loss * self.scale
        } else {
            loss.shallow_clone()
        }
    }

    /// Divide the gradients by the scale (when enabled) and return whether all are finite.
    /// With scaling disabled the gradients are left alone and checked only when `check` is set
    /// (otherwise `true`). One reduction and one device synchronisation for all gradients.
    pub fn unscale(&self, grads: &[Tensor], check: bool) -> bool {
        if grads.is_empty() || (!self.enabled && !check) {
            return true;
        }
        tch::no_grad(|| {
            let inv = 1.0 / self.scale;
            let sums: Vec<Tensor> = grads
                .iter()
                .map(|g| {
                    if self.enabled {
                        let _ = g.shallow_clone().g_mul_scalar_(inv);
                    }
                    g.sum(tch::Kind::Float)
                })
                .collect();
            Tensor::stack(&sums, 0)
                .sum(tch::Kind::Double)
                .double_value(&[])
                .is_finite()
        })
    }

    /// Update the scale after a step; `found_inf` means the step was skipped.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.skipped_steps += 1;
        }
        if !self.enabled {
            return;
        }
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }
}

/// [`LossScaler`] on the device: the scale, the growth tracker and the skipped-step count are
/// 0-dim f64 tensors, updated by tensor operations from an on-device inf flag, so that no
/// optimizer step waits for the host. [`DeviceScaler::to_host`] reads them back (at logging
/// steps and checkpoints). The rule is `GradScaler.update`'s (`torch/amp/grad_scaler.py`,
/// `_amp_update_scale_`).
pub struct DeviceScaler {
    pub enabled: bool,
    scale: Tensor,
    growth_tracker: Tensor,
    skipped: Tensor,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u32,
}

impl DeviceScaler {
    /// The device copy of `host` on `device`.
    pub fn from_host(host: &LossScaler, device: Device) -> Self {
        let scalar = |v: f64| Tensor::full([], v, (Kind::Double, device));
        DeviceScaler {
            enabled: host.enabled,
            scale: scalar(host.scale),
            growth_tracker: scalar(host.growth_tracker as f64),
            skipped: scalar(host.skipped_steps as f64),
            growth_factor: host.growth_factor,
            backoff_factor: host.backoff_factor,
            growth_interval: host.growth_interval,
        }
    }

    /// `[scale, growth_tracker, skipped_steps]` as one f64 tensor (for a single host read).
    pub fn state(&self) -> Tensor {
        Tensor::stack(&[&self.scale, &self.growth_tracker, &self.skipped], 0)
    }

    /// The host copy, from the values of [`DeviceScaler::state`].
    pub fn to_host(&self, state: &[f64]) -> LossScaler {
        LossScaler {
            enabled: self.enabled,
            scale: state[0],
            growth_tracker: state[1] as u32,
            growth_factor: self.growth_factor,
            backoff_factor: self.backoff_factor,
            growth_interval: self.growth_interval,
            skipped_steps: state[2] as u64,
        }
    }

    /// The loss to call `backward` on: `loss · scale` (the scale cast to the loss's dtype, as
    /// `GradScaler.scale` does), or `loss` itself when scaling is off.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        if self.enabled {
            loss * self.scale.to_kind(loss.kind())
        } else {
            loss.shallow_clone()
        }
    }

    /// `1 / scale` (f64, on the device) when scaling is on.
    pub fn inverse_scale(&self) -> Option<Tensor> {
        self.enabled
            .then(|| Tensor::full([], 1.0, (Kind::Double, self.scale.device())) / &self.scale)
    }

    /// Update after an optimizer step; `found_inf` (0-dim bool, on the device) means the step
    /// was skipped.
    pub fn update(&mut self, found_inf: &Tensor) {
        tch::no_grad(|| {
            let inf = found_inf.to_kind(Kind::Double);
            self.skipped = &self.skipped + &inf;
            if !self.enabled {
                return;
            }
            let grown = (&self.growth_tracker + 1.0).ge(self.growth_interval as f64);
            let keep_scale = &self.scale * 1.0;
            let next_scale = (&self.scale * self.growth_factor).where_self(&grown, &keep_scale);
            self.scale = (&self.scale * self.backoff_factor).where_self(found_inf, &next_scale);
            let zero = self.growth_tracker.zeros_like();
            let next_tracker = zero.where_self(&grown, &(&self.growth_tracker + 1.0));
            self.growth_tracker = zero.where_self(found_inf, &next_tracker);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaler_backs_off_and_grows() {
        let mut s = LossScaler::new(true);
        s.update(true);
        assert_eq!(s.scale, 32768.0);
        for _ in 0..1999 {
            s.update(false);
        }
        assert_eq!(s.scale, 32768.0);
        s.update(false);
        assert_eq!(s.scale, 65536.0);
        assert_eq!(s.skipped_steps, 1);
        let g = Tensor::from_slice(&[2.0f32, f32::INFINITY]);
        assert!(!s.unscale(&[g], true));
        let g = Tensor::from_slice(&[65536.0f32]);
        assert!(s.unscale(&[g.shallow_clone()], true));
        assert_eq!(g.double_value(&[0]), 1.0);
        assert_eq!(
            Amp::setup_autocast(Precision::Fp16, true, Device::Cpu).precision,
            Precision::Fp32
        );
        assert_eq!(
            Amp::setup(Precision::Bf16, true, Device::Cpu).precision,
            Precision::Fp32
        );
        let bf16 = Amp::setup_autocast(Precision::Bf16, true, Device::Cpu);
        assert_eq!(bf16.precision, Precision::Bf16);
        assert_eq!(bf16.autocast, Some("cpu"));
        assert!(!autocast_enabled(Device::Cpu));
        let a = Tensor::ones([4, 4], (tch::Kind::Float, Device::Cpu));
        let y = bf16.forward(|| {
            assert!(autocast_enabled(Device::Cpu));
            a.matmul(&a)
        });
        assert_eq!(y.kind(), tch::Kind::BFloat16);
        assert!(!autocast_enabled(Device::Cpu));
    }

    #[test]
    fn device_scaler_follows_the_host_rule() {
        let mut host = LossScaler::new(true);
        host.growth_interval = 3;
        let mut dev = DeviceScaler::from_host(&host, Device::Cpu);
        for inf in [true, false, false, false, true, false] {
            host.update(inf);
            dev.update(&Tensor::from(inf));
            let s = Vec::<f64>::try_from(dev.state()).unwrap();
            assert_eq!(dev.to_host(&s), host);
        }
    }
}
