//! The host side of the fingerprint: CPU (from `/proc/cpuinfo` and sysfs), memory, operating
//! system, container resource limits (cgroup v2, else v1), and — only on request — host
//! identifiers.
//!
//! Every reader returns `None` for what it cannot read; nothing here fails or panics.
use super::{Cpu, Host, Interface, Memory, Os, Resources};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// CPU flags that change which kernels libtorch, oneDNN, BLAS or the Rust code can use, as the
/// Linux kernel names them in `/proc/cpuinfo` (`flags` on x86, `Features` on Arm). Every flag
/// starting with `avx512` or `amx` is kept too, so new ones are not missed.
pub const SPEED_FEATURES: &[&str] = &[
    // x86: vector width and arithmetic
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi1",
    "bmi2",
    "avx_vnni",
    "avx_vnni_int8",
    "avx_vnni_int16",
    "avx_ifma",
    "avx_ne_convert",
    "avx10",
    // x86: hashing and crypto (SHA-256 of datasets and manifests)
    "sha_ni",
    "sha512",
    "aes",
    "vaes",
    "pclmulqdq",
    "vpclmulqdq",
    "gfni",
    // x86: memory and bit operations
    "popcnt",
    "movbe",
    "erms",
    "fsrm",
    // Arm
    "asimd",
    "asimdhp",
    "asimddp",
    "fphp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
    "sme",
    "sha2",
];

/// Parsed `/proc/cpuinfo`.
#[derive(Debug, Default)]
struct CpuInfo {
    model: Option<String>,
    vendor: Option<String>,
    family: Option<u32>,
    model_id: Option<u32>,
    stepping: Option<u32>,
    microcode: Option<String>,
    cache_kib: Option<u64>,
    logical: u32,
    sockets: BTreeSet<String>,
    cores: BTreeSet<(String, String)>,
    flags: Vec<String>,
}

fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    // Each processor is a block of `key : value` lines separated by a blank line.
    for block in text.split("\n\n") {
        let fields: BTreeMap<&str, &str> = block
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        if !fields.contains_key("processor") {
            continue;
        }
        info.logical += 1;
        let first = info.logical == 1;
        if first {
            info.model = fields.get("model name").map(|s| s.to_string());
            info.vendor = fields.get("vendor_id").map(|s| s.to_string());
            info.family = fields.get("cpu family").and_then(|s| s.parse().ok());
            info.model_id = fields.get("model").and_then(|s| s.parse().ok());
            info.stepping = fields.get("stepping").and_then(|s| s.parse().ok());
            info.microcode = fields.get("microcode").map(|s| s.to_string());
            info.cache_kib = fields
                .get("cache size")
                .and_then(|s| s.strip_suffix("KB"))
                .and_then(|s| s.trim().parse().ok());
            if let Some(flags) = fields.get("flags").or_else(|| fields.get("Features")) {
                info.flags = flags.split_whitespace().map(str::to_string).collect();
            }
        }
        let socket = fields.get("physical id").map(|s| s.to_string());
        if let Some(socket) = &socket {
            info.sockets.insert(socket.clone());
        }
        if let Some(core) = fields.get("core id") {
            info.cores
                .insert((socket.unwrap_or_default(), core.to_string()));
        }
    }
    info
}

