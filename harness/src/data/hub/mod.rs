//! Hugging Face hub files: the cache, the download client ([`client`]) and the lock file
//! ([`lock`]).
//!
//! The cache root is the first of `$HF_HUB_CACHE`, `$HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`,
//! `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub` (the order of
//! `huggingface_hub`). A file of repository `owner/name` (type `dataset` or `model`) at commit
//! `REV` lives at `<root>/<type>s--owner--name/snapshots/REV/<path>`; that is what
//! `huggingface-cli download` creates, and what [`client::Hub`] downloads into (with `blobs/`
//! and `refs/` beside it). [`resolve`] finds a file pinned to a commit in the cache without any
//! network; [`lock::Session`] resolves branches, tags and globs through the lock file and
//! downloads. Pins (size, sha256) are checked by the caller.
pub mod client;
pub mod lock;

use super::config::HubFile;
use crate::error::Error;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The hub cache root from the environment (see module docs).
pub fn cache_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    if let Some(p) = env("HF_HOME") {
        return p.join("hub");
    }
    if let Some(p) = env("XDG_CACHE_HOME") {
        return p.join("huggingface/hub");
    }
    env("HOME")
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".cache/huggingface/hub")
}

/// Where `file` lives under the cache root `root`.
pub fn cache_path(root: &Path, file: &HubFile) -> PathBuf {
    let folder = format!("{}s--{}", file.repo_type, file.repo.replace('/', "--"));
    root.join(folder)
        .join("snapshots")
        .join(&file.revision)
        .join(&file.path)
}

/// The hub URL of `file` (for messages only; crambench does not fetch it).
pub fn url(file: &HubFile) -> String {
    let prefix = if file.repo_type == "dataset" {
        "datasets/"
    } else {
        ""
    };
    format!(
        "https://huggingface.co/{prefix}{}/resolve/{}/{}",
        file.repo, file.revision, file.path
    )
}

/// Resolve `file` in the cache at `root`, or fail naming the file to place and where.
pub fn resolve(root: &Path, file: &HubFile) -> Result<PathBuf> {
    let p = cache_path(root, file);
    if p.is_file() {
        return Ok(p);
    }
    Err(Error::input(
        format!("hub file {}@{}:{}", file.repo, file.revision, file.path),
        format!(
            "not in the local Hugging Face cache. Place the file at\n  {}\n(download {} or run `huggingface-cli download --repo-type {} --revision {} {} {}` with HF_HOME/HF_HUB_CACHE pointing at this cache)",
            p.display(),
            url(file),
            file.repo_type,
            file.revision,
            file.repo,
            file.path
        ),
    )
    .into())
}
