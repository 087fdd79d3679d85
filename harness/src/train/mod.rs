//! Pretraining: budget clock, budget-aware schedules, MLM masking, optimiser, mixed precision,
//! checkpoints and resume, metrics logs.
