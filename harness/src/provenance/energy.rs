//! GPU energy per phase, from NVML's total energy counter, in kWh — as cramming records it
//! (`get_kWh` in `cramming/utils.py` at 196c991: `nvmlDeviceGetTotalEnergyConsumption` at the
//! start and end of the job, millijoules · 1e-6 / 3600). crambench reads the counter around
//! each phase instead of once per job, and finds the GPU by its UUID (so `CUDA_VISIBLE_DEVICES`
//! is honoured; upstream uses the CUDA index as NVML's, which differ when devices are masked).
//!
//! The counter (Volta and newer) counts millijoules since the driver was loaded. Where it
//! cannot be read — no NVML (a CPU machine), a CPU run, a GPU without the counter — the energy
//! is recorded as unavailable with the reason, never guessed and never a panic.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Millijoules in a kilowatt-hour.
pub const MJ_PER_KWH: f64 = 3.6e9;

/// A monotonic energy counter in millijoules.
pub trait EnergyCounter {
    /// The counter now.
    fn millijoules(&self) -> Result<u64, String>;
    /// What is measured (e.g. the GPU's name).
    fn describe(&self) -> String;
}

/// NVML's `nvmlDeviceGetTotalEnergyConsumption` of one GPU.
pub struct NvmlCounter {
    nvml: nvml_wrapper::Nvml,
    uuid: String,
    name: String,
}

impl NvmlCounter {
    /// The counter of CUDA device `ordinal`, checked by one read.
    pub fn open(ordinal: i32) -> Result<Self, String> {
        let uuid = crate::provenance::fingerprint::cuda_device_uuid(ordinal)?;
        let open = || -> Result<Self, String> {
            let nvml = nvml_wrapper::Nvml::init().map_err(|e| {
                format!(
                    "NVML unavailable: {}",
                    crate::torchrt::redact_paths(&e.to_string())
                )
            })?;
            let name = {
                let d = nvml
                    .device_by_uuid(uuid.as_str())
                    .map_err(|e| format!("NVML: no device {uuid}: {e}"))?;
                d.name().unwrap_or_else(|_| uuid.clone())
            };
            let c = NvmlCounter { nvml, uuid, name };
            c.millijoules()?;
            Ok(c)
        };
        std::panic::catch_unwind(open).unwrap_or_else(|_| Err("NVML: probing panicked".into()))
    }
}

