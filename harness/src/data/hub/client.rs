//! The Hugging Face hub protocol, as `huggingface_hub` speaks it, and its cache layout.
//!
//! Endpoints (relative to `$HF_ENDPOINT`, default `https://huggingface.co`):
//! * `GET /api/{datasets|models}/{repo}/revision/{rev}?blobs=true` — the commit a branch, tag or
//!   commit names (`sha`) and its files (`siblings`: `rfilename`, `size`, `blobId`, and for LFS
//!   files `lfs.sha256`);
//! * `HEAD /[datasets/]{repo}/resolve/{commit}/{path}` (no redirects followed) — the file's
//!   `X-Repo-Commit`, `X-Linked-Etag` (LFS: the SHA-256) or `ETag` (git blob id), `X-Linked-Size`
//!   or `Content-Length`, and a `Location` when the bytes live elsewhere (LFS storage);
//! * `GET` of that location with `Range: bytes=N-` to continue a partial download.
//!
//! Cache (shared with `huggingface_hub` / `huggingface-cli`): `<root>/{datasets|models}--owner--name/`
//! with `blobs/<etag>` (the bytes), `blobs/<etag>.incomplete` (a partial download, continued by
//! either tool), `refs/<revision>` (the commit a branch or tag named), and
//! `snapshots/<commit>/<path>` → relative symlink to the blob; `<root>/.locks/<folder>/<etag>.lock`
//! serialises writers of one blob. A blob enters the cache only after its bytes matched the hub's
//! SHA-256 (LFS) or git blob id (other files): a truncated or corrupt download stays
//! `.incomplete` (resumable) or is deleted (mismatch), never a snapshot file.
//!
//! Environment: `HF_ENDPOINT`, `HF_TOKEN` (else the token file `$HF_TOKEN_PATH` or
//! `$HF_HOME/token` that `huggingface-cli login` writes), `HF_HUB_OFFLINE=1` (no network: the cache
//! only), `HF_HUB_CACHE` / `HF_HOME` (see [`super::cache_root`]). The token is sent to the
//! endpoint only, never to the storage a redirect points at.
use crate::error::Error;
use anyhow::Result;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where and how to reach the hub.
#[derive(Clone)]
pub struct HubEnv {
    /// Without a trailing `/`.
    pub endpoint: String,
    pub token: Option<String>,
    pub offline: bool,
    /// The cache root.
    pub cache: PathBuf,
}

impl std::fmt::Debug for HubEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubEnv")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("cache", &self.cache)
            .finish()
    }
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

impl HubEnv {
    /// From the environment (see the module docs).
    pub fn from_env() -> HubEnv {
        let endpoint = env_nonempty("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        let token = env_nonempty("HF_TOKEN").or_else(|| {
            let path = env_nonempty("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .or_else(|| env_nonempty("HF_HOME").map(|h| Path::new(&h).join("token")))
                .or_else(|| {
                    env_nonempty("HOME").map(|h| Path::new(&h).join(".cache/huggingface/token"))
                })?;
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = env_nonempty("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true")
        });
        HubEnv {
            endpoint,
            token,
            offline,
            cache: super::cache_root(),
        }
    }
}

/// A repository: `owner/name` and its type (`dataset` or `model`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Repo {
    pub id: String,
    pub kind: String,
}

impl Repo {
    pub fn new(id: &str, kind: &str) -> Repo {
        Repo {
            id: id.into(),
            kind: kind.into(),
        }
    }
    /// The cache folder name: `datasets--owner--name`.
    pub fn folder(&self) -> String {
        format!("{}s--{}", self.kind, self.id.replace('/', "--"))
    }
    fn url_prefix(&self) -> &'static str {
        if self.kind == "model" {
            ""
        } else {
            "datasets/"
        }
    }
    /// The repository's page (where gated repositories are accepted).
    pub fn page(&self, endpoint: &str) -> String {
        format!("{endpoint}/{}{}", self.url_prefix(), self.id)
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// A file of a revision, as the hub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    /// The LFS object id (SHA-256 of the content), for LFS files.
    pub sha256: Option<String>,
    /// The git blob id (SHA-1 over `blob <size>\0` and the content).
    pub blob_id: Option<String>,
}

