//! Which kernel libtorch's `scaled_dot_product_attention` may use: the attention backend of a
//! recipe (`[train] attention`, `[glue] attention`) or of the command line (`--attention`).
//!
//! | backend | libtorch switch | CPU | CUDA |
//! |---|---|---|---|
//! | `auto` | libtorch's defaults (every kernel allowed, libtorch picks) | flash or math | flash without a mask, else memory-efficient, cuDNN or math |
//! | `flash` | `setSDPUseFlash` only | yes (libtorch's CPU flash kernel, masks allowed) | fp16/bf16, **no** padding mask |
//! | `efficient` | `setSDPUseMemEfficient` only | no | yes |
//! | `cudnn` | `setSDPUseCuDNN` only | no | fp16/bf16, recent GPUs |
//! | `math` | `setSDPUseMath` only | yes | yes |
//!
//! Today's choice without a key is `auto`: pretraining (packed, no mask) then gets flash on a
//! GPU, GLUE (a padding mask) the memory-efficient kernel, and cuDNN attention is never tried.
//!
//! The switches are libtorch's process-wide `at::Context` flags (what Python's
//! `torch.nn.attention.sdpa_kernel` sets), called through their mangled symbols in
//! `libtorch_cpu.so` like [`crate::train::amp`] does. [`select`] sets them; [`check`] then runs one
//! small attention call (forward and backward) with the shapes, dtype, device and mask of the
//! phase about to run, so a backend the device cannot run for it is a named error (exit 2)
//! before any work starts, not a failure hours in. Because the flags are process-wide, the
//! library sets them only where a command starts a phase (pretraining, GLUE); `auto` restores
//! libtorch's defaults as read before the first change.
use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

/// An attention backend (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionBackend {
    /// libtorch's defaults: every kernel allowed, libtorch picks per call.
    #[default]
    Auto,
    /// FlashAttention (CUDA: fp16/bf16 without a mask; CPU: libtorch's flash kernel).
    Flash,
    /// Memory-efficient attention (CUDA only).
    Efficient,
    /// cuDNN attention (CUDA only).
    Cudnn,
    /// The composite math implementation (every device, every dtype).
    Math,
}

impl AttentionBackend {
    pub const ALL: [AttentionBackend; 5] = [
        AttentionBackend::Auto,
        AttentionBackend::Flash,
        AttentionBackend::Efficient,
        AttentionBackend::Cudnn,
        AttentionBackend::Math,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            AttentionBackend::Auto => "auto",
            AttentionBackend::Flash => "flash",
            AttentionBackend::Efficient => "efficient",
            AttentionBackend::Cudnn => "cudnn",
            AttentionBackend::Math => "math",
        }
    }

    /// `auto` (for `skip_serializing_if`: recipes without the key keep their digests).
    pub fn is_auto(&self) -> bool {
        *self == AttentionBackend::Auto
    }

    /// The libtorch switches this backend sets (`auto`: libtorch's defaults).
    pub fn flags(&self) -> SdpFlags {
        let only = |flash, mem_efficient, math, cudnn| SdpFlags {
            flash,
            mem_efficient,
            math,
            cudnn,
        };
        match self {
            AttentionBackend::Auto => defaults(),
            AttentionBackend::Flash => only(true, false, false, false),
            AttentionBackend::Efficient => only(false, true, false, false),
            AttentionBackend::Cudnn => only(false, false, false, true),
            AttentionBackend::Math => only(false, false, true, false),
        }
    }
}

impl std::fmt::Display for AttentionBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AttentionBackend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        AttentionBackend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = AttentionBackend::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "unknown attention backend {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// libtorch's scaled-dot-product-attention switches (`at::Context::userEnabled*SDP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SdpFlags {
    pub flash: bool,
    pub mem_efficient: bool,
    pub math: bool,
    pub cudnn: bool,
}

