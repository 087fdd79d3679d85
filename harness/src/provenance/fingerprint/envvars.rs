//! Environment variables that change numerics or speed, recorded by name and value, with
//! anything that identifies the host or user taken out.
//!
//! Privacy rules, applied to every recorded value:
//!
//! * `LD_LIBRARY_PATH` and `LD_PRELOAD` ([`ENV_PATH_LISTS`]) are reduced to the number of
//!   entries and each entry's last two path components: `2 entries: torch/lib, cu13/lib`.
//! * In other values, every absolute path (`/…` or `~…`) longer than two components is cut to
//!   `.../` and its last two components.
//! * A path component equal to the user name or host name, or that is a home directory
//!   (`/home/<x>`, `/Users/<x>`), becomes `<redacted>`; so does any other word equal to the user
//!   or host name.
//! * IP addresses (with or without a port) become `<ip>`.
//! * Values of variables whose name suggests a secret ([`SECRET_NAME_PARTS`]) become
//!   `<redacted>`.
//! * URLs (`scheme://…`) are recorded whole, not cut like paths, with their credentials taken
//!   out: userinfo (`user:pass@`) becomes `<redacted>@`, every query and fragment parameter's
//!   value becomes `<redacted>` (signed URLs carry their secret there, under any name), and the
//!   host is redacted like any other word: `https://<redacted>@hub.example/x?token=<redacted>`.
//! * Outside URLs, anything before an `@` in a word (`user:pass@host`) becomes `<redacted>`.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Variables recorded by exact name.
pub const ENV_EXACT: &[&str] = &[
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_DEVICE_ORDER",
    "CUDA_MODULE_LOADING",
    "NVIDIA_TF32_OVERRIDE",
    "RAYON_NUM_THREADS",
    // libtorch's CPU kernel selection (default, avx2, avx512) and oneDNN's ISA cap.
    "ATEN_CPU_CAPABILITY",
    "TOKENIZERS_PARALLELISM",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
];

/// Variables recorded by prefix. `OMP_`, `MKL_` and `OPENBLAS_` cover `OMP_NUM_THREADS`,
/// `MKL_NUM_THREADS`, `OPENBLAS_NUM_THREADS`, `OPENBLAS_CORETYPE`, `OPENBLAS_L2_SIZE` and their
/// siblings (`OMP_PROC_BIND`, `MKL_CBWR`, …); `CUBLAS` covers `CUBLAS_*` and `CUBLASLT_*`.
pub const ENV_PREFIXES: &[&str] = &[
    "CUDNN_",
    "KMP_",
    "GOMP_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "DNNL_",
    "ONEDNN_",
    "NCCL_",
    "TORCH_",
    "PYTORCH_",
    "CUBLAS",
    "CRAMBENCH_",
];

/// Path lists recorded only as a count and the entries' last path components.
pub const ENV_PATH_LISTS: &[&str] = &["LD_LIBRARY_PATH", "LD_PRELOAD"];

/// A variable whose name contains one of these (case-insensitive) has its value withheld.
pub const SECRET_NAME_PARTS: &[&str] =
    &["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"];

/// Placeholder for withheld text.
const REDACTED: &str = "<redacted>";

/// Whether a variable of this name is recorded.
pub fn is_recorded(name: &str) -> bool {
    ENV_EXACT.contains(&name) || ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The recorded variables of `vars`, values made privacy-safe. `secrets` are words that must not
/// appear (user name, host name).
pub fn recorded(
    vars: impl IntoIterator<Item = (String, String)>,
    secrets: &[String],
) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(k, _)| is_recorded(k))
        .map(|(k, v)| {
            let upper = k.to_ascii_uppercase();
            let v = if SECRET_NAME_PARTS.iter().any(|p| upper.contains(p)) {
                REDACTED.to_string()
            } else if ENV_PATH_LISTS.contains(&k.as_str()) {
                path_list(&v, secrets)
            } else {
                redact_value(&v, secrets)
            };
            (k, v)
        })
        .collect()
}

/// The process environment's recorded variables (non-UTF-8 ones are skipped).
pub fn from_process(secrets: &[String]) -> BTreeMap<String, String> {
    recorded(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        secrets,
    )
}

