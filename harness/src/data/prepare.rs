//! The pipeline: pinned sources → documents → WordPiece tokenizer → packed, ordered, hashed
//! shards in a content-addressed dataset directory.
//!
//! Order of operations (upstream `cramming/data/pretraining_preparation.py` and `cramming/config/data/`, JonasGeiping/cramming 196c991, with the deviations named):
//!
//! 1. Resolve every source and check its pin (nothing is processed before all pins pass). Hub
//!    sources are resolved through the lock file; a hub file already in the cache is checked
//!    like a local one, one that is not is downloaded when it is first read — preparation
//!    streams shard by shard, each download checked against its locked SHA-256 before it enters
//!    the cache and each read against the bytes consumed — and with `delete_raw` each raw shard
//!    is removed from the cache once the last pass has read it.
//! 2. Documents: entries in source order; empty entries skipped (counted); within a source,
//!    `concatenate_successive_entries` entries joined with no separator (a final partial group
//!    is kept); the first `max_entries` documents kept (the reference shuffles with seed 89
//!    before truncating; crambench keeps source order); exact duplicates (SHA-256 of the text)
//!    removed when `deduplicate`.
//! 3. Train the WordPiece tokenizer on those documents.
//! 4. Tokenise each document (ids end with `<sep>`). With `remove_trash`, drop a document unless
//!    `tokens < trash_cutoff × characters` (tokens include the `<sep>`; characters are Unicode
//!    scalar values, Python's `len`). The filter uses the project's own tokenizer — the one
//!    trained in step 3, before filtering — where the reference uses albert-base-v2 (which needs
//!    a download); the manifest records this.
//! 5. Pack: all ids concatenated in document order and cut into `seq_len` blocks; the final
//!    remainder (< `seq_len` ids) is dropped and counted (the reference drops a remainder per
//!    batch of 1024 documents).
//! 6. Order the blocks (randomized / sentence-length curriculum / as-is), keep the first
//!    `max_blocks`, write shards of `shard_blocks` blocks.
//!
//! Determinism: documents are tokenised in parallel in batches but packed in document order, and
//! tokenizer training merges order-independent counts, so the dataset is byte-identical across
//! runs and thread counts. The directory name is a hash of the source pins and the processing
//! configuration, so the same inputs give the same directory, which is reused.
use super::config::{DataConfig, Format, Ordering, SourceSpec};
use super::reader::{DatasetManifest, FileRecord, PackedDataset, Processing, ShardRecord};
use super::source::{self, Entry, Source};
use super::tokenizer::{self, special, Encoder, EncoderCache, NormalizerOptions};
use crate::error::Error;
use crate::provenance::hash::sha256_hex;
use anyhow::{Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

// The dataset format (its schema tag, counts) is defined by the reader, which this writes.
pub use super::reader::{Counts, DATASET_SCHEMA};

/// Options that do not change the dataset's content.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Directory that holds datasets (each in `<out_root>/<name>/`).
    pub out_root: PathBuf,
    /// Directory that relative source paths are relative to (the recipe's directory).
    pub base_dir: PathBuf,
    /// Hub cache root (default: [`super::hub::cache_root`]).
    pub hub_root: Option<PathBuf>,
    /// The lock file of hub sources (default for a recipe: `<recipe>.lock` beside it).
    pub lock_file: Option<PathBuf>,
    /// `--locked`: refuse to resolve a hub source the lock file does not hold.
    pub locked: bool,
    /// Remove each raw hub shard from the cache once its last pass has read it
    /// (`--delete-raw-shards`; a rerun downloads it again if needed).
    pub delete_raw: bool,
    /// How to reach the hub (default: [`super::hub::client::HubEnv::from_env`]; `hub_root`
    /// overrides its cache).
    pub hub_env: Option<super::hub::client::HubEnv>,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Set by the signal handlers: preparation stops at its next batch or shard with
    /// [`crate::error::Stopped`] (the unfinished build directory is removed by the next
    /// preparation of the dataset).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl PrepareOptions {
    /// Options for the `[data]` table of the recipe at `recipe`: relative sources are relative
    /// to the recipe's directory; the hub cache is the default one.
    pub fn for_recipe(
        recipe: &Path,
        out_root: PathBuf,
        threads: Option<usize>,
        progress: bool,
    ) -> PrepareOptions {
        PrepareOptions {
            out_root,
            base_dir: recipe.parent().map(Path::to_path_buf).unwrap_or_default(),
            hub_root: None,
            lock_file: Some(super::hub::lock::default_path(recipe)),
            locked: false,
            hub_env: None,
            delete_raw: false,
            threads,
            progress,
            stop: None,
        }
    }
}

