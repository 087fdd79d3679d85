//! The `[data]` recipe table: which sources, how they are processed, and where the dataset goes.
//!
//! Defaults follow the Cramming reference (upstream `cramming/data/pretraining_preparation.py` and `cramming/config/data/`, JonasGeiping/cramming 196c991): WordPiece 32768, sequence length
//! 128, trash cutoff 0.25, the reference normaliser. Every field is documented where it is used; an
//! unknown key is an error naming the recipe file and the key.
use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Smallest `data.vocab_size` accepted.
pub const MIN_VOCAB_SIZE: u32 = 64;

/// `[data]` of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The raw corpora, read in this order.
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    /// Keep only the first N entries (after concatenation), in source order; 0 = all.
    /// The reference's `max_entries_in_raw_dataset`.
    #[serde(default)]
    pub max_entries: u64,
    /// Join this many successive entries of a source into one document by plain string
    /// concatenation, no separator (the reference's `concatenate_successive_entries`; 16 for
    /// bookcorpus). 1 = off.
    #[serde(default = "one")]
    pub concatenate_successive_entries: u32,
    /// Remove exact duplicate documents (by SHA-256 of their text; the first copy is kept).
    #[serde(default)]
    pub deduplicate: bool,
    /// Drop documents whose token count is not below `trash_cutoff` × character count.
    #[serde(default)]
    pub remove_trash: bool,
    /// Tokens per character above which a document counts as trash (reference: 0.25).
    #[serde(default = "default_trash_cutoff")]
    pub trash_cutoff: f64,
    /// WordPiece vocabulary size, special tokens included (reference: 32768).
    #[serde(default = "default_vocab")]
    pub vocab_size: u32,
    /// Tokens per packed block (reference: 128).
    #[serde(default = "default_seq_len")]
    pub seq_len: u32,
    /// The reference normaliser switches (`_construct_tokenizer` upstream: all true).
    #[serde(default = "yes")]
    pub lowercase: bool,
    /// NFD + StripAccents; `false`: NFKC instead, as the reference.
    #[serde(default = "yes")]
    pub strip_accents: bool,
    /// Drop every non-ASCII character (the reference's `force_english_keyboard`).
    #[serde(default = "yes")]
    pub ascii_only: bool,
    /// Block order in the shards.
    #[serde(default)]
    pub ordering: Ordering,
    /// Master seed of the data pipeline; `randomized` shuffles with
    /// `seeds::derive(seed, "data-order")`.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Keep at most this many blocks after ordering (reference: 85e6 for the Pile, 35e6 for
    /// bookcorpus-wikipedia). 0 = all.
    #[serde(default)]
    pub max_blocks: u64,
    /// What to do with a bad record (invalid UTF-8, JSONL line without the text field, …):
    /// `error` stops and names file and line; `skip` skips it and counts it in the manifest.
    #[serde(default)]
    pub on_bad_record: OnBadRecord,
    /// Blocks per shard file.
    #[serde(default = "default_shard_blocks")]
    pub shard_blocks: u64,
    /// Longest record read, in bytes: a JSONL or text line, a whole-file text entry, a Parquet
    /// string. A longer one is a bad record (`record-too-long`, see `on_bad_record`), found
    /// before it is held in memory. Raise it for a corpus with longer documents. Not part of
    /// the dataset's identity (it changes no content, only what is refused); written to the
    /// resolved recipe only when it differs from the default.
    #[serde(
        default = "default_max_record_bytes",
        skip_serializing_if = "is_default_max_record_bytes"
    )]
    pub max_record_bytes: u64,
    /// For pre-tokenised sources (`format = "parquet-ids"`): the tokenizer they were made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<SourceSpec>,
}

impl Default for DataConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_trash_cutoff() -> f64 {
    0.25
}
fn default_vocab() -> u32 {
    32768
}
fn default_seq_len() -> u32 {
    128
}
fn default_seed() -> u64 {
    233
}
fn default_shard_blocks() -> u64 {
    1 << 16
}
/// Default of `data.max_record_bytes`: 64 MiB, far above any document of the paper's corpora.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 << 20;
/// Largest `data.max_record_bytes` accepted.
pub const MAX_MAX_RECORD_BYTES: u64 = 4 << 30;
fn default_max_record_bytes() -> u64 {
    DEFAULT_MAX_RECORD_BYTES
}
fn is_default_max_record_bytes(v: &u64) -> bool {
    *v == DEFAULT_MAX_RECORD_BYTES
}

