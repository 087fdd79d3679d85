//! The packed dataset as the trainer reads it: memory-mapped shards, verified before first use.
//!
//! A dataset directory holds `dataset.json` ([`DatasetManifest`]), `tokenizer.json`, and shards
//! `shard-NNNNN.bin` (raw little-endian `u16`, or `u32` when the vocabulary exceeds 65536; blocks
//! of `seq_len` ids back to back) each with a sidecar `shard-NNNNN.json`. Blocks are numbered
//! across shards in the recorded training order; [`PackedDataset::block`] copies one out, so a
//! trainer resumes from any position by block index.
//!
//! **Root digest**: the SHA-256 of the lines `"<sha256>  <file>\n"` for every shard file and
//! `tokenizer.json`, sorted by file name (the in-toto dirHash of those files). In the directory:
//! `sha256sum shard-*.bin tokenizer.json | sha256sum`.
//!
//! [`PackedDataset::open`] checks each file's size and SHA-256 against the manifest before first
//! use and caches the result in `.verified.json` (file name, size, mtime, digest): a later open
//! re-hashes only files whose size or mtime changed.
use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version tag of the dataset layout and processing; part of the directory hash.
pub const DATASET_SCHEMA: &str = "crambench.dataset/v1";

/// Counts of the processing steps, recorded in the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Reading, per source (same order as `sources`).
    pub read: Vec<super::source::ReadCounts>,
    /// Documents after concatenation.
    pub documents: u64,
    /// Documents dropped by `max_entries`.
    pub dropped_by_max_entries: u64,
    /// Exact duplicates removed.
    pub duplicates_removed: u64,
    /// Documents removed by the trash filter.
    pub trash_removed: u64,
    /// Documents tokenised into the dataset.
    pub documents_kept: u64,
    /// Characters (Unicode scalar values) of the kept documents.
    pub characters_kept: u64,
    /// Token ids of the kept documents, `<sep>` included.
    pub tokens: u64,
    /// Ids dropped at the end of packing (fewer than `seq_len`).
    pub tokens_dropped_remainder: u64,
    /// Blocks packed before `max_blocks`.
    pub blocks_packed: u64,
    /// Blocks dropped by `max_blocks`.
    pub blocks_dropped_by_cap: u64,
}

/// The manifest file of a dataset directory.
pub const MANIFEST_FILE: &str = "dataset.json";
/// Largest verification cache read (a larger one is ignored and rebuilt).
const JSON_CACHE_LIMIT: u64 = 64 << 20;
/// The verification cache file.
pub const VERIFIED_FILE: &str = ".verified.json";

/// A file of the dataset, pinned by content (a `material`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub role: String,
    pub digest: BTreeMap<String, String>,
    pub size: u64,
}

/// A shard file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub name: String,
    pub role: String,
    pub digest: BTreeMap<String, String>,
    pub size: u64,
    /// Blocks in this shard.
    pub blocks: u64,
    /// Index of its first block in the dataset.
    pub first_block: u64,
}

/// How the dataset was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processing {
    /// The resolved `[data]` table without its sources.
    pub config: serde_json::Value,
    /// SHA-256 of the canonical JSON of `config`.
    pub sha256: String,
    /// Where the tokenizer came from.
    pub tokenizer_source: String,
    /// Which tokenizer the trash filter used (absent: no filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trash_filter: Option<String>,
    /// The seed of the `randomized` order: `derive(seed, "data-order")`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_order_seed: Option<u64>,
    /// The "." id the curriculum counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_token_id: Option<u32>,
    pub counts: Counts,
}

