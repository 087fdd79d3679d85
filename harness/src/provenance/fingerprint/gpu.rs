//! The GPU side of the fingerprint: devices as the CUDA driver API enumerates them (so the list
//! honours `CUDA_VISIBLE_DEVICES`, like the run itself), enriched from NVML with power, clocks,
//! ECC, MIG, persistence, PCIe and NVLink state, matched by UUID.
//!
//! Both libraries are loaded at run time and may be absent. The CUDA driver API is only touched
//! after `is_culib_present()` says libcuda can be loaded (cudarc panics otherwise), and both
//! probes run under `catch_unwind` as well. Device properties are read without creating a CUDA
//! context. What cannot be read is `None`, with the reason in the notes.
use super::{Gpu, GpuDriver};
use crate::torchrt::{format_cuda_version, redact_paths};
use cudarc::driver::{result, sys};
use std::collections::BTreeMap;
use std::panic::catch_unwind;

/// NVLink ports a device can have (NVML_NVLINK_MAX_LINKS in nvml.h).
const NVLINK_MAX_LINKS: u32 = 18;

/// GPUs, driver versions, and notes on what could not be read.
pub(super) struct GpuReport {
    pub gpus: Vec<Gpu>,
    pub driver: GpuDriver,
    pub notes: Vec<String>,
}

pub(super) fn collect() -> GpuReport {
    let mut notes = Vec::new();
    let cuda = match catch_unwind(cuda_probe) {
        Ok(Ok(c)) => Some(c),
        Ok(Err(why)) => {
            notes.push(why);
            None
        }
        Err(_) => {
            notes.push("CUDA driver: probing panicked; no GPUs listed".into());
            None
        }
    };
    let nvml = match catch_unwind(nvml_probe) {
        Ok(Ok(n)) => Some(n),
        Ok(Err(why)) => {
            notes.push(why);
            None
        }
        Err(_) => {
            notes.push("NVML: probing panicked".into());
            None
        }
    };

    let mut gpus = Vec::new();
    if let Some(cuda) = &cuda {
        for dev in &cuda.devices {
            let mut gpu = dev.clone();
            if let Some(extra) = gpu
                .uuid
                .as_ref()
                .and_then(|u| nvml.as_ref()?.devices.get(u))
            {
                merge_nvml(&mut gpu, extra);
            }
            gpus.push(gpu);
        }
    }
    if let Some(nvml) = &nvml {
        let unseen = nvml
            .devices
            .keys()
            .filter(|u| !gpus.iter().any(|g| g.uuid.as_ref() == Some(*u)))
            .count();
        if unseen > 0 {
            notes.push(format!(
                "NVML sees {unseen} GPU(s) that CUDA does not enumerate (CUDA_VISIBLE_DEVICES?)"
            ));
        }
    }
    let driver = GpuDriver {
        version: nvml.as_ref().and_then(|n| n.driver_version.clone()),
        cuda_version: cuda
            .as_ref()
            .and_then(|c| c.driver_version)
            .or_else(|| nvml.as_ref().and_then(|n| n.cuda_driver_version))
            .map(format_cuda_version),
    };
    GpuReport {
        gpus,
        driver,
        notes,
    }
}

struct CudaProbe {
    driver_version: Option<i32>,
    devices: Vec<Gpu>,
}

fn driver_error(what: &str, e: result::DriverError) -> String {
    let name = e
        .error_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    format!("CUDA driver: {what} failed: {name}")
}

fn cuda_probe() -> Result<CudaProbe, String> {
    // SAFETY: only tries to load libcuda; does not panic when it is absent.
    if !unsafe { sys::is_culib_present() } {
        return Err("CUDA driver library (libcuda) not found; no GPUs listed".into());
    }
    result::init().map_err(|e| driver_error("cuInit", e))?;
    let mut version = 0;
    // SAFETY: the driver is initialised and `version` is a valid out-pointer.
    let driver_version = unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .ok()
        .map(|()| version);
    let count = result::device::get_count().map_err(|e| driver_error("cuDeviceGetCount", e))?;
    let mut devices = Vec::new();
    for ordinal in 0..count {
        let dev = result::device::get(ordinal).map_err(|e| driver_error("cuDeviceGet", e))?;
        devices.push(cuda_device(ordinal, dev));
    }
    Ok(CudaProbe {
        driver_version,
        devices,
    })
}

