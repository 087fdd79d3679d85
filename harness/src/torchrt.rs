//! The libtorch runtime: loading libtorch's CUDA backend, and reporting which libtorch the
//! process is running on.
//!
//! rustc links with `--as-needed`, so the binary NEEDS only `libtorch_cpu.so` and `libc10.so`;
//! `libtorch_cuda.so` is dropped even though torch-sys asks for it. [`load_cuda_backend`] loads it
//! with `dlopen(RTLD_NOW | RTLD_GLOBAL)`, which registers the CUDA backend with the dispatcher.
//! It must run before the first tch call, because libtorch caches its CUDA hooks on first query
//! (docs/spec toolchain.md §2 H, §7). On a CPU-only machine the dlopen fails cleanly (missing
//! CUDA libraries) and everything stays on the CPU.
//!
//! [`libtorch_info`] identifies the libtorch in use from the files next to the loaded
//! `libtorch_cpu.so` (full PyTorch installs have `version.py`; the slim libtorch of
//! `scripts/libtorch.sh` has `include/` and `build-version`), plus a few runtime queries. No
//! path is reported: paths reveal user names.
use serde::{Deserialize, Serialize};
use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The tch crate version crambench is built against (pinned `=0.24.0` in Cargo.toml).
pub const TCH_VERSION: &str = "0.24.0";

/// The library that carries libtorch's CUDA backend.
const TORCH_CUDA_LIB: &str = "libtorch_cuda.so";

/// Outcome of [`load_cuda_backend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CudaBackend {
    /// `libtorch_cuda.so` is loaded and its backend registered.
    pub loaded: bool,
    /// Why it did not load (`dlerror()`, absolute paths reduced to file names); `None` when
    /// loaded.
    pub error: Option<String>,
}

/// Load `libtorch_cuda.so` into the process, once; later calls return the first outcome.
///
/// Call it before any tch call. Failure is not an error: the process then runs on the CPU, and
/// the reason is kept for the fingerprint.
pub fn load_cuda_backend() -> CudaBackend {
    static STATE: OnceLock<CudaBackend> = OnceLock::new();
    STATE.get_or_init(dlopen_torch_cuda).clone()
}

fn dlopen_torch_cuda() -> CudaBackend {
    let Ok(name) = CString::new(TORCH_CUDA_LIB) else {
        return CudaBackend {
            loaded: false,
            error: Some("invalid library name".into()),
        };
    };
    // SAFETY: `name` is a valid NUL-terminated string. The handle is deliberately never closed:
    // the backend must stay registered for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        CudaBackend {
            loaded: false,
            error: Some(redact_paths(&last_dlerror())),
        }
    } else {
        CudaBackend {
            loaded: true,
            error: None,
        }
    }
}

/// The text of the last `dlerror()`, or a generic message when libc has none.
fn last_dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc, which we copy
    // before any other dl* call can overwrite it.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dlopen error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Replace every absolute path in `text` by its file name, so that messages can be recorded
/// without revealing directory layouts or user names. A path runs from a `/` that starts a
/// word up to the next whitespace, `:` or `,`.
pub fn redact_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('/') {
        let starts_word = rest[..start]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, ':' | ',' | '(' | '\'' | '"' | '='));
        let len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | ')' | '\'' | '"'))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + len];
        out.push_str(&rest[..start]);
        if starts_word {
            out.push_str(token.rsplit('/').find(|s| !s.is_empty()).unwrap_or(""));
        } else {
            out.push_str(token);
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// Which libtorch the process runs on. Reports versions only, never paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibtorchInfo {
    /// libtorch version, e.g. `2.11.0+cu130`; `None` when no version file was found.
    pub version: Option<String>,
    /// Where [`version`](Self::version) came from: `version.py`, `version.h` or `build-version`.
    pub version_source: Option<String>,
    /// The libtorch build's git commit (`version.py`'s `git_version`), when known.
    pub git_version: Option<String>,
    /// CUDA version libtorch was built with, e.g. `13.0`: `version.py`'s `cuda`, else read off a
    /// `+cuXYZ` version suffix; `None` for CPU builds or when unknown.
    pub cuda_built: Option<String>,
    /// Version of the CUDA runtime (`libcudart`) loaded in the process, e.g. `13.0`.
    pub cudart: Option<String>,
    /// cuDNN version, e.g. `9.10.2`, when libcudnn is loaded in the process.
    pub cudnn: Option<String>,
    /// `tch::Cuda::is_available()`.
    pub cuda_available: bool,
    /// `tch::Cuda::device_count()`.
    pub cuda_device_count: i64,
    /// `tch::Cuda::cudnn_is_available()`.
    pub cudnn_available: bool,
    /// Intra-op threads (`tch::get_num_threads()`).
    pub num_threads: i32,
    /// The tch crate version ([`TCH_VERSION`]).
    pub tch_version: String,
}

