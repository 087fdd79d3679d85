//! The data path of pretraining: read `microbatch_size` blocks, mask them, and hand the
//! micro-batch to the training thread as two `[B, S]` Int64 tensors — in pinned host memory
//! when training on CUDA, so that the copy to the device does not block the host.
//!
//! [`Loader`] does this on its own thread, a few micro-batches ahead of the training thread
//! (a bounded queue of [`QUEUE_DEPTH`]), the way upstream cramming's `DataLoader` workers with
//! `pin_memory=True` do (`cramming/backend/utils.py` `prepare_pretraining_dataloader`,
//! JonasGeiping/cramming 196c991). Micro-batch `k` holds blocks `position .. position + B`
//! (wrapping around the data) masked with the stream of micro-step `k`, exactly as
//! [`prepare`] computes inline, so its content and order do not depend on the thread, and a
//! loader started at a checkpoint's `(micro_step, data_position)` continues the same sequence.
use super::masking::Masker;
use super::synthetic::BlockSource;
use anyhow::Result;
use std::sync::mpsc::{sync_channel, Receiver};
use tch::{Device, Tensor};

/// Micro-batches prepared ahead of the training thread.
pub const QUEUE_DEPTH: usize = 4;

/// One masked micro-batch on the host.
pub struct MicroBatch {
    /// The micro-step it is for.
    pub micro_step: u64,
    /// The data position after it (`position + B`).
    pub next_position: u64,
    /// `[B, S]` Int64 ids with masking applied, and labels (−100 where not predicted).
    pub input_ids: Tensor,
    pub labels: Tensor,
}

impl MicroBatch {
    /// Both tensors on `device`: a non-blocking copy from pinned memory on CUDA.
    pub fn to_device(&self, device: Device) -> (Tensor, Tensor) {
        if device.is_cuda() {
            let copy = |t: &Tensor| t.to_device_(device, tch::Kind::Int64, true, false);
            (copy(&self.input_ids), copy(&self.labels))
        } else {
            (self.input_ids.shallow_clone(), self.labels.shallow_clone())
        }
    }
}

/// What a micro-batch is made of.
#[derive(Clone)]
pub struct BatchSpec {
    pub microbatch_size: usize,
    pub seq_len: usize,
    pub masker: Masker,
    /// Pin the host tensors for this device (CUDA only).
    pub pin_for: Option<Device>,
}

/// Micro-batch `micro_step` starting at data position `position`, computed inline.
pub fn prepare(
    data: &dyn BlockSource,
    spec: &BatchSpec,
    micro_step: u64,
    position: u64,
) -> Result<MicroBatch> {
    let (b, s) = (spec.microbatch_size, spec.seq_len);
    let mut ids = vec![0i64; b * s];
    let mut labels = vec![0i64; b * s];
    let n = data.num_blocks();
    for (k, row) in ids.chunks_exact_mut(s).enumerate() {
        data.block((position + k as u64) % n, row)?;
    }
    spec.masker.mask(&mut ids, &mut labels, s, micro_step);
    let shape = [b as i64, s as i64];
    let to_tensor = |v: &[i64]| {
        let t = Tensor::from_slice(v).reshape(shape);
        match spec.pin_for {
            Some(d) if d.is_cuda() => t.pin_memory(d),
            _ => t,
        }
    };
    Ok(MicroBatch {
        micro_step,
        next_position: position + b as u64,
        input_ids: to_tensor(&ids),
        labels: to_tensor(&labels),
    })
}

/// Micro-batches from a loader thread, in order (see the module docs).
pub struct Loader {
    rx: Receiver<Result<MicroBatch>>,
}

impl Loader {
    /// Start the thread in `scope` at `(micro_step, position)`. It stops when the loader is
    /// dropped (or at the first read error, which [`Loader::next`] returns).
    pub fn spawn<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        data: &'env dyn BlockSource,
        spec: BatchSpec,
        micro_step: u64,
        position: u64,
    ) -> Self {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        scope.spawn(move || {
            let (mut k, mut pos) = (micro_step, position);
            loop {
                let batch = prepare(data, &spec, k, pos);
                let failed = batch.is_err();
                if let Ok(b) = &batch {
                    pos = b.next_position;
                }
                if tx.send(batch).is_err() || failed {
                    return;
                }
                k += 1;
            }
        });
        Loader { rx }
    }

    /// The next micro-batch.
    pub fn next(&self) -> Result<MicroBatch> {
        self.rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the data loader thread ended"))?
    }
}
