//! Content hashes: SHA-256 and size of files, and the in-toto `dirHash` of directories.
//!
//! Files are streamed through a fixed 1 MiB buffer, so memory stays bounded whatever their
//! size. `dirHash` is the in-toto DigestSet algorithm (Go's `dirhash.Hash1` without the `h1:`
//! prefix, in lowercase hex): the SHA-256 of the lines `"<sha256 hex>  <relative path>\n"` for
//! every regular file below the directory, sorted by the bytes of the relative path. It equals
//!
//! ```text
//! find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum
//! ```
//!
//! run inside the directory. Like `find -type f`, symbolic links are not followed and not
//! hashed; they are reported so that nobody mistakes them for hashed content. File names with a
//! newline are refused (as Go's dirhash does), since they would make the summary ambiguous.
use crate::error::Error;
use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Read size for streaming. Large enough that syscalls don't show in the profile; small enough
/// to keep one buffer per rayon thread cheap.
const BUF_SIZE: usize = 1 << 20;

/// SHA-256 and size of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// The path as given, or relative to the hashed directory.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The `dirHash` of a directory with the digest of each file in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirDigest {
    pub path: String,
    /// in-toto `dirHash` (lowercase hex).
    pub dir_hash: String,
    /// Number of regular files and their total size.
    pub files: u64,
    pub size: u64,
    /// Per-file digests in hashing order (sorted by relative path bytes).
    pub entries: Vec<FileDigest>,
    /// Symbolic links found and not hashed (relative paths).
    pub skipped_symlinks: Vec<String>,
}

/// The digest of a file or a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PathDigest {
    File(FileDigest),
    Dir(DirDigest),
}

impl PathDigest {
    /// The in-toto DigestSet for this path: `{"sha256": …}` for a file, `{"dirHash": …}` for a
    /// directory.
    pub fn digest_set(&self) -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        match self {
            PathDigest::File(f) => m.insert("sha256".into(), f.sha256.clone()),
            PathDigest::Dir(d) => m.insert("dirHash".into(), d.dir_hash.clone()),
        };
        m
    }

    /// Total bytes hashed.
    pub fn size(&self) -> u64 {
        match self {
            PathDigest::File(f) => f.size,
            PathDigest::Dir(d) => d.size,
        }
    }
}

/// Stream `reader` through SHA-256; returns (hex digest, bytes read). `progress` is called with
/// the size of each chunk read.
pub fn sha256_reader(
    mut reader: impl Read,
    progress: &dyn Fn(u64),
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(n as u64);
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// SHA-256 of in-memory bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 and size of the file at `path`.
pub fn hash_file(path: &Path, progress: &dyn Fn(u64)) -> Result<FileDigest> {
    let file = crate::io::open_input(path)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // Tell the kernel we read sequentially so it reads ahead generously.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    let (sha256, size) = sha256_reader(file, progress).map_err(|e| Error::io(path, e))?;
    Ok(FileDigest {
        path: path.display().to_string(),
        size,
        sha256,
    })
}

/// A regular file: (relative path with `/` separators, path to open).
type Listed = (String, PathBuf);

/// Every regular file below `root`, sorted by the bytes of the relative path, plus the symbolic
/// links found.
fn list_files(root: &Path) -> Result<(Vec<Listed>, Vec<String>)> {
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel_dir, dir)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| {
                Error::input(entry.path().display(), "file name is not valid UTF-8")
            })?;
            if name.contains('\n') {
                return Err(Error::input(
                    entry.path().display(),
                    "file names with a newline cannot be hashed (dirHash lines would be ambiguous)",
                )
                .into());
            }
            let rel = if rel_dir.is_empty() {
                name.to_string()
            } else {
                format!("{rel_dir}/{name}")
            };
            let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if ft.is_symlink() {
                links.push(rel);
            } else if ft.is_dir() {
                stack.push((rel, entry.path()));
            } else if ft.is_file() {
                files.push((rel, entry.path()));
            }
        }
    }
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    links.sort();
    Ok((files, links))
}

/// The in-toto `dirHash` of `root`, hashing files in parallel.
pub fn hash_dir(root: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<DirDigest> {
    let (files, skipped_symlinks) = list_files(root)?;
    let entries: Vec<FileDigest> = files
        .par_iter()
        .map(|(rel, abs)| {
            let mut d = hash_file(abs, progress)?;
            d.path = rel.clone();
            Ok(d)
        })
        .collect::<Result<_>>()?;
    Ok(DirDigest {
        path: root.display().to_string(),
        dir_hash: dir_hash_of(&entries),
        files: entries.len() as u64,
        size: entries.iter().map(|e| e.size).sum(),
        entries,
        skipped_symlinks,
    })
}

/// `dirHash` from per-file digests already sorted by relative path.
pub fn dir_hash_of(entries: &[FileDigest]) -> String {
    let mut summary = Sha256::new();
    for e in entries {
        summary.update(format!("{}  {}\n", e.sha256, e.path).as_bytes());
    }
    hex::encode(summary.finalize())
}

/// Hash a file or a directory.
pub fn hash_path(path: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<PathDigest> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        Ok(PathDigest::Dir(hash_dir(path, progress)?))
    } else {
        Ok(PathDigest::File(hash_file(path, progress)?))
    }
}

/// Check that `digest` is 64 lowercase hex characters.
pub fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: u64) {}

    #[test]
    fn known_sha256_vectors() {
        // FIPS 180-2 test vectors.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Streaming across buffer boundaries gives the same digest as one shot.
        let data: Vec<u8> = (0..(3 * BUF_SIZE + 17))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (h, n) = sha256_reader(&data[..], &none).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(h, sha256_hex(&data));
    }

    #[test]
    fn dir_hash_of_empty_dir_is_sha256_of_nothing() {
        let d = tempfile::tempdir().unwrap();
        let got = hash_dir(d.path(), &none).unwrap();
        assert_eq!(got.dir_hash, sha256_hex(b""));
        assert_eq!(got.files, 0);
    }

    #[test]
    fn newline_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a\nb"), b"x").unwrap();
        let e = hash_dir(d.path(), &none).unwrap_err();
        assert!(e.to_string().contains("newline"), "{e}");
    }
}
