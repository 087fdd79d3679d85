//! A hub-shaped HTTP server on loopback for the tests: the endpoints and headers that
//! `huggingface_hub` and crambench use, over fixture repositories held in memory.
//!
//! * `GET /api/{datasets|models}/{repo}/revision/{rev}[?blobs=true]` → `{"sha", "siblings":
//!   [{"rfilename", "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}`;
//!   a missing repository is 401 `X-Error-Code: RepoNotFound`, a missing revision 404
//!   `RevisionNotFound`, a gated one without the token 403 `GatedRepo`.
//! * `HEAD|GET /[datasets/]{repo}/resolve/{rev}/{path}` → `X-Repo-Commit`; LFS files: 302 to
//!   `/lfs-store/{sha256}` with `X-Linked-Etag` (the SHA-256) and `X-Linked-Size`; other files:
//!   200 with `ETag` (the git blob id) and the bytes. A missing file is 404 `EntryNotFound`.
//! * `GET /lfs-store/{sha256}` → the bytes (no token needed, as a CDN), honouring `Range`;
//!   served on 127.0.0.2, so that it is another host than the hub, as the CDN is.
//!
//! Faults, per file: `corrupt` (the bytes served differ from the advertised digest), `cut_once`
//! (the next GET of the bytes stops halfway and closes the connection).
#![allow(dead_code)]
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct FixtureFile {
    pub data: Arc<Vec<u8>>,
    pub lfs: bool,
    /// Serve these bytes with one byte flipped (the headers keep the true digest).
    pub corrupt: bool,
    /// The next GET of the bytes sends half of them, then closes the connection.
    pub cut_once: bool,
    /// The size the API lists (default: the real one).
    pub claimed_size: Option<u64>,
}

impl FixtureFile {
    pub fn lfs(data: Vec<u8>) -> FixtureFile {
        FixtureFile {
            data: Arc::new(data),
            lfs: true,
            corrupt: false,
            cut_once: false,
            claimed_size: None,
        }
    }
    pub fn git(data: Vec<u8>) -> FixtureFile {
        FixtureFile {
            lfs: false,
            ..FixtureFile::lfs(data)
        }
    }
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.data.as_slice()))
    }
    pub fn git_oid(&self) -> String {
        use sha1::Digest as _;
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", self.data.len()).as_bytes());
        h.update(self.data.as_slice());
        hex::encode(h.finalize())
    }
}

#[derive(Clone, Debug)]
pub struct FixtureRepo {
    /// `dataset` or `model`.
    pub kind: String,
    pub id: String,
    pub branch: String,
    pub commit: String,
    pub files: BTreeMap<String, FixtureFile>,
    /// Needs `Authorization: Bearer <token>`.
    pub gated_token: Option<String>,
}

impl FixtureRepo {
    pub fn dataset(id: &str, commit_seed: u8) -> FixtureRepo {
        FixtureRepo {
            kind: "dataset".into(),
            id: id.into(),
            branch: "main".into(),
            commit: format!("{:02x}", commit_seed).repeat(20),
            files: BTreeMap::new(),
            gated_token: None,
        }
    }
}

#[derive(Default)]
pub struct State {
    pub repos: Vec<FixtureRepo>,
    /// One line per request: `METHOD PATH [range=…] [auth]`.
    pub log: Vec<String>,
}

pub struct HubServer {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl HubServer {
    pub fn start(repos: Vec<FixtureRepo>) -> HubServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // The LFS store on another loopback address: another host, as the hub's CDN is.
        let lfs = TcpListener::bind("127.0.0.2:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let lfs_url = format!("http://{}", lfs.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State { repos, log: vec![] }));
        for listener in [l, lfs] {
            let st = state.clone();
            let base = lfs_url.clone();
            std::thread::spawn(move || {
                for c in listener.incoming() {
                    let Ok(c) = c else { continue };
                    let st = st.clone();
                    let base = base.clone();
                    std::thread::spawn(move || {
                        let _ = serve(c, &st, &base);
                    });
                }
            });
        }
        HubServer { url, state }
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A file's bytes `[from, to)`, served without a copy (`body` is empty then).
    data: Option<(Arc<Vec<u8>>, usize, usize)>,
    /// Declared length when it differs from the body (a cut transfer).
    declared: Option<usize>,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: vec![],
        data: None,
        declared: None,
    }
}

fn error(status: u16, code: &str) -> Reply {
    let mut r = reply(status);
    r.headers.push(("X-Error-Code".into(), code.into()));
    r.headers
        .push(("X-Error-Message".into(), format!("fixture: {code}")));
    r
}

fn serve(mut c: TcpStream, st: &Mutex<State>, base: &str) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range_from: Option<usize> = headers
        .get("range")
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.trim_end_matches('-').split('-').next())
        .and_then(|v| v.parse().ok());
    {
        let mut s = st.lock().unwrap();
        s.log.push(format!(
            "{method} {target}{}{}",
            range_from
                .map(|r| format!(" range={r}-"))
                .unwrap_or_default(),
            if headers.contains_key("authorization") {
                " auth"
            } else {
                ""
            }
        ));
    }
    let auth = headers.get("authorization").cloned();
    let rep = route(&method, &target, range_from, auth.as_deref(), st, base);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        rep.status,
        match rep.status {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            416 => "Range Not Satisfiable",
            _ => "Status",
        }
    );
    let mut has_len = false;
    for (k, v) in &rep.headers {
        if k.eq_ignore_ascii_case("content-length") {
            has_len = true;
        }
        head += &format!("{k}: {v}\r\n");
    }
    if !has_len {
        head += &format!(
            "Content-Length: {}\r\n",
            rep.declared.unwrap_or(match &rep.data {
                Some((_, a, b)) => b - a,
                None => rep.body.len(),
            })
        );
    }
    head += "\r\n";
    c.write_all(head.as_bytes())?;
    if method != "HEAD" {
        match &rep.data {
            Some((d, a, b)) => c.write_all(&d[*a..*b])?,
            None => c.write_all(&rep.body)?,
        }
    }
    c.flush()?;
    let _ = c.shutdown(std::net::Shutdown::Both);
    // Drain so the client sees a clean close.
    let mut sink = [0u8; 64];
    let _ = r.read(&mut sink);
    Ok(())
}