/// The dataset cache: `explicit` (`--data-dir`), else `$CRAMBENCH_DATA_DIR`, else `./data-cache`.
pub fn data_root(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("CRAMBENCH_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data-cache"))
}

/// The result of [`prepare`].
#[derive(Debug)]
pub struct Prepared {
    pub dir: PathBuf,
    pub reused: bool,
    pub dataset: PackedDataset,
}

/// The processing configuration as hashed: everything but the sources (whose pins are hashed
/// separately).
fn processing_config(cfg: &DataConfig) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(cfg)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("sources");
        o.remove("tokenizer");
        // A bound on what is read, not a way of processing it.
        o.remove("max_record_bytes");
    }
    Ok(v)
}

/// The hub session of `opts`: its lock file, `--locked`, the cache root.
pub fn hub_session(opts: &PrepareOptions) -> Result<super::hub::lock::Session> {
    let mut env = opts
        .hub_env
        .clone()
        .unwrap_or_else(super::hub::client::HubEnv::from_env);
    if let Some(r) = &opts.hub_root {
        env.cache = r.clone();
    }
    super::hub::lock::Session::new(
        super::hub::client::Hub::new(env, opts.progress),
        opts.lock_file.clone(),
        opts.locked,
        false,
    )
}

/// Hub sources expanded through the lock into one pinned source per file (`revision` the
/// commit, `path` the file, `sha256`/`size` from the lock), each downloaded into the cache when
/// it is not there. Hand pins must agree with the lock. Other sources pass unchanged.
pub fn expand_hub_sources(
    specs: &[(usize, SourceSpec)],
    session: &mut super::hub::lock::Session,
) -> Result<Vec<(usize, SourceSpec)>> {
    let mut out = Vec::new();
    for (i, spec) in specs {
        let Some(h) = &spec.hub else {
            out.push((*i, spec.clone()));
            continue;
        };
        let entry = match (&spec.sha256, spec.size) {
            (Some(sha), Some(size))
                if super::hub::client::is_commit(&h.revision)
                    && !super::hub::lock::is_glob(&h.path) =>
            {
                session.entry_pinned(h, sha, size)
            }
            _ => session.entry(h)?,
        };
        for f in &entry.files {
            if let (Some(pin), false) = (&spec.sha256, super::hub::lock::is_glob(&h.path)) {
                if *pin != f.sha256 || spec.size.is_some_and(|n| n != f.size) {
                    return Err(Error::Check(format!(
                        "hub:{}@{}:{}: the pin in the recipe (sha256 {pin}) disagrees with the \
                         lock file (sha256 {}, {} bytes at commit {})",
                        h.repo, h.revision, h.path, f.sha256, f.size, entry.commit
                    ))
                    .into());
                }
            }
        }
        for f in &entry.files {
            let mut one = spec.clone();
            one.hub = Some(super::config::HubFile {
                repo: h.repo.clone(),
                repo_type: h.repo_type.clone(),
                revision: entry.commit.clone(),
                path: f.path.clone(),
            });
            one.sha256 = Some(f.sha256.clone());
            one.size = Some(f.size);
            out.push((*i, one));
        }
    }
    Ok(out)
}