impl EnergyCounter for NvmlCounter {
    fn millijoules(&self) -> Result<u64, String> {
        let d = self
            .nvml
            .device_by_uuid(self.uuid.as_str())
            .map_err(|e| format!("NVML: device {}: {e}", self.uuid))?;
        d.total_energy_consumption()
            .map_err(|e| format!("NVML: total energy consumption: {e}"))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The counter of the device a run uses: NVML for `cuda:N`, none for the CPU (the reason
/// given).
pub fn counter_for(device: tch::Device) -> Result<Box<dyn EnergyCounter>, String> {
    match device {
        tch::Device::Cuda(i) => NvmlCounter::open(i as i32).map(|c| Box::new(c) as _),
        other => Err(format!(
            "the run uses {other:?}, not a GPU: no GPU energy counter"
        )),
    }
}

/// Energy of the phases of one run, as recorded in the manifest (`predicate.budget.energy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyRecord {
    /// Whether the counter could be read.
    pub available: bool,
    /// `nvml:total_energy_consumption`.
    pub source: String,
    /// What was measured (the GPU's name), when available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// kWh per phase, for the phases measured.
    pub kwh: BTreeMap<String, f64>,
    /// Why the energy (or a phase's) is missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// Reads a counter around phases and accumulates kWh per phase.
pub struct EnergyMeter {
    counter: Option<Box<dyn EnergyCounter>>,
    record: EnergyRecord,
}

/// A phase being measured ([`EnergyMeter::start`]).
pub struct PhaseStart {
    name: String,
    mj: Option<u64>,
}

impl EnergyMeter {
    /// A meter over `counter`, or an unavailable one with the reason.
    pub fn new(counter: Result<Box<dyn EnergyCounter>, String>) -> Self {
        let (counter, device, unavailable) = match counter {
            Ok(c) => {
                let d = c.describe();
                (Some(c), Some(d), vec![])
            }
            Err(why) => (None, None, vec![why]),
        };
        EnergyMeter {
            record: EnergyRecord {
                available: counter.is_some(),
                source: "nvml:total_energy_consumption".into(),
                device,
                kwh: BTreeMap::new(),
                unavailable,
            },
            counter,
        }
    }

    /// The meter of `device` ([`counter_for`]).
    pub fn for_device(device: tch::Device) -> Self {
        EnergyMeter::new(counter_for(device))
    }

    /// Start measuring `phase`.
    pub fn start(&mut self, phase: &str) -> PhaseStart {
        let mj = self.read(phase);
        PhaseStart {
            name: phase.to_string(),
            mj,
        }
    }

    /// End the phase; returns its kWh (added to any earlier measurement of the same phase),
    /// `None` when it could not be measured.
    pub fn stop(&mut self, start: PhaseStart) -> Option<f64> {
        let before = start.mj?;
        let after = self.read(&start.name)?;
        let Some(delta) = after.checked_sub(before) else {
            self.record.unavailable.push(format!(
                "{}: the energy counter went backwards ({before} -> {after} mJ; driver \
                 reloaded?)",
                start.name
            ));
            return None;
        };
        let kwh = delta as f64 / MJ_PER_KWH;
        *self.record.kwh.entry(start.name).or_insert(0.0) += kwh;
        Some(kwh)
    }

    /// Measure `f` as `phase`.
    pub fn phase<T>(&mut self, phase: &str, f: impl FnOnce() -> T) -> T {
        let s = self.start(phase);
        let r = f();
        self.stop(s);
        r
    }

    fn read(&mut self, phase: &str) -> Option<u64> {
        let c = self.counter.as_ref()?;
        match c.millijoules() {
            Ok(mj) => Some(mj),
            Err(e) => {
                self.record.unavailable.push(format!("{phase}: {e}"));
                None
            }
        }
    }

    /// What was measured so far.
    pub fn record(&self) -> &EnergyRecord {
        &self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A counter that returns the given readings in turn (an error once they run out).
    struct Fake(RefCell<Vec<Result<u64, String>>>);

    impl EnergyCounter for Fake {
        fn millijoules(&self) -> Result<u64, String> {
            let mut v = self.0.borrow_mut();
            if v.is_empty() {
                Err("no more readings".into())
            } else {
                v.remove(0)
            }
        }
        fn describe(&self) -> String {
            "fake GPU".into()
        }
    }

    fn meter(readings: Vec<Result<u64, String>>) -> EnergyMeter {
        EnergyMeter::new(Ok(Box::new(Fake(RefCell::new(readings)))))
    }

    #[test]
    fn phases_are_counted_in_kwh() {
        // 1 kWh = 3.6e9 mJ; the counter starts anywhere (it counts since driver load).
        let base = 123_456_789u64;
        let mut m = meter(vec![
            Ok(base),
            Ok(base + 3_600_000_000),
            Ok(base + 3_600_000_000),
            Ok(base + 3_600_000_000 + 900_000_000),
            Ok(base + 5_000_000_000),
            Ok(base + 5_000_000_000 + 360_000),
        ]);
        assert_eq!(m.phase("pretraining", || 7), 7);
        let s = m.start("glue");
        assert_eq!(m.stop(s), Some(0.25));
        // A phase measured twice (a resumed stage) adds up.
        let s = m.start("glue");
        assert_eq!(m.stop(s), Some(1e-4));
        let r = m.record();
        assert!(r.available && r.unavailable.is_empty(), "{r:?}");
        assert_eq!(r.device.as_deref(), Some("fake GPU"));
        assert_eq!(r.kwh["pretraining"], 1.0);
        assert!((r.kwh["glue"] - 0.2501).abs() < 1e-12);
    }

    #[test]
    fn failures_are_recorded_never_panics() {
        // No counter (a CPU machine): nothing measured, the reason kept.
        let mut m = EnergyMeter::new(Err("NVML unavailable: libnvidia-ml.so.1".into()));
        assert_eq!(m.phase("pretraining", || 1), 1);
        let r = m.record().clone();
        assert!(!r.available && r.kwh.is_empty());
        assert_eq!(r.unavailable, vec!["NVML unavailable: libnvidia-ml.so.1"]);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["available"], false);
        assert!(j.get("device").is_none());
        // A failed read or a counter that went backwards loses that phase only.
        let mut m = meter(vec![Ok(10), Err("GPU lost".into()), Ok(500), Ok(100)]);
        let s = m.start("data");
        assert_eq!(m.stop(s), None);
        let s = m.start("glue");
        assert_eq!(m.stop(s), None);
        let r = m.record();
        assert!(r.kwh.is_empty());
        assert_eq!(r.unavailable.len(), 2, "{:?}", r.unavailable);
        assert!(r.unavailable[0].starts_with("data: GPU lost"));
        assert!(r.unavailable[1].contains("backwards"));
    }

    #[test]
    fn the_cpu_has_no_counter() {
        let m = EnergyMeter::for_device(tch::Device::Cpu);
        assert!(!m.record().available);
        assert!(m.record().unavailable[0].contains("not a GPU"));
    }
}