/// Keep the speed-relevant flags ([`SPEED_FEATURES`], `avx512*`, `amx*`), sorted.
fn speed_features(flags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = flags
        .iter()
        .filter(|f| {
            SPEED_FEATURES.contains(&f.as_str()) || f.starts_with("avx512") || f.starts_with("amx")
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A sysfs value in kHz, as MHz.
fn sysfs_khz_as_mhz(path: &str) -> Option<u32> {
    let khz: u64 = read_trimmed(Path::new(path))?.parse().ok()?;
    u32::try_from(khz / 1000).ok()
}

/// `Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz` → 2000.
fn frequency_from_model(model: &str) -> Option<u32> {
    let (_, freq) = model.rsplit_once('@')?;
    let ghz: f64 = freq.trim().strip_suffix("GHz")?.trim().parse().ok()?;
    Some((ghz * 1000.0).round() as u32)
}

pub(super) fn cpu() -> Cpu {
    let info = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| parse_cpuinfo(&t))
        .unwrap_or_default();
    let sysinfo_cpus = sysinfo::System::new().ok().map(|mut s| {
        s.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        let brand = s.cpus().first().map(|c| c.brand().trim().to_string());
        (brand.filter(|b| !b.is_empty()), s.cpus().len())
    });
    let model = info
        .model
        .clone()
        .or_else(|| sysinfo_cpus.as_ref().and_then(|(brand, _)| brand.clone()));
    let logical = (info.logical > 0)
        .then_some(info.logical)
        .or_else(|| {
            sysinfo_cpus
                .as_ref()
                .and_then(|(_, n)| u32::try_from(*n).ok())
        })
        .filter(|n| *n > 0);
    let physical = (!info.cores.is_empty())
        .then(|| u32::try_from(info.cores.len()).ok())
        .flatten()
        .or_else(|| {
            sysinfo::System::physical_core_count()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
        });
    let base = sysfs_khz_as_mhz("/sys/devices/system/cpu/cpu0/cpufreq/base_frequency")
        .or_else(|| model.as_deref().and_then(frequency_from_model));
    Cpu {
        vendor: info.vendor,
        family: info.family,
        model_id: info.model_id,
        stepping: info.stepping,
        microcode: info.microcode,
        sockets: (!info.sockets.is_empty())
            .then(|| u32::try_from(info.sockets.len()).ok())
            .flatten(),
        physical_cores: physical,
        logical_cores: logical,
        base_frequency_mhz: base,
        max_frequency_mhz: sysfs_khz_as_mhz(
            "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
        ),
        cache_kib: info.cache_kib,
        hypervisor: info.flags.iter().any(|f| f == "hypervisor"),
        features: speed_features(&info.flags),
        model,
    }
}

pub(super) fn memory() -> Memory {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let n: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            n.checked_mul(1024)
        })
    };
    let total = kib("MemTotal").or_else(|| {
        let mut s = sysinfo::System::new().ok()?;
        s.refresh_memory();
        Some(s.total_memory()).filter(|n| *n > 0)
    });
    Memory {
        total_bytes: total,
        swap_total_bytes: kib("SwapTotal"),
    }
}

