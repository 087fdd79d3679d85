//! Machine fingerprint: the hardware, software and environment a run executes on, collected
//! automatically, with a short stable *hardware class* that says whether two runs are
//! comparable.
//!
//! [`collect`] never fails: whatever cannot be read is `null`, and why is listed in `notes`.
//! Host identifiers (host name, user, IP and MAC addresses) appear only in `host`, and only when
//! asked for ([`Options::include_host`]); nowhere else in the fingerprint.
//!
//! # Hardware class
//!
//! A slug for humans plus the first 8 hex digits of a SHA-256 over the *stable* hardware subset:
//!
//! * with GPUs: `gpu-<model>x<count>-<GiB>g-<W>w-<hash>`, e.g.
//!   `gpu-nvidia-h200x1-140g-700w-1a2b3c4d` (a mixed set of GPUs is `gpu-mixedx<count>-<hash>`);
//! * without: `cpu-<model>-<physical cores>c-<hash>`, e.g. `cpu-intel-xeon-platinum-8480c-56c-…`.
//!
//! The hash covers the CPU model and its physical and logical core counts, and for each GPU its
//! model, memory rounded to GiB and enforced power limit rounded to watts (GPUs sorted, so their
//! order does not matter). Clocks, drivers, libraries and the environment do not enter it: the
//! same hardware gives the same class.
//!
//! Submodules: `system` (CPU, memory, OS, cgroup limits, host), `gpu` (CUDA driver API and
//! NVML), `envvars` (which variables are recorded and how they are made privacy-safe),
//! `compare` ([`diff`] and [`load`]).
mod compare;
mod envvars;
mod gpu;
pub(crate) use gpu::cuda_device_uuid;
mod system;

pub use compare::{diff, load, Change, FingerprintDiff, VOLATILE};
pub use envvars::{ENV_EXACT, ENV_PATH_LISTS, ENV_PREFIXES, SECRET_NAME_PARTS};
pub use system::SPEED_FEATURES;

use crate::provenance::git::{self, GitState};
use crate::torchrt::{self, CudaBackend, LibtorchInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// The `schema` value of fingerprints this version writes.
pub const SCHEMA: &str = "crambench.fingerprint/v1";

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Add the `host` group (host name, user, IP and MAC addresses).
    pub include_host: bool,
    /// Repository whose git state is recorded; default: the current directory.
    pub repo_dir: Option<PathBuf>,
}

/// A machine fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// [`SCHEMA`].
    pub schema: String,
    /// Stable id of the hardware (module docs).
    pub hardware_class: String,
    pub hardware: Hardware,
    pub software: Software,
    pub environment: Environment,
    /// Host identifiers; only with [`Options::include_host`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
    /// What could not be read, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The machine: what the hardware class is computed from, plus details that do not enter it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu: Cpu,
    pub memory: Memory,
    /// GPUs visible to CUDA (honours `CUDA_VISIBLE_DEVICES`), by CUDA ordinal.
    pub gpus: Vec<Gpu>,
}

/// The CPU, from `/proc/cpuinfo` and sysfs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Marketing name, e.g. `Intel(R) Xeon(R) Platinum 8480C`.
    pub model: Option<String>,
    /// e.g. `GenuineIntel`, `AuthenticAMD`.
    pub vendor: Option<String>,
    pub family: Option<u32>,
    /// Numeric model (`model` in `/proc/cpuinfo`).
    pub model_id: Option<u32>,
    pub stepping: Option<u32>,
    /// Microcode revision; updates change the cost of security mitigations.
    pub microcode: Option<String>,
    pub sockets: Option<u32>,
    pub physical_cores: Option<u32>,
    /// Logical CPUs (hardware threads) of the machine, not only those this process may use (see
    /// `environment.resources`).
    pub logical_cores: Option<u32>,
    /// Base (nominal) frequency: sysfs `base_frequency`, else the `@ x.xxGHz` of the model name.
    pub base_frequency_mhz: Option<u32>,
    /// Maximum (turbo) frequency from cpufreq.
    pub max_frequency_mhz: Option<u32>,
    /// Cache size as `/proc/cpuinfo` reports it (x86: the last-level cache).
    pub cache_kib: Option<u64>,
    /// Running under a hypervisor.
    pub hypervisor: bool,
    /// Speed-relevant ISA features ([`SPEED_FEATURES`], `avx512*`, `amx*`), sorted.
    pub features: Vec<String>,
}