/// Resolve and verify all sources (and the tokenizer of pre-tokenised data). Hub sources are
/// resolved through the lock file (written when it gained entries) and downloaded first.
pub fn resolve_sources(
    cfg: &DataConfig,
    opts: &PrepareOptions,
) -> Result<(Vec<Source>, Option<Source>)> {
    let hub_root = opts.hub_root.clone().unwrap_or_else(super::hub::cache_root);
    let mut specs: Vec<(usize, SourceSpec)> = cfg.sources.iter().cloned().enumerate().collect();
    let mut tok_spec = cfg.tokenizer.clone();
    let mut hub_env: Option<super::hub::client::HubEnv> = None;
    if specs
        .iter()
        .map(|(_, s)| s)
        .chain(tok_spec.iter())
        .any(|s| s.hub.is_some())
    {
        let mut session = hub_session(opts)?;
        specs = expand_hub_sources(&specs, &mut session)?;
        hub_env = Some(session.hub.env.clone());
        if let Some(t) = &tok_spec {
            let mut one = expand_hub_sources(&[(cfg.sources.len(), t.clone())], &mut session)?;
            // The tokenizer is read before anything else: now.
            for (_, s) in &one {
                if let Some(h) = &s.hub {
                    session.hub.fetch(
                        &super::hub::client::Repo::new(&h.repo, &h.repo_type),
                        &h.revision,
                        &h.path,
                        &super::hub::client::Want {
                            size: s.size,
                            sha256: s.sha256.clone(),
                            blob_id: None,
                        },
                    )?;
                }
            }
            if one.len() != 1 {
                return Err(Error::input(
                    "data.tokenizer.hub.path",
                    format!("matches {} files; the tokenizer is one file", one.len()),
                )
                .into());
            }
            tok_spec = one.pop().map(|(_, s)| s);
        }
        session.save(false)?;
    }
    // Total for the bar: sizes from the pins (the files are checked against them below).
    let total: u64 = specs
        .iter()
        .map(|(_, s)| s)
        .chain(tok_spec.iter())
        .filter_map(|s| s.size)
        .sum();
    let pb = crate::io::byte_progress(opts.progress, total, "verifying pins");
    let inc = |n: u64| pb.inc(n);
    let mut out = Vec::new();
    for (i, s) in &specs {
        // A hub file the cache lacks is downloaded when it is read (shard by shard); one
        // that is there is checked against its pin now, like a local file.
        if let (Some(h), Some(env)) = (&s.hub, &hub_env) {
            let repo = super::hub::client::Repo::new(&h.repo, &h.repo_type);
            let hub = super::hub::client::Hub::new(env.clone(), opts.progress);
            let fetch = source::HubFetch {
                env: env.clone(),
                repo: repo.clone(),
                commit: h.revision.clone(),
                path: h.path.clone(),
                sha256: s.sha256.clone().unwrap_or_default(),
                size: s.size.unwrap_or_default(),
                progress: opts.progress,
            };
            if hub.cached(&repo, &h.revision, &h.path).is_none() {
                out.push(source::deferred(*i, s, fetch)?);
            } else {
                let mut src = source::resolve(*i, s, &opts.base_dir, &hub_root, &inc)?;
                src.fetch = Some(fetch);
                out.push(src);
            }
            continue;
        }
        out.push(source::resolve(*i, s, &opts.base_dir, &hub_root, &inc)?);
    }
    let tok = match &tok_spec {
        Some(t) => Some(source::resolve(
            cfg.sources.len(),
            t,
            &opts.base_dir,
            &hub_root,
            &inc,
        )?),
        None => None,
    };
    pb.finish_and_clear();
    Ok((out, tok))
}

/// The dataset directory name for these sources and this configuration.
pub fn dataset_name(
    cfg: &DataConfig,
    sources: &[Source],
    tok: Option<&Source>,
) -> Result<(String, String)> {
    let processing = processing_config(cfg)?;
    let processing_sha256 = sha256_hex(&crate::provenance::jcs::to_vec(&processing)?);
    let key = serde_json::json!({
        "schema": DATASET_SCHEMA,
        "sources": sources.iter().map(|s| &s.record).collect::<Vec<_>>(),
        "tokenizer": tok.map(|t| &t.record),
        "processing_sha256": processing_sha256,
    });
    let key = sha256_hex(&crate::provenance::jcs::to_vec(&key)?);
    Ok((
        format!("wp{}x{}-{}", cfg.vocab_size, cfg.seq_len, &key[..20]),
        processing_sha256,
    ))
}