/// A revision: the commit it names and the files there.
#[derive(Debug, Clone)]
pub struct Revision {
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

/// What a downloaded file must be.
#[derive(Debug, Clone, Default)]
pub struct Want {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// Git blob id, for files not in LFS (their ETag).
    pub blob_id: Option<String>,
}

/// A file in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `snapshots/<commit>/<path>`.
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// Bytes transferred by this call (0: it was in the cache).
    pub downloaded: u64,
}

/// Whether `s` is a full commit id.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Percent-encode one URL path segment (a revision such as `refs/convert/parquet` is one).
fn enc_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encode a file path, keeping its `/`.
fn enc_path(p: &str) -> String {
    p.split('/').map(enc_segment).collect::<Vec<_>>().join("/")
}

/// The SHA-1 git blob id of `size` bytes whose content is hashed by the caller.
fn git_blob_hasher(size: u64) -> sha1::Sha1 {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {size}\0").as_bytes());
    h
}

/// The hub client.
pub struct Hub {
    pub env: HubEnv,
    /// Progress bars on stderr.
    pub progress: bool,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct ApiRevision {
    sha: String,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "blobId")]
    blob_id: Option<String>,
    #[serde(default)]
    lfs: Option<ApiLfs>,
}

#[derive(Deserialize)]
struct ApiLfs {
    sha256: String,
    size: u64,
}

/// Attempts per download (a cut connection continues where it stopped).
const ATTEMPTS: u32 = 5;

type Resp = ureq::http::Response<ureq::Body>;

fn header<'a>(r: &'a Resp, k: &str) -> Option<&'a str> {
    r.headers().get(k).and_then(|v| v.to_str().ok())
}

fn strip_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

impl Hub {
    pub fn new(env: HubEnv, progress: bool) -> Hub {
        let cfg = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(format!("crambench/{}", crate::VERSION))
            .build();
        Hub {
            env,
            progress,
            agent: ureq::Agent::new_with_config(cfg),
        }
    }

    /// From the environment.
    pub fn from_env(progress: bool) -> Hub {
        Hub::new(HubEnv::from_env(), progress)
    }

    fn repo_dir(&self, repo: &Repo) -> PathBuf {
        self.env.cache.join(repo.folder())
    }

    /// `snapshots/<commit>/<path>` of `repo` in the cache.
    pub fn snapshot_path(&self, repo: &Repo, commit: &str, path: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("snapshots")
            .join(commit)
            .join(path)
    }

