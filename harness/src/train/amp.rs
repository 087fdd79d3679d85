//! Mixed precision. On CUDA the forward pass runs under autocast: bf16 by default, or fp16 with
//! dynamic loss scaling as the reference does (`torch.cuda.amp.GradScaler` defaults: initial
//! scale 65536, ×0.5 back-off on an inf/NaN gradient — that step is skipped — and ×2 growth after
//! 2000 clean steps). On CPU everything is fp32. Whether TF32 matmuls are allowed is recorded.
//!
//! tch's `autocast` always uses fp16; bf16 is selected through libtorch's
//! `at::autocast::set_autocast_dtype(kCUDA, kBFloat16)` (called by its mangled symbol, see
//! toolchain.md §4), TF32 through `at::globalContext().setAllowTF32CuBLAS`.
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// Precision requested by the recipe (`train.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 autocast on CUDA (default).
    Bf16,
    /// fp16 autocast with dynamic loss scaling (the reference's setting).
    Fp16,
    /// Full fp32.
    Fp32,
}

#[allow(improper_ctypes)]
extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, scalar_type: i8);
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

/// c10::DeviceType::CUDA.
const C10_CUDA: i8 = 1;
/// c10::ScalarType::Half / BFloat16.
const C10_HALF: i8 = 5;
const C10_BFLOAT16: i8 = 15;

/// The effective mixed-precision setup on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Amp {
    /// Precision actually used (fp32 on CPU whatever the recipe says).
    pub precision: Precision,
    /// Whether TF32 matmuls are allowed (CUDA only; false on CPU).
    pub tf32: bool,
}

impl Amp {
    /// Configure libtorch for `requested` on `device` and return what is in effect.
    pub fn setup(requested: Precision, tf32: bool, device: Device) -> Self {
        if !device.is_cuda() {
            return Amp {
                precision: Precision::Fp32,
                tf32: false,
            };
        }
        // SAFETY: plain setters on libtorch's global context; symbols checked in toolchain.md §4.
        unsafe {
            at_ctx_set_allow_tf32_cublas(at_global_context(), tf32);
            match requested {
                Precision::Bf16 => at_set_autocast_dtype(C10_CUDA, C10_BFLOAT16),
                Precision::Fp16 => at_set_autocast_dtype(C10_CUDA, C10_HALF),
                Precision::Fp32 => {}
            }
        }
        Amp {
            precision: requested,
            tf32,
        }
    }

    /// Run `f` (the forward pass) under autocast when mixed precision is on.
    pub fn forward<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.precision {
            Precision::Fp32 => f(),
            Precision::Bf16 | Precision::Fp16 => tch::autocast(true, f),
        }
    }
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
            Amp::setup(Precision::Bf16, true, Device::Cpu).precision,
            Precision::Fp32
        );
    }
}