/// Build (or reuse) the dataset described by `cfg`.
pub fn prepare(cfg: &DataConfig, what: &str, opts: &PrepareOptions) -> Result<Prepared> {
    cfg.validate(what)?;
    let (sources, tok_src) = resolve_sources(cfg, opts)?;
    let (name, processing_sha256) = dataset_name(cfg, &sources, tok_src.as_ref())?;
    let dir = opts.out_root.join(&name);
    // A dataset with this content key that is complete is reused (opened, so verified).
    let reuse = |dir: PathBuf| -> Result<Option<Prepared>> {
        if !dir.join(super::reader::MANIFEST_FILE).is_file() {
            return Ok(None);
        }
        let dataset =
            PackedDataset::open(&dir).with_context(|| format!("reusing {}", dir.display()))?;
        Ok(Some(Prepared {
            dir,
            reused: true,
            dataset,
        }))
    };
    if let Some(p) = reuse(dir.clone())? {
        return Ok(p);
    }
    std::fs::create_dir_all(&opts.out_root).map_err(|e| Error::io(&opts.out_root, e))?;
    // One builder of this dataset at a time; under the lock, what a killed builder left
    // (`.build-<name>-*`) is removed.
    let _lock = crate::io::Lock::acquire(
        &opts.out_root.join(format!(".{name}.lock")),
        &format!("dataset {name} in {}", opts.out_root.display()),
    )?;
    // Built by the process that held the lock before us?
    if let Some(p) = reuse(dir.clone())? {
        return Ok(p);
    }
    let prefix = format!(".build-{name}-");
    for e in std::fs::read_dir(&opts.out_root)
        .map_err(|e| Error::io(&opts.out_root, e))?
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let build = tempfile::Builder::new()
        .prefix(&format!(".build-{name}-"))
        .tempdir_in(&opts.out_root)
        .map_err(|e| Error::io(&opts.out_root, e))?;
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = opts.threads {
        builder = builder.num_threads(t.max(1));
    }
    let pool = builder.build().context("starting worker threads")?;
    let manifest = pool.install(|| {
        build_dataset(
            cfg,
            &sources,
            tok_src.as_ref(),
            &name,
            &processing_sha256,
            build.path(),
            opts,
        )
    })?;
    let _ = manifest;
    // Publish: rename the finished build directory into place (atomic on one file system).
    crate::io::crash_point("data-publish");
    let tmp = build.keep();
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        Err(_) if dir.join(super::reader::MANIFEST_FILE).is_file() => {
            // Another process finished the same dataset first: identical content, keep theirs.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(Error::io(&dir, e).into()),
    }
    if let Ok(d) = std::fs::File::open(&opts.out_root) {
        let _ = d.sync_all();
    }
    let dataset = PackedDataset::open(&dir)?;
    Ok(Prepared {
        dir,
        reused: false,
        dataset,
    })
}