/// Identify the libtorch in use. Never fails: what cannot be found is `None`.
///
/// Makes tch calls, so call [`load_cuda_backend`] first (the binary does so at start).
pub fn libtorch_info() -> LibtorchInfo {
    let root = loaded_library_dir("libtorch_cpu.so").and_then(|lib| {
        lib.parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
    });
    let files = root.as_deref().map(read_version_files).unwrap_or_default();
    let cuda_built = files
        .cuda
        .clone()
        .or_else(|| files.version.as_deref().and_then(cuda_from_version_suffix));
    LibtorchInfo {
        version: files.version,
        version_source: files.source.map(str::to_string),
        git_version: files.git_version,
        cuda_built,
        cudart: cudart_version(),
        cudnn: cudnn_version(),
        cuda_available: tch::Cuda::is_available(),
        cuda_device_count: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        num_threads: tch::get_num_threads(),
        tch_version: TCH_VERSION.to_string(),
    }
}

/// The directory holding the loaded shared library whose file name is `file_name`, from
/// `/proc/self/maps` (the kernel's view, so symlinks are already resolved).
fn loaded_library_dir(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        // Fields: address perms offset dev inode pathname. Only the pathname contains a `/`,
        // and it may contain spaces.
        .filter_map(|line| line.find('/').map(|i| Path::new(line[i..].trim_end())))
        .find(|p| p.file_name().is_some_and(|n| n == file_name))
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

#[derive(Default)]
struct VersionFiles {
    version: Option<String>,
    source: Option<&'static str>,
    git_version: Option<String>,
    cuda: Option<String>,
}

/// Read the libtorch version from files under `root` (the folder above `lib/`): `version.py`
/// when present (full PyTorch installs); else the release from `version.h`, refined by
/// `build-version` when that names the same release with a local tag (`2.11.0` →
/// `2.11.0+cu130`); else `build-version` alone.
fn read_version_files(root: &Path) -> VersionFiles {
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let version = py_assignment(&text, "__version__");
        if version.is_some() {
            return VersionFiles {
                version,
                source: Some("version.py"),
                git_version: py_assignment(&text, "git_version"),
                cuda: py_assignment(&text, "cuda"),
            };
        }
    }
    let header = [
        "include/torch/version.h",
        "include/torch/headeronly/version.h",
        "include/torch/csrc/api/include/torch/version.h",
    ]
    .iter()
    .find_map(|h| header_version(&std::fs::read_to_string(root.join(h)).ok()?));
    let build = std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let (version, source) = match (header, build) {
        (Some(h), Some(b)) if b == h || b.starts_with(&format!("{h}+")) => (b, "build-version"),
        (Some(h), _) => (h, "version.h"),
        (None, Some(b)) => (b, "build-version"),
        (None, None) => return VersionFiles::default(),
    };
    VersionFiles {
        version: Some(version),
        source: Some(source),
        ..Default::default()
    }
}

