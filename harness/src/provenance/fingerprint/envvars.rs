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

/// `a/b/torch/lib:/x/libfoo.so` → `2 entries: torch/lib, x/libfoo.so`.
fn path_list(value: &str, secrets: &[String]) -> String {
    let entries: Vec<String> = value
        .split(|c: char| c == ':' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(|e| path_tail(e, secrets))
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

/// Redact absolute paths, IP addresses and secret words in a free-form value.
fn redact_value(value: &str, secrets: &[String]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if !token.is_empty() {
            out.push_str(&redact_token(token, secrets));
            token.clear();
        }
    };
    for c in value.chars() {
        if c.is_whitespace() || matches!(c, ',' | ';' | '=') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn redact_token(token: &str, secrets: &[String]) -> String {
    if token.parse::<IpAddr>().is_ok() || token.parse::<SocketAddr>().is_ok() {
        return "<ip>".into();
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