/// Documents of all sources after empty-skipping, concatenation, `max_entries` and dedup,
/// streamed into `sink`. Deterministic. Returns the counts of this pass.
fn documents(
    cfg: &DataConfig,
    sources: &[Source],
    progress: &dyn Fn(u64),
    sink: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut seen: HashSet<u128> = HashSet::new();
    let max = if cfg.max_entries == 0 {
        u64::MAX
    } else {
        cfg.max_entries
    };
    for src in sources {
        let group = cfg
            .sources
            .get(src.index)
            .and_then(|s| s.concatenate_successive_entries)
            .unwrap_or(cfg.concatenate_successive_entries) as usize;
        let mut pending = String::new();
        let mut in_group = 0usize;
        let mut emit = |doc: Entry, counts: &mut Counts| -> Result<()> {
            counts.documents += 1;
            if counts.documents > max {
                counts.dropped_by_max_entries += 1;
                return Ok(());
            }
            if cfg.deduplicate {
                let h = match &doc {
                    Entry::Text(t) => Sha256::digest(t.as_bytes()),
                    Entry::Ids(ids) => Sha256::digest(
                        ids.iter()
                            .flat_map(|i| i.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    ),
                };
                let k = u128::from_le_bytes(h[..16].try_into().expect("16 bytes"));
                if !seen.insert(k) {
                    counts.duplicates_removed += 1;
                    return Ok(());
                }
            }
            sink(doc)
        };
        let mut local = Counts::default();
        let policy = source::ReadPolicy {
            on_bad_record: cfg.on_bad_record,
            max_record_bytes: cfg.max_record_bytes,
        };
        let rc = source::read_entries(src, policy, progress, &mut |e| match e {
            Entry::Text(t) if group > 1 => {
                pending.push_str(&t);
                in_group += 1;
                if in_group == group {
                    in_group = 0;
                    emit(Entry::Text(std::mem::take(&mut pending)), &mut local)
                } else {
                    Ok(())
                }
            }
            e => emit(e, &mut local),
        })?;
        if in_group > 0 {
            emit(Entry::Text(std::mem::take(&mut pending)), &mut local)?;
        }
        counts.documents += local.documents;
        counts.dropped_by_max_entries += local.dropped_by_max_entries;
        counts.duplicates_removed += local.duplicates_removed;
        counts.read.push(rc);
    }
    Ok(counts)
}

/// Total bytes the sources will produce (for progress bars; compressed size where unknown).
fn source_bytes(sources: &[Source]) -> u64 {
    sources
        .iter()
        .map(|s| {
            if s.embedded.is_some() {
                10_800_000
            } else {
                s.record.size
            }
        })
        .sum()
}

fn build_dataset(
    cfg: &DataConfig,
    sources: &[Source],
    tok_src: Option<&Source>,
    name: &str,
    processing_sha256: &str,
    dir: &Path,
    opts: &PrepareOptions,
) -> Result<DatasetManifest> {
    let pretokenised = sources.iter().any(|s| s.format == Format::ParquetIds);
    let nopts = NormalizerOptions {
        lowercase: cfg.lowercase,
        strip_accents: cfg.strip_accents,
        ascii_only: cfg.ascii_only,
    };
    let total = source_bytes(sources);

    // Pass 1: the tokenizer.
    let mut remap = None;
    let tok = if pretokenised {
        let t = tok_src.expect("validated");
        let (tok, map) =
            tokenizer::load_remapping_specials_pinned(&t.files[0], t.file_digests.first())?;
        remap = Some(map);
        tok
    } else {
        let pb = crate::io::byte_progress(opts.progress, total, "training tokenizer");
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(256);
        let trained = std::thread::scope(|s| -> Result<tokenizers::Tokenizer> {
            let producer = s.spawn(|| {
                let tx = tx; // moved in: the channel closes when reading ends
                let pbr = &pb;
                documents(cfg, sources, &|n| pbr.inc(n), &mut |e| {
                    if let Entry::Text(t) = e {
                        // A closed receiver means training failed; stop reading.
                        tx.send(t)
                            .map_err(|_| anyhow::anyhow!("tokenizer training stopped"))?;
                    }
                    Ok(())
                })
            });
            let trained = tokenizer::train(rx.into_iter(), cfg.vocab_size, nopts);
            let read = producer
                .join()
                .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
            read?; // a reading error wins over whatever training did with partial input
            trained
        })?;
        pb.finish_and_clear();
        trained
    };
    let vocab = tok.get_vocab_size(true) as u64;
    if !pretokenised && vocab != cfg.vocab_size as u64 {
        anyhow::bail!("internal: vocabulary {vocab} != {}", cfg.vocab_size);
    }
    let tok_path = dir.join("tokenizer.json");
    let tok_sha = tokenizer::save(&tok, &tok_path)?;
    let tok_size = std::fs::metadata(&tok_path)
        .map_err(|e| Error::io(&tok_path, e))?
        .len();
    let wide = vocab > u16::MAX as u64 + 1;
    let width = if wide { 4 } else { 2 };
    let period = tok.token_to_id(".");

    // Pass 2: tokenise, filter, pack into an unordered block file. The last read of every
    // source: with `delete_raw`, each raw hub shard is removed once it has been read.
    let last_pass: Vec<Source> = sources
        .iter()
        .cloned()
        .map(|mut s| {
            s.delete_after_read = opts.delete_raw && s.fetch.is_some();
            s
        })
        .collect();
    let seq = cfg.seq_len as usize;
    let unordered_path = dir.join("blocks.unordered");
    let Packed {
        counts: c2,
        read: pass1,
        periods,
    } = tokenize_and_pack(
        cfg,
        &last_pass,
        &tok,
        remap,
        &unordered_path,
        opts.progress,
        opts.stop.as_deref(),
    )?;
    let packed = periods.len() as u64;
    let mut counts = pass1;
    counts.trash_removed = c2.trash_removed;
    counts.documents_kept = c2.documents_kept;
    counts.characters_kept = c2.characters_kept;
    counts.tokens = c2.tokens;
    counts.tokens_dropped_remainder = c2.tokens_dropped_remainder;
    counts.blocks_packed = packed;

    // Order and cap.
    let mut order: Vec<u64> = (0..packed).collect();
    let data_seed = crate::provenance::seeds::derive(cfg.seed, "data-order");
    match cfg.ordering {
        Ordering::AsIs => {}
        Ordering::Randomized => crate::rng::shuffle(&mut order, data_seed),
        Ordering::SentenceLengthCurriculum => {
            order.sort_by_key(|&i| std::cmp::Reverse(periods[i as usize]))
        }
    }
    if cfg.max_blocks > 0 && cfg.max_blocks < packed {
        counts.blocks_dropped_by_cap = packed - cfg.max_blocks;
        order.truncate(cfg.max_blocks as usize);
    }

    // Shards.
    let file = std::fs::File::open(&unordered_path).map_err(|e| Error::io(&unordered_path, e))?;
    // SAFETY: the file is ours, in a private build directory, and not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&unordered_path, e))?;
    let block_bytes = seq * width;
    let pb = crate::io::byte_progress(
        opts.progress,
        order.len() as u64 * block_bytes as u64,
        "writing shards",
    );
    let shard_recs: Vec<Result<ShardRecord>> = order
        .chunks(cfg.shard_blocks as usize)
        .enumerate()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|(k, idx)| {
            if crate::error::stop_requested(opts.stop.as_deref()) {
                return Err(crate::error::Stopped.into());
            }
            let fname = format!("shard-{k:05}.bin");
            let path = dir.join(&fname);
            let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let mut h = Sha256::new();
            for &i in idx.iter() {
                let b = &map[i as usize * block_bytes..(i as usize + 1) * block_bytes];
                h.update(b);
                w.write_all(b).map_err(|e| Error::io(&path, e))?;
                pb.inc(block_bytes as u64);
            }
            let f = w
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
            let rec = ShardRecord {
                name: fname.clone(),
                role: "shard".into(),
                digest: [("sha256".to_string(), hex::encode(h.finalize()))].into(),
                size: (idx.len() * block_bytes) as u64,
                blocks: idx.len() as u64,
                first_block: (*k as u64) * cfg.shard_blocks,
            };
            let sidecar = serde_json::json!({
                "schema": "crambench.shard/v1",
                "file": fname,
                "dtype": if wide { "u32le" } else { "u16le" },
                "seq_len": seq,
                "blocks": rec.blocks,
                "first_block": rec.first_block,
                "sha256": rec.digest["sha256"],
                "size": rec.size,
                "tokenizer_sha256": tok_sha,
                "processing_sha256": processing_sha256,
            });
            crate::io::write_atomic(
                &dir.join(format!("shard-{k:05}.json")),
                (serde_json::to_string_pretty(&sidecar)? + "\n").as_bytes(),
                None,
            )?;
            Ok(rec)
        })
        .collect();
    pb.finish_and_clear();
    drop(map);
    std::fs::remove_file(&unordered_path).map_err(|e| Error::io(&unordered_path, e))?;
    let shards: Vec<ShardRecord> = shard_recs.into_iter().collect::<Result<_>>()?;

    let tokenizer_rec = FileRecord {
        name: "tokenizer.json".into(),
        role: "tokenizer".into(),
        digest: [("sha256".to_string(), tok_sha.clone())].into(),
        size: tok_size,
    };
    let root_digest = super::reader::root_digest(&tokenizer_rec, &shards);
    let num_blocks = order.len() as u64;
    let manifest = DatasetManifest {
        schema: DATASET_SCHEMA.into(),
        name: name.into(),
        root_digest,
        seq_len: cfg.seq_len,
        vocab_size: vocab as u32,
        dtype: if wide { "u32le" } else { "u16le" }.into(),
        num_blocks,
        blocks_per_shard: cfg.shard_blocks,
        special_tokens: special::TOKENS
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect(),
        sources: sources.iter().map(|s| s.record.clone()).collect(),
        tokenizer: tokenizer_rec,
        shards,
        processing: Processing {
            config: processing_config(cfg)?,
            sha256: processing_sha256.into(),
            tokenizer_source: match tok_src {
                Some(t) => format!("pre-tokenised; tokenizer {}", t.name),
                None => "trained: WordPiece (tokenizers crate) on the documents after dedup".into(),
            },
            trash_filter: if cfg.remove_trash {
                Some(format!(
                    "self: the dataset's own tokenizer.json (sha256 {tok_sha}), trained before filtering; the reference uses albert-base-v2"
                ))
            } else {
                None
            },
            data_order_seed: (cfg.ordering == Ordering::Randomized).then_some(data_seed),
            period_token_id: period,
            counts,
        },
    };
    let bytes = serde_json::to_string_pretty(&manifest)? + "\n";
    crate::io::write_atomic(
        &dir.join(super::reader::MANIFEST_FILE),
        bytes.as_bytes(),
        None,
    )?;
    Ok(manifest)
}

