//! The pretraining loop (the reference's `pretrain.py` + `TorchEngineMinimal.step`).
//!
//! Per micro-batch: read `microbatch_size` blocks, mask them, run the forward pass (under
//! autocast on CUDA), and back-propagate `loss / accumulation_steps` (times the loss scale in
//! fp16). When `batch_size / microbatch_size` micro-batches have accumulated: unscale, skip the
//! step on inf/NaN (fp16), clip to the global norm, take an optimizer step with the current
//! learning rate, zero the gradients and recompute the batch size (ramp). The learning rate of
//! an optimizer step is the schedule evaluated at the micro-step counter / elapsed budget at that
//! moment (the reference steps its scheduler after every micro-batch).
//!
//! The budget clock starts once model, data and optimizer are ready and is checked before every
//! micro-batch; when it is spent — or `train.steps` micro-steps are done, or SIGINT/SIGTERM
//! arrived — training stops and a final checkpoint is written. Checkpoints are taken at
//! optimizer-step boundaries: a stop in the middle of an accumulation drops the partial gradient
//! and records the data position of the boundary, so a resumed run replays those micro-batches
//! and continues exactly where the checkpointed state left off.
//!
//! Every few seconds the elapsed budget is also written to `clock.json` (atomically). After a
//! crash (SIGKILL, power loss) the time between the last checkpoint and the crash was still
//! spent; `--resume` counts it against the budget (`lost_to_interruption_s`), so a run cannot
//! gain budget by crashing. The trained state resumes from the checkpoint.
//!
//! No step waits for the device (issue 15 item 3): micro-batches come from a loader thread
//! ([`super::loader`], pinned memory and non-blocking copies on CUDA), losses stay on the device,
//! and the inf check, clip coefficient, skip decision and loss scale are device tensors
//! ([`FlatAdam`], [`DeviceScaler`]). The host reads device values only at logging steps
//! (`log_every`), before checkpoints and at the end, in one transfer ([`trace_host_reads`]
//! lets a test check this).
//!
//! A non-finite loss gives non-finite gradients, so the optimizer step of its accumulation is
//! skipped (on the device, in every precision, as GradScaler skips fp16 steps);
//! `nonfinite_patience` non-finite losses in a row abort the run (exit 1) at the next sync with
//! a message naming the micro-step, leaving the last good checkpoint as `latest`.
use super::amp::{Amp, DeviceScaler, LossScaler, Precision};
use super::budget::BudgetClock;
use super::checkpoint::{self, TrainState, STATE_FORMAT};
use super::config::TrainConfig;
use super::loader::{BatchSpec, Loader, MicroBatch};
use super::masking::Masker;
use super::metrics::{Event, LineLog, MlLog};
use super::optim::{FlatAdam, StepOptions, StepOutcome};
use super::schedule::{fake_step, warmup_steps, BatchRamp, LrSchedule};
use super::synthetic::BlockSource;
use crate::error::Error;
use crate::provenance::seeds;
use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Tensor};

/// The loss function of the model being trained: `(input_ids [B,S] i64, labels [B,S] i64 with
/// −100 = not predicted, train mode) -> mean MLM loss` (`model::MlmModel::mlm_loss`).
pub type LossFn<'a> = &'a dyn Fn(&Tensor, &Tensor, bool) -> Tensor;

/// Losses kept from the start of a run (for "the loss fell" checks and summaries).
const INITIAL_LOSS_WINDOW: usize = 20;
/// Odd 64-bit constant (2^64/φ) mixing the optimizer step into the dropout seed.
const DROPOUT_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Everything the loop needs. The caller builds the model (after `tch::manual_seed` with the
/// `init` seed) and opens the data; the trainer owns the rest.
pub struct Pretrain<'a> {
    /// Recipe name and its fully resolved JSON (its sha256 pins resume to the same recipe).
    pub recipe_name: String,
    pub recipe_resolved: Value,
    pub train: TrainConfig,
    /// Budget in device-hours (the recipe's, or the command line's override).
    pub budget_hours: f64,
    /// The model's variables (reference state-dict names) and loss.
    pub vs: &'a mut nn::VarStore,
    pub loss: LossFn<'a>,
    /// `arch.json` of checkpoints.
    pub arch_json: Value,
    pub data: &'a dyn BlockSource,
    /// Output directory: `checkpoints/`, `metrics.jsonl`, `mllog.log`.
    pub out: PathBuf,
    pub master_seed: u64,
    /// Continue from `out/checkpoints/latest`.
    pub resume: bool,
    pub device: Device,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Set by SIGINT/SIGTERM handlers: save and stop.
    pub stop: Arc<AtomicBool>,
    /// Seconds spent building the model and opening the data (not counted in the budget).
    pub setup_seconds: f64,
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The device-hour budget was spent.
    Budget,
    /// `train.steps` micro-steps were done.
    Steps,
    /// SIGINT or SIGTERM: a checkpoint was saved; `--resume` continues.
    Signal,
}

/// Budget accounting (manifest `predicate.budget`).
#[derive(Debug, Clone, Serialize)]
pub struct BudgetSummary {
    pub allowed_device_hours: f64,
    pub used_device_hours: f64,
    pub devices: u32,
    pub device_kind: String,
    pub counted_phases: Vec<String>,
    pub uncounted_phases: Vec<String>,
    pub phase_seconds: BTreeMap<String, f64>,
}

