//! Command groups of the `crambench` binary, one file per area; each defines its clap
//! arguments and calls into the library. The helpers below are what every command shares:
//! printing that respects pipes, JSON text, signal handling and the `--device` choice.
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub mod bench_data;
pub mod bench_train;
pub mod compare;
pub mod data;
pub mod gate;
pub mod glue;
pub mod leaderboard;
pub mod report;
pub mod run;
pub mod submit;
pub mod train;

/// Write `text` to stdout; a closed pipe (`crambench … | head`) ends quietly.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// Pretty JSON with a trailing newline (what `--json` prints).
pub fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

/// A flag set by SIGINT or SIGTERM, for commands that stop cleanly (with a checkpoint); a
/// second signal while the first is being handled exits at once with code 130.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// `--device`: `cpu`, `cuda` or `cuda:N`; absent, CUDA when available.
pub fn device(arg: Option<&str>) -> Result<tch::Device> {
    match arg {
        Some(d) => crambench::train::run::parse_device(d),
        None => Ok(tch::Device::cuda_if_available()),
    }
}
