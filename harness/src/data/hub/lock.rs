//! The lock file: every hub file a recipe uses, pinned (like `Cargo.lock`).
//!
//! A recipe names hub files by repository, revision (branch, tag or commit) and a path or glob
//! (`*`, `?`, `[…]`; `*` never crosses `/`). The first resolution asks the hub which commit the
//! revision is and which files match, and writes for each the commit, path, size and SHA-256 (the
//! LFS object id; for small non-LFS files, the hash of the downloaded bytes) to
//! `<recipe>.lock` beside the recipe (or `--lock FILE`). Later resolutions take the lock's
//! entries without asking the hub, and every download is checked against them: a file that
//! changed upstream is a failed check (exit 1) naming it. `--locked` refuses to resolve anything
//! the lock does not hold (for CI); `--update` resolves every entry again.
//!
//! Entries that share a repository and revision resolve to one commit: a pattern added later is
//! resolved at the commit the lock already holds for that revision, so a GLUE task added to a
//! recipe reads the same snapshot as the others.
use super::client::{Hub, Repo, Revision, Want};
use crate::data::config::HubFile;
use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Version of the lock file format.
pub const LOCK_VERSION: u32 = 1;

/// The lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    /// One entry per (repository, revision, path or glob) of the recipe.
    #[serde(default, rename = "source")]
    pub sources: Vec<LockedSource>,
}

impl Default for LockFile {
    fn default() -> Self {
        LockFile {
            version: LOCK_VERSION,
            sources: vec![],
        }
    }
}

/// One resolved (repository, revision, path or glob).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedSource {
    pub repo: String,
    pub repo_type: String,
    /// As the recipe names it (branch, tag or commit).
    pub revision: String,
    /// As the recipe names it (a path or a glob).
    pub path: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The matching files, sorted by path.
    pub files: Vec<LockedFile>,
}

/// A pinned file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

type Key = (String, String, String, String);

impl LockedSource {
    fn key(&self) -> Key {
        (
            self.repo.clone(),
            self.repo_type.clone(),
            self.revision.clone(),
            self.path.clone(),
        )
    }
    pub fn repo(&self) -> Repo {
        Repo::new(&self.repo, &self.repo_type)
    }
    /// Total bytes of its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn key_of(h: &HubFile) -> Key {
    (
        h.repo.clone(),
        h.repo_type.clone(),
        h.revision.clone(),
        h.path.clone(),
    )
}

/// Whether a hub path is a glob.
pub fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// The default lock file of a recipe: `baselines/x.toml` → `baselines/x.lock`.
pub fn default_path(recipe: &Path) -> PathBuf {
    recipe.with_extension("lock")
}

impl LockFile {
    /// Read `path` (absent: an empty lock).
    pub fn load(path: &Path) -> Result<LockFile> {
        if !path.exists() {
            return Ok(LockFile::default());
        }
        let bytes = crate::io::read_limited(path, 64 << 20)?;
        let text =
            std::str::from_utf8(&bytes).map_err(|_| Error::input(path.display(), "not UTF-8"))?;
        let lock: LockFile = toml::from_str(text)
            .map_err(|e| Error::input(path.display(), format!("not a crambench lock file: {e}")))?;
        if lock.version != LOCK_VERSION {
            return Err(Error::input(
                format!("{}: version", path.display()),
                format!(
                    "{} is not a lock version this crambench reads ({LOCK_VERSION})",
                    lock.version
                ),
            )
            .into());
        }
        for s in &lock.sources {
            for f in &s.files {
                if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::input(
                        format!("{}: {}:{}", path.display(), s.repo, f.path),
                        "sha256 is not 64 hex digits",
                    )
                    .into());
                }
            }
        }
        Ok(lock)
    }

    /// The file's text.
    pub fn to_text(&self) -> Result<String> {
        Ok(format!(
            "# crambench lock file: the hub files of a recipe, pinned to commit, size and SHA-256.\n\
             # Written by `crambench data lock` / `crambench run`; review changes like code.\n{}",
            toml::to_string(self)?
        ))
    }

    fn get(&self, k: &Key) -> Option<&LockedSource> {
        self.sources.iter().find(|s| &s.key() == k)
    }
}