/// What a pretraining run did (manifest `predicate.pretraining` and `predicate.budget`).
#[derive(Debug, Clone, Serialize)]
pub struct PretrainSummary {
    pub recipe: String,
    pub recipe_sha256: String,
    pub stop_reason: StopReason,
    /// Optimizer steps.
    pub steps: u64,
    pub micro_steps: u64,
    pub sequences_seen: u64,
    pub tokens_seen: u64,
    /// Mean loss over the last `final_loss_window` micro-steps.
    pub final_mlm_loss: Option<f64>,
    pub final_loss_window: u64,
    /// Mean loss over the first micro-steps of the run (up to 20).
    pub initial_mlm_loss: Option<f64>,
    /// Tokens per second of training in this process.
    pub tokens_per_second: f64,
    pub budget: BudgetSummary,
    pub precision: Amp,
    pub device: String,
    pub master_seed: u64,
    pub seeds: BTreeMap<String, u64>,
    pub data_digest: String,
    pub checkpoint: PathBuf,
    pub metrics_log: PathBuf,
    pub mllog: PathBuf,
    /// The checkpoint this run continued from.
    pub resumed_from: Option<PathBuf>,
    /// fp16 steps skipped for inf/NaN gradients.
    pub skipped_steps: u64,
    /// Wall seconds between the last checkpoint and a crash (known from the heartbeat), counted
    /// as used budget on resume.
    pub lost_to_interruption_s: f64,
}

impl PretrainSummary {
    /// `predicate.pretraining` of the manifest schema.
    pub fn predicate_pretraining(&self) -> Value {
        let mut v = json!({
            "steps": self.steps,
            "tokens_seen": self.tokens_seen,
            "final_loss_window": self.final_loss_window,
            "tokens_per_second": self.tokens_per_second,
        });
        if let Some(l) = self.final_mlm_loss {
            v["final_mlm_loss"] = json!(l);
        }
        v
    }

    /// `predicate.budget` of the manifest schema.
    pub fn predicate_budget(&self) -> Value {
        serde_json::to_value(&self.budget).unwrap_or(Value::Null)
    }
}

/// Seed labels a pretraining run derives.
pub const SEED_LABELS: &[&str] = &["init", "data-order", "masking", "dropout"];

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Counters at the last optimizer-step boundary (what a checkpoint records).
#[derive(Debug, Clone, Copy, Default)]
struct Boundary {
    micro_step: u64,
    optimizer_steps: u64,
    sequences_seen: u64,
    tokens_seen: u64,
    data_position: u64,
}

impl Boundary {
    fn of(st: &TrainState) -> Self {
        Boundary {
            micro_step: st.micro_step,
            optimizer_steps: st.optimizer_steps,
            sequences_seen: st.sequences_seen,
            tokens_seen: st.tokens_seen,
            data_position: st.data_position,
        }
    }
}

/// A micro-batch's loss, still on the device.
struct PendingLoss {
    /// Its micro-step and the optimizer steps done before it.
    micro_step: u64,
    optimizer_steps: u64,
    loss: Tensor,
}

/// The last optimizer step's device-side results.
struct LastStep {
    outcome: StepOutcome,
    lr: f64,
}

thread_local! {
    /// Optimizer steps at which the trainer read a tensor on the host (when tracing).
    static HOST_READS: std::cell::RefCell<Option<Vec<u64>>> = const { std::cell::RefCell::new(None) };
}

/// Start (`true`) or stop recording the trainer's host reads on this thread; returns the
/// optimizer-step counts (steps done) at which reads happened since the last call. Every read
/// of a device value by the training loop goes through one place, which records it, so a test
/// can check that non-logging steps read nothing.
pub fn trace_host_reads(on: bool) -> Vec<u64> {
    HOST_READS.with(|r| {
        let old = r.borrow_mut().take().unwrap_or_default();
        if on {
            *r.borrow_mut() = Some(Vec::new());
        }
        old
    })
}

/// Copy `t` to the host (a device synchronisation on CUDA), recording it.
fn host_read(t: &Tensor, optimizer_steps: u64) -> Result<Vec<f64>> {
    HOST_READS.with(|r| {
        if let Some(v) = r.borrow_mut().as_mut() {
            v.push(optimizer_steps);
        }
    });
    let host = t
        .to_kind(tch::Kind::Double)
        .to_device(Device::Cpu)
        .flatten(0, -1);
    Ok(Vec::<f64>::try_from(host)?)
}

/// The trainer's step, without the bookkeeping: forward under autocast and backward per
/// micro-batch, then unscale, clip and the flat AdamW update, all on the device. [`pretrain`]
/// runs it, and `crambench bench train-step` times it.
pub struct Stepper<'a> {
    pub amp: Amp,
    pub opt: FlatAdam,
    pub scaler: DeviceScaler,
    loss: LossFn<'a>,
    device: Device,
    train_mode: bool,
    max_norm: Option<f64>,
}

impl<'a> Stepper<'a> {
    /// A stepper for `loss` over `opt`'s parameters on `device`.
    pub fn new(
        amp: Amp,
        opt: FlatAdam,
        scaler: DeviceScaler,
        loss: LossFn<'a>,
        device: Device,
        train_mode: bool,
        max_norm: Option<f64>,
    ) -> Self {
        Stepper {
            amp,
            opt,
            scaler,
            loss,
            device,
            train_mode,
            max_norm,
        }
    }

    /// Forward and backward of one micro-batch of an accumulation of `accumulation`:
    /// `backward(loss / accumulation · scale)`. Returns the loss (detached, on the device).
    pub fn micro_batch(&mut self, batch: &MicroBatch, accumulation: u64) -> Tensor {
        let (input, target) = batch.to_device(self.device);
        let loss = self
            .amp
            .forward(|| (self.loss)(&input, &target, self.train_mode));
        // A non-finite loss makes non-finite gradients, and the optimizer step skips them.
        self.scaler
            .scale_loss(&(&loss / accumulation as f64))
            .backward();
        loss.detach()
    }

