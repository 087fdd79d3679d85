//! The library side of `crambench bench train-step` and `crambench bench optim`: the trainer's
//! own step (its flat optimizer, autocast, loader thread and accumulation — [`Stepper`]) on a
//! recipe's architecture, and the flat optimizer against the per-parameter one on the same
//! parameters, alternating, so that the timings of one run can be compared side by side.
use super::amp::{Amp, DeviceScaler, LossScaler, Precision};
use super::config::TrainConfig;
use super::loader::{prepare, BatchSpec, Loader, MicroBatch};
use super::masking::Masker;
use super::optim::{self, clip_grad_norm, Adam, FlatAdam, FlatKernel, StepOptions};
use super::synthetic::SyntheticStream;
use super::trainer::Stepper;
use crate::model::{self, ArchConfig, MlmModel};
use anyhow::Result;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Seed of the synthetic token stream the benchmark's loader reads.
const DATA_SEED: u64 = 17;
/// Seed of its masking stream.
const MASK_SEED: u64 = 18;

/// A model, its data path and the trainer's step, ready to be timed.
pub struct StepBench {
    pub arch: ArchConfig,
    pub train: TrainConfig,
    pub vs: VarStore,
    model: Box<dyn MlmModel>,
    data: SyntheticStream,
    spec: BatchSpec,
    pub device: Device,
    pub n_params: i64,
}

impl StepBench {
    /// Build `arch` on `device` (initialised on the CPU after `tch::manual_seed(seed)`), with
    /// micro-batches of `micro_batch × seq_len` tokens from the synthetic stream, masked as
    /// `train.masking` says.
    pub fn new(
        arch: &ArchConfig,
        train: &TrainConfig,
        micro_batch: usize,
        seq_len: usize,
        device: Device,
        seed: i64,
    ) -> Result<Self> {
        tch::manual_seed(seed);
        let (vs, model) = model::build_on(arch, device)?;
        let n_params = model::num_parameters(&vs);
        let data = SyntheticStream::new(seq_len, arch.vocab_size as usize, DATA_SEED);
        let spec = BatchSpec {
            microbatch_size: micro_batch,
            seq_len,
            masker: Masker {
                kind: train.masking,
                p: train.mlm_probability,
                vocab_size: arch.vocab_size as u64,
                seed: MASK_SEED,
            },
            pin_for: device.is_cuda().then_some(device),
        };
        Ok(StepBench {
            arch: arch.clone(),
            train: train.clone(),
            vs,
            model,
            data,
            spec,
            device,
            n_params,
        })
    }

    /// The first micro-batch the loader delivers (for a reference implementation).
    pub fn first_batch(&self) -> Result<MicroBatch> {
        prepare(&self.data, &self.spec, 0, 0)
    }

    /// Hand `f` a function that runs one timed optimizer step of the trainer — `accumulation`
    /// micro-batches from the loader thread (forward under the recipe's autocast, backward),
    /// then the flat optimizer step — and returns its seconds (the device synchronised at the
    /// end; nothing read back).
    pub fn run<R>(
        &mut self,
        accumulation: u64,
        train_mode: bool,
        f: impl FnOnce(&mut dyn FnMut() -> Result<f64>) -> Result<R>,
    ) -> Result<R> {
        let opt = FlatAdam::new(self.train.adam(), optim::trainable(&self.vs))?;
        let amp = Amp::setup_autocast(self.train.precision, self.train.tf32, self.device);
        let scaler = DeviceScaler::from_host(
            &LossScaler::new(amp.precision == Precision::Fp16),
            self.device,
        );
        let model = &self.model;
        let loss = |ids: &Tensor, labels: &Tensor, t: bool| model.mlm_loss(ids, labels, t);
        let mut stepper = Stepper::new(
            amp,
            opt,
            scaler,
            &loss,
            self.device,
            train_mode,
            self.train.clip_norm(),
        );
        let (device, lr, data, spec) = (self.device, self.train.lr, &self.data, &self.spec);
        std::thread::scope(|scope| {
            let loader = Loader::spawn(scope, data, spec.clone(), 0, 0);
            let mut step = || -> Result<f64> {
                let t = Instant::now();
                for _ in 0..accumulation {
                    let batch = loader.next()?;
                    let _loss = stepper.micro_batch(&batch, accumulation);
                }
                stepper.optimizer_step(lr);
                if let Device::Cuda(i) = device {
                    tch::Cuda::synchronize(i as i64);
                }
                Ok(t.elapsed().as_secs_f64())
            };
            f(&mut step)
        })
    }
}