/// Block order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// A seeded Fisher–Yates shuffle of the blocks (splitmix64 stream seeded with
    /// `derive(seed, "data-order")`).
    #[default]
    Randomized,
    /// Descending count of "." tokens per block; ties keep their packing order (a stable
    /// sort; the reference's unstable quicksort leaves ties unspecified).
    SentenceLengthCurriculum,
    /// Packing order (source order).
    AsIs,
}

/// Policy for bad records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBadRecord {
    #[default]
    Error,
    Skip,
}

/// One source: exactly one of `path`, `hub` or `embedded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A file or directory, relative to the recipe file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Files of a Hugging Face hub repository (a path or a glob at a branch, tag or commit),
    /// resolved through the lock file and downloaded into the Hugging Face cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubFile>,
    /// A corpus compiled into crambench: `sotu` (US State of the Union addresses 1790–2021).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<String>,
    /// `text`, `jsonl` or `parquet` (text column) or `parquet-ids` (pre-tokenised
    /// `input_ids`); inferred from the file name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The JSONL field or Parquet column holding the text (default `text`; `input_ids` for
    /// `parquet-ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `text`: one entry per `file` (default) or per non-empty `line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Pin of a file: SHA-256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Pin of a directory: in-toto dirHash (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_hash: Option<String>,
    /// Pin: size in bytes (total for a directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Override of `[data].concatenate_successive_entries` for this source (the reference
    /// joins 16 bookcorpus lines but not wikipedia articles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concatenate_successive_entries: Option<u32>,
}

/// Files of a Hugging Face hub repository: a revision and a path or glob, pinned by the lock
/// file (or by hand: a commit, one path, `sha256` and `size` on the source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubFile {
    /// `owner/name`.
    pub repo: String,
    /// `dataset` (default) or `model`.
    #[serde(default = "default_repo_type")]
    pub repo_type: String,
    /// A branch, tag or commit; the lock file records the commit it resolved to.
    pub revision: String,
    /// Path inside the repository, or a glob (`*` never crosses `/`; files in path order).
    pub path: String,
}

fn default_repo_type() -> String {
    "dataset".into()
}

/// Source formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Text,
    Jsonl,
    Parquet,
    ParquetIds,
}

/// How a text file is cut into entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    File,
    Line,
}