pub(super) fn os() -> Os {
    Os {
        name: sysinfo::System::name().ok(),
        version: sysinfo::System::os_version().ok(),
        long_version: sysinfo::System::long_os_version().ok(),
        kernel: sysinfo::System::kernel_version().ok(),
        arch: Some(sysinfo::System::cpu_arch()).filter(|a| !a.is_empty()),
        glibc: glibc_version(),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_version() -> Option<String> {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let ptr = unsafe { libc::gnu_get_libc_version() };
    (!ptr.is_null()).then(|| {
        // SAFETY: non-null static C string (above).
        unsafe { std::ffi::CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_version() -> Option<String> {
    None
}

pub(super) fn resources() -> Resources {
    let limits = cgroup_limits();
    Resources {
        cgroup: limits.version.map(str::to_string),
        cpu_quota_cores: limits.cpu_cores,
        memory_limit_bytes: limits.memory_bytes,
        available_parallelism: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        cpu_governor: read_trimmed(Path::new(
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        )),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Resource limits that the process's cgroups impose.
#[derive(Debug, Default, PartialEq)]
struct CgroupLimits {
    /// `v2` or `v1`: the hierarchy that governs CPU and memory.
    version: Option<&'static str>,
    /// CPU quota in cores (quota / period); `None` when unlimited.
    cpu_cores: Option<f64>,
    /// Memory limit in bytes; `None` when unlimited.
    memory_bytes: Option<u64>,
}

/// A cgroup file system mounted in this mount namespace (from `/proc/self/mountinfo`).
#[derive(Debug)]
struct CgroupMount {
    /// The cgroup path (within the hierarchy) that is mounted.
    root: String,
    mount_point: PathBuf,
    /// `None` for cgroup2; the controllers (`cpu`, `memory`, …) for a v1 hierarchy.
    controllers: Option<Vec<String>>,
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional fields] - fstype source super-options
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (root, mount_point) = (pre.get(3)?, pre.get(4)?);
            let controllers = match *post.first()? {
                "cgroup2" => None,
                "cgroup" => Some(
                    post.get(2)?
                        .split(',')
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                ),
                _ => return None,
            };
            Some(CgroupMount {
                root: unescape_mountinfo(root),
                mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(b) = octal {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: (hierarchy controllers, path); controllers empty for v2's `0::path`.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((controllers, path.to_string()))
        })
        .collect()
}

/// The directories of the process's cgroup in `mount`, innermost first, up to the mount's
/// root: every one of them can impose a limit, and the effective limit is the smallest.
fn cgroup_dirs(mount: &CgroupMount, path: &str) -> Vec<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    // Inside a container the hierarchy is often mounted at the process's own cgroup, so the
    // path is relative to the mount's root; when it is not below it, use the mount point.
    let rel = path.strip_prefix(root).unwrap_or("");
    let mut dirs = Vec::new();
    let mut dir = mount.mount_point.clone();
    dirs.push(dir.clone());
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs.reverse();
    dirs
}

fn min_opt<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// v2 `cpu.max`: `max 100000` (unlimited) or `<quota> <period>`.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// A memory limit; v1 reports "unlimited" as a huge page-aligned number, v2 as `max`.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 60).then_some(n)
}

fn cgroup_limits() -> CgroupLimits {
    let (Ok(mountinfo), Ok(proc_cgroup)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return CgroupLimits::default();
    };
    limits_from(
        &parse_mountinfo(&mountinfo),
        &parse_proc_cgroup(&proc_cgroup),
        &|p: &Path| read_trimmed(p),
    )
}

/// Combine mounts and memberships into limits; `read` reads a control file (a parameter so that
/// tests can supply a fake file system).
fn limits_from(
    mounts: &[CgroupMount],
    membership: &[(Vec<String>, String)],
    read: &dyn Fn(&Path) -> Option<String>,
) -> CgroupLimits {
    let v1_dirs = |controller: &str| -> Vec<PathBuf> {
        let Some((_, path)) = membership
            .iter()
            .find(|(c, _)| c.iter().any(|c| c == controller))
        else {
            return Vec::new();
        };
        mounts
            .iter()
            .filter(|m| {
                m.controllers
                    .as_ref()
                    .is_some_and(|c| c.iter().any(|c| c == controller))
            })
            .flat_map(|m| cgroup_dirs(m, path))
            .collect()
    };
    let (cpu_dirs, mem_dirs) = (v1_dirs("cpu"), v1_dirs("memory"));
    if !cpu_dirs.is_empty() || !mem_dirs.is_empty() {
        let cpu = cpu_dirs
            .iter()
            .filter_map(|d| {
                let quota: f64 = read(&d.join("cpu.cfs_quota_us"))?.parse().ok()?;
                let period: f64 = read(&d.join("cpu.cfs_period_us"))?.parse().ok()?;
                (quota > 0.0 && period > 0.0).then(|| quota / period)
            })
            .fold(None, |acc, x| min_opt(acc, Some(x)));
        let memory = mem_dirs
            .iter()
            .filter_map(|d| parse_memory_limit(&read(&d.join("memory.limit_in_bytes"))?))
            .fold(None, |acc, x| min_opt(acc, Some(x)));
        return CgroupLimits {
            version: Some("v1"),
            cpu_cores: cpu,
            memory_bytes: memory,
        };
    }
    let v2_path = membership
        .iter()
        .find(|(c, _)| c.is_empty())
        .map(|(_, p)| p.as_str());
    let v2_mount = mounts.iter().find(|m| m.controllers.is_none());
    let (Some(path), Some(mount)) = (v2_path, v2_mount) else {
        return CgroupLimits::default();
    };
    let dirs = cgroup_dirs(mount, path);
    let cpu = dirs
        .iter()
        .filter_map(|d| parse_cpu_max(&read(&d.join("cpu.max"))?))
        .fold(None, |acc, x| min_opt(acc, Some(x)));
    let memory = dirs
        .iter()
        .filter_map(|d| parse_memory_limit(&read(&d.join("memory.max"))?))
        .fold(None, |acc, x| min_opt(acc, Some(x)));
    CgroupLimits {
        version: Some("v2"),
        cpu_cores: cpu,
        memory_bytes: memory,
    }
}

/// The current user's login name: `$USER`, `$LOGNAME`, else the password database.
pub(super) fn user_name() -> Option<String> {
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty());
    from_env.or_else(|| {
        let uid = sysinfo::Uid::try_from(usize::try_from(unsafe_getuid()).ok()?).ok()?;
        let users = sysinfo::Users::new_with_refreshed_list().ok()?;
        users.get_user_by_id(&uid).map(|u| u.name().to_string())
    })
}

fn unsafe_getuid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

pub(super) fn host_name() -> Option<String> {
    sysinfo::System::host_name()
        .ok()
        .or_else(|| read_trimmed(Path::new("/proc/sys/kernel/hostname")))
        .filter(|h| !h.is_empty())
}

/// Host identifiers: host name, user, and each non-loopback interface's MAC and addresses.
pub(super) fn host() -> Host {
    let mut interfaces: Vec<Interface> = sysinfo::Networks::new_with_refreshed_list()
        .map(|nets| {
            nets.iter()
                .map(|(name, data)| {
                    let mac = data.mac_address().to_string();
                    let mut ips: Vec<String> = data
                        .ip_networks()
                        .iter()
                        .filter(|n| !n.addr.is_loopback())
                        .map(|n| n.addr.to_string())
                        .collect();
                    ips.sort();
                    Interface {
                        name: name.to_string_lossy().into_owned(),
                        mac: (mac != "00:00:00:00:00:00").then_some(mac),
                        ips,
                    }
                })
                .filter(|i| i.mac.is_some() || !i.ips.is_empty())
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    Host {
        hostname: host_name(),
        user: user_name(),
        interfaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
model\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C CPU @ 2.00GHz\nstepping\t: 8\n\
microcode\t: 0x2b000590\ncache size\t: 107520 KB\nphysical id\t: 0\ncore id\t\t: 0\n\
flags\t\t: fpu vme avx avx2 fma avx512f avx512_bf16 amx_tile sha_ni hypervisor\n\n\
processor\t: 1\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 2\nphysical id\t: 1\ncore id\t\t: 0\n\n\
processor\t: 3\nphysical id\t: 1\ncore id\t\t: 1\n";

    #[test]
    fn cpuinfo_topology_and_features() {
        let info = parse_cpuinfo(CPUINFO);
        assert_eq!(info.logical, 4);
        assert_eq!(info.sockets.len(), 2);
        assert_eq!(info.cores.len(), 3);
        assert_eq!(info.family, Some(6));
        assert_eq!(info.model_id, Some(143));
        assert_eq!(info.cache_kib, Some(107520));
        assert_eq!(
            speed_features(&info.flags),
            [
                "amx_tile",
                "avx",
                "avx2",
                "avx512_bf16",
                "avx512f",
                "fma",
                "sha_ni"
            ]
        );
        assert_eq!(
            frequency_from_model(info.model.as_deref().unwrap()),
            Some(2000)
        );
        assert_eq!(frequency_from_model("Intel(R) Xeon(R) Processor"), None);
    }

    #[test]
    fn cgroup_files() {
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("250000 100000"), Some(2.5));
        assert_eq!(parse_memory_limit("max"), None);
        assert_eq!(parse_memory_limit("9223372036854771712"), None);
        assert_eq!(parse_memory_limit("8589934592"), Some(8 << 30));
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\"), r"/a\");
    }

    fn fake_fs(files: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: BTreeMap<PathBuf, String> = files
            .iter()
            .map(|(p, c)| (PathBuf::from(p), c.to_string()))
            .collect();
        move |p: &Path| map.get(p).cloned()
    }

    #[test]
    fn cgroup_v2_takes_the_smallest_limit_on_the_path() {
        let mounts = parse_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let membership = parse_proc_cgroup("0::/user.slice/job\n");
        let fs = fake_fs(&[
            ("/sys/fs/cgroup/user.slice/job/cpu.max", "max 100000"),
            ("/sys/fs/cgroup/user.slice/cpu.max", "400000 100000"),
            ("/sys/fs/cgroup/user.slice/job/memory.max", "1073741824"),
            ("/sys/fs/cgroup/user.slice/memory.max", "max"),
        ]);
        let l = limits_from(&mounts, &membership, &fs);
        assert_eq!(
            l,
            CgroupLimits {
                version: Some("v2"),
                cpu_cores: Some(4.0),
                memory_bytes: Some(1 << 30)
            }
        );
        // Unlimited everywhere.
        let l = limits_from(&mounts, &membership, &fake_fs(&[]));
        assert_eq!(
            (l.version, l.cpu_cores, l.memory_bytes),
            (Some("v2"), None, None)
        );
    }

    #[test]
    fn cgroup_v1_inside_a_container() {
        // The hierarchy is mounted at the container's own cgroup (root = the cgroup path).
        let mounts = parse_mountinfo(
            "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let membership =
            parse_proc_cgroup("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n");
        let fs = fake_fs(&[
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000"),
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "2147483648"),
        ]);
        let l = limits_from(&mounts, &membership, &fs);
        assert_eq!(
            l,
            CgroupLimits {
                version: Some("v1"),
                cpu_cores: Some(2.0),
                memory_bytes: Some(2 << 30)
            }
        );
    }

    #[test]
    fn this_machine_reads_without_panicking() {
        let cpu = cpu();
        assert!(cpu.logical_cores.is_some_and(|n| n >= 1));
        assert!(memory().total_bytes.is_some_and(|n| n > 0));
        let _ = resources();
        let _ = os();
    }
}