/// One document after encoding: ids (None: removed by the trash filter), characters, unused.
type Encoded = (Option<Vec<u32>>, u64, bool);

/// The output of [`tokenize_and_pack`].
pub struct Packed {
    /// Counts of tokenising and packing.
    pub counts: Counts,
    /// Counts of reading the documents.
    pub read: Counts,
    /// "." tokens per packed block.
    pub periods: Vec<u32>,
}

/// Pass 2 of the pipeline: documents → ids (trash filter) → `seq_len` blocks appended to the
/// file `unordered_path` (little-endian u16, or u32 when the vocabulary exceeds 65536), in
/// document order. Pre-tokenised ids 0–6 are mapped through `remap` (see
/// [`tokenizer::load_remapping_specials`]). Parallel in batches, packed in order: the output does not depend on the
/// number of threads. Also what `crambench bench data` times.
pub fn tokenize_and_pack(
    cfg: &DataConfig,
    sources: &[Source],
    tok: &tokenizers::Tokenizer,
    remap: Option<[u32; 7]>,
    unordered_path: &Path,
    progress: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Packed> {
    let total = source_bytes(sources);
    let vocab = tok.get_vocab_size(true) as u64;
    let wide = vocab > u16::MAX as u64 + 1;
    let width = if wide { 4 } else { 2 };
    let period = tok.token_to_id(".");
    let seq = cfg.seq_len as usize;
    let mut unordered = std::io::BufWriter::with_capacity(
        1 << 22,
        std::fs::File::create(unordered_path).map_err(|e| Error::io(unordered_path, e))?,
    );
    let mut carry: Vec<u32> = Vec::with_capacity(2 * seq);
    let mut periods: Vec<u32> = Vec::new();
    let encoder = Encoder::new(tok)?;
    let mut c2 = Counts::default();
    let pb = crate::io::byte_progress(progress, total, "tokenizing + packing");
    let write_block = |block: &[u32],
                       periods: &mut Vec<u32>,
                       w: &mut std::io::BufWriter<std::fs::File>|
     -> Result<()> {
        let mut buf = Vec::with_capacity(block.len() * width);
        for &id in block {
            if wide {
                buf.extend_from_slice(&id.to_le_bytes());
            } else {
                buf.extend_from_slice(&(id as u16).to_le_bytes());
            }
        }
        w.write_all(&buf)
            .map_err(|e| Error::io(unordered_path, e))?;
        periods.push(block.iter().filter(|&&i| Some(i) == period).count() as u32);
        Ok(())
    };
    /// Documents per parallel batch (bounded memory: one batch in flight, one queued).
    const BATCH_BYTES: usize = 8 << 20;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(2);
    let pass1 = std::thread::scope(|s| -> Result<Counts> {
        let producer = s.spawn(|| {
            let pbr = &pb;
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let r = documents(cfg, sources, &|n| pbr.inc(n), &mut |e| {
                bytes += match &e {
                    Entry::Text(t) => t.len(),
                    Entry::Ids(v) => 4 * v.len(),
                };
                batch.push(e);
                if bytes >= BATCH_BYTES {
                    bytes = 0;
                    tx.send(std::mem::take(&mut batch))
                        .map_err(|_| anyhow::anyhow!("packing stopped"))?;
                }
                Ok(())
            });
            if r.is_ok() && !batch.is_empty() {
                let _ = tx.send(batch);
            }
            drop(tx);
            r
        });
        let consume = (|| -> Result<()> {
            for batch in rx.iter() {
                if crate::error::stop_requested(stop) {
                    return Err(crate::error::Stopped.into());
                }
                let encoded: Vec<Result<Encoded>> = batch
                    .par_iter()
                    .map_init(EncoderCache::default, |cache, e| match e {
                        Entry::Ids(v) => {
                            let map = remap.unwrap_or([0, 1, 2, 3, 4, 5, 6]);
                            let ids = v
                                .iter()
                                .map(|&i| if i < 7 { map[i as usize] } else { i })
                                .collect();
                            Ok((Some(ids), 0, false))
                        }
                        Entry::Text(t) => {
                            let mut ids = Vec::with_capacity(t.len() / 4 + 2);
                            encoder.encode_into(t, cache, &mut ids)?;
                            let chars = t.chars().count() as u64;
                            let keep = !cfg.remove_trash
                                || (ids.len() as f64) < cfg.trash_cutoff * chars as f64;
                            Ok((keep.then_some(ids), chars, false))
                        }
                    })
                    .collect();
                for r in encoded {
                    let (ids, chars, _) = r?;
                    let Some(ids) = ids else {
                        c2.trash_removed += 1;
                        continue;
                    };
                    if let Some(&bad) = ids.iter().find(|&&i| i as u64 >= vocab) {
                        return Err(Error::input(
                            "pre-tokenised input",
                            format!(
                                "token id {bad} is outside the tokenizer's vocabulary of {vocab}"
                            ),
                        )
                        .into());
                    }
                    c2.documents_kept += 1;
                    c2.characters_kept += chars;
                    c2.tokens += ids.len() as u64;
                    carry.extend_from_slice(&ids);
                    if carry.len() >= seq {
                        let full = carry.len() / seq * seq;
                        for b in carry[..full].chunks_exact(seq) {
                            write_block(b, &mut periods, &mut unordered)?;
                        }
                        carry.drain(..full);
                    }
                }
            }
            Ok(())
        })();
        drop(rx);
        let read = producer
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
        // The consumer's error first: when it stops (a signal, bad input) the reader's next
        // send fails only because the channel closed.
        consume?;
        let read = read?;
        Ok(read)
    })?;
    pb.finish_and_clear();
    unordered
        .flush()
        .map_err(|e| Error::io(unordered_path, e))?;
    drop(unordered);
    c2.tokens_dropped_remainder = carry.len() as u64;
    let packed = periods.len() as u64;
    c2.blocks_packed = packed;
    if packed == 0 {
        return Err(Error::input(
            "corpus",
            format!("too small: {} tokens make no block of {seq}", c2.tokens),
        )
        .into());
    }
    Ok(Packed {
        counts: c2,
        read: pass1,
        periods,
    })
}