/// Main memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Physical RAM (`MemTotal`).
    pub total_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
}

/// One GPU. Identity and capability come from the CUDA driver API; power, clocks and modes
/// from NVML (`None` without NVML).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// CUDA device ordinal.
    pub index: u32,
    pub name: String,
    /// `GPU-xxxxxxxx-…`, as nvidia-smi prints it.
    pub uuid: Option<String>,
    /// `domain:bus:device.function`.
    pub pci_bus_id: Option<String>,
    /// e.g. `Hopper`.
    pub architecture: Option<String>,
    /// e.g. `9.0`.
    pub compute_capability: Option<String>,
    /// Streaming multiprocessors.
    pub multiprocessors: Option<u32>,
    pub total_memory_bytes: Option<u64>,
    pub memory_bus_width_bits: Option<u32>,
    pub l2_cache_bytes: Option<u64>,
    /// Enforced power limit.
    pub power_limit_w: Option<f64>,
    pub power_limit_default_w: Option<f64>,
    /// Current SM clock (volatile).
    pub sm_clock_mhz: Option<u32>,
    pub sm_clock_max_mhz: Option<u32>,
    /// Current memory clock (volatile).
    pub mem_clock_mhz: Option<u32>,
    pub mem_clock_max_mhz: Option<u32>,
    pub ecc_enabled: Option<bool>,
    pub mig_enabled: Option<bool>,
    pub persistence_mode: Option<bool>,
    /// e.g. `Default`, `ExclusiveProcess`.
    pub compute_mode: Option<String>,
    /// Current PCIe link generation (volatile: trains down at idle).
    pub pcie_link_gen: Option<u32>,
    pub pcie_link_gen_max: Option<u32>,
    /// Current PCIe link width (volatile).
    pub pcie_link_width: Option<u32>,
    pub pcie_link_width_max: Option<u32>,
    /// Active NVLink links.
    pub nvlink_active_links: Option<u32>,
    pub vbios_version: Option<String>,
}

/// This program, the code it runs, and the libraries and driver under it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Software {
    /// [`crate::VERSION`].
    pub crambench_version: String,
    pub build: Build,
    /// Git state of [`Options::repo_dir`] at collection time; `None` outside a repository.
    pub git: Option<GitState>,
    pub libtorch: LibtorchInfo,
    /// Whether libtorch's CUDA backend (`libtorch_cuda.so`) loaded.
    pub cuda_backend: CudaBackend,
    /// `cuda` when tch sees a usable CUDA device, else `cpu`.
    pub device: String,
    pub gpu_driver: GpuDriver,
}

/// How this binary was built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// Git commit the binary was built from (set by the build script).
    pub git_commit: Option<String>,
    /// `rustc --version` of the compiler (set by the build script).
    pub rustc: Option<String>,
    /// `debug` or `release`.
    pub profile: String,
    /// Target triple (set by the build script as `CRAMBENCH_TARGET`).
    pub target: Option<String>,
}

/// The NVIDIA driver; all `None` without one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuDriver {
    /// Driver version, e.g. `580.95.05` (NVML).
    pub version: Option<String>,
    /// Highest CUDA version the driver supports, e.g. `13.0` (`cuDriverGetVersion`, else NVML).
    pub cuda_version: Option<String>,
}

/// The operating system, the resources this process may use, and the environment variables
/// that change numerics or speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub os: Os,
    pub resources: Resources,
    /// Variables that change numerics or speed ([`ENV_EXACT`], [`ENV_PREFIXES`]), made
    /// privacy-safe (see `envvars`).
    pub variables: BTreeMap<String, String>,
}

/// Operating system and C library.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Os {
    /// e.g. `Debian GNU/Linux`.
    pub name: Option<String>,
    /// e.g. `12`.
    pub version: Option<String>,
    /// e.g. `Linux (Debian GNU/Linux 12)`.
    pub long_version: Option<String>,
    /// Kernel release, e.g. `6.1.0-18-amd64`.
    pub kernel: Option<String>,
    /// Machine architecture, e.g. `x86_64`.
    pub arch: Option<String>,
    /// glibc version (its libm decides transcendental results on the CPU).
    pub glibc: Option<String>,
}

