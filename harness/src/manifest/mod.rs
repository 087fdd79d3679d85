//! Manifests: what a run proves, and how it is signed.
//!
//! * [`jcs`] — RFC 8785 canonical JSON, which lives in [`crate::provenance::jcs`] (data and
//!   recipes hash canonical JSON too, below this layer); re-exported here for the signers.
//! * [`statement`] — the in-toto Statement v1 with crambench's predicate.
//! * [`predicate`] — the predicate's sections as types (recipe, budget, pretraining, glue,
//!   pipeline), with the v0.1 → v0.2 renames.
//! * [`schema`] — the published JSON Schema and validation against it.
//! * [`keys`] — Ed25519 and ECDSA P-256 keys: generation, PEM files, securesystemslib key ids.
//! * [`oms`] — checkpoint signatures in the OpenSSF model-signing format (`model.sig`).
//! * [`dsse`] — DSSE v1 envelopes: PAE, signing, threshold verification over exact bytes.
//! * [`sign`] — a statement signed into an envelope with the user's key (run, gate).
//! * [`slsa`] — the SLSA v1 provenance statement of a run.
pub mod dsse;
pub use crate::provenance::jcs;
pub mod keys;
pub mod oms;
pub mod predicate;
pub mod schema;
pub mod sign;
pub mod slsa;
pub mod statement;