    /// The snapshot directory of `commit`.
    pub fn snapshot_dir(&self, repo: &Repo, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    /// The file, if the cache holds it (a snapshot entry whose blob exists).
    pub fn cached(&self, repo: &Repo, commit: &str, path: &str) -> Option<PathBuf> {
        let p = self.snapshot_path(repo, commit, path);
        std::fs::metadata(&p)
            .ok()
            .filter(|m| m.is_file())
            .map(|_| p)
    }

    fn offline_error(&self, what: &str) -> anyhow::Error {
        Error::input(
            what,
            format!(
                "HF_HUB_OFFLINE is set and the local Hugging Face cache ({}) does not hold it; \
                 unset HF_HUB_OFFLINE (or run `crambench data lock RECIPE` once with network) \
                 to download it",
                self.env.cache.display()
            ),
        )
        .into()
    }

    /// `send_token`: only for the URLs crambench builds from the endpoint, never for a
    /// location a redirect named (LFS storage takes signed URLs, not the user's token).
    fn request(&self, method: &str, url: &str, range_from: u64, send_token: bool) -> Result<Resp> {
        let mut req = match method {
            "HEAD" => self.agent.head(url),
            _ => self.agent.get(url),
        }
        .header("Accept-Encoding", "identity");
        if let (true, Some(t)) = (send_token, &self.env.token) {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        req.call().map_err(|e| self.transport_error(url, e))
    }

    fn transport_error(&self, url: &str, e: ureq::Error) -> anyhow::Error {
        Error::Io {
            path: url.to_string(),
            source: std::io::Error::other(format!(
                "{e}: cannot reach the Hugging Face hub at {}; check the network (and HF_ENDPOINT), \
                 or set HF_HUB_OFFLINE=1 to use only files already in the cache",
                self.env.endpoint
            )),
        }
        .into()
    }

    /// A named error for a refused request.
    fn status_error(&self, r: &Resp, repo: &Repo, what: &str) -> anyhow::Error {
        let code = header(r, "x-error-code").unwrap_or_default().to_string();
        let msg = header(r, "x-error-message").unwrap_or_default().to_string();
        let status = r.status().as_u16();
        let page = repo.page(&self.env.endpoint);
        let token_hint = if self.env.token.is_some() {
            "the token in HF_TOKEN (or the `huggingface-cli login` token file) has no access"
        } else {
            "no token is set: set HF_TOKEN to a token with read access (https://huggingface.co/settings/tokens)"
        };
        let m =
            match (status, code.as_str()) {
                (_, "GatedRepo") | (403, _) => {
                    format!(
                "{repo} is gated (HTTP {status}{}): accept its conditions at {page} with your \
                 account, then set HF_TOKEN to a read token of that account and rerun",
                if msg.is_empty() { String::new() } else { format!(": {msg}") }
            )
                }
                (_, "RepoNotFound") => format!(
                    "{repo} does not exist on {} or is private ({token_hint})",
                    self.env.endpoint
                ),
                (_, "RevisionNotFound") => format!("{repo}: no such revision ({what})"),
                (_, "EntryNotFound") => format!("{repo}: no such file ({what})"),
                (401, _) => format!("{repo}: authentication failed (HTTP 401): {token_hint}"),
                (404, _) => format!("{repo}: not found ({what}; HTTP 404)"),
                _ => format!(
                    "the hub answered HTTP {status} for {what}{}",
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(": {msg}")
                    }
                ),
            };
        match status {
            500.. => Error::Io {
                path: what.into(),
                source: std::io::Error::other(format!("{m}; retry later")),
            }
            .into(),
            _ => Error::input(what, m).into(),
        }
    }

    /// The commit `rev` (branch, tag or commit) names and its files.
    pub fn revision(&self, repo: &Repo, rev: &str) -> Result<Revision> {
        let what = format!("{}@{rev}", repo.id);
        if self.env.offline {
            return self.revision_offline(repo, rev);
        }
        let url = format!(
            "{}/api/{}s/{}/revision/{}?blobs=true",
            self.env.endpoint,
            repo.kind,
            repo.id,
            enc_segment(rev)
        );
        let r = self.request("GET", &url, 0, true)?;
        if r.status().as_u16() != 200 {
            return Err(self.status_error(&r, repo, &what));
        }
        let body = r
            .into_body()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| self.transport_error(&url, e))?;
        let api: ApiRevision = serde_json::from_slice(&body)
            .map_err(|e| Error::input(&url, format!("the hub's answer is not a revision: {e}")))?;
        if !is_commit(&api.sha) {
            return Err(Error::input(&url, format!("the hub named commit {:?}", api.sha)).into());
        }
        if !is_commit(rev) {
            // As huggingface_hub does: the branch or tag resolves to this commit offline, too.
            let refs = self.repo_dir(repo).join("refs").join(rev);
            if let Some(d) = refs.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            crate::io::write_atomic(&refs, api.sha.as_bytes(), None)?;
        }
        let files = api
            .siblings
            .into_iter()
            .map(|s| RemoteFile {
                size: s.lfs.as_ref().map(|l| l.size).or(s.size).unwrap_or(0),
                sha256: s.lfs.map(|l| l.sha256.to_ascii_lowercase()),
                blob_id: s.blob_id,
                path: s.rfilename,
            })
            .collect();
        Ok(Revision {
            commit: api.sha,
            files,
        })
    }