/// The lock, its file, and the hub: resolving hub sources through the lock.
pub struct Session {
    pub hub: Hub,
    pub lock: LockFile,
    /// Where the lock is read from and written to (`None`: not written).
    pub path: Option<PathBuf>,
    /// `--locked`: never resolve what the lock does not hold.
    pub locked: bool,
    /// `--update`: resolve every entry again.
    pub update: bool,
    used: BTreeSet<Key>,
    revisions: BTreeMap<(Repo, String), Revision>,
}

impl Session {
    pub fn new(hub: Hub, path: Option<PathBuf>, locked: bool, update: bool) -> Result<Session> {
        let lock = match &path {
            Some(p) => LockFile::load(p)?,
            None => LockFile::default(),
        };
        Ok(Session {
            hub,
            lock,
            path,
            locked,
            update,
            used: BTreeSet::new(),
            revisions: BTreeMap::new(),
        })
    }

    /// The lock's entry for `h`, resolving (and adding) it when the lock lacks it.
    pub fn entry(&mut self, h: &HubFile) -> Result<LockedSource> {
        let key = key_of(h);
        let what = format!("hub:{}@{}:{}", h.repo, h.revision, h.path);
        if !self.update {
            if let Some(e) = self.lock.get(&key) {
                self.used.insert(key);
                return Ok(e.clone());
            }
        }
        if self.locked {
            return Err(Error::Check(format!(
                "--locked: the lock file {} does not hold {what}; run `crambench data lock \
                 RECIPE` without --locked and commit the lock file",
                self.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(none)".into())
            ))
            .into());
        }
        let repo = Repo::new(&h.repo, &h.repo_type);
        // A revision the lock already resolved stays at that commit.
        let query = (!self.update)
            .then(|| {
                self.lock
                    .sources
                    .iter()
                    .find(|s| {
                        s.repo == h.repo && s.repo_type == h.repo_type && s.revision == h.revision
                    })
                    .map(|s| s.commit.clone())
            })
            .flatten()
            .unwrap_or_else(|| h.revision.clone());
        let rk = (repo.clone(), query.clone());
        if !self.revisions.contains_key(&rk) {
            let r = self.hub.revision(&repo, &query)?;
            self.revisions.insert(rk.clone(), r);
        }
        let rev = self.revisions[&rk].clone();
        let matched: Vec<_> = if is_glob(&h.path) {
            let pat = glob::Pattern::new(&h.path)
                .map_err(|e| Error::input(format!("{what}: path"), format!("not a glob: {e}")))?;
            let opts = glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: false,
            };
            rev.files
                .iter()
                .filter(|f| pat.matches_with(&f.path, opts))
                .cloned()
                .collect()
        } else {
            rev.files
                .iter()
                .filter(|f| f.path == h.path)
                .cloned()
                .collect()
        };
        for f in &matched {
            if let Some(p) = f.path.split('/').find_map(crate::ident::problem) {
                return Err(Error::input(
                    &what,
                    format!("the hub lists the file {:?}, whose name crambench refuses as a path (a component {p})", f.path),
                )
                .into());
            }
        }
        if matched.is_empty() {
            let mut some: Vec<&str> = rev.files.iter().map(|f| f.path.as_str()).take(12).collect();
            if rev.files.len() > 12 {
                some.push("…");
            }
            return Err(Error::input(
                what,
                format!(
                    "matches no file at commit {} (files there: {})",
                    rev.commit,
                    if some.is_empty() {
                        "none".into()
                    } else {
                        some.join(", ")
                    }
                ),
            )
            .into());
        }
        let mut files = Vec::new();
        for f in matched {
            let sha256 = match &f.sha256 {
                Some(s) => s.clone(),
                // Not in LFS (small): its SHA-256 is known only from its bytes.
                None => {
                    self.hub
                        .fetch(
                            &repo,
                            &rev.commit,
                            &f.path,
                            &Want {
                                size: Some(f.size),
                                sha256: None,
                                blob_id: f.blob_id.clone(),
                            },
                        )?
                        .sha256
                }
            };
            files.push(LockedFile {
                path: f.path,
                size: f.size,
                sha256,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let e = LockedSource {
            repo: h.repo.clone(),
            repo_type: h.repo_type.clone(),
            revision: h.revision.clone(),
            path: h.path.clone(),
            commit: rev.commit,
            files,
        };
        match self.lock.sources.iter_mut().find(|s| s.key() == key) {
            Some(s) => *s = e.clone(),
            None => self.lock.sources.push(e.clone()),
        }
        self.used.insert(key);
        Ok(e)
    }

    /// The entry of a source pinned by hand (a commit, one path, sha256 and size in the
    /// recipe): the lock's, or one made from the pin without asking the hub.
    pub fn entry_pinned(&mut self, h: &HubFile, sha256: &str, size: u64) -> LockedSource {
        let key = key_of(h);
        if let Some(e) = self.lock.get(&key) {
            self.used.insert(key);
            return e.clone();
        }
        let e = LockedSource {
            repo: h.repo.clone(),
            repo_type: h.repo_type.clone(),
            revision: h.revision.clone(),
            path: h.path.clone(),
            commit: h.revision.to_ascii_lowercase(),
            files: vec![LockedFile {
                path: h.path.clone(),
                size,
                sha256: sha256.to_string(),
            }],
        };
        self.lock.sources.push(e.clone());
        self.used.insert(key);
        e
    }

    /// The cached paths of every file of `e`, downloading what the cache lacks.
    pub fn fetch(&self, e: &LockedSource) -> Result<Vec<PathBuf>> {
        let repo = e.repo();
        e.files
            .iter()
            .map(|f| {
                Ok(self
                    .hub
                    .fetch(
                        &repo,
                        &e.commit,
                        &f.path,
                        &Want {
                            size: Some(f.size),
                            sha256: Some(f.sha256.clone()),
                            blob_id: None,
                        },
                    )?
                    .path)
            })
            .collect()
    }

    /// Bytes of `e` the cache does not hold yet.
    pub fn missing_bytes(&self, e: &LockedSource) -> u64 {
        let repo = e.repo();
        e.files
            .iter()
            .filter(|f| self.hub.cached(&repo, &e.commit, &f.path).is_none())
            .map(|f| f.size)
            .sum()
    }

    /// Write the lock file if it changed; `prune` drops entries this session did not use (a
    /// resolution of the whole recipe). Returns whether it was written.
    pub fn save(&mut self, prune: bool) -> Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let mut lock = self.lock.clone();
        if prune {
            lock.sources.retain(|s| self.used.contains(&s.key()));
        }
        let text = lock.to_text()?;
        let old = std::fs::read(path).ok();
        if old.as_deref() == Some(text.as_bytes()) {
            return Ok(false);
        }
        if self.locked {
            // entry() refused everything new; what is left is pruning, which --locked skips.
            return Ok(false);
        }
        crate::io::write_atomic(path, text.as_bytes(), None)?;
        self.lock = lock;
        Ok(true)
    }
}

/// A lock file as recorded in a manifest (`None` when there is none): its path, SHA-256, size
/// and content.
pub fn record(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let lock = LockFile::load(path)?;
    let d = crate::provenance::hash::hash_file(path, &|_| {})?;
    Ok(Some(serde_json::json!({
        "path": path.display().to_string(),
        "sha256": d.sha256,
        "size": d.size,
        "content": serde_json::to_value(&lock)?,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_text_round_trips_and_unknown_keys_are_refused() {
        let l = LockFile {
            version: 1,
            sources: vec![LockedSource {
                repo: "a/b".into(),
                repo_type: "dataset".into(),
                revision: "main".into(),
                path: "d/*.parquet".into(),
                commit: "0".repeat(40),
                files: vec![LockedFile {
                    path: "d/x.parquet".into(),
                    size: 3,
                    sha256: "a".repeat(64),
                }],
            }],
        };
        let t = l.to_text().unwrap();
        let back: LockFile = toml::from_str(&t).unwrap();
        assert_eq!(back, l);
        assert!(toml::from_str::<LockFile>(&t.replace("commit", "komit")).is_err());
    }

    #[test]
    fn default_lock_sits_beside_the_recipe() {
        assert_eq!(
            default_path(Path::new("baselines/crammed-bert.toml")),
            Path::new("baselines/crammed-bert.lock")
        );
    }
}
