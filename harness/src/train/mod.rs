//! Pretraining: budget clock, budget-aware schedules, MLM masking, optimiser, mixed precision,
//! checkpoints and resume, metrics logs.
//!
//! * [`config`] — the `[train]` recipe table ([`TrainConfig`]).
//! * [`budget`] — budget strings and the budget clock (device-hours).
//! * [`schedule`] — learning-rate schedules and the batch-size ramp, pure functions of the
//!   budget fraction or step.
//! * [`masking`] — MLM masking v2 (exact count) and v1 (Bernoulli).
//! * [`optim`] — Adam/AdamW with the no-decay rule and gradient clipping, checkpointable; the
//!   flat variant ([`optim::FlatAdam`]) the trainer uses.
//! * [`amp`] — bf16/fp16 autocast (bf16 on the CPU too) and dynamic loss scaling, on the device.
//! * [`loader`] — the data path on its own thread (masked micro-batches, pinned on CUDA).
//! * [`bench`] — the library side of `bench train-step` and `bench optim`.
//! * [`checkpoint`] — atomic, digest-verified checkpoints and resume.
//! * [`metrics`] — JSONL metrics and `:::MLLOG` lines.
//! * [`synthetic`] — the data-source trait, a deterministic synthetic token stream and a tiny
//!   stand-in MLM for tests.
//! * [`dist`] — data parallel: the collective interface (NCCL on GPUs, TCP on CPU), launcher
//!   environments (torchrun, Slurm, Kubeflow), starting ranks.
//! * [`trainer`] — the loop ([`pretrain`]) and its summary ([`PretrainSummary`]).
//! * [`run`] — `crambench pretrain RECIPE`: recipe → model, data → trainer.
pub mod amp;
pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod dist;
pub mod loader;
pub mod masking;
pub mod metrics;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod synthetic;
pub mod trainer;
pub mod transfer;

pub use config::TrainConfig;
pub use run::{pretrain_recipe, PretrainOptions};
pub use trainer::{pretrain, BudgetSummary, Pretrain, PretrainSummary, StopReason};