fn route(
    method: &str,
    target: &str,
    range_from: Option<usize>,
    auth: Option<&str>,
    st: &Mutex<State>,
    base: &str,
) -> Reply {
    let (path, _query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let mut s = st.lock().unwrap();
    // LFS storage.
    if segs.len() == 2 && segs[0] == "lfs-store" {
        let found = s
            .repos
            .iter_mut()
            .flat_map(|r| r.files.values_mut())
            .find(|f| f.lfs && f.sha256() == segs[1]);
        return match found {
            Some(f) => bytes_reply(f, range_from, vec![]),
            None => error(404, "EntryNotFound"),
        };
    }
    // API: revision.
    if segs.len() >= 6 && segs[0] == "api" && segs[4] == "revision" {
        let kind = segs[1].trim_end_matches('s').to_string();
        let id = format!("{}/{}", segs[2], segs[3]);
        let rev = segs[5..].join("/");
        let Some(repo) = s.repos.iter().find(|r| r.kind == kind && r.id == id) else {
            return error(401, "RepoNotFound");
        };
        if let Some(t) = &repo.gated_token {
            if auth != Some(&format!("Bearer {t}")) {
                return error(403, "GatedRepo");
            }
        }
        if rev != repo.branch && rev != repo.commit {
            return error(404, "RevisionNotFound");
        }
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(p, f)| {
                let mut v = serde_json::json!({
                    "rfilename": p,
                    "size": if f.lfs { 134 } else { f.data.len() },
                    "blobId": if f.lfs { "0".repeat(40) } else { f.git_oid() },
                });
                if f.lfs {
                    let n = f.claimed_size.unwrap_or(f.data.len() as u64);
                    v["size"] = n.into();
                    v["lfs"] = serde_json::json!({
                        "sha256": f.sha256(),
                        "size": n,
                        "pointerSize": 134,
                    });
                }
                v
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "id": repo.id,
            "sha": repo.commit,
            "siblings": siblings,
        }))
        .unwrap();
        let mut r = reply(200);
        r.headers
            .push(("Content-Type".into(), "application/json".into()));
        r.body = body;
        return r;
    }
    // resolve.
    let (kind, rest) = if segs.first().map(String::as_str) == Some("datasets") {
        ("dataset", &segs[1..])
    } else {
        ("model", &segs[..])
    };
    if rest.len() >= 5 && rest[2] == "resolve" {
        let id = format!("{}/{}", rest[0], rest[1]);
        let rev = &rest[3];
        let file = rest[4..].join("/");
        let Some(repo) = s.repos.iter_mut().find(|r| r.kind == kind && r.id == id) else {
            return error(401, "RepoNotFound");
        };
        if let Some(t) = &repo.gated_token {
            if auth != Some(&format!("Bearer {t}")) {
                return error(403, "GatedRepo");
            }
        }
        if *rev != repo.branch && *rev != repo.commit {
            return error(404, "RevisionNotFound");
        }
        let commit = repo.commit.clone();
        let Some(f) = repo.files.get_mut(&file) else {
            let mut e = error(404, "EntryNotFound");
            e.headers.push(("X-Repo-Commit".into(), commit));
            return e;
        };
        let mut h = vec![("X-Repo-Commit".to_string(), commit)];
        if f.lfs {
            h.push(("X-Linked-Etag".into(), format!("\"{}\"", f.sha256())));
            h.push(("X-Linked-Size".into(), f.data.len().to_string()));
            h.push(("ETag".into(), format!("\"{}\"", f.sha256())));
            h.push((
                "Location".into(),
                format!("{base}/lfs-store/{}", f.sha256()),
            ));
            let mut r = reply(302);
            r.headers = h;
            return r;
        }
        h.push(("ETag".into(), format!("\"{}\"", f.git_oid())));
        if method == "HEAD" {
            let mut r = reply(200);
            h.push(("Content-Length".into(), f.data.len().to_string()));
            r.headers = h;
            return r;
        }
        return bytes_reply(f, range_from, h);
    }
    error(404, "EntryNotFound")
}

fn bytes_reply(
    f: &mut FixtureFile,
    range_from: Option<usize>,
    mut h: Vec<(String, String)>,
) -> Reply {
    let data = if f.corrupt && !f.data.is_empty() {
        let mut d = f.data.as_slice().to_vec();
        let k = d.len() / 2;
        d[k] ^= 0x55;
        Arc::new(d)
    } else {
        f.data.clone()
    };
    let n = data.len();
    let from = range_from.unwrap_or(0);
    if from > n || (from == n && n > 0 && range_from.is_some()) {
        let mut r = reply(416);
        r.headers
            .push(("Content-Range".into(), format!("bytes */{n}")));
        return r;
    }
    let mut r = reply(if range_from.is_some() { 206 } else { 200 });
    if range_from.is_some() {
        h.push((
            "Content-Range".into(),
            format!("bytes {from}-{}/{n}", n.saturating_sub(1)),
        ));
    }
    let len = n - from;
    if f.cut_once {
        f.cut_once = false;
        r.declared = Some(len);
        r.data = Some((data, from, from + len / 2));
    } else {
        r.data = Some((data, from, n));
    }
    r.headers = h;
    r
}