/// `a/b/torch/lib:/x/libfoo.so` → `2 entries: torch/lib, x/libfoo.so`. An entry with an `@`
/// (a URL's or `user:pass@host`'s credentials split at `:`) keeps only what follows the last
/// `@`, an entry right after `scheme:` (`//user`, the user name of a URL) is withheld, and so
/// is anything from a `?` or `#` on.
fn path_list(value: &str, secrets: &[String]) -> String {
    let value = credentials_before_at(value);
    let raw: Vec<&str> = value
        .split(|c: char| c == ':' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .collect();
    let entries: Vec<String> = raw
        .iter()
        .map(|e| {
            // A query or fragment (a URL's, split at `:`) is withheld whole.
            let (e, query) = match e.find(['?', '#']) {
                Some(q) => (&e[..q], format!("{}{REDACTED}", &e[q..q + 1])),
                None => (*e, String::new()),
            };
            let entry = match e.rfind('@') {
                Some(at) => format!("{REDACTED}@{}", path_tail(&e[at + 1..], secrets)),
                None if e.starts_with("//") => REDACTED.to_string(),
                None => path_tail(e, secrets),
            };
            entry + &query
        })
        .collect();
    let noun = if entries.len() == 1 {
        "entry"
    } else {
        "entries"
    };
    if entries.is_empty() {
        format!("0 {noun}")
    } else {
        format!("{} {noun}: {}", entries.len(), entries.join(", "))
    }
}

/// Every run of characters other than `/` and whitespace right before an `@` (`user:pass` of
/// `user:pass@host` or of a URL, which a split at `:` would otherwise scatter over entries)
/// replaced by `<redacted>`.
fn credentials_before_at(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut run = String::new();
    for c in value.chars() {
        match c {
            '@' => {
                if !run.is_empty() {
                    out.push_str(REDACTED);
                    run.clear();
                }
                out.push('@');
            }
            '/' => {
                out.push_str(&run);
                run.clear();
                out.push(c);
            }
            c if c.is_whitespace() => {
                out.push_str(&run);
                run.clear();
                out.push(c);
            }
            c => run.push(c),
        }
    }
    out.push_str(&run);
    out
}

/// The last two components of `path`, with identifying components redacted.
fn path_tail(path: &str, secrets: &[String]) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let home_owner = match parts.as_slice() {
        [first, owner, ..] if path.starts_with('/') && matches!(*first, "home" | "Users") => {
            Some(*owner)
        }
        _ => None,
    };
    let keep = parts.len().saturating_sub(2);
    let tail: Vec<&str> = parts[keep..]
        .iter()
        .map(|p| {
            if Some(*p) == home_owner || secrets.iter().any(|s| s == p) || p.starts_with('~') {
                REDACTED
            } else {
                p
            }
        })
        .collect();
    let prefix = if keep > 0 {
        ".../"
    } else if path.starts_with('/') {
        "/"
    } else {
        ""
    };
    format!("{prefix}{}", tail.join("/"))
}

/// Redact absolute paths, IP addresses, URL credentials and secret words in a free-form value.
fn redact_value(value: &str, secrets: &[String]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(&redact_word(word, secrets));
            word.clear();
        }
    };
    for c in value.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Starts of every `scheme://` in `word` (RFC 3986 scheme: a letter, then letters, digits,
/// `+`, `-`, `.`).
fn url_starts(word: &str) -> Vec<usize> {
    let b = word.as_bytes();
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(k) = word[from..].find("://") {
        let sep = from + k;
        let mut start = sep;
        while start > from
            && (b[start - 1].is_ascii_alphanumeric() || matches!(b[start - 1], b'+' | b'-' | b'.'))
        {
            start -= 1;
        }
        while start < sep && !b[start].is_ascii_alphabetic() {
            start += 1;
        }
        if start < sep {
            starts.push(start);
        }
        from = sep + 3;
    }
    starts
}

/// A word without whitespace. Each URL in it runs to the next URL or the end of the word and is
/// handled whole ([`redact_url`]: its query has `=`, `&`, `;` and `,`, its path `/`, its
/// authority `:`, none of which may split it); the text before the first URL is split at `,`,
/// `;` and `=` into tokens ([`redact_token`]).
fn redact_word(word: &str, secrets: &[String]) -> String {
    let starts = url_starts(word);
    let head_end = starts.first().copied().unwrap_or(word.len());
    let mut out = String::with_capacity(word.len());
    let mut token = String::new();
    for c in word[..head_end].chars() {
        if matches!(c, ',' | ';' | '=') {
            if !token.is_empty() {
                out.push_str(&redact_token(&token, secrets));
                token.clear();
            }
            out.push(c);
        } else {
            token.push(c);
        }
    }
    if !token.is_empty() {
        out.push_str(&redact_token(&token, secrets));
    }
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(word.len());
        out.push_str(&redact_url(&word[start..end], secrets));
    }
    out
}