    /// The optimizer step with learning rate `lr`; the gradients are zero afterwards.
    pub fn optimizer_step(&mut self, lr: f64) -> StepOutcome {
        let inv_scale = self.scaler.inverse_scale();
        let outcome = self.opt.step(
            lr,
            &StepOptions {
                inv_scale: inv_scale.as_ref(),
                max_norm: self.max_norm,
            },
        );
        self.scaler.update(&outcome.found_inf);
        self.opt.zero_grad();
        outcome
    }
}

/// The state of one pretraining run between its steps.
struct Run<'a> {
    /// [dist] this process's rank, the world size, and whether it is rank 0 (the one that
    /// writes checkpoints, the heartbeat and the run's logs).
    rank: usize,
    world: usize,
    lead: bool,
    /// [dist] the dropout seed of this rank ([`super::dist::rank_seed`]).
    dropout_seed: u64,
    recipe_sha256: String,
    seeds: BTreeMap<String, u64>,
    seq_len: usize,
    microbatch_size: usize,
    train_mode: bool,
    schedule: LrSchedule,
    ramp: BatchRamp,
    batch_spec: BatchSpec,
    step: Stepper<'a>,
    st: TrainState,
    resumed_from: Option<PathBuf>,
    metrics: LineLog,
    mllog: MlLog,
    heartbeat_path: PathBuf,
    lost_s: f64,
    clock: BudgetClock,
    boundary: Boundary,
    recent: VecDeque<f64>,
    /// Micro-batches per optimizer step now (the batch-size ramp changes it).
    accum_target: u64,
    /// Micro-batches accumulated since the last optimizer step.
    accumulated: u64,
    consecutive_nonfinite: u32,
    last_good_checkpoint: Option<PathBuf>,
    checkpoint_s: f64,
    tokens_this_run: u64,
    bar: indicatif::ProgressBar,
    pending: Vec<PendingLoss>,
    last_step: Option<LastStep>,
    /// The last step's gradient norm and whether it was skipped (known after a sync).
    last_values: Option<(f64, bool)>,
    /// The micro-step of the checkpoint this process resumed from.
    loaded_micro_step: Option<u64>,
    /// Mean finite loss of the last optimizer step (known after a sync).
    step_loss: Option<f64>,
    run_started: Instant,
    last_ckpt: Instant,
    last_heartbeat: Instant,
}

/// Run pretraining. Returns the summary; a persistent non-finite loss is an error
/// ([`Error::Check`]) naming the micro-step.
///
/// Reads like nanoGPT's `train.py`: open or resume, log the preamble, then per optimizer step
/// `for micro_step in accumulation { forward, backward }`, the optimizer step, logging and
/// checkpoints, and the summary. Upstream: `pretrain.py` `main_training_process` and
/// `cramming/backend/torch_default.py` `TorchEngineMinimal.step` (JonasGeiping/cramming
/// 196c991).
pub fn pretrain(job: Pretrain<'_>) -> Result<PretrainSummary> {
    pretrain_dist(job, &mut super::dist::Single)
}

/// [`pretrain`] as one rank of a data-parallel run. `[dist]` marks what differs from one
/// process (see [`super::dist`]); with [`super::dist::Single`] every such line is the identity.
pub fn pretrain_dist(
    mut job: Pretrain<'_>,
    dist: &mut dyn super::dist::Collective,
) -> Result<PretrainSummary> {
    let loss = job.loss;
    let mut run = Run::open_or_resume(&mut job, loss, &*dist)?;
    run.log_preamble(&job)?;
    let job = &job;
    let reason = std::thread::scope(|scope| {
        let loader = Loader::spawn(
            scope,
            job.data,
            run.batch_spec.clone(),
            run.st.micro_step,
            run.st.data_position,
        );
        run.train(job, &loader, dist)
    })?;
    run.finish(job, reason, dist)
}

impl<'a> Run<'a> {
    /// Optimizer, schedules, masking, logs and the budget clock, from a fresh start or from
    /// `out/checkpoints/latest`.
    fn open_or_resume(
        job: &mut Pretrain<'_>,
        loss: LossFn<'a>,
        dist: &dyn super::dist::Collective,
    ) -> Result<Run<'a>> {
        let cfg = &job.train;
        // [dist] the budget counts device-hours: wall time × world size.
        let (rank, world) = (dist.rank(), dist.world_size());
        let lead = rank == 0;
        let recipe_sha256 = crate::recipe::resolved_sha256(&job.recipe_resolved)?;
        let seeds: BTreeMap<String, u64> = SEED_LABELS
            .iter()
            .map(|l| (l.to_string(), seeds::derive(job.master_seed, l)))
            .collect();
        let seq_len = job.data.seq_len();
        let amp = Amp::setup_autocast(cfg.precision, cfg.tf32, job.device);
        let mut opt = FlatAdam::new(cfg.adam(), super::optim::trainable(job.vs))?;
        let schedule = LrSchedule {
            kind: cfg.scheduler,
            base_lr: cfg.lr,
            steps: cfg.steps,
            warmup: warmup_steps(cfg.warmup_steps, cfg.steps),
            lr_end: cfg.lr_end,
            power: cfg.power,
        };
        let ramp = BatchRamp {
            batch_size: cfg.batch_size,
            // [dist] a micro-step is the world's micro-batch.
            microbatch_size: cfg.microbatch_size * world as u64,
            ramp: cfg.batch_size_ramp,
            steps: cfg.steps,
        };
        // [dist] every rank reads and masks the world's micro-batch (the global order of one
        // process) and trains on its own rows.
        let batch_spec = BatchSpec {
            microbatch_size: cfg.microbatch_size as usize * world,
            seq_len,
            masker: Masker {
                kind: cfg.masking,
                p: cfg.mlm_probability,
                vocab_size: job.data.vocab_size() as u64,
                seed: seeds["masking"],
            },
            pin_for: job.device.is_cuda().then_some(job.device),
        };

