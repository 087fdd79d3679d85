//! crambench: reproduce *Cramming* (Geiping & Goldstein, arXiv 2212.14034) and its BERT
//! baselines, and prove what ran.
//!
//! Modules in layer order, lowest first; a module imports only modules of its own or a lower
//! layer (checked by hand with `grep crate::` — the list below is what the code has):
//!
//! 1. [`error`], [`escape`], [`ident`], [`io`], [`rng`], [`stats`], [`torchrt`] —
//!    infrastructure: error classes and exit codes, the one check of names that become paths,
//!    crash-safe file writes, the seeded random stream, descriptive statistics, loading
//!    libtorch's CUDA backend before the first tch call.
//! 2. [`provenance`] — what a run is pinned to: machine fingerprint, git state, content hashes,
//!    RFC 8785 canonical JSON, seeds.
//! 3. [`recipe`] — the TOML recipes in `baselines/`; each stage reads its own table.
//! 4. [`data`] — sources, normaliser, tokenizer (with the special-token ids), packed token
//!    shards and their reader.
//! 5. [`model`] — the crammed BERT and the BERT baselines in tch; FLOPs, GPU peaks, MFU and the
//!    training-step benchmark.
//! 6. [`train`] — budget clock, schedules, masking, trainer, checkpoints.
//! 7. [`glue`] — GLUE tasks, fine-tuning, metrics, aggregates and controls.
//! 8. [`manifest`] — the signed record: in-toto Statement with the typed predicate (its
//!    sections are the stages' results), DSSE envelopes, keys, the published JSON Schema,
//!    OpenSSF model signatures, SLSA provenance.
//! 9. [`record`] — reading a finished run (directory, bundle or envelope) once, into the typed
//!    predicate, for the tools after it; [`reference`] — the paper's GLUE-dev rows as data.
//! 10. [`audit`] — verifying a run's artifacts against its signed manifest (digests, re-scored
//!     predictions, medians, aggregate, model signature): one implementation for verify, gate,
//!     submit, leaderboard.
//! 11. [`report`], [`compare`], [`gate`], [`leaderboard`] — the run report, runs side by side,
//!     the CI regression gate with its signed test-result attestation, submission bundles and
//!     the verified leaderboard site (`compare` draws on `report`'s HTML pieces).
//! 12. [`run`] — `crambench run`: every stage from recipe to signed manifest, resumable.
//! 13. [`sweep`] — `crambench sweep`: recipes × seeds × overrides as many runs, locally or as a
//!     Slurm job array; their status and a signed summary over seeds.
//!
//! The binary's `cli/` sits on top of all of them.
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
