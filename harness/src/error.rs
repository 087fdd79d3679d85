//! Error classes and the process exit codes they map to.
//!
//! Library code returns `anyhow::Result` with context; where the *class* of a failure matters to
//! the caller (bad input versus a failed check versus an I/O fault), it puts a typed [`Error`] at
//! the root of the chain. The binary walks the chain and exits with [`ExitCode`] of the first
//! typed error it finds; anything untyped is an internal error.
use std::fmt;

/// Process exit codes, documented in the README. Stable: scripts and CI depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success; for checks, the check passed.
    Ok = 0,
    /// A check ran and failed: a signature missing, invalid or below threshold; hardware class
    /// differs; a regression.
    CheckFailed = 1,
    /// The input could not be used: malformed or truncated file, unknown field, bad argument.
    BadInput = 2,
    /// The operating system refused: read/write failure, disk full, permission denied.
    Io = 3,
    /// Refused for safety: would overwrite a key, private key readable by others.
    Refused = 4,
    /// A bug in crambench.
    Internal = 70,
    /// Stopped by SIGINT/SIGTERM before finishing (what was completed is kept; rerun the same
    /// command to continue).
    Interrupted = 130,
}

/// A long stage stopped at a signal (SIGINT/SIGTERM) between units of work it keeps (GLUE trials,
/// dataset shards). `crambench run` turns it into a cleanly stopped run (exit 0, "stopped");
/// other commands exit [`ExitCode::Interrupted`].
#[derive(Debug, thiserror::Error)]
#[error("stopped by a signal; what was completed is kept: rerun the same command to continue")]
pub struct Stopped;

/// Whether a stop flag (set by the signal handlers) is raised.
pub fn stop_requested(stop: Option<&std::sync::atomic::AtomicBool>) -> bool {
    stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
}

/// A failure with a class. Put one at the root of an `anyhow` chain; add context above it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unusable input. `what` names the file, line or field.
    #[error("{what}: {msg}")]
    Input { what: String, msg: String },
    /// An I/O failure on `path`.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A check that ran and failed.
    #[error("{0}")]
    Check(String),
    /// Refused for safety.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// Bad input in `what` (a path, `path:line`, or `path: field`).
    pub fn input(what: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Input {
            what: what.to_string(),
            msg: msg.to_string(),
        }
    }

    /// An I/O failure on `path`. A missing file is bad input, not an I/O fault.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        let path = path.as_ref().display().to_string();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::Input {
                what: path,
                msg: "no such file or directory".into(),
            }
        } else {
            Error::Io { path, source }
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Input { .. } => ExitCode::BadInput,
            Error::Io { .. } => ExitCode::Io,
            Error::Check(_) => ExitCode::CheckFailed,
            Error::Refused(_) => ExitCode::Refused,
        }
    }
}

/// The exit code for an error chain: that of the outermost typed [`Error`] in it, else
/// [`ExitCode::Io`] for a bare `std::io::Error`, else [`ExitCode::Internal`].
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|c| c.is::<Stopped>()) {
        return ExitCode::Interrupted;
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.exit_code();
        }
    }
    for cause in err.chain() {
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ExitCode::Io;
        }
    }
    ExitCode::Internal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_distinct_codes() {
        let e = anyhow::Error::new(Error::input("a.json", "bad")).context("loading");
        assert_eq!(exit_code_of(&e), ExitCode::BadInput);
        let e = anyhow::Error::new(Error::Check("sig".into()));
        assert_eq!(exit_code_of(&e), ExitCode::CheckFailed);
        let nf = std::io::Error::new(std::io::ErrorKind::NotFound, "x");
        assert_eq!(Error::io("p", nf).exit_code(), ExitCode::BadInput);
        let full = std::io::Error::other("disk full");
        assert_eq!(Error::io("p", full).exit_code(), ExitCode::Io);
        assert_eq!(exit_code_of(&anyhow::anyhow!("bug")), ExitCode::Internal);
    }
}
