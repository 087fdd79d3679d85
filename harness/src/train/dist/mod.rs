//! Data-parallel pretraining: one small collective interface ([`Collective`]) so the trainer
//! has one code path for one process and for many.
//!
//! * [`Single`] — world size 1: every operation is the identity (no copy, no thread, no socket).
//! * [`nccl::Nccl`] — the GPU path: gradients averaged by NCCL's all-reduce (`ncclAvg`) through
//!   `cudarc`, with libnccl loaded at run time; a missing or broken libnccl is a named error
//!   (exit 3), never a panic.
//! * [`tcp::Tcp`] — a CPU transport for ranks on one machine or a LAN (TCP, star through rank
//!   0), used for CPU runs and to test the data-parallel path without GPUs. It is not a fast
//!   collective; the GPU path is NCCL alone.
//!
//! Ranks find each other through a rendezvous at `MASTER_ADDR:MASTER_PORT` ([`tcp::Control`],
//! torch.distributed's TCPStore in miniature): rank 0 listens, the others connect; the NCCL
//! unique id, the pretraining job and small host values (the losses, the stop decision) travel
//! over it.
//!
//! What data parallelism changes in the trainer (`trainer.rs`, marked `[dist]` there): with
//! world size W and micro-batch m, one micro-step reads the next W·m blocks of the global order
//! (so the order of the data does not depend on W), every rank masks all W·m rows with the
//! micro-step's mask stream and trains on its own m rows (rows r·m .. (r+1)·m), the losses are
//! averaged over the ranks, and the gradients are averaged by all-reduce before the optimizer
//! step. So W ranks with micro-batch m compute what one process computes with micro-batch W·m
//! (exactly so with v2 masking, which masks the same count in every sequence; v1's Bernoulli
//! masking weights the ranks' mean losses equally, as PyTorch DDP does). Dropout draws from one
//! seed stream per rank ([`rank_seed`]); all ranks stop at the same micro-step (the first stop
//! reason any rank sees); rank 0 alone writes checkpoints, logs and manifests. The budget counts
//! device-hours: wall time × W.
pub mod env;
pub mod nccl;
pub mod tcp;
pub mod worker;

pub use env::{DistEnv, Launcher};

use anyhow::Result;
use tch::Tensor;

/// Collective operations among the ranks of one data-parallel run. Every rank calls the same
/// operations in the same order with tensors of the same shapes.
pub trait Collective {
    /// This process's rank, 0 ≤ rank < world_size.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// `nccl`, `tcp` or `single`.
    fn backend(&self) -> &'static str;
    /// Replace every tensor by its mean over the ranks (gradients before the optimizer step).
    fn all_reduce_mean(&mut self, tensors: &[Tensor]) -> Result<()>;
    /// Replace every value by its sum over the ranks (host scalars: losses, stop flags).
    fn all_reduce_sum(&mut self, values: &mut [f64]) -> Result<()>;
}

/// World size 1: nothing to exchange.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single"
    }
    fn all_reduce_mean(&mut self, _: &[Tensor]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum(&mut self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// The mean of a host value over the ranks.
pub fn mean_scalar(c: &mut dyn Collective, v: f64) -> Result<f64> {
    if c.world_size() == 1 {
        return Ok(v);
    }
    let mut x = [v];
    c.all_reduce_sum(&mut x)?;
    Ok(x[0] / c.world_size() as f64)
}

/// Why the ranks stop, agreed: each rank's own reason (`0` none, else a code where a lower
/// code wins: 1 signal, 2 budget, 3 steps); every rank gets the same answer.
pub fn agree_stop(c: &mut dyn Collective, local: u8) -> Result<u8> {
    if c.world_size() == 1 {
        return Ok(local);
    }
    let mut flags = [0.0; 3];
    if (1..=3).contains(&local) {
        flags[local as usize - 1] = 1.0;
    }
    c.all_reduce_sum(&mut flags)?;
    Ok(flags
        .iter()
        .position(|f| *f > 0.0)
        .map(|i| i as u8 + 1)
        .unwrap_or(0))
}

/// The dropout seed of `rank`: rank 0 keeps the run's `dropout` seed (so a one-process run is
/// unchanged), rank r > 0 draws from `derive(master, "dropout/rank<r>")`.
pub fn rank_seed(dropout_seed: u64, master_seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        dropout_seed
    } else {
        crate::provenance::seeds::derive(master_seed, &format!("dropout/rank{rank}"))
    }
}

/// Where a rank writes its logs: `out` on rank 0; a scratch directory on the others (their
/// logs are not the run's, and are removed when the worker ends).
pub fn log_dir(c: &dyn Collective, out: &std::path::Path) -> std::path::PathBuf {
    if c.rank() == 0 {
        out.to_path_buf()
    } else {
        std::env::temp_dir().join(format!("crambench-rank{}-{}", c.rank(), std::process::id()))
    }
}

/// Copy tensors into one flat f32 host buffer (their elements in order).
pub(crate) fn flatten_host(tensors: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for t in tensors {
        let flat = t
            .detach()
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous()
            .view([-1]);
        let v: Vec<f32> = Vec::<f32>::try_from(&flat)?;
        out.extend_from_slice(&v);
    }
    Ok(out)
}

/// Write a flat f32 host buffer back into `tensors` (the inverse of [`flatten_host`]).
pub(crate) fn unflatten_host(tensors: &[Tensor], flat: &[f32]) -> Result<()> {
    let mut at = 0usize;
    tch::no_grad(|| -> Result<()> {
        for t in tensors {
            let n = t.numel();
            let src = Tensor::from_slice(&flat[at..at + n])
                .view(t.size().as_slice())
                .to_kind(t.kind())
                .to_device(t.device());
            let mut dst = t.shallow_clone();
            dst.copy_(&src);
            at += n;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_is_the_identity() {
        let mut s = Single;
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        s.all_reduce_mean(std::slice::from_ref(&t)).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0, 2.0]);
        assert_eq!(mean_scalar(&mut s, 3.5).unwrap(), 3.5);
        assert_eq!(agree_stop(&mut s, 2).unwrap(), 2);
        assert_eq!(rank_seed(7, 1, 0), 7);
        assert_ne!(rank_seed(7, 1, 1), rank_seed(7, 1, 2));
    }

    #[test]
    fn flat_buffers_round_trip() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[5.0f64]);
        let flat = flatten_host(&[a.shallow_clone(), b.shallow_clone()]).unwrap();
        assert_eq!(flat, [1.0, 2.0, 3.0, 4.0, 5.0]);
        unflatten_host(
            &[a.shallow_clone(), b.shallow_clone()],
            &[9.0, 8.0, 7.0, 6.0, 0.5],
        )
        .unwrap();
        assert_eq!(a.double_value(&[1, 0]), 7.0);
        assert_eq!(b.double_value(&[0]), 0.5);
        assert_eq!(b.kind(), tch::Kind::Double);
    }
}
