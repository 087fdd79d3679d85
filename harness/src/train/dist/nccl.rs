//! The GPU collective: NCCL through `cudarc` (its `nccl` feature with dynamic loading, so a
//! machine without NCCL still runs everything else).
//!
//! Rank 0 makes the NCCL unique id and sends it to the others over the control connection
//! ([`super::tcp::Control`]); every rank then joins the communicator on its own GPU
//! (`LOCAL_RANK`). Gradients are averaged in place with `ncclAllReduce(…, ncclAvg)` on the
//! legacy default stream, which orders it after the backward pass and before the optimizer
//! step without a host synchronisation. Host scalars (losses, the stop decision) go over the
//! control connection.
//!
//! libnccl is looaded by cudarc under the names it knows (`libnccl.so`, …). When it is not
//! found, or is too old to have a function cudarc calls, creating the collective fails with a
//! named error (exit 3) instead of cudarc's panic; pip's `nvidia-nccl-cu13` and Debian's
//! `libnccl2` install `libnccl.so.2`, which the error names with the link that makes it
//! loadable.
use super::tcp::Control;
use super::Collective;
use crate::error::Error;
use anyhow::Result;
use cudarc::nccl::{result as nccl, sys};
use tch::{Kind, Tensor};

/// An NCCL communicator of one rank.
pub struct Nccl {
    control: Control,
    comm: sys::ncclComm_t,
    ordinal: usize,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nccl({:?}, cuda:{})", self.control, self.ordinal)
    }
}

fn missing(detail: String) -> anyhow::Error {
    Error::Io {
        path: "libnccl".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, detail),
    }
    .into()
}

fn nccl_err(what: &str, e: nccl::NcclError) -> anyhow::Error {
    Error::Check(format!("NCCL {what} failed: {e:?}")).into()
}