/// `scheme://[userinfo@]host[:port][/path][?query][#fragment]` with the userinfo and every
/// query and fragment value replaced by `<redacted>`, the host and path words redacted like
/// other words, and IP hosts replaced by `<ip>`. Nothing else changes.
fn redact_url(url: &str, secrets: &[String]) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let mut out = format!("{scheme}://");
    let host_port = match authority.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push('@');
            &authority[at + 1..]
        }
        None => authority,
    };
    // `[v6]:port`, `host:port`, `host`.
    let (host, port) = match host_port.strip_prefix('[').and_then(|h| h.split_once(']')) {
        Some((h, port)) => (h, port),
        None => match host_port.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, &host_port[h.len()..]),
            _ => (host_port, ""),
        },
    };
    if host.parse::<IpAddr>().is_ok() {
        out.push_str("<ip>");
    } else {
        out.push_str(&redact_words(host, secrets));
    }
    out.push_str(port);
    let (path, query_fragment) = match tail.find(['?', '#']) {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    out.push_str(&redact_words(path, secrets));
    // `?a=1&b=2#c=3`: keep the separators and the parameter names, withhold every value.
    let mut rest = query_fragment;
    while let Some(sep) = rest.chars().next() {
        out.push(sep);
        rest = &rest[sep.len_utf8()..];
        let end = rest.find(['&', '?', '#', ';']).unwrap_or(rest.len());
        let (param, after) = rest.split_at(end);
        match param.split_once('=') {
            Some((name, _)) => {
                out.push_str(&redact_words(name, secrets));
                out.push('=');
                out.push_str(REDACTED);
            }
            None if param.is_empty() => {}
            // A bare value (`?secret`, `#token`) is a value too.
            None => out.push_str(REDACTED),
        }
        rest = after;
    }
    out
}

fn redact_token(token: &str, secrets: &[String]) -> String {
    if token.parse::<IpAddr>().is_ok() || token.parse::<SocketAddr>().is_ok() {
        return "<ip>".into();
    }
    // `user:password@host` without a scheme: the part before `@` is a credential.
    if let Some(at) = token.rfind('@') {
        return format!("{REDACTED}@{}", redact_token(&token[at + 1..], secrets));
    }
    if token.contains('/') || token.starts_with('~') {
        // Possibly a `:`-separated list of paths, or `key:/path`.
        return token
            .split(':')
            .map(|part| {
                if part.starts_with('/') || part.starts_with('~') {
                    path_tail(part, secrets)
                } else {
                    redact_words(part, secrets)
                }
            })
            .collect::<Vec<_>>()
            .join(":");
    }
    // `host:port` with a host name.
    redact_words(token, secrets)
}

