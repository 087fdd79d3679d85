//! The budget: parsing budget strings (`24h`, `90m`, `2.5h`, `2m`, `30s`) and the budget clock.
//!
//! The clock measures *pretraining* wall time exactly as the reference does (`pretrain.py`): it
//! starts after the model, the data and the engine are ready, it includes warm-up (the first,
//! slow steps) and intermediate checkpoints, and training stops as soon as the elapsed time
//! exceeds the budget. Device-hours are wall hours × number of devices (GPU-hours on CUDA).
//! On resume the elapsed time of the interrupted run is carried over.
use crate::error::Error;
use anyhow::Result;
use std::time::{Duration, Instant};

/// Largest budget accepted, in device-hours (about 11 years of one device). Bounded at parse
/// time so that every duration derived from a budget fits a `std::time::Duration`.
pub const MAX_BUDGET_HOURS: f64 = 100_000.0;

/// Parse a budget such as `24h`, `90m`, `2.5h`, `2m`, `30s` or a bare number of hours (`24`).
/// Returns the budget in hours. Zero, negative, non-finite budgets and budgets above
/// [`MAX_BUDGET_HOURS`] are refused.
pub fn parse_budget(text: &str) -> Result<f64> {
    let t = text.trim();
    let bad = || {
        Error::input(
            format!("budget {text:?}"),
            "expected a positive number with unit h, m or s, e.g. 24h, 90m, 2.5h, 30s",
        )
    };
    let (num, per_hour) = if let Some(n) = t.strip_suffix('h') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("min") {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let n = num.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad().into());
    }
    let v: f64 = n.parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad().into());
    }
    let hours = v / per_hour;
    if hours > MAX_BUDGET_HOURS {
        return Err(Error::input(
            format!("budget {text:?}"),
            format!("is {hours:e} hours; the largest budget accepted is {MAX_BUDGET_HOURS} hours"),
        )
        .into());
    }
    Ok(hours)
}

/// Wall clock of pretraining, carried across resumes.
#[derive(Debug)]
pub struct BudgetClock {
    /// The budget in device-hours.
    budget_hours: f64,
    /// Devices the run uses (GPU count; 1 on CPU).
    devices: u32,
    /// Wall seconds spent by earlier (interrupted) runs of the same training.
    carried_s: f64,
    /// When this process started counting; `None` until [`BudgetClock::start`].
    started: Option<Instant>,
}

impl BudgetClock {
    /// A clock for `budget_hours` device-hours on `devices` devices, with `carried_s` wall
    /// seconds already used by an interrupted run (0 for a fresh run). It is not running yet.
    pub fn new(budget_hours: f64, devices: u32, carried_s: f64) -> Self {
        BudgetClock {
            budget_hours,
            devices: devices.max(1),
            carried_s,
            started: None,
        }
    }

    /// Start counting (call once model and data are ready).
    pub fn start(&mut self) {
        self.started = Some(Instant::now());
    }

    /// Wall seconds of pretraining so far, including carried-over time.
    pub fn elapsed_s(&self) -> f64 {
        self.carried_s
            + self
                .started
                .map(|s| s.elapsed().as_secs_f64())
                .unwrap_or(0.0)
    }

    /// Wall hours of pretraining so far (the reference's `elapsed_hours`, which drives the
    /// schedules).
    pub fn elapsed_hours(&self) -> f64 {
        self.elapsed_s() / 3600.0
    }

    /// Device-hours used so far: wall hours × devices.
    pub fn used_device_hours(&self) -> f64 {
        self.elapsed_hours() * self.devices as f64
    }

    /// The budget in device-hours.
    pub fn budget_hours(&self) -> f64 {
        self.budget_hours
    }

    /// Wall hours the budget allows: device-hours / devices. The schedules' time fraction is
    /// `elapsed_hours / wall_budget_hours` (the reference runs on one device).
    pub fn wall_budget_hours(&self) -> f64 {
        self.budget_hours / self.devices as f64
    }

    /// Devices counted.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// Whether the budget is spent (`elapsed > budget`, as the reference checks).
    pub fn spent(&self) -> bool {
        self.used_device_hours() > self.budget_hours
    }

    /// Budget left (zero when spent).
    pub fn left(&self) -> Duration {
        let left_s = (self.budget_hours - self.used_device_hours()) * 3600.0 / self.devices as f64;
        // Budgets are bounded at parse time; the clamp keeps a clock built from anything else
        // (a corrupt carried time, NaN) from panicking in the conversion.
        Duration::try_from_secs_f64(left_s.clamp(0.0, MAX_BUDGET_HOURS * 3600.0))
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_budgets() {
        assert_eq!(parse_budget("24h").unwrap(), 24.0);
        assert_eq!(parse_budget("24").unwrap(), 24.0);
        assert_eq!(parse_budget("90m").unwrap(), 1.5);
        assert_eq!(parse_budget("2.5h").unwrap(), 2.5);
        assert_eq!(parse_budget("2m").unwrap(), 2.0 / 60.0);
        assert_eq!(parse_budget("30s").unwrap(), 30.0 / 3600.0);
        for bad in ["", "h", "0h", "-1h", "1e3h", "abc", "2x", "nanh", "1.2.3h"] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
        // Huge budgets are refused by name at parse time (they used to panic later, in the
        // clock's Duration conversion).
        assert_eq!(parse_budget("100000h").unwrap(), MAX_BUDGET_HOURS);
        for huge in ["100000000000000000000h", "100001h", "6000001m"] {
            let e = parse_budget(huge).unwrap_err();
            assert_eq!(
                crate::error::exit_code_of(&e),
                crate::ExitCode::BadInput,
                "{huge}"
            );
            assert!(e.to_string().contains("largest budget"), "{e}");
        }
        let c = BudgetClock::new(f64::MAX, 1, 0.0);
        assert!(c.left() > Duration::ZERO);
    }

    #[test]
    fn clock_carries_time_and_counts_devices() {
        let mut c = BudgetClock::new(1.0, 2, 1800.0);
        assert!((c.elapsed_hours() - 0.5).abs() < 1e-12);
        assert!((c.used_device_hours() - 1.0).abs() < 1e-12);
        assert!(!c.spent());
        c.start();
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.spent());
        assert_eq!(c.left(), Duration::ZERO);
        assert_eq!(c.wall_budget_hours(), 0.5);
    }
}