/// Where a `libnccl.so.2` is loadable from, if one is (for the error message).
fn soname_2() -> Option<String> {
    // SAFETY: dlopen/dlinfo of a library name; the handle is closed again.
    unsafe {
        let h = libc::dlopen(c"libnccl.so.2".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if h.is_null() {
            return None;
        }
        libc::dlclose(h);
    }
    Some("libnccl.so.2".into())
}

/// Check that libnccl loads and answers (its version), without letting cudarc panic.
pub fn probe() -> Result<i32> {
    // SAFETY: only tries to open the library by cudarc's candidate names.
    if !unsafe { sys::is_culib_present() } {
        let hint = match soname_2() {
            Some(n) => format!(
                "; {n} is installed but cudarc loads NCCL as libnccl.so: link it, e.g. `ln -s \
                 $(dirname $(python -c 'import nvidia.nccl, os; print(nvidia.nccl.__path__[0])'))\
                 /nccl/lib/{n} DIR/libnccl.so` and add DIR to LD_LIBRARY_PATH"
            ),
            None => "; install NCCL (pip install nvidia-nccl-cu13, or Debian's libnccl2 and \
                     libnccl-dev) and put its lib directory on LD_LIBRARY_PATH"
                .into(),
        };
        return Err(missing(format!(
            "NCCL is needed for data-parallel training on GPUs, but no libnccl was found \
             (searched {:?}){hint}",
            ["libnccl.so", "libnccl.so.13", "libnccl.so.12", "…"]
        )));
    }
    // A library without a symbol cudarc needs makes cudarc panic: contained here.
    crate::io::contain_panics("libnccl", || {
        nccl::get_nccl_version().map_err(|e| nccl_err("version query", e))
    })
    .map_err(|e| match e.downcast_ref::<Error>() {
        Some(Error::Input { msg, .. }) => missing(format!(
            "libnccl was found but is unusable (too old or broken for cudarc's NCCL 2.30 \
             bindings): {msg}"
        )),
        _ => e,
    })
}

impl Nccl {
    /// Join the communicator of `control`'s ranks on `cuda:ordinal`.
    pub fn new(mut control: Control, ordinal: usize) -> Result<Nccl> {
        probe()?;
        let ctx = cudarc::driver::CudaContext::new(ordinal)
            .map_err(|e| Error::Check(format!("CUDA device {ordinal} for NCCL: {e:?}")))?;
        ctx.bind_to_thread()
            .map_err(|e| Error::Check(format!("CUDA device {ordinal}: {e:?}")))?;
        let id = if control.rank() == 0 {
            let id = crate::io::contain_panics("libnccl", || {
                nccl::get_uniqueid().map_err(|e| nccl_err("unique id", e))
            })?;
            let bytes: Vec<u8> = id.internal.iter().map(|c| *c as u8).collect();
            control.broadcast(Some(&bytes))?;
            id
        } else {
            let bytes = control.broadcast(None)?;
            if bytes.len() != 128 {
                return Err(
                    Error::Check("NCCL unique id from rank 0 has the wrong size".into()).into(),
                );
            }
            let mut id = sys::ncclUniqueId { internal: [0; 128] };
            for (d, s) in id.internal.iter_mut().zip(&bytes) {
                *d = *s as core::ffi::c_char;
            }
            id
        };
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        let (rank, world) = (control.rank(), control.world_size());
        crate::io::contain_panics("libnccl", || {
            // SAFETY: `comm` is a valid out-pointer; id, rank and world agree on every rank.
            unsafe { nccl::comm_init_rank(&mut comm, world as i32, id, rank as i32) }
                .map_err(|e| nccl_err("communicator initialisation", e))
        })?;
        Ok(Nccl {
            control,
            comm,
            ordinal,
        })
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: the communicator was initialised by `new` and is destroyed once.
        let _ = crate::io::contain_panics("libnccl", || {
            unsafe { nccl::comm_destroy(self.comm) }
                .map(|_| ())
                .map_err(|e| nccl_err("destroy", e))
        });
    }
}

fn dtype(k: Kind) -> Option<sys::ncclDataType_t> {
    Some(match k {
        Kind::Float => sys::ncclDataType_t::ncclFloat32,
        Kind::Double => sys::ncclDataType_t::ncclFloat64,
        Kind::Half => sys::ncclDataType_t::ncclFloat16,
        Kind::BFloat16 => sys::ncclDataType_t::ncclBfloat16,
        _ => return None,
    })
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.control.rank()
    }
    fn world_size(&self) -> usize {
        self.control.world_size()
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn all_reduce_mean(&mut self, tensors: &[Tensor]) -> Result<()> {
        for t in tensors {
            let dt = dtype(t.kind()).ok_or_else(|| {
                Error::Check(format!("NCCL all-reduce: unsupported dtype {:?}", t.kind()))
            })?;
            if t.device() != tch::Device::Cuda(self.ordinal) || !t.is_contiguous() {
                return Err(Error::Check(format!(
                    "NCCL all-reduce: a tensor on {:?} (contiguous: {}), not contiguous on \
                     cuda:{}",
                    t.device(),
                    t.is_contiguous(),
                    self.ordinal
                ))
                .into());
            }
            let ptr = t.data_ptr();
            let n = t.numel();
            // SAFETY: `ptr` is `n` contiguous elements of `dt` on this rank's device; in place.
            unsafe {
                nccl::all_reduce(
                    ptr,
                    ptr,
                    n,
                    dt,
                    sys::ncclRedOp_t::ncclAvg,
                    self.comm,
                    std::ptr::null_mut(),
                )
            }
            .map_err(|e| nccl_err("all-reduce", e))?;
        }
        Ok(())
    }
    fn all_reduce_sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.control.all_reduce_sum(values)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_libnccl_is_a_named_error_not_a_panic() {
        match super::probe() {
            // A machine with NCCL: it answers with its version (e.g. 22703 for 2.27.3).
            Ok(v) => assert!(v > 2_0000, "{v}"),
            Err(e) => {
                assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Io, "{e:#}");
                assert!(format!("{e:#}").contains("libnccl"), "{e:#}");
            }
        }
    }
}
