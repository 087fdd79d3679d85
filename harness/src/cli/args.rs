//! Argument groups shared by several commands, so that a flag name means one thing everywhere
//! and is parsed by one grammar: `--device`, `--seed`, `--budget`, `--json`, `--trust`,
//! `--data-dir`, `--glue-data`. Commands `#[command(flatten)]` the groups they take.
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `--device`: the one device grammar of every command.
#[derive(Args, Clone, Debug, Default)]
pub struct DeviceArg {
    /// Device to compute on: cpu, cuda (= cuda:0), cuda:N, or auto (the default: cuda:0 when
    /// CUDA is available, else cpu).
    #[arg(long, value_name = "DEVICE", value_parser = parse_device)]
    pub device: Option<DeviceChoice>,
}

/// A parsed `--device` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

fn parse_device(s: &str) -> std::result::Result<DeviceChoice, String> {
    match s {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| format!("{s:?}: expected cpu, cuda, cuda:N or auto")),
    }
}

impl DeviceArg {
    /// The tch device (auto: CUDA when available). Whether the device exists is checked by
    /// [`crambench::run::preflight::check_device`] where a command needs it.
    pub fn resolve(&self) -> tch::Device {
        match self.device.unwrap_or(DeviceChoice::Auto) {
            DeviceChoice::Auto => tch::Device::cuda_if_available(),
            DeviceChoice::Cpu => tch::Device::Cpu,
            DeviceChoice::Cuda(i) => tch::Device::Cuda(i),
        }
    }
}

/// `--seed`: the master seed every other seed of a command is derived from.
#[derive(Args, Clone, Debug, Default)]
pub struct SeedArg {
    /// Master seed (0 ..= 2^53-1) from which every seed is derived (see `crambench seeds`);
    /// default: drawn from the OS and recorded (a resumed run keeps its own).
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,
}

/// `--budget`: the pretraining budget.
#[derive(Args, Clone, Debug, Default)]
pub struct BudgetArg {
    /// Pretraining budget in device time (`30s`, `90m`, `2.5h`, `24h`); overrides the recipe's
    /// `train.budget` and is recorded as part of the run's identity.
    #[arg(long, value_name = "TIME")]
    pub budget: Option<String>,
}

/// `--json`: the one output switch.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct JsonArg {
    /// Print the result as JSON on stdout instead of a table (progress stays on stderr).
    #[arg(long = "json")]
    pub enabled: bool,
}

impl JsonArg {
    /// Print `value` as JSON, or `table()` for people.
    pub fn emit<T: serde::Serialize>(
        &self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> Result<()> {
        let text = if self.enabled {
            super::json_text(value)?
        } else {
            table()
        };
        super::print(&text)
    }
}

/// `--trust`: the public keys a command trusts.
#[derive(Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Trusted public key: a PEM file, or a directory of .pub/.pem files; repeatable.
    #[arg(long = "trust", value_name = "PUB")]
    pub trust: Vec<PathBuf>,
}

impl TrustArgs {
    /// Load the keys; `legacy` are values of an older flag name (`what`) that meant the same.
    pub fn load(
        &self,
        legacy: &[PathBuf],
        what: &str,
    ) -> Result<Vec<crambench::manifest::keys::PublicKey>> {
        let all: Vec<PathBuf> = self.trust.iter().chain(legacy).cloned().collect();
        crambench::manifest::keys::load_trusted(&all, what)
    }

    /// The paths given (this flag and an older name's).
    pub fn paths(&self, legacy: &[PathBuf]) -> Vec<PathBuf> {
        self.trust.iter().chain(legacy).cloned().collect()
    }
}

/// `--data-dir`: the dataset cache.
#[derive(Args, Clone, Debug, Default)]
pub struct DataDirArg {
    /// Dataset cache, where prepared datasets live (default: $CRAMBENCH_DATA_DIR, else
    /// ./data-cache).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// The cache directory in effect.
    pub fn root(&self) -> PathBuf {
        crambench::data::prepare::data_root(self.data_dir.clone())
    }
}

/// `--glue-data`: the GLUE data root.
#[derive(Args, Clone, Debug, Default)]
pub struct GlueDataArg {
    /// GLUE data: a directory of download_glue_data.py TSVs or a nyu-mll/glue Parquet snapshot
    /// (its dev files also give the gold labels when predictions are re-scored); `run` and
    /// `data lock` also take `hf:owner/name[@revision]`, resolved through the hub cache and lock.
    #[arg(long, value_name = "DIR")]
    pub glue_data: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_grammar() {
        assert_eq!(parse_device("cpu"), Ok(DeviceChoice::Cpu));
        assert_eq!(parse_device("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(parse_device("auto"), Ok(DeviceChoice::Auto));
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }
}
