//! `crambench sweep SWEEP.toml`: many runs of `crambench run` — recipes × pretraining seeds ×
//! overrides (budget, micro-batch) — launched one after another on this machine or as one Slurm
//! job array, then checked and summarised.
//!
//! A sweep file:
//!
//! ```toml
//! name = "micro-seeds"              # an identifier: the sweep's directory name
//! recipes = ["baselines/demo-cpu.toml"]   # relative to this file
//! seeds = [1, 2, 3]                 # pretraining master seeds
//! budgets = ["2m", "5m"]            # optional --budget overrides (part of a run's identity)
//! micro_batches = [64]              # optional train.microbatch_size overrides
//! out = "sweeps/micro-seeds"        # optional, relative to this file (default: sweeps/<name>)
//!
//! [run]                             # passed to every `crambench run`
//! device = "cpu"                    # cpu, cuda, cuda:N
//! devices = 1                       # --devices: data-parallel ranks per run
//! data_dir = "data-cache"           # --data-dir (relative to this file)
//! glue_data = "glue"                # --glue-data
//! key = "keys/me.key"               # --key
//! threads = 2                       # --threads
//!
//! [slurm]                           # --launcher slurm (flags override)
//! partition = "gpu"
//! time = "24:00:00"
//! gpus = 1
//! cpus_per_task = 8
//! mem = "64G"
//! max_parallel = 4                  # the %K of --array=0-N%K
//! sbatch = ["--qos=normal"]         # extra #SBATCH lines
//! ```
//!
//! Expansion ([`expand`]) is the product recipes × budgets × micro-batches × seeds, seeds
//! innermost; each run gets a stable id made of its values
//! (`<recipe>[-b<budget>][-mb<m>]-s<seed>`, independent of the order of the lists) and the
//! output root `<out>/runs/<id>/`, so the run itself lives in `<out>/runs/<id>/<recipe name>/`.
//! A micro-batch override is a derived recipe, `<out>/recipes/<recipe>-mb<m>.toml`, that
//! `extends` the original: it changes the recipe's identity as a budget override does.
//!
//! * [`local`] — `--launcher local`: the runs one after another in this process; a run whose
//!   outputs verify ([`status::check_run`]) is skipped, any other continues where it stopped.
//! * [`slurm`] — `--launcher slurm`: one `sbatch` script with a job array over the runs not yet
//!   finished; each task `exec`s `crambench run` for its `SLURM_ARRAY_TASK_ID`, so a requeued
//!   or preempted task continues its own run.
//! * [`status`] — which runs finished (outputs verified against their signed manifest), which
//!   failed, are incomplete, running or missing.
//! * [`collect`] — the summary over pretraining seeds (median and spread of the aggregate),
//!   written as a signed in-toto statement naming every run manifest it used by digest.
pub mod collect;
pub mod local;
pub mod slurm;
pub mod status;

use crate::error::Error;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Largest sweep file read.
const SWEEP_LIMIT: u64 = 1 << 20;
/// Most runs one sweep expands to (a Slurm array is bounded by MaxArraySize, 1001 by default).
pub const MAX_RUNS: usize = 10_000;
/// The plan written into the sweep directory at every launch.
pub const PLAN_FILE: &str = "sweep.json";

/// `[run]`: options passed to every `crambench run` of the sweep.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    pub device: Option<String>,
    /// Data-parallel ranks per run (`crambench run --devices N`).
    pub devices: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub glue_data: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub threads: Option<usize>,
}

/// `[slurm]`: the job array's resources.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    /// Time limit per task in Slurm's syntax (`MM`, `HH:MM:SS`, `D-HH`).
    pub time: Option<String>,
    /// GPUs per task (`--gpus`); omitted when 0 or absent.
    pub gpus: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub mem: Option<String>,
    /// Tasks running at once (the `%K` of `--array`).
    pub max_parallel: Option<u32>,
    pub account: Option<String>,
    /// Extra `#SBATCH` options, each one line (`--qos=normal`).
    #[serde(default)]
    pub sbatch: Vec<String>,
}

/// A parsed sweep file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub recipes: Vec<PathBuf>,
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub budgets: Vec<String>,
    #[serde(default)]
    pub micro_batches: Vec<u32>,
    pub out: Option<PathBuf>,
    #[serde(default)]
    pub run: RunSettings,
    #[serde(default)]
    pub slurm: SlurmSettings,
}

/// A sweep: its file, where it lives, and its runs.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The sweep file as given.
    pub path: PathBuf,
    /// SHA-256 of the sweep file's bytes.
    pub sha256: String,
    pub file: SweepFile,
    /// The sweep directory (runs, recipes, logs, the Slurm script, the summary).
    pub out: PathBuf,
    pub runs: Vec<PlannedRun>,
}