fn cuda_device(ordinal: i32, dev: sys::CUdevice) -> Gpu {
    use sys::CUdevice_attribute::*;
    // SAFETY: `dev` was returned by cuDeviceGet.
    let attr = |a| unsafe { result::device::get_attribute(dev, a) }.ok();
    let cc = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .zip(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))
        .map(|(major, minor)| format!("{major}.{minor}"));
    let pci = attr(CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)
        .zip(attr(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID))
        .zip(attr(CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID))
        .map(|((domain, bus), device)| format!("{domain:08X}:{bus:02X}:{device:02X}.0"));
    Gpu {
        index: u32::try_from(ordinal).unwrap_or_default(),
        name: result::device::get_name(dev).unwrap_or_default(),
        uuid: result::device::get_uuid(dev)
            .ok()
            .map(|u| format_uuid(&u.bytes)),
        pci_bus_id: pci,
        compute_capability: cc,
        multiprocessors: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .and_then(|n| u32::try_from(n).ok()),
        // SAFETY: as above.
        total_memory_bytes: unsafe { result::device::total_mem(dev) }
            .ok()
            .map(|n| n as u64),
        memory_bus_width_bits: attr(CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)
            .and_then(|n| u32::try_from(n).ok()),
        l2_cache_bytes: attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE).and_then(|n| u64::try_from(n).ok()),
        ..Gpu::default()
    }
}

/// The UUID, in NVML's spelling, of CUDA device `ordinal` as the driver API enumerates it (so
/// honouring `CUDA_VISIBLE_DEVICES`): what NVML's handle of the same GPU is looked up by.
pub(crate) fn cuda_device_uuid(ordinal: i32) -> Result<String, String> {
    let probe = || -> Result<String, String> {
        // SAFETY: only tries to load libcuda; does not panic when it is absent.
        if !unsafe { sys::is_culib_present() } {
            return Err("CUDA driver library (libcuda) not found".into());
        }
        result::init().map_err(|e| driver_error("cuInit", e))?;
        let dev = result::device::get(ordinal).map_err(|e| driver_error("cuDeviceGet", e))?;
        result::device::get_uuid(dev)
            .map(|u| format_uuid(&u.bytes))
            .map_err(|e| driver_error("cuDeviceGetUuid", e))
    };
    catch_unwind(probe).unwrap_or_else(|_| Err("CUDA driver: probing panicked".into()))
}

/// NVML's spelling of a device UUID: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn format_uuid(bytes: &[std::ffi::c_char; 16]) -> String {
    let h: Vec<String> = bytes.iter().map(|b| format!("{:02x}", *b as u8)).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// What NVML adds to a device.
#[derive(Default)]
struct NvmlDevice {
    name: Option<String>,
    architecture: Option<String>,
    pci_bus_id: Option<String>,
    power_limit_w: Option<f64>,
    power_limit_default_w: Option<f64>,
    sm_clock_mhz: Option<u32>,
    sm_clock_max_mhz: Option<u32>,
    mem_clock_mhz: Option<u32>,
    mem_clock_max_mhz: Option<u32>,
    ecc_enabled: Option<bool>,
    mig_enabled: Option<bool>,
    persistence_mode: Option<bool>,
    compute_mode: Option<String>,
    pcie_link_gen: Option<u32>,
    pcie_link_gen_max: Option<u32>,
    pcie_link_width: Option<u32>,
    pcie_link_width_max: Option<u32>,
    nvlink_active_links: Option<u32>,
    vbios_version: Option<String>,
}

struct NvmlProbe {
    driver_version: Option<String>,
    cuda_driver_version: Option<i32>,
    /// By UUID.
    devices: BTreeMap<String, NvmlDevice>,
}

