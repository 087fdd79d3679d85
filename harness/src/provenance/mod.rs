//! Provenance: everything a run is pinned to before it starts — the machine's hardware and
//! software fingerprint, the git state of the code, SHA-256 content hashes of inputs and
//! derived files, and the seeds derived from one master seed.
pub mod energy;
pub mod fingerprint;
pub mod git;
pub mod hash;
pub mod seeds;
