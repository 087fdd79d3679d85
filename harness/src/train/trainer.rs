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
//! A non-finite loss skips that micro-batch's backward pass; `nonfinite_patience` of them in a
//! row abort the run (exit 1) with a message naming the micro-step, leaving the last good
//! checkpoint as `latest`.
use super::amp::{Amp, LossScaler, Precision};
use super::budget::BudgetClock;
use super::checkpoint::{self, TrainState, STATE_FORMAT};
use super::config::TrainConfig;
use super::masking::Masker;
use super::metrics::{Event, LineLog, MlLog};
use super::optim::{clip_grad_norm, Adam, AdamConfig};
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

/// Run pretraining. Returns the summary; a persistent non-finite loss is an error
/// ([`Error::Check`]) naming the micro-step.
pub fn pretrain(job: Pretrain<'_>) -> Result<PretrainSummary> {
    pretrain_dist(job, &mut super::dist::Single)
}

/// [`pretrain`] as one rank of a data-parallel run. `[dist]` marks what differs from one
/// process (see [`super::dist`]); with [`super::dist::Single`] every such line is the identity.
pub fn pretrain_dist(
    job: Pretrain<'_>,
    dist: &mut dyn super::dist::Collective,
) -> Result<PretrainSummary> {
    let cfg = &job.train;
    let recipe_sha256 = crate::recipe::resolved_sha256(&job.recipe_resolved)?;
    let seeds: BTreeMap<String, u64> = SEED_LABELS
        .iter()
        .map(|l| (l.to_string(), seeds::derive(job.master_seed, l)))
        .collect();
    let seq_len = job.data.seq_len();
    let mbs = cfg.microbatch_size as usize;
    // [dist] the budget counts device-hours: wall time × world size.
    let (rank, world) = (dist.rank(), dist.world_size());
    let devices = world as u32;
    let lead = rank == 0;
    let log_dir = super::dist::log_dir(dist, &job.out);
    let amp = Amp::setup(cfg.precision, cfg.tf32, job.device);
    let train_mode = cfg.pretrain_in_train_mode;

    let params: Vec<(String, Tensor)> = {
        let mut v: Vec<(String, Tensor)> = job
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut opt = Adam::new(
        AdamConfig {
            kind: cfg.optimizer,
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            no_decay: cfg.no_decay.clone(),
        },
        params,
    );
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
    let masker = Masker {
        kind: cfg.masking,
        p: cfg.mlm_probability,
        vocab_size: job.data.vocab_size() as u64,
        seed: seeds["masking"],
    };

    // Fresh start or resume.
    let existing = checkpoint::load_latest(&job.out);
    let mut state = if job.resume {
        let ck = existing?.ok_or_else(|| {
            Error::input(
                job.out.display(),
                "--resume: no checkpoint to resume from (checkpoints/latest is missing)",
            )
        })?;
        if ck.state.recipe_sha256 != recipe_sha256 {
            return Err(Error::input(
                ck.dir.display(),
                format!(
                    "--resume: the checkpoint was made with recipe {} (resolved sha256 {}), not this one ({recipe_sha256})",
                    ck.state.recipe_name, ck.state.recipe_sha256
                ),
            )
            .into());
        }
        if ck.state.master_seed != job.master_seed {
            return Err(Error::input(
                ck.dir.display(),
                format!(
                    "--resume: the checkpoint has master seed {}, not {}",
                    ck.state.master_seed, job.master_seed
                ),
            )
            .into());
        }
        if ck.state.data_digest != job.data.digest() {
            return Err(Error::input(
                ck.dir.display(),
                format!(
                    "--resume: the checkpoint was trained on {:?}, not {:?}",
                    ck.state.data_digest,
                    job.data.digest()
                ),
            )
            .into());
        }
        job.vs
            .load(ck.model_path())
            .map_err(|e| Error::input(ck.model_path().display(), e))?;
        opt.load(&ck.optimizer_path(), ck.state.optimizer_steps)?;
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
        (
            TrainState {
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
            },
            None,
        )
    };
    let (ref mut st, resumed_from) = state;
    st.budget_hours = job.budget_hours;
    // Resuming on another device can change the effective precision (fp16 only on CUDA).
    let want_scaling = amp.precision == Precision::Fp16;
    if st.scaler.enabled != want_scaling {
        st.scaler = LossScaler::new(want_scaling);
    }

    std::fs::create_dir_all(&job.out).map_err(|e| Error::io(&job.out, e))?;
    let fresh = resumed_from.is_none();
    // [dist] rank 0 alone writes the run's logs.
    let mut metrics = LineLog::open(&log_dir.join("metrics.jsonl"), fresh || !lead)?;
    let mut mllog = MlLog::open(&log_dir.join("mllog.log"), fresh || !lead)?;
    if fresh {
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
                json!(ramp.accumulation_steps(cfg.batch_size)),
            ),
            ("opt_base_learning_rate", json!(cfg.lr)),
            ("opt_adam_beta_1", json!(cfg.betas[0])),
            ("opt_adam_beta_2", json!(cfg.betas[1])),
            ("opt_adam_epsilon", json!(cfg.eps)),
            ("opt_weight_decay", json!(cfg.weight_decay)),
            ("opt_learning_rate_training_steps", json!(cfg.steps)),
            ("opt_learning_rate_warmup_steps", json!(schedule.warmup)),
            ("max_sequence_length", json!(seq_len)),
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
    metrics.line(
        &json!({
            "kind": "start", "time_ms": super::metrics::now_ms() as u64, "recipe": job.recipe_name,
            "recipe_sha256": recipe_sha256, "resumed": !fresh, "micro_step": st.micro_step,
            "elapsed_s": st.elapsed_s, "budget_device_hours": job.budget_hours,
            "precision": amp, "device": format!("{:?}", job.device),
        })
        .to_string(),
    )?;

    // Time spent after the last checkpoint of a crashed process was still spent: the heartbeat
    // says how much, and it counts against the budget.
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
    let mut clock = BudgetClock::new(job.budget_hours, devices, st.elapsed_s);
    let mut last_heartbeat = Instant::now();
    let mut boundary = Boundary {
        micro_step: st.micro_step,
        optimizer_steps: st.optimizer_steps,
        sequences_seen: st.sequences_seen,
        tokens_seen: st.tokens_seen,
        data_position: st.data_position,
    };
    let loaded_micro_step = resumed_from.as_ref().map(|_| st.micro_step);
    let mut recent: VecDeque<f64> = st.recent_losses.iter().copied().collect();
    let window = cfg.loss_window.max(1);
    let mut accum_target = ramp.accumulation_steps(st.batch_size);
    let mut accumulated = 0u64;
    let mut accum_losses: Vec<f64> = Vec::new();
    let mut consecutive_nonfinite = 0u32;
    let mut last_good_checkpoint: Option<PathBuf> = resumed_from.clone();
    let mut checkpoint_s = 0.0;
    let mut tokens_this_run = 0u64;
    let bar = progress_bar(
        job.progress && lead,
        job.budget_hours / devices as f64 * 3600.0,
    );
    // [dist] every rank reads and masks the world's micro-batch and trains on its own rows.
    let gmbs = mbs * world;
    let mut ids = vec![0i64; gmbs * seq_len];
    let mut labels = vec![0i64; gmbs * seq_len];
    let own = rank * mbs * seq_len..(rank + 1) * mbs * seq_len;
    let dropout_seed = super::dist::rank_seed(seeds["dropout"], job.master_seed, rank);
    let ckpt_every_s = cfg.checkpoint_every_minutes * 60.0;

    let save = |st: &mut TrainState,
                b: &Boundary,
                elapsed_s: f64,
                recent: &VecDeque<f64>,
                opt: &Adam,
                vs: &nn::VarStore| {
        st.micro_step = b.micro_step;
        st.optimizer_steps = b.optimizer_steps;
        st.sequences_seen = b.sequences_seen;
        st.tokens_seen = b.tokens_seen;
        st.data_position = b.data_position;
        st.elapsed_s = elapsed_s;
        st.recent_losses = recent.iter().copied().collect();
        let tokenizer = job.data.tokenizer_path();
        checkpoint::save(
            &job.out,
            st,
            &job.arch_json,
            tokenizer.as_deref(),
            cfg.keep_checkpoints,
            |dir| {
                vs.save(dir.join("model.safetensors"))?;
                opt.save(&dir.join("optimizer.safetensors"))
            },
        )
    };

    // [dist] the clock starts when every rank is ready.
    super::dist::agree_stop(dist, 0)?;
    clock.start();
    let run_started = Instant::now();
    let mut last_ckpt = Instant::now();
    let reason = loop {
        let local = if job.stop.load(Ordering::SeqCst) {
            1
        } else if clock.spent() {
            2
        } else if st.micro_step >= cfg.steps {
            3
        } else {
            0
        };
        // [dist] all ranks stop at the same micro-step, for the first reason any rank sees.
        match super::dist::agree_stop(dist, local)? {
            1 => break StopReason::Signal,
            2 => break StopReason::Budget,
            3 => break StopReason::Steps,
            _ => {}
        }
        // One micro-batch.
        for b in 0..gmbs {
            let i = st.data_position % job.data.num_blocks();
            job.data
                .block(i, &mut ids[b * seq_len..(b + 1) * seq_len])?;
            st.data_position += 1;
        }
        masker.mask(&mut ids, &mut labels, seq_len, st.micro_step);
        let input = Tensor::from_slice(&ids[own.clone()])
            .reshape([mbs as i64, seq_len as i64])
            .to_device(job.device);
        let target = Tensor::from_slice(&labels[own.clone()])
            .reshape([mbs as i64, seq_len as i64])
            .to_device(job.device);
        if train_mode && accumulated == 0 {
            // Dropout masks depend only on the seed and the optimizer step, so resumed runs
            // draw the same ones.
            let s = dropout_seed ^ st.optimizer_steps.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tch::manual_seed((s >> 1) as i64);
        }
        let loss = amp.forward(|| (job.loss)(&input, &target, train_mode));
        // [dist] the mean over the ranks (the same on all: they skip or step together).
        let loss_value = super::dist::mean_scalar(dist, loss.double_value(&[]))?;
        if loss_value.is_finite() {
            consecutive_nonfinite = 0;
            let scaled = st.scaler.scale_loss(&(loss / accum_target as f64));
            scaled.backward();
            recent.push_back(loss_value);
            while recent.len() > window {
                recent.pop_front();
            }
            if st.initial_losses.len() < INITIAL_LOSS_WINDOW {
                st.initial_losses.push(loss_value);
            }
            accum_losses.push(loss_value);
        } else {
            consecutive_nonfinite += 1;
            if consecutive_nonfinite >= cfg.nonfinite_patience.max(1) {
                let kept = match &last_good_checkpoint {
                    Some(p) => format!("the last good checkpoint is {}", p.display()),
                    None => "no checkpoint was written before it".to_string(),
                };
                mllog.event(
                    Event::IntervalEnd,
                    "run_stop",
                    Value::Null,
                    json!({"status": "aborted"}),
                )?;
                mllog.sync()?;
                bar.finish_and_clear();
                return Err(Error::Check(format!(
                    "training diverged: the loss was non-finite ({loss_value}) for {consecutive_nonfinite} consecutive micro-steps, the last at micro-step {} (optimizer step {}); {kept}",
                    st.micro_step, st.optimizer_steps
                ))
                .into());
            }
        }
        st.micro_step += 1;
        st.sequences_seen += gmbs as u64;
        st.tokens_seen += (gmbs * seq_len) as u64;
        tokens_this_run += (gmbs * seq_len) as u64;
        accumulated += 1;

        if accumulated >= accum_target {
            // The reference's LambdaLR was last stepped after micro-step `micro_step - 1`.
            let lr = schedule.lr(
                st.micro_step - 1,
                clock.elapsed_s(),
                clock.wall_budget_hours(),
            );
            let grads = opt.grads();
            // [dist] gradients averaged over the ranks before anything looks at them.
            dist.all_reduce_mean(&grads)?;
            // Unscale (fp16) and check: a step with an inf/NaN gradient is skipped in every
            // precision (fp16: and the loss scale backs off).
            let finite = st.scaler.unscale(&grads, true);
            let mut grad_norm = None;
            if finite {
                if let Some(max) = cfg.clip_norm() {
                    grad_norm = Some(clip_grad_norm(&grads, max));
                }
                opt.step(lr);
            }
            st.scaler.update(!finite);
            opt.zero_grad();
            st.optimizer_steps += 1;
            crate::io::crash_point("pretrain-step");
            let step_loss = mean(accum_losses.drain(..));
            accumulated = 0;
            let fs = fake_step(clock.elapsed_s(), clock.wall_budget_hours(), cfg.steps);
            st.batch_size = ramp.batch_size(st.micro_step, fs);
            accum_target = ramp.accumulation_steps(st.batch_size);
            boundary = Boundary {
                micro_step: st.micro_step,
                optimizer_steps: st.optimizer_steps,
                sequences_seen: st.sequences_seen,
                tokens_seen: st.tokens_seen,
                data_position: st.data_position,
            };
            let tps = tokens_this_run as f64 / run_started.elapsed().as_secs_f64().max(1e-9);
            if st.optimizer_steps % cfg.log_every.max(1) == 0 {
                metrics.line(
                    &json!({
                        "kind": "step", "time_ms": super::metrics::now_ms() as u64,
                        "optimizer_step": st.optimizer_steps, "micro_step": st.micro_step,
                        "loss": step_loss, "lr": lr, "batch_size": st.batch_size,
                        "grad_norm": grad_norm.filter(|g| g.is_finite()), "skipped": !finite,
                        "loss_scale": st.scaler.scale, "tokens_seen": st.tokens_seen,
                        "tokens_per_second": tps, "elapsed_s": clock.elapsed_s(),
                        "budget_fraction": clock.used_device_hours() / job.budget_hours,
                    })
                    .to_string(),
                )?;
            }
            bar.set_position((clock.elapsed_s() / devices as f64 * 1000.0) as u64);
            bar.set_message(format!(
                "step {} loss {:.4} lr {:.2e} bs {} {:.0} tok/s left {}",
                st.optimizer_steps,
                step_loss.unwrap_or(f64::NAN),
                lr,
                st.batch_size,
                tps,
                fmt_duration(clock.left().as_secs_f64())
            ));
            if lead && last_heartbeat.elapsed().as_secs_f64() >= HEARTBEAT_EVERY_S {
                write_heartbeat(&heartbeat_path, st, clock.elapsed_s())?;
                last_heartbeat = Instant::now();
            }
            if lead && ckpt_every_s > 0.0 && last_ckpt.elapsed().as_secs_f64() >= ckpt_every_s {
                let t = Instant::now();
                let dir = save(st, &boundary, clock.elapsed_s(), &recent, &opt, job.vs)?;
                checkpoint_s += t.elapsed().as_secs_f64();
                last_good_checkpoint = Some(dir);
                last_ckpt = Instant::now();
            }
        }
    };
    let train_s = run_started.elapsed().as_secs_f64();
    let elapsed_s = clock.elapsed_s();
    let used = clock.used_device_hours();
    bar.finish_and_clear();

    // Final checkpoint (not counted in the budget), unless nothing happened since the one we
    // resumed from.
    let t = Instant::now();
    let final_dir = if loaded_micro_step == Some(boundary.micro_step) && accumulated == 0 {
        resumed_from.clone().expect("resumed")
    } else if !lead {
        // [dist] rank 0 writes the checkpoint.
        checkpoint::checkpoints_dir(&job.out).join("latest")
    } else {
        save(st, &boundary, elapsed_s, &recent, &opt, job.vs)?
    };
    let final_ckpt_s = t.elapsed().as_secs_f64();
    let status = match reason {
        StopReason::Signal => "aborted",
        _ => "success",
    };
    mllog.event(
        Event::IntervalEnd,
        "block_stop",
        Value::Null,
        json!({"samples_count": boundary.sequences_seen, "first_epoch_num": st.optimizer_steps, "epoch_count": 1}),
    )?;
    if reason != StopReason::Signal {
        mllog.event(
            Event::PointInTime,
            "train_samples",
            json!(boundary.sequences_seen),
            Value::Null,
        )?;
        mllog.event(
            Event::IntervalEnd,
            "run_stop",
            Value::Null,
            json!({"status": status}),
        )?;
    }
    mllog.sync()?;

    let final_loss = mean(recent.iter().copied());
    let summary = PretrainSummary {
        recipe: job.recipe_name.clone(),
        recipe_sha256,
        stop_reason: reason,
        steps: boundary.optimizer_steps,
        micro_steps: boundary.micro_step,
        sequences_seen: boundary.sequences_seen,
        tokens_seen: boundary.tokens_seen,
        final_mlm_loss: final_loss,
        final_loss_window: recent.len() as u64,
        initial_mlm_loss: mean(st.initial_losses.iter().copied()),
        tokens_per_second: tokens_this_run as f64 / train_s.max(1e-9),
        budget: BudgetSummary {
            allowed_device_hours: job.budget_hours,
            used_device_hours: used,
            devices,
            device_kind: device_kind(job.device),
            counted_phases: vec!["pretraining (incl. warm-up and intermediate checkpoints)".into()],
            uncounted_phases: vec![
                "setup (model build, data open)".into(),
                "final checkpoint".into(),
            ],
            phase_seconds: BTreeMap::from([
                ("setup".to_string(), job.setup_seconds),
                ("pretraining".to_string(), elapsed_s),
                ("pretraining_this_process".to_string(), train_s),
                ("intermediate_checkpoints".to_string(), checkpoint_s),
                ("final_checkpoint".to_string(), final_ckpt_s),
                ("lost_to_interruption".to_string(), lost_s),
            ]),
        },
        precision: amp,
        device: device_kind(job.device),
        master_seed: job.master_seed,
        seeds,
        data_digest: job.data.digest(),
        checkpoint: final_dir,
        metrics_log: metrics.path().to_path_buf(),
        mllog: mllog.path().to_path_buf(),
        resumed_from,
        skipped_steps: st.scaler.skipped_steps,
        lost_to_interruption_s: lost_s,
    };
    metrics.line(
        &json!({"kind": "stop", "time_ms": super::metrics::now_ms() as u64, "summary": summary})
            .to_string(),
    )?;
    metrics.sync()?;
    Ok(summary)
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