        let existing = checkpoint::load_latest(&job.out);
        let (mut st, resumed_from) = if job.resume {
            let ck = existing?.ok_or_else(|| {
                Error::input(
                    job.out.display(),
                    "--resume: no checkpoint to resume from (checkpoints/latest is missing)",
                )
            })?;
            check_resumable(job, &ck.state, &ck.dir, &recipe_sha256)?;
            job.vs
                .load(ck.model_path())
                .map_err(|e| Error::input(ck.model_path().display(), e))?;
            // Steps taken = steps done minus those skipped for inf/NaN gradients.
            let taken = ck
                .state
                .optimizer_steps
                .saturating_sub(ck.state.scaler.skipped_steps);
            opt.load(&ck.optimizer_path(), taken)?;
            (ck.state, Some(ck.dir))
        } else {
            if matches!(existing, Ok(Some(_)))
                || checkpoint::checkpoints_dir(&job.out)
                    .join("latest")
                    .exists()
            {
                return Err(Error::Refused(format!(
                    "{} already holds a run; pass --resume to continue it or choose another --out",
                    job.out.display()
                ))
                .into());
            }
            let st = TrainState {
                format: STATE_FORMAT.into(),
                recipe_name: job.recipe_name.clone(),
                recipe_sha256: recipe_sha256.clone(),
                master_seed: job.master_seed,
                seeds: seeds.clone(),
                micro_step: 0,
                optimizer_steps: 0,
                sequences_seen: 0,
                tokens_seen: 0,
                data_position: 0,
                elapsed_s: 0.0,
                budget_hours: job.budget_hours,
                batch_size: ramp.batch_size(0, 0),
                scaler: LossScaler::new(amp.precision == Precision::Fp16),
                recent_losses: Vec::new(),
                initial_losses: Vec::new(),
                data_digest: job.data.digest(),
            };
            (st, None)
        };
        st.budget_hours = job.budget_hours;
        // Resuming on another device can change the effective precision (fp16 only on CUDA).
        let want_scaling = amp.precision == Precision::Fp16;
        if st.scaler.enabled != want_scaling {
            let skipped_steps = st.scaler.skipped_steps;
            st.scaler = LossScaler {
                skipped_steps,
                ..LossScaler::new(want_scaling)
            };
        }
        let scaler = DeviceScaler::from_host(&st.scaler, job.device);

        std::fs::create_dir_all(&job.out).map_err(|e| Error::io(&job.out, e))?;
        let fresh = resumed_from.is_none();
        // [dist] rank 0 alone writes the run's logs.
        let log_dir = super::dist::log_dir(dist, &job.out);
        let metrics = LineLog::open(&log_dir.join("metrics.jsonl"), fresh || !lead)?;
        let mllog = MlLog::open(&log_dir.join("mllog.log"), fresh || !lead)?;