impl DataConfig {
    /// Check values that serde cannot: ranges and combinations. `what` names the recipe.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |field: &str, msg: String| -> anyhow::Error {
            Error::input(format!("{what}: data.{field}"), msg).into()
        };
        if self.sources.is_empty() {
            return Err(bad("sources", "at least one source is needed".into()));
        }
        if !(self.trash_cutoff > 0.0 && self.trash_cutoff.is_finite()) {
            return Err(bad(
                "trash_cutoff",
                format!("must be a positive number, got {}", self.trash_cutoff),
            ));
        }
        if self.vocab_size < MIN_VOCAB_SIZE || self.vocab_size > (1 << 24) {
            return Err(bad(
                "vocab_size",
                format!(
                    "must be in {MIN_VOCAB_SIZE}..=16777216, got {}",
                    self.vocab_size
                ),
            ));
        }
        if self.seq_len < 2 || self.seq_len > 1 << 16 {
            return Err(bad(
                "seq_len",
                format!("must be in 2..=65536, got {}", self.seq_len),
            ));
        }
        if self.concatenate_successive_entries == 0
            || self
                .sources
                .iter()
                .any(|s| s.concatenate_successive_entries == Some(0))
        {
            return Err(bad(
                "concatenate_successive_entries",
                "must be at least 1".into(),
            ));
        }
        if self.shard_blocks == 0 {
            return Err(bad("shard_blocks", "must be at least 1".into()));
        }
        if !(1..=MAX_MAX_RECORD_BYTES).contains(&self.max_record_bytes) {
            return Err(bad(
                "max_record_bytes",
                format!(
                    "must be in 1..={MAX_MAX_RECORD_BYTES}, got {}",
                    self.max_record_bytes
                ),
            ));
        }
        if self.seed > crate::provenance::seeds::MAX_SEED {
            return Err(bad("seed", "must be at most 2^53-1".into()));
        }
        let ids = self
            .sources
            .iter()
            .filter(|s| s.format == Some(Format::ParquetIds))
            .count();
        if ids > 0 && ids != self.sources.len() {
            return Err(bad(
                "sources",
                "pre-tokenised (parquet-ids) sources cannot be mixed with text sources".into(),
            ));
        }
        if ids > 0 && self.tokenizer.is_none() {
            return Err(bad(
                "tokenizer",
                "pre-tokenised sources need the tokenizer they were made with: data.tokenizer = { path = …, sha256 = …, size = … }".into(),
            ));
        }
        for (i, s) in self.sources.iter().chain(self.tokenizer.iter()).enumerate() {
            let n = s.path.is_some() as u8 + s.hub.is_some() as u8 + s.embedded.is_some() as u8;
            if n != 1 {
                return Err(bad(
                    &format!("sources[{i}]"),
                    "needs exactly one of path, hub, embedded".into(),
                ));
            }
            for (k, v) in [("sha256", &s.sha256), ("dir_hash", &s.dir_hash)] {
                if let Some(v) = v {
                    if v.len() != 64
                        || !v
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    {
                        return Err(bad(
                            &format!("sources[{i}].{k}"),
                            format!("{v:?} is not 64 lowercase hex digits"),
                        ));
                    }
                }
            }
            if let Some(h) = &s.hub {
                // It becomes refs/<revision> in the hub cache: every component an identifier.
                if let Some(p) = h.revision.split('/').find_map(crate::ident::problem) {
                    return Err(bad(
                        &format!("sources[{i}].hub.revision"),
                        format!(
                            "{:?} must be a branch, tag or commit (a component {p})",
                            h.revision
                        ),
                    ));
                }
                if (s.sha256.is_some() || s.size.is_some())
                    && crate::data::hub::lock::is_glob(&h.path)
                {
                    return Err(bad(
                        &format!("sources[{i}].hub.path"),
                        format!(
                            "{:?} is a glob: pins by hand (sha256, size) name one file; the lock \
                             file pins the files a glob matches",
                            h.path
                        ),
                    ));
                }
                if h.repo_type != "dataset" && h.repo_type != "model" {
                    return Err(bad(
                        &format!("sources[{i}].hub.repo_type"),
                        "must be dataset or model".into(),
                    ));
                }
                if h.repo.split('/').count() != 2 || !h.repo.split('/').all(crate::ident::is_valid)
                {
                    return Err(bad(
                        &format!("sources[{i}].hub.repo"),
                        format!(
                            "{:?}: must be owner/name, each a name of ASCII letters, digits, '-', '_', '.'",
                            h.repo
                        ),
                    ));
                }
                // It becomes a path in the hub cache: every component an identifier (a glob's
                // `*`, `?`, `[…]` aside).
                if let Some(p) = h
                    .path
                    .split('/')
                    .map(|c| c.replace(['*', '?', '[', ']', '!'], "x"))
                    .find_map(|c| crate::ident::problem(&c))
                {
                    return Err(bad(
                        &format!("sources[{i}].hub.path"),
                        format!(
                            "{:?} must be a relative path inside the repository: a component {p}",
                            h.path
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_reference() {
        let c = DataConfig::default();
        assert_eq!(c.vocab_size, 32768);
        assert_eq!(c.seq_len, 128);
        assert_eq!(c.trash_cutoff, 0.25);
        assert_eq!(c.concatenate_successive_entries, 1);
        assert!(c.lowercase && c.strip_accents && c.ascii_only);
        assert_eq!(c.ordering, Ordering::Randomized);
        assert_eq!(c.on_bad_record, OnBadRecord::Error);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<DataConfig>("vocab = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab"), "{e}");
        let e = toml::from_str::<DataConfig>("sources = [{ path = \"a\", sha = \"x\" }]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha"), "{e}");
    }
}
