//! Command groups of the `crambench` binary, one file per area; each defines its clap
//! arguments and calls into the library. The helpers below are what every command shares:
//! printing that respects pipes, JSON text, signal handling and the `--device` choice.
use anyhow::{Context, Result};
use crambench::ExitCode;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// `println!` for command output: through [`print`], so a closed pipe ends quietly (exit 0)
/// instead of panicking. Used with `?` inside functions returning `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::print(&format!("{}\n", format_args!($($arg)*)))?
    };
}

/// `print!` through [`print`] (see [`outln!`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print(&format!($($arg)*))?
    };
}

pub mod bench_data;
pub mod bench_optim;
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

/// A panic anywhere (any thread) is a bug in crambench: print one line naming it and what to
/// report, then exit 70 ([`ExitCode::Internal`], as the README documents) instead of Rust's
/// default 101 with a backtrace. `RUST_BACKTRACE=1` still adds the backtrace. A write to a
/// closed stdout that panicked (a stray `println!`) is the reader going away, not a bug: exit 0.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if crambench::io::panics_contained() {
            // A third-party decoder's panic that the library turns into bad input.
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                default(info);
            }
            return;
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(ExitCode::Ok as i32);
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "crambench: internal error (a bug in crambench {}): {}{at}; please report it to \
             the crambench maintainers with the command line and this message (RUST_BACKTRACE=1 \
             adds a backtrace)",
            crambench::VERSION,
            msg.replace('\n', " ")
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        std::process::exit(ExitCode::Internal as i32);
    }));
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