fn nvml_probe() -> Result<NvmlProbe, String> {
    use nvml_wrapper::enum_wrappers::device::Clock;
    let nvml = nvml_wrapper::Nvml::init()
        .map_err(|e| format!("NVML unavailable: {}", redact_paths(&e.to_string())))?;
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML: device count failed: {e}"))?;
    let mut devices = BTreeMap::new();
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        let Ok(uuid) = d.uuid() else {
            continue;
        };
        let watts = |mw: u32| f64::from(mw) / 1000.0;
        let links: Vec<bool> = (0..NVLINK_MAX_LINKS)
            .filter_map(|l| d.link_wrapper_for(l).is_active().ok())
            .collect();
        let info = NvmlDevice {
            name: d.name().ok(),
            architecture: d.architecture().ok().map(|a| a.to_string()),
            pci_bus_id: d.pci_info().ok().map(|p| p.bus_id),
            power_limit_w: d.enforced_power_limit().ok().map(watts),
            power_limit_default_w: d.power_management_limit_default().ok().map(watts),
            sm_clock_mhz: d.clock_info(Clock::SM).ok(),
            sm_clock_max_mhz: d.max_clock_info(Clock::SM).ok(),
            mem_clock_mhz: d.clock_info(Clock::Memory).ok(),
            mem_clock_max_mhz: d.max_clock_info(Clock::Memory).ok(),
            ecc_enabled: d.is_ecc_enabled().ok().map(|e| e.currently_enabled),
            // NVML_DEVICE_MIG_ENABLE is 1.
            mig_enabled: d.mig_mode().ok().map(|m| m.current == 1),
            persistence_mode: d.is_in_persistent_mode().ok(),
            compute_mode: d.compute_mode().ok().map(|m| format!("{m:?}")),
            pcie_link_gen: d.current_pcie_link_gen().ok(),
            pcie_link_gen_max: d.max_pcie_link_gen().ok(),
            pcie_link_width: d.current_pcie_link_width().ok(),
            pcie_link_width_max: d.max_pcie_link_width().ok(),
            nvlink_active_links: (!links.is_empty())
                .then(|| u32::try_from(links.iter().filter(|a| **a).count()).ok())
                .flatten(),
            vbios_version: d.vbios_version().ok(),
        };
        devices.insert(uuid, info);
    }
    Ok(NvmlProbe {
        driver_version: nvml.sys_driver_version().ok(),
        cuda_driver_version: nvml.sys_cuda_driver_version().ok(),
        devices,
    })
}

fn merge_nvml(gpu: &mut Gpu, n: &NvmlDevice) {
    if gpu.name.is_empty() {
        gpu.name = n.name.clone().unwrap_or_default();
    }
    gpu.pci_bus_id = n.pci_bus_id.clone().or(gpu.pci_bus_id.take());
    gpu.architecture = n.architecture.clone();
    gpu.power_limit_w = n.power_limit_w;
    gpu.power_limit_default_w = n.power_limit_default_w;
    gpu.sm_clock_mhz = n.sm_clock_mhz;
    gpu.sm_clock_max_mhz = n.sm_clock_max_mhz;
    gpu.mem_clock_mhz = n.mem_clock_mhz;
    gpu.mem_clock_max_mhz = n.mem_clock_max_mhz;
    gpu.ecc_enabled = n.ecc_enabled;
    gpu.mig_enabled = n.mig_enabled;
    gpu.persistence_mode = n.persistence_mode;
    gpu.compute_mode = n.compute_mode.clone();
    gpu.pcie_link_gen = n.pcie_link_gen;
    gpu.pcie_link_gen_max = n.pcie_link_gen_max;
    gpu.pcie_link_width = n.pcie_link_width;
    gpu.pcie_link_width_max = n.pcie_link_width_max;
    gpu.nvlink_active_links = n.nvlink_active_links;
    gpu.vbios_version = n.vbios_version.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_spelled_like_nvml() {
        let mut b = [0 as std::ffi::c_char; 16];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8 * 17) as std::ffi::c_char;
        }
        assert_eq!(format_uuid(&b), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn probing_never_panics() {
        let report = collect();
        // On a machine without libcuda there are no GPUs, and a note says why.
        // SAFETY: only tries to load libcuda.
        if !unsafe { sys::is_culib_present() } {
            assert!(report.gpus.is_empty());
            assert!(report.notes.iter().any(|n| n.contains("libcuda")));
            assert_eq!(report.driver.cuda_version, None);
        }
    }
}
