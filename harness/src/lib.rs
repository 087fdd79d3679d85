//! crambench: reproduce *Cramming* (Geiping & Goldstein, arXiv 2212.14034) and its BERT
//! baselines, and prove what ran.
//!
//! Modules follow the data's path, and a lower layer never imports a higher one:
//!
//! * [`error`], [`escape`], [`ident`], [`io`], [`rng`], [`stats`], [`torchrt`] — infrastructure: error classes and exit
//!   codes, the one check of names that become paths, crash-safe file writes, the seeded random stream, descriptive statistics, loading libtorch's CUDA backend before the
//!   first tch call.
//! * [`provenance`] — what a run is pinned to: machine fingerprint, git state, content hashes,
//!   seeds.
//! * [`data`] — sources, normaliser, tokenizer, packed token shards and their reader.
//! * [`model`] — the crammed BERT and the BERT baselines in tch.
//! * [`train`] — budget clock, schedules, masking, trainer, checkpoints.
//! * [`glue`] — GLUE tasks, fine-tuning, metrics and aggregates.
//! * [`manifest`] — the signed record: in-toto Statement, RFC 8785 canonical JSON, DSSE
//!   envelopes with Ed25519, the published JSON Schema.
//! * [`recipe`] — the TOML recipes in `baselines/` that tie the stages together.
//! * [`reference`] — the paper's published GLUE-dev rows as data.
//! * [`run`] — `crambench run`: every stage from recipe to signed manifest, resumable.
//! * [`record`] — reading a finished run (directory, bundle or envelope) for the tools after it.
//! * [`audit`] — verifying a run's artifacts against its signed manifest (digests, re-scored
//!   predictions, medians, aggregate): one implementation for verify, gate, submit, leaderboard.
//! * [`leaderboard`] — submission bundles, track rules, verified and ranked leaderboard site.
//! * [`report`] — the run report: Markdown and a self-contained HTML page with curves.
//! * [`sweep`] — `crambench sweep`: recipes × seeds × overrides as many runs, locally or as a
//!   Slurm job array; status, and the signed summary over seeds. Above [`run`].
//! * [`compare`], [`gate`] — runs side by side; the CI regression gate with its signed
//!   test-result attestation.
pub mod audit;
pub mod compare;
pub mod data;
pub mod error;
pub mod escape;
pub mod gate;
pub mod glue;
pub mod ident;
pub mod io;
pub mod leaderboard;
pub mod manifest;
pub mod model;
pub mod provenance;
pub mod recipe;
pub mod record;
pub mod reference;
pub mod report;
pub mod rng;
pub mod run;
pub mod stats;
pub mod sweep;
pub mod torchrt;
pub mod train;

pub use error::{Error, ExitCode};

/// This crate's version, as recorded in fingerprints and manifests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