        // Time spent after the last checkpoint of a crashed process was still spent: the
        // heartbeat says how much, and it counts against the budget.
        let heartbeat_path = job.out.join(HEARTBEAT_FILE);
        let mut lost_s = 0.0;
        if !fresh {
            if let Some(hb) = read_heartbeat(&heartbeat_path) {
                if hb.recipe_sha256 == st.recipe_sha256
                    && hb.master_seed == st.master_seed
                    && hb.elapsed_s > st.elapsed_s
                {
                    lost_s = hb.elapsed_s - st.elapsed_s;
                    st.elapsed_s = hb.elapsed_s;
                }
            }
        }
        let devices = world as u32;
        let clock = BudgetClock::new(job.budget_hours, devices, st.elapsed_s);
        let accum_target = ramp.accumulation_steps(st.batch_size);
        let loaded_micro_step = resumed_from.as_ref().map(|_| st.micro_step);
        Ok(Run {
            rank,
            world,
            lead,
            dropout_seed: super::dist::rank_seed(seeds["dropout"], job.master_seed, rank),
            recipe_sha256,
            seeds,
            seq_len,
            microbatch_size: cfg.microbatch_size as usize,
            train_mode: cfg.pretrain_in_train_mode,
            schedule,
            ramp,
            batch_spec,
            step: Stepper::new(
                amp,
                opt,
                scaler,
                loss,
                job.device,
                cfg.pretrain_in_train_mode,
                cfg.clip_norm(),
            ),
            boundary: Boundary::of(&st),
            recent: st.recent_losses.iter().copied().collect(),
            resumed_from: resumed_from.clone(),
            last_good_checkpoint: resumed_from,
            st,
            metrics,
            mllog,
            heartbeat_path,
            lost_s,
            clock,
            accum_target,
            accumulated: 0,
            consecutive_nonfinite: 0,
            checkpoint_s: 0.0,
            tokens_this_run: 0,
            bar: progress_bar(
                job.progress && lead,
                job.budget_hours / devices as f64 * 3600.0,
            ),
            pending: Vec::new(),
            last_step: None,
            last_values: None,
            loaded_micro_step,
            step_loss: None,
            run_started: Instant::now(),
            last_ckpt: Instant::now(),
            last_heartbeat: Instant::now(),
        })
    }

    /// The MLPerf-style preamble of `mllog.log` (fresh runs), the block start and the `start`
    /// line of `metrics.jsonl`.
    fn log_preamble(&mut self, job: &Pretrain<'_>) -> Result<()> {
        let cfg = &job.train;
        let st = &self.st;
        let mllog = &mut self.mllog;
        if self.resumed_from.is_none() {
            mllog.event(Event::PointInTime, "cache_clear", json!(true), Value::Null)?;
            mllog.event(Event::IntervalStart, "init_start", Value::Null, Value::Null)?;
            mllog.event(
                Event::PointInTime,
                "submission_benchmark",
                json!(job.recipe_name),
                Value::Null,
            )?;
            mllog.event(
                Event::PointInTime,
                "seed",
                json!(job.master_seed),
                Value::Null,
            )?;
            for (key, value) in [
                ("global_batch_size", json!(cfg.batch_size)),
                (
                    "gradient_accumulation_steps",
                    json!(self.ramp.accumulation_steps(cfg.batch_size)),
                ),
                ("opt_base_learning_rate", json!(cfg.lr)),
                ("opt_adam_beta_1", json!(cfg.betas[0])),
                ("opt_adam_beta_2", json!(cfg.betas[1])),
                ("opt_adam_epsilon", json!(cfg.eps)),
                ("opt_weight_decay", json!(cfg.weight_decay)),
                ("opt_learning_rate_training_steps", json!(cfg.steps)),
                (
                    "opt_learning_rate_warmup_steps",
                    json!(self.schedule.warmup),
                ),
                ("max_sequence_length", json!(self.seq_len)),
                ("train_budget_device_hours", json!(job.budget_hours)),
            ] {
                mllog.event(Event::PointInTime, key, value, Value::Null)?;
            }
            mllog.event(Event::IntervalEnd, "init_stop", Value::Null, Value::Null)?;
            mllog.event(Event::IntervalStart, "run_start", Value::Null, Value::Null)?;
        }
        mllog.event(
            Event::IntervalStart,
            "block_start",
            Value::Null,
            json!({"samples_count": st.sequences_seen, "first_epoch_num": st.optimizer_steps, "epoch_count": 1}),
        )?;
        mllog.sync()?;
        if job.progress {
            eprintln!("{}", self.step.amp.describe(cfg.precision));
        }
        self.metrics.line(
            &json!({
                "kind": "start", "time_ms": super::metrics::now_ms() as u64, "recipe": job.recipe_name,
                "recipe_sha256": self.recipe_sha256, "resumed": self.resumed_from.is_some(),
                "micro_step": st.micro_step, "elapsed_s": st.elapsed_s,
                "budget_device_hours": job.budget_hours, "precision": self.step.amp,
                "device": format!("{:?}", job.device),
            })
            .to_string(),
        )?;
        Ok(())
    }

    /// The training loop proper. The budget clock starts here; the stop conditions are checked
    /// before every micro-batch, so a spent budget or a signal can end a run in the middle of
    /// an accumulation (its partial gradient is dropped; see the module docs).
    fn train(
        &mut self,
        job: &Pretrain<'_>,
        loader: &Loader,
        dist: &mut dyn super::dist::Collective,
    ) -> Result<StopReason> {
        // [dist] the clock starts when every rank is ready.
        super::dist::agree_stop(dist, 0)?;
        self.clock.start();
        self.run_started = Instant::now();
        self.last_ckpt = Instant::now();
        loop {
            let accumulation = self.accum_target;
            for micro_step in 0..accumulation {
                if let Some(reason) = self.stop_reason(job, dist)? {
                    return Ok(reason);
                }
                let batch = loader.next()?;
                self.forward_backward(&batch, micro_step, accumulation)?;
            }
            self.optimizer_step(job, dist)?;
            self.log_and_checkpoint(job, dist)?;
        }
    }

    fn stop_reason(
        &self,
        job: &Pretrain<'_>,
        dist: &mut dyn super::dist::Collective,
    ) -> Result<Option<StopReason>> {
        let local = if job.stop.load(Ordering::SeqCst) {
            1
        } else if self.clock.spent() {
            2
        } else if self.st.micro_step >= job.train.steps {
            3
        } else {
            0
        };
        // [dist] all ranks stop at the same micro-step, for the first reason any rank sees.
        Ok(match super::dist::agree_stop(dist, local)? {
            1 => Some(StopReason::Signal),
            2 => Some(StopReason::Budget),
            3 => Some(StopReason::Steps),
            _ => None,
        })
    }

    /// One micro-batch: forward under autocast, backward of `loss / accumulation` (times the
    /// loss scale in fp16). The loss stays on the device until the next sync.
    fn forward_backward(
        &mut self,
        batch: &MicroBatch,
        micro_step: u64,
        accumulation: u64,
    ) -> Result<()> {
        let st = &mut self.st;
        if batch.micro_step != st.micro_step {
            anyhow::bail!(
                "bug: the data loader delivered micro-step {} for micro-step {}",
                batch.micro_step,
                st.micro_step
            );
        }
        if self.train_mode && micro_step == 0 {
            // Dropout masks depend only on the seed and the optimizer step, so resumed runs
            // draw the same ones.
            let s = self.dropout_seed ^ st.optimizer_steps.wrapping_mul(DROPOUT_SEED_MIX);
            tch::manual_seed((s >> 1) as i64);
        }
        let loss = if self.world == 1 {
            self.step.micro_batch(batch, accumulation)
        } else {
            // [dist] this rank's rows of the world's micro-batch.
            let (from, n) = (
                (self.rank * self.microbatch_size) as i64,
                self.microbatch_size as i64,
            );
            let own = MicroBatch {
                micro_step: batch.micro_step,
                next_position: batch.next_position,
                input_ids: batch.input_ids.narrow(0, from, n),
                labels: batch.labels.narrow(0, from, n),
            };
            self.step.micro_batch(&own, accumulation)
        };
        self.pending.push(PendingLoss {
            micro_step: st.micro_step,
            optimizer_steps: st.optimizer_steps,
            loss,
        });
        // [dist] the world's micro-batch was seen.
        let sequences = (self.microbatch_size * self.world) as u64;
        let tokens = sequences * self.seq_len as u64;
        st.micro_step += 1;
        st.data_position = batch.next_position;
        st.sequences_seen += sequences;
        st.tokens_seen += tokens;
        self.tokens_this_run += tokens;
        self.accumulated += 1;
        Ok(())
    }

    /// Unscale, inf check, clip and update — all on the device — then the next batch size.
    fn optimizer_step(
        &mut self,
        job: &Pretrain<'_>,
        dist: &mut dyn super::dist::Collective,
    ) -> Result<()> {
        // [dist] gradients averaged over the ranks (the flat buffers) before anything looks at
        // them: every rank then takes or skips the same step.
        if self.world > 1 {
            dist.all_reduce_mean(&self.step.opt.flat_grads())?;
        }
        let cfg = &job.train;
        let st = &mut self.st;
        // The reference's LambdaLR was last stepped after micro-step `micro_step - 1`.
        let lr = self.schedule.lr(
            st.micro_step - 1,
            self.clock.elapsed_s(),
            self.clock.wall_budget_hours(),
        );
        let outcome = self.step.optimizer_step(lr);
        st.optimizer_steps += 1;
        crate::io::crash_point("pretrain-step");
        self.accumulated = 0;
        let fs = fake_step(
            self.clock.elapsed_s(),
            self.clock.wall_budget_hours(),
            cfg.steps,
        );
        st.batch_size = self.ramp.batch_size(st.micro_step, fs);
        self.accum_target = self.ramp.accumulation_steps(st.batch_size);
        self.boundary = Boundary::of(st);
        self.last_step = Some(LastStep { outcome, lr });
        Ok(())
    }

    /// Read the device values the host needs — pending losses, the scaler, the step counter,
    /// the last step's norm and inf flag — in one transfer, and account for them: the loss
    /// windows, the non-finite patience (an error naming the micro-step), the scaler's host
    /// copy. Called at logging steps, before checkpoints and at the end.
    fn sync(&mut self, job: &Pretrain<'_>, dist: &mut dyn super::dist::Collective) -> Result<()> {
        let mut parts: Vec<Tensor> = self
            .pending
            .iter()
            .map(|p| p.loss.to_kind(tch::Kind::Double).reshape([1]))
            .collect();
        parts.push(self.step.scaler.state());
        parts.push(self.step.opt.step_counter().reshape([1]));
        if let Some(last) = &self.last_step {
            parts.push(
                last.outcome
                    .grad_norm
                    .to_kind(tch::Kind::Double)
                    .reshape([1]),
            );
            parts.push(
                last.outcome
                    .found_inf
                    .to_kind(tch::Kind::Double)
                    .reshape([1]),
            );
        }
        let mut values = host_read(&Tensor::cat(&parts, 0), self.st.optimizer_steps)?;
        let n = self.pending.len();
        if self.world > 1 {
            // [dist] each micro-step's loss is the mean over the ranks (every rank syncs at
            // the same steps).
            dist.all_reduce_sum(&mut values[..n])?;
            values[..n].iter_mut().for_each(|v| *v /= self.world as f64);
        }
        let (losses, rest) = values.split_at(n);
        self.st.scaler = self.step.scaler.to_host(&rest[..3]);
        self.step.opt.sync_steps(rest[3] as u64);
        if self.last_step.is_some() {
            self.last_values = Some((rest[4], rest[5] != 0.0));
        }
        let window = job.train.loss_window.max(1);
        let this_step = self.st.optimizer_steps.saturating_sub(1);
        let (mut sum, mut count) = (0.0, 0usize);
        let pending = std::mem::take(&mut self.pending);
        for (p, &value) in pending.iter().zip(losses) {
            if value.is_finite() {
                self.consecutive_nonfinite = 0;
                self.recent.push_back(value);
                while self.recent.len() > window {
                    self.recent.pop_front();
                }
                if self.st.initial_losses.len() < INITIAL_LOSS_WINDOW {
                    self.st.initial_losses.push(value);
                }
                if p.optimizer_steps == this_step {
                    sum += value;
                    count += 1;
                }
                continue;
            }
            self.consecutive_nonfinite += 1;
            if self.consecutive_nonfinite >= job.train.nonfinite_patience.max(1) {
                return Err(self.diverged(value, p)?);
            }
        }
        self.step_loss = (count > 0).then(|| sum / count as f64);
        Ok(())
    }

    /// The error of a run whose loss stayed non-finite (after closing its MLPerf log).
    fn diverged(&mut self, value: f64, at: &PendingLoss) -> Result<anyhow::Error> {
        let kept = match &self.last_good_checkpoint {
            Some(p) => format!("the last good checkpoint is {}", p.display()),
            None => "no checkpoint was written before it".to_string(),
        };
        self.mllog.event(
            Event::IntervalEnd,
            "run_stop",
            Value::Null,
            json!({"status": "aborted"}),
        )?;
        self.mllog.sync()?;
        self.bar.finish_and_clear();
        Ok(Error::Check(format!(
            "training diverged: the loss was non-finite ({value}) for {} consecutive micro-steps, the last at micro-step {} (optimizer step {}); {kept}",
            self.consecutive_nonfinite, at.micro_step, at.optimizer_steps
        ))
        .into())
    }

    /// Every `log_every` steps: sync and a metrics line; the progress bar, the heartbeat, and
    /// a checkpoint every `checkpoint_every_minutes`.
    fn log_and_checkpoint(
        &mut self,
        job: &Pretrain<'_>,
        dist: &mut dyn super::dist::Collective,
    ) -> Result<()> {
        let cfg = &job.train;
        let tps = self.tokens_this_run as f64 / self.run_started.elapsed().as_secs_f64().max(1e-9);
        let mut synced = false;
        if self.st.optimizer_steps % cfg.log_every.max(1) == 0 {
            self.sync(job, dist)?;
            synced = true;
            self.log_step(job, tps)?;
        }
        self.bar
            .set_position((self.clock.elapsed_s() / self.world as f64 * 1000.0) as u64);
        if self.lead && self.last_heartbeat.elapsed().as_secs_f64() >= HEARTBEAT_EVERY_S {
            write_heartbeat(&self.heartbeat_path, &self.st, self.clock.elapsed_s())?;
            self.last_heartbeat = Instant::now();
        }
        let ckpt_every_s = cfg.checkpoint_every_minutes * 60.0;
        let due = ckpt_every_s > 0.0 && self.last_ckpt.elapsed().as_secs_f64() >= ckpt_every_s;
        // [dist] the ranks agree on checkpoint steps (the sync before it is collective); rank 0
        // writes the checkpoint.
        if super::dist::agree_stop(dist, due as u8)? != 0 {
            if !synced {
                self.sync(job, dist)?;
            }
            if self.lead {
                let t = Instant::now();
                let dir = self.save(job, self.clock.elapsed_s())?;
                self.checkpoint_s += t.elapsed().as_secs_f64();
                self.last_good_checkpoint = Some(dir);
            }
            self.last_ckpt = Instant::now();
        }
        Ok(())
    }

    /// The `step` line of `metrics.jsonl` and the progress bar's message (after a sync).
    fn log_step(&mut self, job: &Pretrain<'_>, tps: f64) -> Result<()> {
        let st = &self.st;
        let lr = self.last_step.as_ref().map_or(0.0, |l| l.lr);
        let (grad_norm, skipped) = match self.last_values {
            Some((norm, skipped)) => (Some(norm), skipped),
            None => (None, false),
        };
        self.metrics.line(
            &json!({
                "kind": "step", "time_ms": super::metrics::now_ms() as u64,
                "optimizer_step": st.optimizer_steps, "micro_step": st.micro_step,
                "loss": self.step_loss, "lr": lr, "batch_size": st.batch_size,
                "grad_norm": grad_norm.filter(|g| g.is_finite()), "skipped": skipped,
                "loss_scale": st.scaler.scale, "tokens_seen": st.tokens_seen,
                "tokens_per_second": tps, "elapsed_s": self.clock.elapsed_s(),
                "budget_fraction": self.clock.used_device_hours() / job.budget_hours,
            })
            .to_string(),
        )?;
        self.bar.set_message(format!(
            "step {} loss {:.4} lr {:.2e} bs {} {:.0} tok/s left {}",
            st.optimizer_steps,
            self.step_loss.unwrap_or(f64::NAN),
            lr,
            st.batch_size,
            tps,
            fmt_duration(self.clock.left().as_secs_f64())
        ));
        Ok(())
    }

    /// A checkpoint of the state at the last optimizer-step boundary (after a sync).
    fn save(&mut self, job: &Pretrain<'_>, elapsed_s: f64) -> Result<PathBuf> {
        let b = self.boundary;
        let st = &mut self.st;
        st.micro_step = b.micro_step;
        st.optimizer_steps = b.optimizer_steps;
        st.sequences_seen = b.sequences_seen;
        st.tokens_seen = b.tokens_seen;
        st.data_position = b.data_position;
        st.elapsed_s = elapsed_s;
        st.recent_losses = self.recent.iter().copied().collect();
        let tokenizer = job.data.tokenizer_path();
        let (opt, vs) = (&self.step.opt, &*job.vs);
        checkpoint::save(
            &job.out,
            st,
            &job.arch_json,
            tokenizer.as_deref(),
            job.train.keep_checkpoints,
            |dir| {
                vs.save(dir.join("model.safetensors"))?;
                opt.save(&dir.join("optimizer.safetensors"))
            },
        )
    }

    /// The final sync and checkpoint (not counted in the budget), the closing log lines and the
    /// summary.
    fn finish(
        mut self,
        job: &Pretrain<'_>,
        reason: StopReason,
        dist: &mut dyn super::dist::Collective,
    ) -> Result<PretrainSummary> {
        let train_s = self.run_started.elapsed().as_secs_f64();
        let elapsed_s = self.clock.elapsed_s();
        let used = self.clock.used_device_hours();
        self.sync(job, dist)?;
        self.bar.finish_and_clear();
        let t = Instant::now();
        let unchanged =
            self.loaded_micro_step == Some(self.boundary.micro_step) && self.accumulated == 0;
        let final_dir = match (&self.resumed_from, unchanged) {
            (Some(dir), true) => dir.clone(),
            // [dist] rank 0 writes the checkpoint.
            _ if !self.lead => checkpoint::checkpoints_dir(&job.out).join("latest"),
            _ => self.save(job, elapsed_s)?,
        };
        let final_ckpt_s = t.elapsed().as_secs_f64();
        let boundary = self.boundary;
        let status = match reason {
            StopReason::Signal => "aborted",
            _ => "success",
        };
        self.mllog.event(
            Event::IntervalEnd,
            "block_stop",
            Value::Null,
            json!({"samples_count": boundary.sequences_seen, "first_epoch_num": self.st.optimizer_steps, "epoch_count": 1}),
        )?;
        if reason != StopReason::Signal {
            self.mllog.event(
                Event::PointInTime,
                "train_samples",
                json!(boundary.sequences_seen),
                Value::Null,
            )?;
            self.mllog.event(
                Event::IntervalEnd,
                "run_stop",
                Value::Null,
                json!({"status": status}),
            )?;
        }
        self.mllog.sync()?;
        let summary = PretrainSummary {
            recipe: job.recipe_name.clone(),
            recipe_sha256: self.recipe_sha256.clone(),
            stop_reason: reason,
            steps: boundary.optimizer_steps,
            micro_steps: boundary.micro_step,
            sequences_seen: boundary.sequences_seen,
            tokens_seen: boundary.tokens_seen,
            final_mlm_loss: mean(self.recent.iter().copied()),
            final_loss_window: self.recent.len() as u64,
            initial_mlm_loss: mean(self.st.initial_losses.iter().copied()),
            tokens_per_second: self.tokens_this_run as f64 / train_s.max(1e-9),
            budget: BudgetSummary {
                allowed_device_hours: job.budget_hours,
                used_device_hours: used,
                devices: self.world as u32,
                device_kind: device_kind(job.device),
                counted_phases: vec![
                    "pretraining (incl. warm-up and intermediate checkpoints)".into()
                ],
                uncounted_phases: vec![
                    "setup (model build, data open)".into(),
                    "final checkpoint".into(),
                ],
                phase_seconds: BTreeMap::from([
                    ("setup".to_string(), job.setup_seconds),
                    ("pretraining".to_string(), elapsed_s),
                    ("pretraining_this_process".to_string(), train_s),
                    ("intermediate_checkpoints".to_string(), self.checkpoint_s),
                    ("final_checkpoint".to_string(), final_ckpt_s),
                    ("lost_to_interruption".to_string(), self.lost_s),
                ]),
            },
            precision: self.step.amp,
            device: device_kind(job.device),
            master_seed: job.master_seed,
            seeds: self.seeds.clone(),
            data_digest: job.data.digest(),
            checkpoint: final_dir,
            metrics_log: self.metrics.path().to_path_buf(),
            mllog: self.mllog.path().to_path_buf(),
            resumed_from: self.resumed_from.clone(),
            skipped_steps: self.st.scaler.skipped_steps,
            lost_to_interruption_s: self.lost_s,
        };
        self.metrics.line(
            &json!({"kind": "stop", "time_ms": super::metrics::now_ms() as u64, "summary": summary})
                .to_string(),
        )?;
        self.metrics.sync()?;
        Ok(summary)
    }
}