/// `TORCH_VERSION` from a libtorch `version.h`, else `MAJOR.MINOR.PATCH` from its parts.
fn header_version(text: &str) -> Option<String> {
    // Join `\`-continued lines: `#define TORCH_VERSION \` + `  "2.11.0"`.
    let text = text.replace("\\\n", " ");
    c_string_define(&text, "TORCH_VERSION").or_else(|| {
        let part = |name: &str| -> Option<u32> {
            text.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("#define") && words.next() == Some(name))
                    .then(|| words.next()?.parse().ok())
                    .flatten()
            })
        };
        Some(format!(
            "{}.{}.{}",
            part("TORCH_VERSION_MAJOR")?,
            part("TORCH_VERSION_MINOR")?,
            part("TORCH_VERSION_PATCH")?
        ))
    })
}

/// The string value of `key = '...'` (or `"..."`) in a Python file; `None` also for `None`.
fn py_assignment(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (lhs, rhs) = line.split_once('=')?;
        let lhs = lhs.trim();
        let lhs = lhs.split_once(':').map_or(lhs, |(name, _type)| name.trim());
        if lhs != key {
            return None;
        }
        let rhs = rhs.trim();
        let quote = rhs.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = &rhs[1..];
        inner.find(quote).map(|end| inner[..end].to_string())
    })
}

/// The value of `#define NAME "value"` in a C header.
fn c_string_define(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") || words.next() != Some(name) {
            return None;
        }
        let value = words.next()?;
        Some(value.strip_prefix('"')?.strip_suffix('"')?.to_string())
    })
}

/// `2.11.0+cu130` → `13.0`; `2.4.1+cu121` → `12.1`; no `+cu` suffix → `None`.
fn cuda_from_version_suffix(version: &str) -> Option<String> {
    let (_, local) = version.split_once('+')?;
    let digits = local.strip_prefix("cu")?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some(format!("{major}.{minor}"))
}