/// Replace every maximal alphanumeric run (plus `-`, `_`, `.`) equal to a secret.
fn redact_words(text: &str, secrets: &[String]) -> String {
    if secrets.iter().all(|s| !text.contains(s.as_str())) {
        return text.to_string();
    }
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if is_word(c) {
            word.push(c);
            continue;
        }
        if secrets.contains(&word) {
            out.push_str(REDACTED);
        } else {
            out.push_str(&word);
        }
        word.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selection() {
        for name in [
            "CUBLAS_WORKSPACE_CONFIG",
            "CUBLASLT_LOG_LEVEL",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE",
            "KMP_AFFINITY",
            "GOMP_SPINCOUNT",
            "CUDNN_LOGINFO_DBG",
            "NCCL_ALGO",
            "TORCH_SHOW_CPP_STACKTRACES",
            "PYTORCH_CUDA_ALLOC_CONF",
            "CRAMBENCH_DEVICE",
            "LD_PRELOAD",
            "CUDA_VISIBLE_DEVICES",
        ] {
            assert!(is_recorded(name), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "USER",
            "HOSTNAME",
            "SSH_CLIENT",
            "CUDA_HOME_X",
        ] {
            assert!(!is_recorded(name), "{name}");
        }
    }

    #[test]
    fn values_are_privacy_safe() {
        let secrets = vec!["alice".to_string(), "gpu-node-7".to_string()];
        let got = recorded(
            vars(&[
                ("PATH", "/home/alice/bin"),
                ("OMP_NUM_THREADS", "8"),
                ("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
                ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
                (
                    "LD_LIBRARY_PATH",
                    "/home/alice/venv/lib/python3.12/site-packages/torch/lib:/usr/lib64:/home/alice",
                ),
                ("LD_PRELOAD", "/opt/x/libtcmalloc.so"),
                ("TORCH_HOME", "/home/alice/.cache/torch"),
                ("TORCH_EXTENSIONS_DIR", "/home/alice"),
                ("NCCL_COMM_ID", "10.1.2.3:29500"),
                ("NCCL_SOCKET_IFNAME", "eth0"),
                ("CRAMBENCH_NODE", "gpu-node-7"),
                ("CRAMBENCH_SIGNING_KEY", "base64secret"),
                ("CRAMBENCH_OUT", "~/runs/x"),
            ]),
            &secrets,
        );
        let expect = vars(&[
            ("CRAMBENCH_NODE", "<redacted>"),
            ("CRAMBENCH_OUT", ".../runs/x"),
            ("CRAMBENCH_SIGNING_KEY", "<redacted>"),
            ("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
            (
                "LD_LIBRARY_PATH",
                "3 entries: .../torch/lib, /usr/lib64, /home/<redacted>",
            ),
            ("LD_PRELOAD", "1 entry: .../x/libtcmalloc.so"),
            ("NCCL_COMM_ID", "<ip>"),
            ("NCCL_SOCKET_IFNAME", "eth0"),
            ("OMP_NUM_THREADS", "8"),
            ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
            ("TORCH_EXTENSIONS_DIR", "/home/<redacted>"),
            ("TORCH_HOME", ".../.cache/torch"),
        ]);
        assert_eq!(got, expect.into_iter().collect::<BTreeMap<_, _>>());
        let text = format!("{got:?}");
        assert!(!text.contains("alice") && !text.contains("10.1.2.3"));
    }

    /// One name for every variable the fingerprint records: each exact name and one per prefix.
    fn every_recorded_name() -> Vec<String> {
        ENV_EXACT
            .iter()
            .map(|s| s.to_string())
            .chain(ENV_PREFIXES.iter().map(|p| format!("{p}PLANTED")))
            .collect()
    }

    #[test]
    fn planted_credentials_never_reach_the_fingerprint() {
        let secrets = vec!["alice".to_string()];
        let planted = [
            "https://plantuser:plantpass@hub.example/hub",
            "https://hub.example/x?token=planttoken&rev=plantrev",
            "http://hub.example:8080/x?sig=plantsig;sv=plantsv#frag=plantfrag",
            "s3://plantkeyid:plantsecret@bucket/obj",
            "plantuser:plantpass@proxy.example:3128",
            "a=1,url=https://plantuser:plantpass@h/x,b=2",
            "https://h/a,https://plantuser:plantpass@h2/b",
            "https://[fd00::2]:443/x?plantname=plantvalue",
        ];
        for name in every_recorded_name() {
            for value in planted {
                let got = recorded(vars(&[(&name, value)]), &secrets);
                let v = &got[&name];
                for leak in [
                    "plantpass",
                    "plantuser",
                    "planttoken",
                    "plantrev",
                    "plantsig",
                    "plantsv",
                    "plantfrag",
                    "plantkeyid",
                    "plantsecret",
                    "plantvalue",
                    "fd00",
                ] {
                    assert!(!v.contains(leak), "{name}={value:?} recorded as {v:?}");
                }
            }
        }
    }

    #[test]
    fn urls_are_recorded_whole_without_credentials() {
        let s = vec!["alice".to_string()];
        for (value, want) in [
            (
                "https://user:pass@host.example/hub",
                "https://<redacted>@host.example/hub",
            ),
            (
                "https://host.example/a/b/c/d?token=x&rev=main#k=v",
                "https://host.example/a/b/c/d?token=<redacted>&rev=<redacted>#k=<redacted>",
            ),
            ("http://10.0.0.1:8080/x", "http://<ip>:8080/x"),
            (
                "https://alice.example/alice/x",
                "https://alice.example/<redacted>/x",
            ),
            ("file:///opt/models/bert", "file:///opt/models/bert"),
            (
                "expandable_segments:True,url=https://u:p@h/x",
                "expandable_segments:True,url=https://<redacted>@h/x",
            ),
        ] {
            assert_eq!(redact_value(value, &s), want, "{value}");
        }
        let got = recorded(vars(&[("TORCH_HUB_URL", "https://user:pass@host/hub")]), &s);
        assert_eq!(got["TORCH_HUB_URL"], "https://<redacted>@host/hub");
    }

    #[test]
    fn words_and_ipv6() {
        let s = vec!["vm".to_string()];
        assert_eq!(
            redact_value("vm:29500 vmx [fd00::2]:1 fd00::2", &s),
            "<redacted>:29500 vmx <ip> <ip>"
        );
        assert_eq!(path_list("", &s), "0 entries");
    }
}
