//! Build script: records the rustc version and the git commit the binary was built from, so a
//! fingerprint can name them even where the source tree is gone (e.g. a binary copied to a GPU
//! machine).
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Some(v) = run(&rustc, &["--version"]) {
        println!("cargo:rustc-env=CRAMBENCH_RUSTC_VERSION={v}");
    }
    if let Some(commit) = run("git", &["rev-parse", "HEAD"]) {
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        let suffix = if dirty { "-dirty" } else { "" };
        println!("cargo:rustc-env=CRAMBENCH_BUILD_GIT={commit}{suffix}");
    }
    if let Ok(target) = std::env::var("TARGET") {
        println!("cargo:rustc-env=CRAMBENCH_TARGET={target}");
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=harness/build.rs");
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