/// Look up `symbol` in an already-loaded library among `names` (never loads one). Returns the
/// handle (to be passed to `dlclose`) and the symbol's address.
fn loaded_symbol(names: &[&str], symbol: &str) -> Option<(*mut c_void, *mut c_void)> {
    let symbol = CString::new(symbol).ok()?;
    for name in names {
        let Ok(cname) = CString::new(*name) else {
            continue;
        };
        // SAFETY: valid C strings; RTLD_NOLOAD only returns a handle to a library that is
        // already loaded, so no initialiser runs.
        let handle = unsafe { libc::dlopen(cname.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            continue;
        }
        // SAFETY: `handle` is a live handle from dlopen.
        let sym = unsafe { libc::dlsym(handle, symbol.as_ptr()) };
        if !sym.is_null() {
            return Some((handle, sym));
        }
        // SAFETY: balances the successful dlopen above.
        unsafe { libc::dlclose(handle) };
    }
    None
}

/// cuDNN version as `major.minor.patch`, when libcudnn is loaded in the process.
fn cudnn_version() -> Option<String> {
    let (handle, sym) = loaded_symbol(
        &["libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"],
        "cudnnGetVersion",
    )?;
    // SAFETY: cudnnGetVersion has the C signature `size_t cudnnGetVersion(void)` and needs no
    // initialisation.
    let version = unsafe {
        let f: extern "C" fn() -> usize = std::mem::transmute(sym);
        f()
    };
    // SAFETY: balances the RTLD_NOLOAD dlopen; the library stays loaded by its other users.
    unsafe { libc::dlclose(handle) };
    Some(format_cudnn_version(version))
}

/// cuDNN encodes 9.x as `major*10000 + minor*100 + patch`, and 8.x and older as
/// `major*1000 + minor*100 + patch`.
fn format_cudnn_version(v: usize) -> String {
    if v >= 90000 {
        format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
    } else {
        format!("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100)
    }
}

/// Version of the CUDA runtime loaded in the process (libtorch_cpu NEEDS libcudart).
fn cudart_version() -> Option<String> {
    let (handle, sym) = loaded_symbol(
        &["libcudart.so.13", "libcudart.so.12", "libcudart.so"],
        "cudaRuntimeGetVersion",
    )?;
    let mut v: i32 = 0;
    // SAFETY: `cudaError_t cudaRuntimeGetVersion(int*)`; it reports the library's own version
    // and needs neither a driver nor a device.
    let rc = unsafe {
        let f: extern "C" fn(*mut i32) -> i32 = std::mem::transmute(sym);
        f(&mut v)
    };
    // SAFETY: balances the RTLD_NOLOAD dlopen.
    unsafe { libc::dlclose(handle) };
    (rc == 0 && v > 0).then(|| format_cuda_version(v))
}

/// CUDA encodes versions as `major*1000 + minor*10`: 13000 → `13.0`.
pub fn format_cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_reduced_to_file_names() {
        assert_eq!(
            redact_paths("/home/alice/t/lib/libtorch_cuda.so: cannot open shared object file"),
            "libtorch_cuda.so: cannot open shared object file"
        );
        assert_eq!(
            redact_paths("libcusparse.so.12: cannot open shared object file: No such file"),
            "libcusparse.so.12: cannot open shared object file: No such file"
        );
        assert_eq!(redact_paths("a/b and (/x/y/z)"), "a/b and (z)");
        assert_eq!(redact_paths("dir /root/"), "dir root");
    }

    #[test]
    fn version_files_are_parsed() {
        let py = "__version__ = '2.11.0+cu130'\ndebug = False\ncuda: Optional[str] = '13.0'\n\
                  git_version = 'abc123'\nhip: Optional[str] = None\n";
        assert_eq!(
            py_assignment(py, "__version__").as_deref(),
            Some("2.11.0+cu130")
        );
        assert_eq!(py_assignment(py, "cuda").as_deref(), Some("13.0"));
        assert_eq!(py_assignment(py, "git_version").as_deref(), Some("abc123"));
        assert_eq!(py_assignment(py, "hip"), None);
        let h = "#pragma once\n#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION \"2.11.0\"\n";
        assert_eq!(header_version(h).as_deref(), Some("2.11.0"));
        let h = "#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION_MINOR 11\n\
                 #define TORCH_VERSION_PATCH 0\n#define TORCH_VERSION \\\n  \"2.11.1\"\n";
        assert_eq!(header_version(h).as_deref(), Some("2.11.1"));
        let parts = "#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION_MINOR 9\n\
                     #define TORCH_VERSION_PATCH 1\n";
        assert_eq!(header_version(parts).as_deref(), Some("2.9.1"));
        assert_eq!(header_version("#pragma once\n"), None);
        assert_eq!(
            cuda_from_version_suffix("2.11.0+cu130").as_deref(),
            Some("13.0")
        );
        assert_eq!(
            cuda_from_version_suffix("2.4.1+cu121").as_deref(),
            Some("12.1")
        );
        assert_eq!(cuda_from_version_suffix("2.11.0+cpu"), None);
        assert_eq!(cuda_from_version_suffix("2.11.0"), None);
        assert_eq!(format_cudnn_version(91002), "9.10.2");
        assert_eq!(format_cudnn_version(8902), "8.9.2");
        assert_eq!(format_cuda_version(13000), "13.0");
        assert_eq!(format_cuda_version(12080), "12.8");
    }

    #[test]
    fn slim_libtorch_is_identified() {
        // This test binary links libtorch_cpu.so (through tch), so it is in our maps.
        let backend = load_cuda_backend();
        assert_eq!(backend, load_cuda_backend(), "cached after the first call");
        let info = libtorch_info();
        assert!(info.version.is_some(), "{info:?}");
        assert!(info.version_source.is_some());
        assert_eq!(info.tch_version, TCH_VERSION);
        assert!(info.num_threads >= 1);
        if !backend.loaded {
            assert!(!info.cuda_available);
            assert!(backend.error.is_some_and(|e| !e.contains('/')));
        }
    }
}