#[allow(improper_ctypes)]
extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context14setSDPUseFlashEb"]
    fn at_set_sdp_flash(ctx: *mut c_void, b: bool);
    #[link_name = "_ZN2at7Context21setSDPUseMemEfficientEb"]
    fn at_set_sdp_mem_efficient(ctx: *mut c_void, b: bool);
    #[link_name = "_ZN2at7Context13setSDPUseMathEb"]
    fn at_set_sdp_math(ctx: *mut c_void, b: bool);
    #[link_name = "_ZN2at7Context14setSDPUseCuDNNEb"]
    fn at_set_sdp_cudnn(ctx: *mut c_void, b: bool);
    #[link_name = "_ZNK2at7Context19userEnabledFlashSDPEv"]
    fn at_sdp_flash(ctx: *mut c_void) -> bool;
    #[link_name = "_ZNK2at7Context26userEnabledMemEfficientSDPEv"]
    fn at_sdp_mem_efficient(ctx: *mut c_void) -> bool;
    #[link_name = "_ZNK2at7Context18userEnabledMathSDPEv"]
    fn at_sdp_math(ctx: *mut c_void) -> bool;
    #[link_name = "_ZNK2at7Context19userEnabledCuDNNSDPEv"]
    fn at_sdp_cudnn(ctx: *mut c_void) -> bool;
}

/// The switches as libtorch has them now.
pub fn current() -> SdpFlags {
    // SAFETY: plain getters on libtorch's global context (symbols exported by libtorch_cpu.so
    // 2.11: `nm -D libtorch_cpu.so | grep SDP`).
    unsafe {
        let ctx = at_global_context();
        SdpFlags {
            flash: at_sdp_flash(ctx),
            mem_efficient: at_sdp_mem_efficient(ctx),
            math: at_sdp_math(ctx),
            cudnn: at_sdp_cudnn(ctx),
        }
    }
}

/// libtorch's own defaults, read once before crambench first changes them.
fn defaults() -> SdpFlags {
    static DEFAULTS: OnceLock<SdpFlags> = OnceLock::new();
    *DEFAULTS.get_or_init(current)
}

/// Serialises [`select`] (the flags are one process-wide state).
static SELECT: Mutex<()> = Mutex::new(());

/// Set libtorch's switches for `backend`, process-wide; returns them as now in effect.
pub fn select(backend: AttentionBackend) -> SdpFlags {
    let _guard = SELECT.lock().unwrap_or_else(|e| e.into_inner());
    // libtorch's defaults are read once, before the first change (what `auto` restores).
    defaults();
    let f = backend.flags();
    // SAFETY: plain setters on libtorch's global context (see `current`).
    unsafe {
        let ctx = at_global_context();
        at_set_sdp_flash(ctx, f.flash);
        at_set_sdp_mem_efficient(ctx, f.mem_efficient);
        at_set_sdp_math(ctx, f.math);
        at_set_sdp_cudnn(ctx, f.cudnn);
    }
    current()
}

/// What the phase about to run asks of attention (what [`check`] tries).
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub device: Device,
    /// The dtype of queries, keys and values: the autocast dtype under mixed precision.
    pub kind: Kind,
    pub heads: i64,
    pub head_dim: i64,
    /// Whether the phase passes a key-padding mask (GLUE) or none (packed pretraining).
    pub masked: bool,
    /// Whether gradients flow (training) or not (evaluation only).
    pub backward: bool,
    /// Attention dropout while training (0 when the phase runs with dropout off; some kernels
    /// have no dropout).
    pub dropout: f64,
}

/// The one attention call of the models (`layers::SelfAttention` uses it): scaled dot-product
/// attention of `[B, heads, S, head_dim]` queries, keys and values with an optional additive
/// mask `[B, 1, 1, S]`, which is given the queries' dtype (under autocast the mask is made from
/// fp32 activations while the queries are bf16/fp16, which the fused CUDA kernels refuse; in
/// fp32 the cast is no operation).
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    additive_mask: Option<&Tensor>,
    dropout_p: f64,
    scale: f64,
) -> Result<Tensor, tch::TchError> {
    let mask = additive_mask.map(|m| {
        if m.kind() == q.kind() {
            m.shallow_clone()
        } else {
            m.to_kind(q.kind())
        }
    });
    Tensor::f_scaled_dot_product_attention(
        q,
        k,
        v,
        mask.as_ref(),
        dropout_p,
        false, // not causal
        scale,
        false, // no grouped-query attention
    )
}