/// What this process may use, as opposed to what the machine has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// `v2` or `v1`: the cgroup hierarchy the limits were read from.
    pub cgroup: Option<String>,
    /// CPU quota in cores (`cpu.max`, or v1 `cfs_quota_us / cfs_period_us`); `None` when
    /// unlimited.
    pub cpu_quota_cores: Option<f64>,
    /// Memory limit (`memory.max`, or v1 `memory.limit_in_bytes`); `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// `std::thread::available_parallelism` (affinity mask and quota).
    pub available_parallelism: Option<u32>,
    /// cpufreq governor of CPU 0, e.g. `performance`.
    pub cpu_governor: Option<String>,
}

/// Host identifiers, only with [`Options::include_host`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub hostname: Option<String>,
    pub user: Option<String>,
    /// Network interfaces with a MAC or a non-loopback address, by name.
    pub interfaces: Vec<Interface>,
}

/// A network interface (only in [`Host`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub ips: Vec<String>,
}

/// Collect the fingerprint of this machine and process. Never fails and never panics.
///
/// Makes tch calls; the binary calls [`torchrt::load_cuda_backend`] before anything else, and
/// this calls it too (it only loads once).
pub fn collect(opts: &Options) -> Fingerprint {
    let cuda_backend = torchrt::load_cuda_backend();
    let mut notes = Vec::new();

    let gpu_report = gpu::collect();
    notes.extend(gpu_report.notes);
    let hardware = Hardware {
        cpu: system::cpu(),
        memory: system::memory(),
        gpus: gpu_report.gpus,
    };
    if hardware.cpu.model.is_none() {
        notes.push("CPU model unknown (/proc/cpuinfo unreadable?)".into());
    }

    let repo_dir = opts
        .repo_dir
        .clone()
        .or_else(|| std::env::current_dir().ok());
    let git = repo_dir.as_deref().and_then(git::git_state);
    if git.is_none() {
        notes.push("git: not inside a readable git repository".into());
    }
    let libtorch = torchrt::libtorch_info();
    if libtorch.version.is_none() {
        notes.push("libtorch: no version file found next to the loaded libtorch_cpu.so".into());
    }
    let device = if libtorch.cuda_available {
        "cuda"
    } else {
        "cpu"
    };
    let software = Software {
        crambench_version: crate::VERSION.to_string(),
        build: Build {
            git_commit: option_env!("CRAMBENCH_BUILD_GIT").map(str::to_string),
            rustc: option_env!("CRAMBENCH_RUSTC_VERSION").map(str::to_string),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            target: option_env!("CRAMBENCH_TARGET").map(str::to_string),
        },
        git,
        device: device.to_string(),
        libtorch,
        cuda_backend,
        gpu_driver: gpu_report.driver,
    };

    let secrets: Vec<String> = [system::user_name(), system::host_name()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let environment = Environment {
        os: system::os(),
        resources: system::resources(),
        variables: envvars::from_process(&secrets),
    };

    Fingerprint {
        schema: SCHEMA.to_string(),
        hardware_class: hardware_class(&hardware),
        hardware,
        software,
        environment,
        host: opts.include_host.then(system::host),
        notes,
    }
}

/// The stable hardware subset that [`hardware_class`] hashes.
#[derive(Serialize)]
struct ClassKey<'a> {
    cpu_model: Option<&'a str>,
    cpu_physical_cores: Option<u32>,
    cpu_logical_cores: Option<u32>,
    gpus: Vec<GpuKey<'a>>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct GpuKey<'a> {
    name: &'a str,
    memory_gib: Option<u64>,
    power_limit_w: Option<u64>,
}

/// The hardware class of `hw` (module docs).
pub fn hardware_class(hw: &Hardware) -> String {
    let mut gpus: Vec<GpuKey<'_>> = hw
        .gpus
        .iter()
        .map(|g| GpuKey {
            name: g.name.trim(),
            memory_gib: g.total_memory_bytes.map(|b| (b + (1 << 29)) >> 30),
            power_limit_w: g.power_limit_w.map(|w| w.round().max(0.0) as u64),
        })
        .collect();
    gpus.sort();
    let key = ClassKey {
        cpu_model: hw.cpu.model.as_deref().map(str::trim),
        cpu_physical_cores: hw.cpu.physical_cores,
        cpu_logical_cores: hw.cpu.logical_cores,
        gpus,
    };
    // Serialising a struct of plain fields cannot fail; fall back to Debug-free text anyway.
    let canonical = serde_json::to_string(&key).unwrap_or_default();
    let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
    let hash = &digest[..8];

    let mut slug = String::new();
    if let Some(first) = key.gpus.first() {
        let n = key.gpus.len();
        if key.gpus.iter().all(|g| g.name == first.name) {
            let _ = write!(slug, "gpu-{}x{n}", slugify(first.name));
            if key.gpus.iter().all(|g| g.memory_gib == first.memory_gib) {
                if let Some(gib) = first.memory_gib {
                    let _ = write!(slug, "-{gib}g");
                }
            }
            if key
                .gpus
                .iter()
                .all(|g| g.power_limit_w == first.power_limit_w)
            {
                if let Some(w) = first.power_limit_w {
                    let _ = write!(slug, "-{w}w");
                }
            }
        } else {
            let _ = write!(slug, "gpu-mixedx{n}");
        }
    } else {
        let model = key.cpu_model.map(slugify).filter(|s| !s.is_empty());
        let _ = write!(slug, "cpu-{}", model.as_deref().unwrap_or("unknown"));
        if let Some(cores) = key.cpu_physical_cores.or(key.cpu_logical_cores) {
            let _ = write!(slug, "-{cores}c");
        }
    }
    format!("{slug}-{hash}")
}

/// `Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz` → `intel-xeon-platinum-8480c`;
/// `NVIDIA H200` → `nvidia-h200`. At most 40 characters, cut at a word boundary.
fn slugify(name: &str) -> String {
    let name = name.split('@').next().unwrap_or_default().to_lowercase();
    let name = name
        .replace("(r)", " ")
        .replace("(tm)", " ")
        .replace("(c)", " ");
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && !matches!(*w, "cpu" | "processor"))
        .map(str::to_string)
        .collect();
    let mut slug = String::new();
    for w in words {
        if !slug.is_empty() && slug.len() + 1 + w.len() > 40 {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&w[..w.len().min(40)]);
    }
    slug
}