/// One run of a sweep.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedRun {
    /// Position in the expansion (the Slurm array index).
    pub index: usize,
    /// Stable id: `<recipe>[-b<budget>][-mb<m>]-s<seed>`.
    pub id: String,
    /// The runs that differ only in their seed share this (`<recipe>[-b<budget>][-mb<m>]`).
    pub group: String,
    /// The recipe `crambench run` is given (a derived one for a micro-batch override).
    pub recipe: PathBuf,
    /// The recipe file of the sweep it came from.
    pub source_recipe: PathBuf,
    /// The recipe's `name` (the run directory's name).
    pub recipe_name: String,
    pub seed: u64,
    pub budget: Option<String>,
    pub micro_batch: Option<u32>,
    /// `--out` of the run: `<sweep>/runs/<id>`.
    pub out_root: PathBuf,
    /// The run directory: `<out_root>/<recipe_name>`.
    pub dir: PathBuf,
}

fn field(path: &Path, f: &str) -> String {
    format!("{}: {f}", path.display())
}

/// A budget as a piece of an id: `2.5h` → `2.5h`, `90m` → `90m` (identifier characters only).
fn budget_tag(b: &str) -> String {
    b.trim().to_string()
}

impl Sweep {
    /// Read `path`, check it, and expand it. `out` overrides the file's `out`.
    pub fn load(path: &Path, out: Option<&Path>) -> Result<Sweep> {
        let bytes = crate::io::read_limited(path, SWEEP_LIMIT)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::input(path.display(), format!("not UTF-8: {e}")))?;
        let table = crate::recipe::parse_toml(text, &path.display().to_string())?;
        let file: SweepFile =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let at = e.path().to_string();
                let what = if at == "." || at.is_empty() {
                    path.display().to_string()
                } else {
                    field(path, &at)
                };
                Error::input(what, e.inner())
            })?;
        crate::ident::check(field(path, "name"), &file.name)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let out = match (out, &file.out) {
            (Some(o), _) => o.to_path_buf(),
            (None, Some(o)) => base.join(o),
            (None, None) => Path::new("sweeps").join(&file.name),
        };
        let out = absolute(&out)?;
        let runs = expand(path, base, &file, &out)?;
        Ok(Sweep {
            path: path.to_path_buf(),
            sha256: crate::provenance::hash::sha256_hex(&bytes),
            file,
            out,
            runs,
        })
    }

    /// A path of the `[run]` table, relative to the sweep file.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        absolute(&base.join(p)).unwrap_or_else(|_| base.join(p))
    }

    /// Write the derived recipes of micro-batch overrides (idempotent: same content, same
    /// file) and the plan ([`PLAN_FILE`]).
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.out).map_err(|e| Error::io(&self.out, e))?;
        for r in &self.runs {
            if let Some(m) = r.micro_batch {
                let src = absolute(&r.source_recipe)?;
                let text = format!(
                    "# Written by `crambench sweep` ({}): {} with train.microbatch_size = {m}.\n\
                     extends = {}\nname = {}\n\n[train]\nmicrobatch_size = {m}\n",
                    self.file.name,
                    src.display(),
                    toml_string(&src.display().to_string()),
                    toml_string(&r.recipe_name),
                );
                if std::fs::read_to_string(&r.recipe).ok().as_deref() != Some(text.as_str()) {
                    if let Some(p) = r.recipe.parent() {
                        std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
                    }
                    crate::io::write_atomic(&r.recipe, text.as_bytes(), None)?;
                }
            }
        }
        let plan = serde_json::json!({
            "name": self.file.name,
            "sweep_file": {"path": self.path.display().to_string(), "sha256": self.sha256},
            "runs": self.runs,
        });
        let mut bytes = serde_json::to_vec_pretty(&plan)?;
        bytes.push(b'\n');
        crate::io::write_atomic(&self.out.join(PLAN_FILE), &bytes, None)
    }

    /// The arguments of `crambench run` for `run` (after the program name).
    pub fn run_args(&self, run: &PlannedRun) -> Vec<String> {
        let mut a = vec![
            "run".to_string(),
            run.recipe.display().to_string(),
            "--out".into(),
            run.out_root.display().to_string(),
            "--seed".into(),
            run.seed.to_string(),
        ];
        if let Some(b) = &run.budget {
            a.extend(["--budget".into(), b.clone()]);
        }
        let s = &self.file.run;
        if let Some(d) = &s.device {
            a.extend(["--device".into(), d.clone()]);
        }
        if let Some(n) = s.devices {
            a.extend(["--devices".into(), n.to_string()]);
        }
        if let Some(p) = &s.data_dir {
            a.extend(["--data-dir".into(), self.resolve(p).display().to_string()]);
        }
        if let Some(p) = &s.glue_data {
            a.extend(["--glue-data".into(), self.resolve(p).display().to_string()]);
        }
        if let Some(p) = &s.key {
            a.extend(["--key".into(), self.resolve(p).display().to_string()]);
        }
        if let Some(t) = s.threads {
            a.extend(["--threads".into(), t.to_string()]);
        }
        a
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `p` made absolute against the current directory (not canonicalised: it may not exist yet).
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        cwd.join(p)
    };
    // Without `.` components (`/a/./b` is `/a/b`); `..` is kept (a link may sit before it).
    Ok(full
        .components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect())
}

