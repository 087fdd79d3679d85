//! The gate's thresholds. Built in: [`BUILT_IN`], the repository's `CI/gate-thresholds.toml`
//! (documented there) compiled into the binary, so `crambench gate` works from any directory.
//! A thresholds file overrides them key by key (a key it leaves out keeps its built-in value);
//! an unknown key or a value out of range is an error naming the file and the key.
use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The thresholds file used when `--thresholds` is not given and it exists, relative to the
/// working directory (a repository laid out like this one); else the built-in values.
pub const DEFAULT_PATH: &str = "CI/gate-thresholds.toml";

/// The built-in thresholds: the text of this repository's `CI/gate-thresholds.toml`.
pub const BUILT_IN: &str = include_str!("../../../CI/gate-thresholds.toml");

/// What names the built-in thresholds in messages and attestations.
pub const BUILT_IN_NAME: &str = "(built-in thresholds)";

/// Largest thresholds file read.
const LIMIT: u64 = 1 << 20;

/// Gate thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Throughput check: the candidate's pretraining tokens/s may be at most this many percent
    /// below the baseline's.
    pub throughput_max_drop_percent: f64,
    /// Loss check: the candidate's final MLM loss may be at most this much (absolute) above
    /// the baseline's.
    pub loss_max_increase: f64,
    /// Significance level of the GLUE checks (one-sided).
    pub alpha: f64,
    /// Practical-significance margin of the GLUE checks, in percent points: a drop smaller
    /// than this never fails, and the tests ask whether the drop exceeds it.
    pub glue_min_drop_points: f64,
    /// Resamples of the paired bootstrap.
    pub bootstrap_resamples: u32,
    /// Seed of the bootstrap's resampling (each check derives its own stream from it).
    pub seed: u64,
}

impl Thresholds {
    /// Read and check a thresholds file.
    pub fn load(path: &Path) -> Result<Thresholds> {
        let bytes = crate::io::read_limited(path, LIMIT)?;
        let name = path.display().to_string();
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::input(&name, format!("not UTF-8: {e}")))?;
        Thresholds::parse(text, &name)
    }

    /// The built-in thresholds ([`BUILT_IN`]).
    pub fn built_in() -> Thresholds {
        Thresholds::parse_complete(BUILT_IN, BUILT_IN_NAME).expect("built-in thresholds parse")
    }

    /// Parse a thresholds file's TOML text over the built-in values; `name` names the file in
    /// errors.
    pub fn parse(text: &str, name: &str) -> Result<Thresholds> {
        let mut table = toml_table(BUILT_IN, BUILT_IN_NAME)?;
        for (k, v) in toml_table(text, name)? {
            table.insert(k, v);
        }
        Thresholds::from_table(table, name)
    }

    /// Parse thresholds that must give every key (the built-in file itself).
    fn parse_complete(text: &str, name: &str) -> Result<Thresholds> {
        Thresholds::from_table(toml_table(text, name)?, name)
    }

    fn from_table(table: toml::Table, name: &str) -> Result<Thresholds> {
        let t: Thresholds =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let at = e.path().to_string();
                let what = if at == "." || at.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}: {at}")
                };
                Error::input(what, e.inner())
            })?;
        t.check(name)?;
        Ok(t)
    }

    fn check(&self, name: &str) -> Result<()> {
        let bad = |key: &str, msg: &str| -> anyhow::Error {
            Error::input(format!("{name}: {key}"), msg).into()
        };
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !nonneg(self.throughput_max_drop_percent) || self.throughput_max_drop_percent >= 100.0 {
            return Err(bad(
                "throughput_max_drop_percent",
                "must be a number in [0, 100)",
            ));
        }
        if !nonneg(self.loss_max_increase) {
            return Err(bad("loss_max_increase", "must be a finite number ≥ 0"));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(bad("alpha", "must be in (0, 1)"));
        }
        if !nonneg(self.glue_min_drop_points) {
            return Err(bad("glue_min_drop_points", "must be a finite number ≥ 0"));
        }
        // With B resamples the smallest p-value is 1/(B+1); it must be able to fall below α.
        if (self.bootstrap_resamples as f64 + 1.0) * self.alpha <= 1.0 {
            return Err(bad(
                "bootstrap_resamples",
                &format!(
                    "{} resamples cannot reach p < alpha = {} (need more than {})",
                    self.bootstrap_resamples,
                    self.alpha,
                    (1.0 / self.alpha - 1.0).ceil()
                ),
            ));
        }
        if self.bootstrap_resamples > 1_000_000 {
            return Err(bad("bootstrap_resamples", "at most 1000000"));
        }
        if self.seed > (1u64 << 53) - 1 {
            return Err(bad("seed", "must be ≤ 2^53 − 1 (JSON-safe)"));
        }
        Ok(())
    }
}

/// Parse TOML text into a table; syntax errors name the file and line.
fn toml_table(text: &str, name: &str) -> Result<toml::Table> {
    crate::recipe::parse_toml(text, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "throughput_max_drop_percent = 10\nloss_max_increase = 0.05\nalpha = 0.05\n\
                      glue_min_drop_points = 1.0\nbootstrap_resamples = 1000\nseed = 7\n";

    #[test]
    fn parses_and_names_bad_keys() {
        let t = Thresholds::parse(OK, "t.toml").unwrap();
        assert_eq!(t.bootstrap_resamples, 1000);
        let e = Thresholds::parse(&format!("{OK}colour = 1\n"), "t.toml").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("t.toml") && msg.contains("colour"), "{msg}");
        let e =
            Thresholds::parse(&OK.replace("alpha = 0.05", "alpha = 1.5"), "t.toml").unwrap_err();
        assert!(format!("{e:#}").contains("t.toml: alpha"));
        let e = Thresholds::parse(
            &OK.replace("bootstrap_resamples = 1000", "bootstrap_resamples = 10"),
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("bootstrap_resamples"));
        // A key the file leaves out keeps its built-in value.
        let t = Thresholds::parse(&OK.replace("seed = 7\n", ""), "t.toml").unwrap();
        assert_eq!(t.seed, Thresholds::built_in().seed);
        assert_eq!(t.bootstrap_resamples, 1000);
        let t = Thresholds::parse("alpha = 0.01\n", "t.toml").unwrap();
        assert_eq!(t.alpha, 0.01);
        assert_eq!(
            t.loss_max_increase,
            Thresholds::built_in().loss_max_increase
        );
    }

    #[test]
    fn built_in_thresholds_are_complete() {
        // Every key is in the built-in file (parse_complete would fail otherwise).
        let t = Thresholds::built_in();
        assert_eq!(t, Thresholds::parse("", "empty.toml").unwrap());
    }
}