impl Fingerprint {
    /// Human-readable aligned table (sections Hardware, Software, Environment, then Host and
    /// Notes when present), for terminals.
    pub fn to_table(&self) -> String {
        let mut sections: Vec<(&str, Vec<(String, String)>)> = vec![
            ("Hardware", self.hardware_rows()),
            ("Software", self.software_rows()),
            ("Environment", self.environment_rows()),
        ];
        if let Some(host) = &self.host {
            let mut rows = vec![
                ("hostname".to_string(), opt(&host.hostname)),
                ("user".to_string(), opt(&host.user)),
            ];
            for i in &host.interfaces {
                let mut v = i.mac.clone().unwrap_or_else(|| "-".into());
                if !i.ips.is_empty() {
                    let _ = write!(v, "  {}", i.ips.join(" "));
                }
                rows.push((i.name.clone(), v));
            }
            sections.push(("Host", rows));
        }
        if !self.notes.is_empty() {
            let rows = self
                .notes
                .iter()
                .map(|n| ("-".to_string(), n.clone()))
                .collect();
            sections.push(("Notes", rows));
        }
        let width = sections
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|(k, _)| k.chars().count()))
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (i, (title, rows)) in sections.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "{title}");
            for (k, v) in rows {
                let _ = writeln!(out, "  {k:<width$}  {v}");
            }
        }
        out
    }

    fn hardware_rows(&self) -> Vec<(String, String)> {
        let c = &self.hardware.cpu;
        let mut rows = vec![("class".to_string(), self.hardware_class.clone())];
        let mut cpu = opt(&c.model);
        if let Some(v) = &c.vendor {
            let _ = write!(cpu, " ({v})");
        }
        rows.push(("cpu".into(), cpu));
        rows.push((
            "cpu cores".into(),
            format!(
                "{} socket(s), {} physical, {} logical{}",
                opt(&c.sockets),
                opt(&c.physical_cores),
                opt(&c.logical_cores),
                if c.hypervisor { ", virtualised" } else { "" }
            ),
        ));
        let frequency = match (c.base_frequency_mhz, c.max_frequency_mhz) {
            (None, None) => "unknown".to_string(),
            (base, max) => format!("base {} MHz, max {} MHz", opt(&base), opt(&max)),
        };
        rows.push(("cpu frequency".into(), frequency));
        rows.push(("cpu features".into(), c.features.join(" ")));
        let m = &self.hardware.memory;
        rows.push(("memory".into(), bytes(m.total_bytes)));
        if self.hardware.gpus.is_empty() {
            rows.push(("gpus".into(), "none".into()));
        }
        for g in &self.hardware.gpus {
            rows.push((
                format!("gpu {}", g.index),
                format!(
                    "{}, {}, cc {}, {} SMs, {} W",
                    g.name,
                    bytes(g.total_memory_bytes),
                    opt(&g.compute_capability),
                    opt(&g.multiprocessors),
                    opt(&g.power_limit_w)
                ),
            ));
            rows.push((
                format!("gpu {} clocks", g.index),
                format!(
                    "SM {}/{} MHz, memory {}/{} MHz (current/max)",
                    opt(&g.sm_clock_mhz),
                    opt(&g.sm_clock_max_mhz),
                    opt(&g.mem_clock_mhz),
                    opt(&g.mem_clock_max_mhz)
                ),
            ));
            rows.push((
                format!("gpu {} modes", g.index),
                format!(
                    "ECC {}, MIG {}, persistence {}, PCIe gen {}/{} x{}/{}, NVLink {}, VBIOS {}",
                    on_off(g.ecc_enabled),
                    on_off(g.mig_enabled),
                    on_off(g.persistence_mode),
                    opt(&g.pcie_link_gen),
                    opt(&g.pcie_link_gen_max),
                    opt(&g.pcie_link_width),
                    opt(&g.pcie_link_width_max),
                    opt(&g.nvlink_active_links),
                    opt(&g.vbios_version)
                ),
            ));
        }
        rows
    }

    fn software_rows(&self) -> Vec<(String, String)> {
        let s = &self.software;
        let b = &s.build;
        let mut rows = vec![(
            "crambench".to_string(),
            format!(
                "{} ({} build, commit {}, {}{})",
                s.crambench_version,
                b.profile,
                opt(&b.git_commit),
                opt(&b.rustc),
                b.target
                    .as_ref()
                    .map(|t| format!(", {t}"))
                    .unwrap_or_default()
            ),
        )];
        let git = match &s.git {
            None => "not a git repository".to_string(),
            Some(g) => {
                let mut v = g.commit.clone().unwrap_or_else(|| "(no commits)".into());
                if let Some(br) = &g.branch {
                    let _ = write!(v, " on {br}");
                }
                if g.dirty {
                    let _ = write!(
                        v,
                        ", dirty: {} path(s), diff sha256 {}",
                        g.changed_paths,
                        opt(&g.diff_sha256)
                    );
                } else {
                    v.push_str(", clean");
                }
                v
            }
        };
        rows.push(("git".into(), git));
        let t = &s.libtorch;
        rows.push((
            "libtorch".into(),
            format!(
                "{} (CUDA {}, cudart {}, cuDNN {}), tch {}, {} threads",
                opt(&t.version),
                opt(&t.cuda_built),
                opt(&t.cudart),
                opt(&t.cudnn),
                t.tch_version,
                t.num_threads
            ),
        ));
        let backend = if s.cuda_backend.loaded {
            "loaded".to_string()
        } else {
            format!("not loaded: {}", opt(&s.cuda_backend.error))
        };
        rows.push(("cuda backend".into(), backend));
        rows.push((
            "device".into(),
            format!(
                "{} ({} CUDA device(s), cuDNN {})",
                s.device,
                t.cuda_device_count,
                if t.cudnn_available {
                    "available"
                } else {
                    "unavailable"
                }
            ),
        ));
        rows.push((
            "gpu driver".into(),
            format!(
                "{} (CUDA {})",
                opt(&s.gpu_driver.version),
                opt(&s.gpu_driver.cuda_version)
            ),
        ));
        rows
    }

    fn environment_rows(&self) -> Vec<(String, String)> {
        let e = &self.environment;
        let o = &e.os;
        let r = &e.resources;
        let mut rows = vec![
            (
                "os".to_string(),
                format!(
                    "{} (kernel {}, {}, glibc {})",
                    o.long_version
                        .clone()
                        .or_else(|| o.name.clone())
                        .unwrap_or_else(|| "-".into()),
                    opt(&o.kernel),
                    opt(&o.arch),
                    opt(&o.glibc)
                ),
            ),
            (
                "cpu limit".to_string(),
                format!(
                    "{} (parallelism {}, cgroup {}, governor {})",
                    r.cpu_quota_cores
                        .map(|c| format!("{c} cores"))
                        .unwrap_or_else(|| "none".into()),
                    opt(&r.available_parallelism),
                    opt(&r.cgroup),
                    opt(&r.cpu_governor)
                ),
            ),
            (
                "memory limit".to_string(),
                r.memory_limit_bytes
                    .map(|b| bytes(Some(b)))
                    .unwrap_or_else(|| "none".into()),
            ),
        ];
        if e.variables.is_empty() {
            rows.push(("variables".into(), "none recorded".into()));
        }
        for (k, v) in &e.variables {
            rows.push((k.clone(), v.clone()));
        }
        rows
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), |v| v.to_string())
}

