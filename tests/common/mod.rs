//! Helpers shared by the integration tests: run the built `crambench` binary and capture its
//! output.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn crambench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crambench"))
}

/// Run crambench with `args` in `dir`; returns (exit code, stdout, stderr).
pub fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_in_env(dir, &[], args)
}

/// Like [`run_in`], with extra environment variables.
pub fn run_in_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = crambench();
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().expect("spawn crambench");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of `.venv-interop` (made by scripts/pyenv.sh), or None. When the environment
/// variable CRAMBENCH_REQUIRE_INTEROP=1 is set (as `make test` and CI do), a missing venv fails
/// the test instead of skipping it.
pub fn interop_python() -> Option<PathBuf> {
    let py = repo_root().join(".venv-interop/bin/python");
    if py.exists() {
        return Some(py);
    }
    if std::env::var("CRAMBENCH_REQUIRE_INTEROP").as_deref() == Ok("1") {
        panic!(
            "{} is missing: run scripts/pyenv.sh (make test does)",
            py.display()
        );
    }
    eprintln!(
        "SKIPPED: {} missing; run scripts/pyenv.sh to run interop checks",
        py.display()
    );
    None
}

pub mod fake_run;
pub mod hub_server;