    /// The revision from the cache alone: `refs/<rev>` (or the commit itself) and the files of
    /// its snapshot, hashed.
    fn revision_offline(&self, repo: &Repo, rev: &str) -> Result<Revision> {
        let what = format!("{}@{rev}", repo.id);
        let commit = if is_commit(rev) {
            rev.to_string()
        } else {
            let refs = self.repo_dir(repo).join("refs").join(rev);
            match std::fs::read_to_string(&refs) {
                Ok(c) if is_commit(c.trim()) => c.trim().to_string(),
                _ => return Err(self.offline_error(&what)),
            }
        };
        let dir = self.snapshot_dir(repo, &commit);
        if !dir.is_dir() {
            return Err(self.offline_error(&what));
        }
        let mut files = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)
                .map_err(|e| Error::io(&d, e))?
                .flatten()
            {
                let p = e.path();
                let Ok(m) = std::fs::metadata(&p) else {
                    continue; // a dangling link: not in the cache
                };
                if m.is_dir() {
                    stack.push(p);
                } else if m.is_file() {
                    let rel = p
                        .strip_prefix(&dir)
                        .unwrap_or(&p)
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    let d = crate::provenance::hash::hash_file(&p, &|_| {})?;
                    files.push(RemoteFile {
                        path: rel,
                        size: d.size,
                        sha256: Some(d.sha256),
                        blob_id: None,
                    });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Revision { commit, files })
    }

    /// The file `path` of `repo` at `commit`, from the cache or downloaded into it, checked
    /// against `want` and the hub's own digest.
    pub fn fetch(&self, repo: &Repo, commit: &str, path: &str, want: &Want) -> Result<Fetched> {
        let what = format!("{}@{commit}:{path}", repo.id);
        if let Some(p) = self.cached(repo, commit, path) {
            let size = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
            // The blob's name is its LFS SHA-256 when it is one; else hash it.
            let blob_name = std::fs::read_link(&p)
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            let sha256 = match (&want.sha256, blob_name) {
                (Some(w), Some(b)) if is_sha256(&b) && b == *w => b,
                _ => crate::provenance::hash::hash_file(&p, &|_| {})?.sha256,
            };
            return Ok(Fetched {
                path: p,
                sha256,
                size,
                downloaded: 0,
            });
        }
        let url = format!(
            "{}/{}{}/resolve/{commit}/{}",
            self.env.endpoint,
            repo.url_prefix(),
            repo.id,
            enc_path(path)
        );
        if self.env.offline {
            return Err(Error::input(
                &what,
                format!(
                    "not in the local Hugging Face cache and HF_HUB_OFFLINE is set. Unset \
                     HF_HUB_OFFLINE to download it, or place the file at\n  {}\n(from {url}, e.g. \
                     `huggingface-cli download --repo-type {} --revision {commit} {} {path}` with \
                     HF_HUB_CACHE={})",
                    self.snapshot_path(repo, commit, path).display(),
                    repo.kind,
                    repo.id,
                    self.env.cache.display()
                ),
            )
            .into());
        }
        // The metadata: which blob, how big, where its bytes are. Redirects on the hub's own
        // host (a renamed repository) are followed; one to another host (LFS storage) carries
        // the metadata itself and is where the bytes are, as huggingface_hub does.
        let mut head_url = url.clone();
        let mut head = self.request("HEAD", &head_url, 0, true)?;
        for _ in 0..5 {
            let loc = header(&head, "location").map(str::to_string);
            match loc {
                Some(l) if (300..400).contains(&head.status().as_u16()) => {
                    let target = absolute(&head_url, &l);
                    if host_of(&target) != host_of(&head_url) {
                        break;
                    }
                    head_url = target;
                    head = self.request("HEAD", &head_url, 0, true)?;
                }
                _ => break,
            }
        }
        let status = head.status().as_u16();
        if !(200..400).contains(&status) {
            let code = header(&head, "x-error-code").unwrap_or_default();
            if want.sha256.is_some() && matches!(code, "RevisionNotFound" | "EntryNotFound") {
                // Locked, and gone: the history was rewritten or the file deleted upstream.
                return Err(Error::Check(format!(
                    "{what}: changed upstream since it was locked: the hub no longer has {} \
                     ({code}); run `crambench data lock --update RECIPE` and review the diff of \
                     the lock file",
                    if code == "RevisionNotFound" {
                        format!("commit {commit}")
                    } else {
                        format!("{path} at commit {commit}")
                    }
                ))
                .into());
            }
            return Err(self.status_error(&head, repo, &what));
        }
        let linked = header(&head, "x-linked-etag");
        let etag = linked
            .or_else(|| header(&head, "etag"))
            .map(strip_etag)
            .ok_or_else(|| {
                Error::input(
                    &what,
                    "the hub sent no ETag (is HF_ENDPOINT a Hugging Face hub?)",
                )
            })?;
        let size: u64 = header(&head, "x-linked-size")
            .or_else(|| header(&head, "content-length"))
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::input(&what, "the hub sent no size"))?;
        if let Some(c) = header(&head, "x-repo-commit") {
            if !c.eq_ignore_ascii_case(commit) {
                return Err(Error::Check(format!(
                    "{what}: the hub served commit {c} for commit {commit}"
                ))
                .into());
            }
        }
        let lfs_sha = (linked.is_some() && is_sha256(&etag)).then(|| etag.to_ascii_lowercase());
        // What the hub now serves against what it must be (the lock, a pin).
        let changed = |got: String| -> anyhow::Error {
            Error::Check(format!(
                "{what}: changed upstream since it was locked: expected {}, the hub now serves \
                 {got}; if the new file is intended, run `crambench data lock --update RECIPE` \
                 and review the diff of the lock file",
                match (&want.sha256, want.size) {
                    (Some(s), Some(n)) => format!("sha256 {s}, {n} bytes"),
                    (Some(s), None) => format!("sha256 {s}"),
                    (None, Some(n)) => format!("{n} bytes"),
                    (None, None) => "?".into(),
                }
            ))
            .into()
        };
        if let (Some(w), Some(l)) = (&want.sha256, &lfs_sha) {
            if w != l {
                return Err(changed(format!("sha256 {l}, {size} bytes")));
            }
        }
        if want.size.is_some_and(|n| n != size) {
            return Err(changed(format!("{size} bytes")));
        }
        let location = header(&head, "location").map(str::to_string);
        drop(head);
        let redirected = location.is_some();
        let get_url = match location {
            Some(l) => absolute(&head_url, &l),
            None => head_url.clone(),
        };