fn on_off(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    }
}

fn bytes(n: Option<u64>) -> String {
    match n {
        None => "-".into(),
        Some(n) => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_hw(model: &str, physical: u32, logical: u32) -> Hardware {
        Hardware {
            cpu: Cpu {
                model: Some(model.into()),
                physical_cores: Some(physical),
                logical_cores: Some(logical),
                ..Cpu::default()
            },
            memory: Memory::default(),
            gpus: vec![],
        }
    }

    fn h200(index: u32, clock: u32) -> Gpu {
        Gpu {
            index,
            name: "NVIDIA H200".into(),
            total_memory_bytes: Some(150_754_820_096),
            power_limit_w: Some(700.0),
            sm_clock_mhz: Some(clock),
            ..Gpu::default()
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slugify("Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz"),
            "intel-xeon-platinum-8480c"
        );
        assert_eq!(
            slugify("AMD EPYC 7763 64-Core Processor"),
            "amd-epyc-7763-64-core"
        );
        assert_eq!(slugify("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
        assert!(slugify(&"x".repeat(100)).len() <= 40);
    }

    #[test]
    fn class_is_stable_and_only_hardware() {
        let a = cpu_hw("Intel(R) Xeon(R) Processor", 2, 2);
        let class = hardware_class(&a);
        assert!(class.starts_with("cpu-intel-xeon-2c-"), "{class}");
        assert_eq!(class.len(), "cpu-intel-xeon-2c-".len() + 8);
        assert_eq!(hardware_class(&a), class);
        let mut b = a.clone();
        b.cpu.features = vec!["avx".into()];
        b.cpu.microcode = Some("0x2".into());
        b.memory.total_bytes = Some(1);
        assert_eq!(hardware_class(&b), class, "only the stable subset counts");
        b.cpu.logical_cores = Some(4);
        assert_ne!(hardware_class(&b), class);

        let mut g = a.clone();
        g.gpus = vec![h200(0, 1980), h200(1, 345)];
        let gclass = hardware_class(&g);
        assert!(
            gclass.starts_with("gpu-nvidia-h200x2-140g-700w-"),
            "{gclass}"
        );
        let mut g2 = g.clone();
        g2.gpus.reverse();
        g2.gpus[0].sm_clock_mhz = Some(1);
        g2.gpus[1].vbios_version = Some("96.00".into());
        assert_eq!(hardware_class(&g2), gclass, "order and clocks do not count");
        g2.gpus[0].power_limit_w = Some(600.0);
        let mixed = hardware_class(&g2);
        assert_ne!(mixed, gclass);
        assert!(mixed.starts_with("gpu-nvidia-h200x2-140g-"), "{mixed}");
    }

    #[test]
    fn collect_on_this_machine() {
        let fp = collect(&Options::default());
        assert_eq!(fp.schema, SCHEMA);
        assert!(fp.host.is_none());
        let json = serde_json::to_value(&fp).unwrap();
        let back: Fingerprint = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, fp);
        assert!(json["hardware"]["cpu"]["logical_cores"].as_u64().unwrap() >= 1);
        assert!(json.get("host").is_none());
        // Collected twice: the same class, and no changes other than volatile ones.
        let again = serde_json::to_value(collect(&Options::default())).unwrap();
        let d = diff(&json, &again);
        assert!(!d.hardware_class_changed && d.is_same(), "{}", d.to_table());
        let table = fp.to_table();
        for section in ["Hardware", "Software", "Environment", "class", "libtorch"] {
            assert!(table.contains(section), "{table}");
        }
        let with_host = collect(&Options {
            include_host: true,
            repo_dir: None,
        });
        assert!(with_host.host.is_some());
        assert!(with_host.to_table().contains("Host"));
    }
}