/// The checks of `--resume`: same recipe, master seed and data as the checkpoint.
fn check_resumable(
    job: &Pretrain<'_>,
    state: &TrainState,
    dir: &Path,
    recipe_sha256: &str,
) -> Result<()> {
    if state.recipe_sha256 != recipe_sha256 {
        return Err(Error::input(
            dir.display(),
            format!(
                "--resume: the checkpoint was made with recipe {} (resolved sha256 {}), not this one ({recipe_sha256})",
                state.recipe_name, state.recipe_sha256
            ),
        )
        .into());
    }
    if state.master_seed != job.master_seed {
        return Err(Error::input(
            dir.display(),
            format!(
                "--resume: the checkpoint has master seed {}, not {}",
                state.master_seed, job.master_seed
            ),
        )
        .into());
    }
    if state.data_digest != job.data.digest() {
        return Err(Error::input(
            dir.display(),
            format!(
                "--resume: the checkpoint was trained on {:?}, not {:?}",
                state.data_digest,
                job.data.digest()
            ),
        )
        .into());
    }
    Ok(())
}

/// The heartbeat file in the output directory: elapsed budget, refreshed every few seconds.
pub const HEARTBEAT_FILE: &str = "clock.json";
/// Seconds between heartbeats.
const HEARTBEAT_EVERY_S: f64 = 2.0;

#[derive(Debug, Serialize, serde::Deserialize)]
struct Heartbeat {
    recipe_sha256: String,
    master_seed: u64,
    micro_step: u64,
    elapsed_s: f64,
}

fn write_heartbeat(path: &Path, st: &TrainState, elapsed_s: f64) -> Result<()> {
    let hb = Heartbeat {
        recipe_sha256: st.recipe_sha256.clone(),
        master_seed: st.master_seed,
        micro_step: st.micro_step,
        elapsed_s,
    };
    crate::io::write_atomic(path, &serde_json::to_vec(&hb)?, None)
}

fn read_heartbeat(path: &Path) -> Option<Heartbeat> {
    let bytes = crate::io::read_limited(path, 1 << 16).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A human description of the device (`cpu`, `cuda:0`).
pub fn device_kind(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn progress_bar(enabled: bool, budget_wall_s: f64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some((budget_wall_s * 1000.0) as u64),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}") {
        bar.set_style(style);
    }
    bar
}