        let rdir = self.repo_dir(repo);
        let blobs = rdir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        let blob = blobs.join(&etag);
        let locks = self.env.cache.join(".locks").join(repo.folder());
        std::fs::create_dir_all(&locks).map_err(|e| Error::io(&locks, e))?;
        let _guard = FileLock::acquire(&locks.join(format!("{etag}.lock")))?;
        let mut downloaded = 0;
        let sha256 =
            if blob.is_file() && std::fs::metadata(&blob).map(|m| m.len()).ok() == Some(size) {
                // Another snapshot (or huggingface_hub) has these bytes already.
                let d = crate::provenance::hash::hash_file(&blob, &|_| {})?;
                d.sha256
            } else {
                let (sha, n) = self.download_blob(
                    repo,
                    &what,
                    (&get_url, !redirected),
                    &blob,
                    size,
                    &etag,
                    lfs_sha.is_some(),
                )?;
                downloaded = n;
                sha
            };
        // Verified against the hub's digest (download_blob); now against the lock / pin.
        if let Some(w) = &want.sha256 {
            if *w != sha256 {
                // The blob is what the hub says it is, but not what the lock holds.
                let _ = std::fs::remove_file(&blob);
                return Err(changed(format!("sha256 {sha256}, {size} bytes")));
            }
        }
        if let (Some(w), None) = (&want.blob_id, &lfs_sha) {
            if !w.eq_ignore_ascii_case(&etag) {
                return Err(changed(format!("git blob {etag}")));
            }
        }
        let snap = self.snapshot_path(repo, commit, path);
        link_snapshot(&snap, &blob, path)?;
        Ok(Fetched {
            path: snap,
            sha256,
            size,
            downloaded,
        })
    }

    /// Download `url` into `blob` via `blob.incomplete`, continuing a partial file; check the
    /// bytes against `etag` (the SHA-256 when `lfs`, else the git blob id). The digest is taken
    /// while the bytes stream in (a partial file left by an earlier process is hashed first),
    /// so every byte of the finished file is checked without reading it again. Returns the
    /// SHA-256 and the bytes transferred.
    #[allow(clippy::too_many_arguments)]
    fn download_blob(
        &self,
        repo: &Repo,
        what: &str,
        (url, send_token): (&str, bool),
        blob: &Path,
        size: u64,
        etag: &str,
        lfs: bool,
    ) -> Result<(String, u64)> {
        let part = PathBuf::from(format!("{}.incomplete", blob.display()));
        let name = what.rsplit(':').next().unwrap_or(what);
        let pb = crate::io::byte_progress(self.progress, size, &format!("downloading {name}"));
        let mut transferred = 0u64;
        let mut last_err = None;
        // The digests of the part file's first `hashed` bytes.
        let mut sha = Sha256::new();
        let mut git = git_blob_hasher(size);
        let mut hashed = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..ATTEMPTS {
            let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            let from = if have > size { 0 } else { have };
            if from == size && size > 0 {
                last_err = None;
                break;
            }
            let r = self.request("GET", url, from, send_token)?;
            let status = r.status().as_u16();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .read(true)
                .truncate(false)
                .open(&part)
                .map_err(|e| Error::io(&part, e))?;
            let start = match status {
                206 => {
                    let cr = header(&r, "content-range").unwrap_or_default();
                    if !cr.starts_with(&format!("bytes {from}-")) {
                        return Err(Error::input(
                            what,
                            format!("the server answered range {from}- with {cr:?}"),
                        )
                        .into());
                    }
                    from
                }
                200 => 0, // the server ignored the range: start over
                416 if from == size => {
                    last_err = None;
                    break;
                }
                _ => return Err(self.status_error(&r, repo, what)),
            };
            f.set_len(start).map_err(|e| Error::io(&part, e))?;
            if start < hashed {
                sha = Sha256::new();
                git = git_blob_hasher(size);
                hashed = 0;
            }
            // Bytes already on disk that this process has not hashed (an earlier download's).
            if hashed < start {
                f.seek(std::io::SeekFrom::Start(hashed))
                    .map_err(|e| Error::io(&part, e))?;
                let mut left = start - hashed;
                while left > 0 {
                    let k = (buf.len() as u64).min(left) as usize;
                    f.read_exact(&mut buf[..k])
                        .map_err(|e| Error::io(&part, e))?;
                    sha.update(&buf[..k]);
                    if !lfs {
                        git.update(&buf[..k]);
                    }
                    left -= k as u64;
                }
                hashed = start;
            }
            f.seek(std::io::SeekFrom::Start(start))
                .map_err(|e| Error::io(&part, e))?;
            pb.set_position(start);
            let mut reader = r.into_body().into_reader();
            let mut got = start;
            let res = loop {
                match reader.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if got + n as u64 > size {
                            break Err(std::io::Error::other("more bytes than the hub announced"));
                        }
                        f.write_all(&buf[..n]).map_err(|e| Error::io(&part, e))?;
                        sha.update(&buf[..n]);
                        if !lfs {
                            git.update(&buf[..n]);
                        }
                        got += n as u64;
                        hashed = got;
                        transferred += n as u64;
                        pb.inc(n as u64);
                    }
                    Err(e) => break Err(e),
                }
            };
            f.sync_all().map_err(|e| Error::io(&part, e))?;
            match res {
                Ok(()) if got == size => {
                    last_err = None;
                    break;
                }
                Ok(()) => last_err = Some(format!("connection closed after {got} of {size} bytes")),
                Err(e) => last_err = Some(format!("{e} after {got} of {size} bytes")),
            }
        }
        pb.finish_and_clear();
        if let Some(e) = last_err {
            return Err(Error::Io {
                path: what.into(),
                source: std::io::Error::other(format!(
                    "download interrupted ({e}); the partial file {} is kept: rerun to continue",
                    part.display()
                )),
            }
            .into());
        }
        let n_total = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if hashed != n_total {
            // Complete before this process started (only the rename was missing): hash it.
            sha = Sha256::new();
            git = git_blob_hasher(size);
            let mut f = std::fs::File::open(&part).map_err(|e| Error::io(&part, e))?;
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(&part, e))?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
                if !lfs {
                    git.update(&buf[..n]);
                }
            }
        }
        let sha256 = hex::encode(sha.finalize());
        let ok = n_total == size
            && if lfs {
                sha256.eq_ignore_ascii_case(etag)
            } else {
                hex::encode(git.finalize()).eq_ignore_ascii_case(etag)
            };
        if !ok {
            let _ = std::fs::remove_file(&part);
            return Err(Error::Check(format!(
                "{what}: the downloaded bytes ({n_total} bytes, sha256 {sha256}) do not match the \
                 hub's {} {etag} ({size} bytes); not cached. Rerun to download it again; if it \
                 persists, the server or a proxy alters the file",
                if lfs { "SHA-256" } else { "git blob id" }
            ))
            .into());
        }
        std::fs::rename(&part, blob).map_err(|e| Error::io(blob, e))?;
        Ok((sha256, transferred))
    }
}