/// Select `backend` and check that it runs what `probe` describes on its device; `what` names
/// the setting in the error (`--attention`, `recipe.toml: train.attention`). Returns the
/// switches in effect.
pub fn check(backend: AttentionBackend, probe: &Probe, what: &str) -> Result<SdpFlags> {
    let flags = select(backend);
    let run = || -> Result<(), tch::TchError> {
        let (b, s) = (2, 16);
        let opts = (probe.kind, probe.device);
        let make = || {
            let t = Tensor::f_randn([b, probe.heads, s, probe.head_dim], opts)?;
            Ok::<_, tch::TchError>(if probe.backward {
                t.set_requires_grad(true)
            } else {
                t
            })
        };
        let (q, k, v) = (make()?, make()?, make()?);
        // Like the models' mask: 0 for real keys, -10000 for padding, made in fp32.
        let mask = probe.masked.then(|| {
            let real = Tensor::ones([b, s], (Kind::Float, probe.device));
            let _ = real.narrow(1, s - 3, 3).f_fill_(0.0);
            ((real.ones_like() - &real) * crate::model::crammed_bert::MASK_FILL).view([b, 1, 1, s])
        });
        let scale = 1.0 / (probe.head_dim as f64).sqrt();
        let y = if probe.backward {
            attend(&q, &k, &v, mask.as_ref(), probe.dropout, scale)?
        } else {
            tch::no_grad(|| attend(&q, &k, &v, mask.as_ref(), 0.0, scale))?
        };
        if probe.backward {
            y.to_kind(Kind::Float).f_sum(Kind::Float)?.f_backward()?;
        }
        let finite = y.f_isfinite()?.f_all()?.f_int64_value(&[])? == 1;
        if !finite {
            return Err(tch::TchError::Kind("non-finite attention output".into()));
        }
        Ok(())
    };
    run().map_err(|e| {
        let first = e.to_string();
        let first = first
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        Error::input(
            what,
            format!(
                "attention backend `{backend}` cannot run on {} for this phase ({:?}, head_dim \
                 {}, {}{}): {}; choose another (auto, flash, efficient, cudnn, math)",
                device_name(probe.device),
                probe.kind,
                probe.head_dim,
                if probe.masked {
                    "padding mask"
                } else {
                    "no mask"
                },
                match (probe.backward, probe.dropout > 0.0) {
                    (true, true) => ", backward, dropout",
                    (true, false) => ", backward",
                    _ => "",
                },
                crate::torchrt::redact_paths(first.trim_start_matches("Internal torch error: "))
            ),
        )
    })?;
    Ok(flags)
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "the CPU".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in AttentionBackend::ALL {
            assert_eq!(b.name().parse::<AttentionBackend>(), Ok(b));
            let j = serde_json::to_string(&b).unwrap();
            assert_eq!(j, format!("\"{}\"", b.name()));
        }
        let e = "fast".parse::<AttentionBackend>().unwrap_err();
        assert!(e.contains("auto, flash, efficient, cudnn, math"), "{e}");
    }

    #[test]
    fn single_backends_enable_one_switch() {
        for b in [
            AttentionBackend::Flash,
            AttentionBackend::Efficient,
            AttentionBackend::Cudnn,
            AttentionBackend::Math,
        ] {
            let f = b.flags();
            let on = [f.flash, f.mem_efficient, f.math, f.cudnn];
            assert_eq!(on.iter().filter(|x| **x).count(), 1, "{b}: {f:?}");
        }
    }
}