/// `dataset.json`; its `sources`, `tokenizer`, `shards`, `root_digest` and `processing` are the
/// run manifest's `predicate.data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetManifest {
    pub schema: String,
    pub name: String,
    pub root_digest: String,
    pub seq_len: u32,
    pub vocab_size: u32,
    /// `u16le` or `u32le`.
    pub dtype: String,
    pub num_blocks: u64,
    pub blocks_per_shard: u64,
    /// Special token → id (fixed; see `data::tokenizer::special`).
    pub special_tokens: BTreeMap<String, u32>,
    pub sources: Vec<super::source::SourceRecord>,
    pub tokenizer: FileRecord,
    pub shards: Vec<ShardRecord>,
    pub processing: Processing,
}

/// The root digest of a dataset (see module docs).
pub fn root_digest(tokenizer: &FileRecord, shards: &[ShardRecord]) -> String {
    let mut lines: Vec<(String, String)> = shards
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.digest.get("sha256").cloned().unwrap_or_default(),
            )
        })
        .collect();
    // A record without a sha256 (a damaged manifest) gives a root digest that matches nothing.
    lines.push((
        tokenizer.name.clone(),
        tokenizer.digest.get("sha256").cloned().unwrap_or_default(),
    ));
    lines.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let text: String = lines.iter().map(|(n, d)| format!("{d}  {n}\n")).collect();
    crate::provenance::hash::sha256_hex(text.as_bytes())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct VerifiedCache {
    files: BTreeMap<String, VerifiedEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VerifiedEntry {
    size: u64,
    mtime_ns: i128,
    sha256: String,
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// A memory-mapped packed dataset.
#[derive(Debug)]
pub struct PackedDataset {
    dir: PathBuf,
    manifest: DatasetManifest,
    maps: Vec<memmap2::Mmap>,
    wide: bool,
}

impl PackedDataset {
    /// Open the dataset in `dir`, verifying every shard and the tokenizer (see module docs).
    pub fn open(dir: &Path) -> Result<PackedDataset> {
        let mpath = dir.join(MANIFEST_FILE);
        let bytes = crate::io::read_limited(&mpath, 256 << 20)?;
        let manifest: DatasetManifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::input(
                mpath.display(),
                format!("not a crambench dataset manifest: {e}"),
            )
        })?;
        if manifest.schema != DATASET_SCHEMA {
            return Err(Error::input(
                mpath.display(),
                format!("unknown dataset schema {:?}", manifest.schema),
            )
            .into());
        }
        let wide = match manifest.dtype.as_str() {
            "u16le" => false,
            "u32le" => true,
            d => {
                return Err(Error::input(
                    format!("{}: dtype", mpath.display()),
                    format!("unknown dtype {d:?}"),
                )
                .into())
            }
        };
        if root_digest(&manifest.tokenizer, &manifest.shards) != manifest.root_digest {
            return Err(Error::Check(format!(
                "{}: root_digest does not match the listed shard and tokenizer digests",
                mpath.display()
            ))
            .into());
        }
        let cpath = dir.join(VERIFIED_FILE);
        let mut cache: VerifiedCache = crate::io::read_limited(&cpath, JSON_CACHE_LIMIT)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut changed = false;
        let files = std::iter::once((
            &manifest.tokenizer.name,
            &manifest.tokenizer.digest,
            manifest.tokenizer.size,
        ))
        .chain(manifest.shards.iter().map(|s| (&s.name, &s.digest, s.size)));
        for (name, digest, size) in files {
            crate::ident::check(format!("{}: file name", mpath.display()), name)?;
            let p = dir.join(name);
            let meta = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
            let want = digest.get("sha256").cloned().unwrap_or_default();
            let cur = VerifiedEntry {
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                sha256: want.clone(),
            };
            if cache.files.get(name) == Some(&cur) {
                continue;
            }
            if meta.len() != size {
                return Err(Error::Check(format!(
                    "{}: size {} but the dataset manifest says {size}",
                    p.display(),
                    meta.len()
                ))
                .into());
            }
            let d = crate::provenance::hash::hash_file(&p, &|_| {})?;
            if d.sha256 != want {
                return Err(Error::Check(format!("{}: sha256 {} but the dataset manifest says {want}; the dataset is damaged, delete it and prepare again", p.display(), d.sha256)).into());
            }
            cache.files.insert(name.clone(), cur);
            changed = true;
        }
        if changed {
            // Best effort: a read-only dataset still opens, it is just verified again next time.
            if let Ok(b) = serde_json::to_vec_pretty(&cache) {
                let _ = crate::io::write_atomic(&cpath, &b, None);
            }
        }
        let width = if wide { 4 } else { 2 };
        let seq = manifest.seq_len as u64;
        let mut maps = Vec::new();
        let mut next = 0u64;
        for s in &manifest.shards {
            if s.first_block != next
                || s.size != s.blocks * seq * width
                || (s.blocks != manifest.blocks_per_shard && next + s.blocks != manifest.num_blocks)
            {
                return Err(Error::input(
                    mpath.display(),
                    format!("shard {} has an inconsistent layout", s.name),
                )
                .into());
            }
            next += s.blocks;
            let p = dir.join(&s.name);
            let f = crate::io::open_input(&p)?;
            // SAFETY: read-only mapping of a verified file; crambench never writes a published
            // shard (new datasets go to a new directory).
            let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(&p, e))?;
            maps.push(m);
        }
        if next != manifest.num_blocks {
            return Err(
                Error::input(mpath.display(), "num_blocks does not match the shards").into(),
            );
        }
        Ok(PackedDataset {
            dir: dir.to_path_buf(),
            manifest,
            maps,
            wide,
        })
    }

    /// Number of blocks (sequences of `seq_len` ids).
    pub fn num_blocks(&self) -> u64 {
        self.manifest.num_blocks
    }

    pub fn seq_len(&self) -> usize {
        self.manifest.seq_len as usize
    }

    pub fn vocab_size(&self) -> u32 {
        self.manifest.vocab_size
    }

    /// Copy block `i` (in training order) into `out` (length `seq_len`). Panics if `i` is out of
    /// range or `out` has the wrong length (programming errors).
    pub fn block(&self, i: u64, out: &mut [i64]) {
        assert!(
            i < self.num_blocks(),
            "block {i} out of range ({} blocks)",
            self.num_blocks()
        );
        let seq = self.seq_len();
        assert_eq!(out.len(), seq, "output slice length must be seq_len");
        let per = self.manifest.blocks_per_shard;
        let (s, j) = ((i / per) as usize, (i % per) as usize);
        let m = &self.maps[s];
        if self.wide {
            let b = &m[j * seq * 4..(j + 1) * seq * 4];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64;
            }
        } else {
            let b = &m[j * seq * 2..(j + 1) * seq * 2];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = u16::from_le_bytes([c[0], c[1]]) as i64;
            }
        }
    }

    /// Copy `n` consecutive blocks starting at `start` into `out` (length `n * seq_len`).
    pub fn blocks(&self, start: u64, n: usize, out: &mut [i64]) {
        let seq = self.seq_len();
        for (k, chunk) in out.chunks_exact_mut(seq).take(n).enumerate() {
            self.block(start + k as u64, chunk);
        }
    }

    /// The dataset's `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    pub fn root_digest(&self) -> &str {
        &self.manifest.root_digest
    }

    pub fn manifest(&self) -> &DatasetManifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run manifest's `predicate.data` object: `sources`, `tokenizer`, `shards`,
    /// `root_digest`, `processing` (plus `name`, `seq_len`, `vocab_size`, `num_blocks`).
    pub fn predicate_data(&self) -> serde_json::Value {
        let m = &self.manifest;
        serde_json::json!({
            "name": m.name,
            "root_digest": m.root_digest,
            "seq_len": m.seq_len,
            "vocab_size": m.vocab_size,
            "num_blocks": m.num_blocks,
            "sources": m.sources,
            "tokenizer": m.tokenizer,
            "shards": m.shards,
            "processing": m.processing,
        })
    }
}