/// `location` (absolute, or relative to `base`) as an absolute URL.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let origin = rest.split('/').next().unwrap_or(rest);
    if location.starts_with('/') {
        format!("{scheme}://{origin}{location}")
    } else {
        let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or(base);
        format!("{dir}/{location}")
    }
}

/// The host name of a URL (without port or credentials).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let auth = rest.split('/').next().unwrap_or(rest);
    let hostport = auth.rsplit('@').next().unwrap_or(auth);
    let host = if hostport.starts_with('[') {
        hostport
            .split(']')
            .next()
            .unwrap_or(hostport)
            .trim_start_matches('[')
    } else {
        hostport.split(':').next().unwrap_or(hostport)
    };
    host.to_ascii_lowercase()
}

/// `snap` → relative link to `blob` (`../../blobs/<etag>` plus one `..` per directory of `path`).
fn link_snapshot(snap: &Path, blob: &Path, path: &str) -> Result<()> {
    if let Some(d) = snap.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let depth = path.split('/').count() - 1;
    let mut target = PathBuf::new();
    for _ in 0..depth + 2 {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap_or_default());
    let _ = std::fs::remove_file(snap);
    std::os::unix::fs::symlink(&target, snap).map_err(|e| Error::io(snap, e))?;
    Ok(())
}

