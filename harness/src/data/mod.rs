//! Data: raw corpus sources → normalised, filtered text → WordPiece tokenizer → packed,
//! hashed, memory-mappable token shards, and the reader that feeds them to pretraining.
//!
//! * [`config`] — the `[data]` recipe table.
//! * [`hub`] — Hugging Face hub files: the shared cache, downloads, the lock file.
//! * [`source`] — sources: pins, formats, documents.
//! * [`tokenizer`] — normaliser, WordPiece training, fixed special ids, fast encoder.
//! * [`prepare`] — the pipeline: documents → tokenizer → packed, ordered, hashed shards.
//! * [`reader`] — the memory-mapped dataset the trainer reads.
pub mod config;
pub mod hub;
pub mod prepare;
pub mod reader;
pub mod source;
pub mod tokenizer;

pub use config::DataConfig;
pub use prepare::{prepare, PrepareOptions, Prepared};
pub use reader::{DatasetManifest, PackedDataset};
pub use tokenizer::load_tokenizer;