/// Expand a sweep file into its runs (see the module doc for the order and the ids).
pub fn expand(path: &Path, base: &Path, f: &SweepFile, out: &Path) -> Result<Vec<PlannedRun>> {
    if f.recipes.is_empty() {
        return Err(Error::input(field(path, "recipes"), "lists no recipe").into());
    }
    if f.seeds.is_empty() {
        return Err(Error::input(field(path, "seeds"), "lists no seed").into());
    }
    for (i, s) in f.seeds.iter().enumerate() {
        if *s > crate::provenance::seeds::MAX_SEED {
            return Err(Error::input(
                field(path, &format!("seeds[{i}]")),
                format!("{s} exceeds {}", crate::provenance::seeds::MAX_SEED),
            )
            .into());
        }
        if f.seeds[..i].contains(s) {
            return Err(Error::input(
                field(path, &format!("seeds[{i}]")),
                format!("seed {s} is listed twice"),
            )
            .into());
        }
    }
    for (i, b) in f.budgets.iter().enumerate() {
        crate::train::budget::parse_budget(b)
            .map_err(|e| Error::input(field(path, &format!("budgets[{i}]")), format!("{e:#}")))?;
        if !crate::ident::is_valid(&budget_tag(b)) {
            return Err(Error::input(
                field(path, &format!("budgets[{i}]")),
                format!("{b:?}: write it without spaces, e.g. \"90m\""),
            )
            .into());
        }
    }
    for (i, m) in f.micro_batches.iter().enumerate() {
        if *m == 0 {
            return Err(Error::input(
                field(path, &format!("micro_batches[{i}]")),
                "must be at least 1",
            )
            .into());
        }
    }
    if let Some(0) = f.run.devices {
        return Err(Error::input(field(path, "run.devices"), "must be at least 1").into());
    }
    let budgets: Vec<Option<&String>> = if f.budgets.is_empty() {
        vec![None]
    } else {
        f.budgets.iter().map(Some).collect()
    };
    let mbs: Vec<Option<u32>> = if f.micro_batches.is_empty() {
        vec![None]
    } else {
        f.micro_batches.iter().copied().map(Some).collect()
    };
    let total = f.recipes.len() * budgets.len() * mbs.len() * f.seeds.len();
    if total > MAX_RUNS {
        return Err(Error::input(
            path.display(),
            format!("expands to {total} runs; the limit is {MAX_RUNS}"),
        )
        .into());
    }
    let mut runs = Vec::with_capacity(total);
    let mut seen = std::collections::BTreeMap::new();
    for (ri, rpath) in f.recipes.iter().enumerate() {
        let full = absolute(&base.join(rpath))?;
        let recipe = crate::recipe::Recipe::load(&full)
            .map_err(|e| Error::input(field(path, &format!("recipes[{ri}]")), format!("{e:#}")))?;
        let name = recipe.name();
        for b in &budgets {
            for m in &mbs {
                let mut group = name.clone();
                if let Some(b) = b {
                    group += &format!("-b{}", budget_tag(b));
                }
                let (recipe_path, recipe_name) = match m {
                    Some(m) => {
                        let n = format!("{name}-mb{m}");
                        (out.join("recipes").join(format!("{n}.toml")), n)
                    }
                    None => (full.clone(), name.clone()),
                };
                if let Some(m) = m {
                    group += &format!("-mb{m}");
                }
                for seed in &f.seeds {
                    let id = format!("{group}-s{seed}");
                    crate::ident::check(field(path, "run id"), &id)?;
                    if let Some(prev) = seen.insert(id.clone(), ri) {
                        return Err(Error::input(
                            field(path, &format!("recipes[{ri}]")),
                            format!(
                                "gives run id {id} again (recipes[{prev}] has the same name); \
                                 recipes of one sweep need distinct names"
                            ),
                        )
                        .into());
                    }
                    let out_root = out.join("runs").join(&id);
                    runs.push(PlannedRun {
                        index: runs.len(),
                        dir: out_root.join(&recipe_name),
                        id,
                        group: group.clone(),
                        recipe: recipe_path.clone(),
                        source_recipe: full.clone(),
                        recipe_name: recipe_name.clone(),
                        seed: *seed,
                        budget: b.cloned(),
                        micro_batch: *m,
                        out_root,
                    });
                }
            }
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn recipe(dir: &Path, name: &str) {
        write(
            dir,
            &format!("{name}.toml"),
            &format!("name = \"{name}\"\n"),
        );
    }

    #[test]
    fn expansion_is_a_product_with_stable_ids() {
        let d = tempfile::tempdir().unwrap();
        recipe(d.path(), "a");
        recipe(d.path(), "b");
        let f = write(
            d.path(),
            "s.toml",
            "name = \"s\"\nrecipes = [\"a.toml\", \"b.toml\"]\nseeds = [3, 1]\n\
             budgets = [\"5s\", \"2m\"]\nmicro_batches = [4]\nout = \"o\"\n",
        );
        let s = Sweep::load(&f, None).unwrap();
        let ids: Vec<&str> = s.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "a-b5s-mb4-s3",
                "a-b5s-mb4-s1",
                "a-b2m-mb4-s3",
                "a-b2m-mb4-s1",
                "b-b5s-mb4-s3",
                "b-b5s-mb4-s1",
                "b-b2m-mb4-s3",
                "b-b2m-mb4-s1"
            ]
        );
        assert_eq!(s.runs[5].index, 5);
        assert_eq!(s.runs[1].group, "a-b5s-mb4");
        assert_eq!(s.out, absolute(&d.path().join("o")).unwrap());
        assert_eq!(
            s.runs[1].dir,
            s.out.join("runs/a-b5s-mb4-s1/a-mb4"),
            "the run directory is <out>/runs/<id>/<recipe name>"
        );
        // An id does not depend on the order of the lists.
        let g = write(
            d.path(),
            "t.toml",
            "name = \"s\"\nrecipes = [\"b.toml\", \"a.toml\"]\nseeds = [1, 3]\n\
             budgets = [\"2m\", \"5s\"]\nmicro_batches = [4]\nout = \"o\"\n",
        );
        let t = Sweep::load(&g, None).unwrap();
        let mut a: Vec<(String, PathBuf)> = s
            .runs
            .iter()
            .map(|r| (r.id.clone(), r.dir.clone()))
            .collect();
        let mut b: Vec<(String, PathBuf)> = t
            .runs
            .iter()
            .map(|r| (r.id.clone(), r.dir.clone()))
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // The derived recipe extends the original and overrides the micro-batch only.
        s.prepare().unwrap();
        let derived = crate::recipe::Recipe::load(&s.runs[0].recipe).unwrap();
        assert_eq!(derived.name(), "a-mb4");
        assert_eq!(
            derived.table["train"]["microbatch_size"].as_integer(),
            Some(4)
        );
        assert!(s.out.join(PLAN_FILE).is_file());
        let args = s.run_args(&s.runs[0]);
        assert_eq!(args[0], "run");
        assert!(args.windows(2).any(|w| w == ["--budget", "5s"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--seed", "3"]), "{args:?}");
    }

    #[test]
    fn bad_sweep_files_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        recipe(d.path(), "a");
        for (text, want) in [
            ("name = \"s\"\nrecipes = []\nseeds = [1]\n", "recipes"),
            (
                "name = \"s\"\nrecipes = [\"a.toml\"]\nseeds = []\n",
                "seeds",
            ),
            (
                "name = \"s\"\nrecipes = [\"a.toml\"]\nseeds = [1, 1]\n",
                "seeds[1]",
            ),
            (
                "name = \"s\"\nrecipes = [\"a.toml\"]\nseeds = [1]\nbudgets = [\"0h\"]\n",
                "budgets[0]",
            ),
            (
                "name = \"s\"\nrecipes = [\"a.toml\"]\nseeds = [1]\nmicro_batches = [0]\n",
                "micro_batches[0]",
            ),
            (
                "name = \"s\"\nrecipes = [\"nope.toml\"]\nseeds = [1]\n",
                "recipes[0]",
            ),
            (
                "name = \"../x\"\nrecipes = [\"a.toml\"]\nseeds = [1]\n",
                "name",
            ),
            (
                "name = \"s\"\nrecipes = [\"a.toml\"]\nseeds = [1]\n[slurm]\ngpu = 1\n",
                "slurm",
            ),
            (
                "name = \"s\"\nrecipes = [\"a.toml\", \"a.toml\"]\nseeds = [1]\n",
                "recipes[1]",
            ),
        ] {
            let f = write(d.path(), "s.toml", text);
            let e = Sweep::load(&f, None).unwrap_err();
            assert_eq!(
                crate::error::exit_code_of(&e),
                crate::ExitCode::BadInput,
                "{text}: {e:#}"
            );
            assert!(
                format!("{e:#}").contains(&format!("s.toml: {want}")),
                "{text}: {e:#}"
            );
        }
    }
}