/// Step times of the per-parameter optimizer step of the trainer before the flat optimizer
/// (inf check over every gradient, `clip_grad_norm`, [`Adam::step`], per-parameter zeroing)
/// and of [`FlatAdam::step`] (+ zeroing), alternating one by one on two copies of the same
/// parameters and gradients.
pub struct OptimBench {
    pub n_params: i64,
    pub n_tensors: usize,
    pub groups: usize,
    pub kernel: FlatKernel,
    pub per_parameter_s: Vec<f64>,
    pub flat_s: Vec<f64>,
}

/// Time both optimizer steps on `arch`'s parameters (on `device`) with random gradients,
/// `warmup` untimed and `steps` timed steps each.
pub fn bench_optimizer(
    arch: &ArchConfig,
    train: &TrainConfig,
    device: Device,
    steps: usize,
    warmup: usize,
) -> Result<OptimBench> {
    tch::manual_seed(0);
    let (vs, _model) = model::build_on(arch, device)?;
    let named = optim::trainable(&vs);
    let n_params = model::num_parameters(&vs);
    let grads: Vec<Tensor> = named
        .iter()
        .map(|(_, t)| Tensor::randn(t.size(), (Kind::Float, device)) * 1e-3)
        .collect();
    let copy_params = || -> Vec<(String, Tensor)> {
        named
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().copy().set_requires_grad(true)))
            .collect()
    };
    let old_params = copy_params();
    let old_handles: Vec<Tensor> = old_params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut old = Adam::new(train.adam(), old_params);
    let new_params = copy_params();
    let new_handles: Vec<Tensor> = new_params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut flat = FlatAdam::new(train.adam(), new_params)?;
    // Gradients exist on both (the flat optimizer allocated its views); fill them.
    let fill = |handles: &[Tensor]| {
        tch::no_grad(|| {
            for (p, g) in handles.iter().zip(&grads) {
                let mut pg = p.grad();
                if pg.defined() {
                    pg.copy_(g);
                }
            }
        })
    };
    let backward_old = || {
        // The per-parameter optimizer's gradients come from a backward pass the first time.
        if !old_handles[0].grad().defined() {
            old_handles
                .iter()
                .zip(&grads)
                .map(|(p, g)| (p * g).sum(Kind::Float))
                .fold(Tensor::zeros([], (Kind::Float, device)), |a, b| a + b)
                .backward();
        }
        fill(&old_handles);
    };
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let scaler = LossScaler::new(false);
    let max_norm = train.clip_norm();
    let lr = train.lr;
    let mut old_step = || {
        backward_old();
        sync();
        let t = Instant::now();
        let grads: Vec<Tensor> = old.grads();
        if scaler.unscale(&grads, true) {
            if let Some(m) = max_norm {
                clip_grad_norm(&grads, m);
            }
            old.step(lr);
        }
        old.zero_grad();
        sync();
        t.elapsed().as_secs_f64()
    };
    let mut flat_step = || {
        fill(&new_handles);
        sync();
        let t = Instant::now();
        let _ = flat.step(
            lr,
            &StepOptions {
                inv_scale: None,
                max_norm,
            },
        );
        flat.zero_grad();
        sync();
        t.elapsed().as_secs_f64()
    };
    for _ in 0..warmup {
        old_step();
        flat_step();
    }
    let (mut per_parameter_s, mut flat_s) = (Vec::new(), Vec::new());
    for i in 0..steps {
        // Alternate which goes first.
        if i % 2 == 0 {
            per_parameter_s.push(old_step());
            flat_s.push(flat_step());
        } else {
            flat_s.push(flat_step());
            per_parameter_s.push(old_step());
        }
    }
    Ok(OptimBench {
        n_params,
        n_tensors: named.len(),
        groups: flat.num_groups(),
        kernel: flat.kernel(),
        per_parameter_s,
        flat_s,
    })
}