/// An exclusive `flock` on a file, as `huggingface_hub`'s `filelock` takes on the same path:
/// two processes never write one blob at once; the second waits.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(path, std::io::Error::last_os_error()).into());
        }
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking the descriptor this value owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_slashes_of_paths_but_not_of_revisions() {
        assert_eq!(
            enc_segment("refs/convert/parquet"),
            "refs%2Fconvert%2Fparquet"
        );
        assert_eq!(enc_path("en/c4 a.json.gz"), "en/c4%20a.json.gz");
    }

    #[test]
    fn redirects_resolve_and_hosts_compare_without_ports() {
        assert_eq!(absolute("http://h:1/a/b", "/c/d"), "http://h:1/c/d");
        assert_eq!(absolute("http://h:1/a/b", "https://cdn/x"), "https://cdn/x");
        assert_eq!(
            host_of("http://127.0.0.1:5/x"),
            host_of("http://127.0.0.1:6/y")
        );
        assert_ne!(
            host_of("https://huggingface.co/x"),
            host_of("https://cdn-lfs.hf.co/y")
        );
    }

    #[test]
    fn git_blob_id_is_gits() {
        // `printf hello | git hash-object --stdin`
        let mut h = git_blob_hasher(5);
        h.update(b"hello");
        assert_eq!(
            hex::encode(h.finalize()),
            "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"
        );
    }
}
