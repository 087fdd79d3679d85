//! `crambench run RECIPE`: one command from a recipe to a signed manifest and its report.
//!
//! Stages, in order, each recorded in `run.json` with the digests of what it wrote
//! ([`state`]):
//!
//! 1. **fingerprint** — this machine (`fingerprint.json`); its hardware class pins the run.
//! 2. **data** — `data prepare` into the content-addressed dataset cache (reused when the
//!    dataset with that content key already exists).
//! 3. **pretrain** — the budgeted pretraining (`pretrain/`); interrupted, it resumes at its last
//!    checkpoint with the budget used so far intact.
//! 4. **glue** — every task and trial of the recipe's `[glue]` table, written to
//!    `glue.partial/` and renamed to `glue/` when complete.
//! 5. **manifest** — the in-toto Statement (`manifest.json`, RFC 8785), schema-checked.
//! 6. **sign** — the DSSE envelope (`manifest.dsse.json`) signed with `--key`, or with the
//!    user's default key (created on first use, announced on stderr).
//! 7. **report** — `report.md` and `report.html` beside the manifest.
//!
//! Rerunning the same command continues at the first incomplete stage. A run directory made
//! from another recipe (or another `--budget`) or on another hardware class is refused (exit 4)
//! unless `--force`; every check `--force` overrides is recorded in `run.json` and in the
//! manifest written after it (`predicate.run.forced`). Another `--seed` is always refused. A completed stage whose outputs no longer match their
//! recorded digests is an error (exit 1) naming the file; with `--force` that stage and the ones
//! after it are redone.
pub mod assemble;
pub mod preflight;
pub mod state;

use crate::data::{self, config::DataConfig, PackedDataset};
use crate::error::Error;
use crate::glue::{config::GlueConfig, finetune, tasks::Task};
use crate::manifest::statement::now_rfc3339;
use crate::provenance::{fingerprint, seeds};
use crate::recipe::Recipe;
use crate::train::{pretrain_recipe, PretrainOptions};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use state::{RunState, StageRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

/// The lock file of a run directory ([`crate::io::Lock`]): held by the `crambench run` working
/// in it.
pub const LOCK_FILE: &str = ".crambench.lock";

/// Options of `crambench run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub recipe: PathBuf,
    /// Parent of run directories; the run lives in `<out_root>/<recipe name>/`.
    pub out_root: PathBuf,
    /// Override of `train.budget` (part of the recipe's identity).
    pub budget: Option<String>,
    /// Private key to sign with; default: the user's key (see [`keys::signing_key_or_default`]).
    pub key: Option<PathBuf>,
    /// Override the recipe / seed / hardware-class / damaged-stage checks (recorded).
    pub force: bool,
    /// Master seed for a new run (default: drawn from the OS).
    pub seed: Option<u64>,
    pub device: Device,
    /// Dataset cache (content-addressed datasets live in `<data_root>/<name>/`).
    pub data_root: PathBuf,
    /// GLUE data root (for GLUE tasks; demo tasks need none).
    pub glue_data: Option<PathBuf>,
    /// Data-preparation threads (default: all cores).
    pub threads: Option<usize>,
    /// Record host identifiers in the fingerprint.
    pub include_host: bool,
    /// Progress on stderr.
    pub progress: bool,
    /// Set by signal handlers: pretraining stops with a checkpoint, the run stops after it.
    pub stop: Arc<AtomicBool>,
}

/// What happened to one stage in this invocation.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: String,
    /// `ran`, `reused` (complete before this invocation, outputs verified) or `stopped`.
    pub status: String,
    pub seconds: f64,
    pub detail: String,
}

/// The result of `crambench run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub dir: PathBuf,
    /// All stages done (false when a signal stopped pretraining).
    pub complete: bool,
    pub stages: Vec<StageReport>,
    pub manifest: PathBuf,
    pub envelope: PathBuf,
    pub report_markdown: PathBuf,
    pub report_html: PathBuf,
    /// The signer's key id, private key path, public key path (if beside it), and whether the
    /// key was created by this invocation.
    pub keyid: Option<String>,
    pub signing_key: Option<PathBuf>,
    pub public_key: Option<PathBuf>,
    pub key_created: bool,
    /// Headline numbers from the manifest.
    pub aggregate: Option<Value>,
    pub final_mlm_loss: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub used_device_hours: Option<f64>,
    /// The aggregate's 95% bootstrap interval (percent points).
    pub aggregate_ci95: Option<Value>,
    /// One line per control and set: how far the run is above it, with its interval.
    pub controls: Vec<String>,
}

/// The resolved recipe recorded in the manifest (`predicate.recipe.resolved`): every section
/// with its defaults filled in, the budget override applied.
pub fn resolve_recipe(recipe: &Recipe, budget: Option<&str>) -> Result<Value> {
    let data_cfg: DataConfig = recipe.section("data")?;
    // The data table's own bounds first, so that its values are reported as `data.*`.
    data_cfg.validate(&recipe.path.display().to_string())?;
    let origin = format!("{}: data.", recipe.path.display());
    let (_, _, pre) = crate::train::run::resolved(
        recipe,
        budget,
        Some((
            data_cfg.seq_len as usize,
            data_cfg.vocab_size as usize,
            origin.as_str(),
        )),
    )?;
    // The recipe says arch.vocab_size = data.vocab_size and train.seq_len = data.seq_len:
    // a recipe that disagrees with itself is refused, never silently corrected.
    let (arch, train, _) = crate::train::run::resolved(recipe, budget, None)?;
    for (field, recipe_value, data_field, data_value) in [
        (
            "arch.vocab_size",
            arch.vocab_size,
            "data.vocab_size",
            data_cfg.vocab_size as i64,
        ),
        (
            "train.seq_len",
            train.seq_len as i64,
            "data.seq_len",
            data_cfg.seq_len as i64,
        ),
    ] {
        if recipe_value != data_value {
            return Err(Error::input(
                format!("{}: {field}", recipe.path.display()),
                format!(
                    "is {recipe_value}, but {data_field} is {data_value}: they must be equal (the \
                     model reads the data's tokens); set {field} = {data_value} in the recipe"
                ),
            )
            .into());
        }
    }
    let glue = GlueConfig::from_recipe(recipe)?;
    let description = recipe
        .table
        .get("description")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    Ok(json!({
        "name": recipe.name(),
        "description": description,
        "arch": pre["arch"],
        "train": pre["train"],
        "data": serde_json::to_value(&data_cfg)?,
        "glue": serde_json::to_value(&glue)?,
    }))
}

fn stderr_line(progress: bool, s: &str) {
    if progress {
        eprintln!("{s}");
    }
}

/// Run (or continue) the pipeline.
pub fn run(opts: &RunOptions) -> Result<RunOutcome> {
    let recipe = Recipe::load(&opts.recipe)?;
    if !recipe.has_section("data") {
        return Err(Error::input(
            opts.recipe.display(),
            "`crambench run` needs a [data] table (the corpus to pretrain on)",
        )
        .into());
    }
    let resolved = resolve_recipe(&recipe, opts.budget.as_deref())?;
    // Everything the whole run needs, checked before the first long stage.
    let pf = preflight::check(&recipe, opts)?;
    stderr_line(
        opts.progress,
        &format!(
            "preflight: recipe, data sources ({}), GLUE data for {} task(s), device, key and \
             output checked; the run writes about {}",
            preflight::human_bytes(pf.corpus_bytes),
            pf.tasks.len(),
            preflight::human_bytes(pf.estimated_write_bytes)
        ),
    );
    let name = recipe.name();
    let recipe_sha256 = crate::recipe::resolved_sha256(&resolved)?;
    let dir = opts.out_root.join(&name);

    // This machine, now.
    let fp = fingerprint::collect(&fingerprint::Options {
        include_host: opts.include_host,
        ..Default::default()
    });
    let now = now_rfc3339();

    // One process at a time in a run directory; what a killed one left is removed under the
    // lock (temporaries only: never a completed output).
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _lock = crate::io::Lock::acquire(
        &dir.join(LOCK_FILE),
        &format!("run directory {}", dir.display()),
    )?;
    let mut st = open_state(opts, &dir, &name, &recipe_sha256, &fp.hardware_class, &now)?;
    // Only now that the directory is known to be this run's.
    for p in crate::io::remove_stale(&dir, &|n| n.starts_with(".tmp-ckpt-")) {
        stderr_line(
            opts.progress,
            &format!("removed {} (left by an interrupted run)", p.display()),
        );
    }
    st.invocations.push(state::Invocation {
        started: now.clone(),
        hardware_class: fp.hardware_class.clone(),
        crambench_version: crate::VERSION.into(),
    });
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    st.save(&dir)?;

    let mut reports = Vec::new();
    // Stages complete before this invocation: verify their outputs.
    for stage in state::STAGES {
        let Some(rec) = st.stage(stage).cloned() else {
            break;
        };
        if let Some((file, found)) = state::check_outputs(&dir, &rec)? {
            if !opts.force {
                return Err(Error::Check(format!(
                    "{}: output {file} of the completed stage `{stage}` changed ({found}); \
                     the run directory was modified after the fact. Rerun with --force to redo \
                     `{stage}` and the stages after it",
                    dir.display()
                ))
                .into());
            }
            st.forced.push(state::Forced {
                what: format!("stage {stage}: output {file} changed; stage redone"),
                recorded: rec.outputs.get(&file).cloned().unwrap_or_default(),
                now: found,
                at: now.clone(),
            });
            st.invalidate_from(stage);
            st.save(&dir)?;
            break;
        }
        reports.push(StageReport {
            stage: stage.into(),
            status: "reused".into(),
            seconds: rec.seconds,
            detail: "complete earlier; outputs verified".into(),
        });
    }

    let mut ctx = Ctx {
        opts,
        recipe: &recipe,
        resolved: &resolved,
        recipe_sha256: &recipe_sha256,
        dir: &dir,
        st,
        fingerprint: serde_json::to_value(&fp)?,
    };
    let mut key_info = KeyInfo::default();
    let mut energy = crate::provenance::energy::EnergyMeter::for_device(opts.device);
    for stage in state::STAGES {
        if ctx.st.stage(stage).is_some() {
            continue;
        }
        stderr_line(opts.progress, &format!("== {stage}"));
        let t = Instant::now();
        let phase = energy.start(stage);
        let result = match stage {
            "fingerprint" => ctx.stage_fingerprint(),
            "data" => ctx.stage_data(),
            "pretrain" => ctx.stage_pretrain(),
            "glue" => ctx.stage_glue(),
            "manifest" => ctx.stage_manifest(),
            "sign" => ctx.stage_sign(&mut key_info),
            "report" => ctx.stage_report(),
            _ => unreachable!("stage list is fixed"),
        }
        .with_context(|| format!("stage `{stage}` of {}", dir.display()))?;
        let seconds = t.elapsed().as_secs_f64();
        let kwh = energy.stop(phase);
        match result {
            StageResult::Done {
                outputs,
                mut info,
                detail,
                seconds: s,
            } => {
                let seconds = s.unwrap_or(seconds);
                if let Some(o) = info.as_object_mut() {
                    // GPU energy of this stage in this invocation (crate::provenance::energy).
                    o.insert("energy".into(), stage_energy(&energy, kwh));
                }
                let mut recorded = BTreeMap::new();
                for key in outputs {
                    let d = state::digest_of(&state::output_path(&dir, &key))?;
                    recorded.insert(key, d);
                }
                ctx.st.stages.insert(
                    stage.into(),
                    StageRecord {
                        completed: now_rfc3339(),
                        seconds,
                        outputs: recorded,
                        info,
                    },
                );
                ctx.st.save(&dir)?;
                reports.push(StageReport {
                    stage: stage.into(),
                    status: "ran".into(),
                    seconds,
                    detail,
                });
            }
            StageResult::Stopped { detail } => {
                ctx.st.save(&dir)?;
                reports.push(StageReport {
                    stage: stage.into(),
                    status: "stopped".into(),
                    seconds,
                    detail,
                });
                return Ok(outcome(&dir, false, reports, key_info, None));
            }
        }
    }
    if key_info.keyid.is_none() {
        // Signed in an earlier invocation: name the signer from the envelope.
        key_info.keyid = ctx
            .st
            .stage("sign")
            .and_then(|r| r.info["keyid"].as_str().map(str::to_string));
        key_info.public_key = ctx
            .st
            .stage("sign")
            .and_then(|r| r.info["public_key"].as_str().map(PathBuf::from));
    }
    let manifest: Value = serde_json::from_slice(&crate::io::read_limited(
        &dir.join(crate::record::STATEMENT_FILE),
        64 << 20,
    )?)?;
    Ok(outcome(&dir, true, reports, key_info, Some(&manifest)))
}

#[derive(Debug, Default)]
struct KeyInfo {
    keyid: Option<String>,
    signing_key: Option<PathBuf>,
    public_key: Option<PathBuf>,
    created: bool,
}

fn outcome(
    dir: &Path,
    complete: bool,
    stages: Vec<StageReport>,
    key: KeyInfo,
    manifest: Option<&Value>,
) -> RunOutcome {
    let p = manifest.map(|m| &m["predicate"]);
    RunOutcome {
        dir: dir.to_path_buf(),
        complete,
        stages,
        manifest: dir.join(crate::record::STATEMENT_FILE),
        envelope: dir.join(crate::record::ENVELOPE_FILE),
        report_markdown: dir.join("report.md"),
        report_html: dir.join("report.html"),
        keyid: key.keyid,
        signing_key: key.signing_key,
        public_key: key.public_key,
        key_created: key.created,
        aggregate: p.map(|p| p["glue"]["aggregate"].clone()),
        final_mlm_loss: p.and_then(|p| p["pretraining"]["final_mlm_loss"].as_f64()),
        tokens_per_second: p.and_then(|p| p["pretraining"]["tokens_per_second"].as_f64()),
        used_device_hours: p.and_then(|p| p["budget"]["used_device_hours"].as_f64()),
        aggregate_ci95: p
            .map(|p| p["glue"]["uncertainty"]["aggregate"].clone())
            .filter(|v| !v.is_null()),
        controls: p
            .and_then(|p| {
                serde_json::from_value::<crate::glue::controls::Controls>(
                    p["glue"]["controls"].clone(),
                )
                .ok()
            })
            .map(|c| crate::glue::controls::summary_lines(&c))
            .unwrap_or_default(),
    }
}

/// Load `run.json` (checking it matches this invocation) or start a new one.
fn open_state(
    opts: &RunOptions,
    dir: &Path,
    name: &str,
    recipe_sha256: &str,
    hardware_class: &str,
    now: &str,
) -> Result<RunState> {
    let refuse = |what: &str, recorded: &str, now_v: &str, hint: &str| -> anyhow::Error {
        Error::Refused(format!(
            "{}: this run directory was made {what} {recorded}, not {now_v}. {hint} \
             (or pass --force to continue anyway; the override is recorded in the manifest)",
            dir.display()
        ))
        .into()
    };
    match RunState::load(dir)? {
        Some(mut st) => {
            let mut forced = Vec::new();
            if st.recipe_sha256 != recipe_sha256 {
                if !opts.force {
                    return Err(refuse(
                        "from the recipe with resolved sha256",
                        &st.recipe_sha256[..16],
                        &recipe_sha256[..16],
                        "The recipe (or --budget) changed: use another --out for a new run.",
                    ));
                }
                forced.push((
                    "recipe",
                    st.recipe_sha256.clone(),
                    recipe_sha256.to_string(),
                ));
            }
            if st.hardware_class != hardware_class {
                if !opts.force {
                    return Err(refuse(
                        "on hardware class",
                        &st.hardware_class,
                        hardware_class,
                        "A run's budget is only meaningful on one machine class.",
                    ));
                }
                forced.push((
                    "hardware class",
                    st.hardware_class.clone(),
                    hardware_class.to_string(),
                ));
            }
            if let Some(s) = opts.seed {
                if s != st.master_seed {
                    // Not overridable: every recorded seed derives from the master seed.
                    return Err(Error::Refused(format!(
                        "{}: this run directory was made with master seed {}, not {s}. A run \
                         has one master seed: use another --out for another seed",
                        dir.display(),
                        st.master_seed
                    ))
                    .into());
                }
            }
            for (what, recorded, now_v) in forced {
                st.forced.push(state::Forced {
                    what: what.into(),
                    recorded,
                    now: now_v,
                    at: now.into(),
                });
            }
            Ok(st)
        }
        None => {
            let nonempty = std::fs::read_dir(dir)
                .map(|d| d.flatten().any(|e| e.file_name() != LOCK_FILE))
                .unwrap_or(false);
            if nonempty && !opts.force {
                return Err(Error::Refused(format!(
                    "{} exists and holds no {}: not a crambench run directory; refusing to \
                     write into it (choose another --out)",
                    dir.display(),
                    state::STATE_FILE
                ))
                .into());
            }
            let seeds = seeds::Seeds::from_option(opts.seed)?;
            Ok(RunState {
                schema: state::SCHEMA.into(),
                recipe_name: name.into(),
                recipe_path: opts.recipe.display().to_string(),
                recipe_sha256: recipe_sha256.into(),
                hardware_class: hardware_class.into(),
                master_seed: seeds.master,
                master_from_os: seeds.master_from_os,
                created: now.into(),
                invocations: Vec::new(),
                forced: Vec::new(),
                stages: BTreeMap::new(),
            })
        }
    }
}

/// The outcome of one stage.
enum StageResult {
    Done {
        /// Output paths (relative to the run directory or absolute) whose digests are recorded.
        outputs: Vec<String>,
        info: Value,
        detail: String,
        /// Seconds to record instead of this invocation's wall time (pretraining, summed).
        seconds: Option<f64>,
    },
    /// Stopped by a signal; rerun to continue.
    Stopped { detail: String },
}

struct Ctx<'a> {
    opts: &'a RunOptions,
    recipe: &'a Recipe,
    resolved: &'a Value,
    recipe_sha256: &'a str,
    dir: &'a Path,
    st: RunState,
    fingerprint: Value,
}

impl Ctx<'_> {
    fn info(&self, stage: &str) -> Result<&Value> {
        self.st
            .stage(stage)
            .map(|r| &r.info)
            .ok_or_else(|| anyhow::anyhow!("internal: stage `{stage}` has not run"))
    }

    fn stage_fingerprint(&mut self) -> Result<StageResult> {
        let mut bytes = serde_json::to_vec_pretty(&self.fingerprint)?;
        bytes.push(b'\n');
        crate::io::write_atomic(&self.dir.join("fingerprint.json"), &bytes, None)?;
        let mut r = serde_json::to_vec_pretty(self.resolved)?;
        r.push(b'\n');
        crate::io::write_atomic(&self.dir.join("recipe.resolved.json"), &r, None)?;
        Ok(StageResult::Done {
            outputs: vec!["fingerprint.json".into(), "recipe.resolved.json".into()],
            info: json!({"hardware_class": self.fingerprint["hardware_class"]}),
            detail: format!(
                "hardware class {}",
                self.fingerprint["hardware_class"].as_str().unwrap_or("?")
            ),
            seconds: None,
        })
    }

    fn stage_data(&mut self) -> Result<StageResult> {
        let cfg: DataConfig = self.recipe.section("data")?;
        let mut popts = data::prepare::PrepareOptions::for_recipe(
            &self.opts.recipe,
            self.opts.data_root.clone(),
            self.opts.threads,
            self.opts.progress,
        );
        popts.stop = Some(self.opts.stop.clone());
        let p = match data::prepare(&cfg, &self.opts.recipe.display().to_string(), &popts) {
            Err(e) if e.is::<crate::error::Stopped>() => {
                return Ok(StageResult::Stopped {
                    detail: "stopped by a signal during data preparation; rerun the same \
                             command to continue"
                        .into(),
                })
            }
            r => r?,
        };
        let dir = std::fs::canonicalize(&p.dir).map_err(|e| Error::io(&p.dir, e))?;
        let manifest_file = dir.join(data::reader::MANIFEST_FILE);
        Ok(StageResult::Done {
            outputs: vec![manifest_file.display().to_string()],
            info: json!({
                "dir": dir.display().to_string(),
                "name": p.dataset.manifest().name,
                "root_digest": p.dataset.root_digest(),
                "reused": p.reused,
            }),
            detail: format!(
                "{} {} ({} blocks, root digest {})",
                if p.reused { "reused" } else { "prepared" },
                dir.display(),
                p.dataset.num_blocks(),
                &p.dataset.root_digest()[..16]
            ),
            seconds: None,
        })
    }

    fn stage_pretrain(&mut self) -> Result<StageResult> {
        let data_dir = PathBuf::from(
            self.info("data")?["dir"]
                .as_str()
                .context("run.json: data.dir")?,
        );
        let out = self.dir.join("pretrain");
        let resume = crate::train::checkpoint::load_latest(&out)?.is_some();
        if !resume && out.exists() {
            // Started before but stopped before its first checkpoint: nothing to resume. Keep
            // what it wrote (never delete) and start again.
            let mut k = 1;
            let mut aside = self.dir.join(format!("pretrain.abandoned-{k}"));
            while aside.exists() {
                k += 1;
                aside = self.dir.join(format!("pretrain.abandoned-{k}"));
            }
            std::fs::rename(&out, &aside).map_err(|e| Error::io(&out, e))?;
            stderr_line(
                self.opts.progress,
                &format!(
                    "pretraining had no checkpoint yet; its partial output moved to {}",
                    aside.display()
                ),
            );
        }
        let summary = pretrain_recipe(
            &self.opts.recipe,
            &PretrainOptions {
                budget: self.opts.budget.clone(),
                out: out.clone(),
                resume,
                seed: Some(self.st.master_seed),
                device: self.opts.device,
                progress: self.opts.progress,
                stop: self.opts.stop.clone(),
                data: crate::train::run::PretrainData::Dataset(data_dir),
                attention: None,
            },
        )?;
        if summary.stop_reason == crate::train::trainer::StopReason::Signal {
            return Ok(StageResult::Stopped {
                detail: format!(
                    "stopped by a signal after {} steps with a checkpoint; rerun the same \
                     command to continue",
                    summary.steps
                ),
            });
        }
        let mut bytes = serde_json::to_vec_pretty(&summary)?;
        bytes.push(b'\n');
        crate::io::write_atomic(&out.join("summary.json"), &bytes, None)?;
        let ckpt = summary
            .checkpoint
            .strip_prefix(self.dir)
            .unwrap_or(&summary.checkpoint)
            .display()
            .to_string();
        let seconds = summary.budget.phase_seconds.get("pretraining").copied();
        let mut pretraining = summary.predicate_pretraining();
        // The attention backend pretraining ran with (absent from the resolved recipe: auto).
        pretraining["attention"] = self.resolved["train"]
            .get("attention")
            .cloned()
            .unwrap_or_else(|| json!("auto"));
        if summary.resumed_from.is_some() {
            // The trainer's tokens/s covers only its own process; a resumed run reports the
            // throughput of the whole pretraining (tokens over counted seconds), so an
            // interruption does not look like a slowdown (or, resumed after the last step,
            // like no throughput at all).
            if let Some(s) = seconds.filter(|s| *s > 0.0) {
                pretraining["tokens_per_second"] = json!(summary.tokens_seen as f64 / s);
                pretraining["tokens_per_second_basis"] = json!("whole pretraining (resumed)");
            }
        }
        Ok(StageResult::Done {
            outputs: vec!["pretrain/summary.json".into(), ckpt.clone()],
            info: json!({
                "checkpoint": ckpt,
                "pretraining": pretraining,
                "budget": summary.predicate_budget(),
                "seeds": summary.seeds,
                "stop_reason": summary.stop_reason,
                "initial_mlm_loss": summary.initial_mlm_loss,
            }),
            detail: format!(
                "{} steps, {} tokens, MLM loss {} -> {}, {:.0} tokens/s",
                summary.steps,
                summary.tokens_seen,
                fmt_loss(summary.initial_mlm_loss),
                fmt_loss(summary.final_mlm_loss),
                summary.tokens_per_second
            ),
            seconds,
        })
    }

    fn stage_glue(&mut self) -> Result<StageResult> {
        let cfg = GlueConfig::from_recipe(self.recipe)?;
        let tasks = Task::parse_list(&cfg.tasks.join(","))?;
        let rel = self.info("pretrain")?["checkpoint"]
            .as_str()
            .context("run.json: pretrain.checkpoint")?;
        if !crate::audit::safe_rel(rel) {
            return Err(Error::input(
                format!(
                    "{}: stages.pretrain.info.checkpoint",
                    self.dir.join(state::STATE_FILE).display()
                ),
                format!("{rel:?} is not a path inside the run directory"),
            )
            .into());
        }
        let ckpt_dir = self.dir.join(rel);
        let ck = finetune::Checkpoint::load(&ckpt_dir)?;
        // An earlier invocation that stopped (a signal, a crash) left its completed trials in
        // glue.partial/trials/: they are reused when they belong to this checkpoint and
        // configuration and their predictions are intact; every other trial runs again.
        let partial = self.dir.join("glue.partial");
        std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        let res = finetune::run(
            &cfg,
            &finetune::RunOptions {
                checkpoint: &ck,
                tasks,
                data: self.opts.glue_data.as_deref(),
                out: &partial,
                master_seed: self.st.master_seed,
                device: self.opts.device,
                progress: self.opts.progress,
                stop: Some(self.opts.stop.as_ref()),
            },
        );
        let res = match res {
            Err(e) if e.is::<crate::error::Stopped>() => {
                return Ok(StageResult::Stopped {
                    detail: "stopped by a signal; completed trials are kept in glue.partial/; \
                             rerun the same command to continue"
                        .into(),
                })
            }
            r => r?,
        };
        let value = res.manifest_value()?;
        let final_dir = self.dir.join(crate::record::GLUE_DIR);
        if final_dir.exists() {
            // Left by a run whose glue stage was invalidated (--force): keep it aside.
            let aside = self
                .dir
                .join(format!("glue.replaced-{}", std::process::id()));
            std::fs::rename(&final_dir, &aside).map_err(|e| Error::io(&final_dir, e))?;
        }
        crate::io::crash_point("glue-publish");
        std::fs::rename(&partial, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        let materials: Vec<Value> = res
            .data
            .iter()
            .flat_map(|(task, src)| {
                src.files.iter().map(move |f| {
                    json!({"name": f.path, "role": format!("glue-data/{task}"),
                           "digest": {"sha256": f.sha256}, "size": f.size})
                })
            })
            .collect();
        let mut agg = res
            .aggregate
            .as_ref()
            .map(|a| format!("{} {:.2}", a.rule.name(), a.value))
            .unwrap_or_default();
        if let Some(i) = res.uncertainty.aggregate {
            agg += &format!(" [{:.2}, {:.2}]", i.lo, i.hi);
        }
        // How far the run is above its strongest control, in the stage's one line.
        let ctl = res
            .controls
            .no_pretraining
            .as_ref()
            .map(|c| ("no-pretraining", c))
            .unwrap_or(("constant", &res.controls.constant));
        if let Some(d) = &ctl.1.above {
            agg += &format!(
                "; {}",
                crate::glue::controls::above_text(d, &format!("the {} control", ctl.0))
            );
        }
        Ok(StageResult::Done {
            outputs: vec!["glue/glue.json".into(), "glue/predictions".into()],
            info: json!({
                "glue": value,
                "materials": materials,
                "seconds": res.total_finetune_seconds,
            }),
            detail: format!(
                "{} sets x {} trials, aggregate {agg}",
                res.tasks.len(),
                cfg.trials
            ),
            seconds: None,
        })
    }

    fn stage_manifest(&mut self) -> Result<StageResult> {
        let st = assemble::statement(&assemble::Inputs {
            dir: self.dir,
            recipe: self.recipe,
            resolved: self.resolved,
            recipe_sha256: self.recipe_sha256,
            state: &self.st,
        })?;
        let bytes = st.to_canonical()?;
        let problems =
            crate::manifest::schema::validate_statement(&serde_json::from_slice(&bytes)?);
        if let Some(p) = problems.first() {
            anyhow::bail!(
                "internal error: the run manifest does not match its schema at {}: {}",
                p.at,
                p.message
            );
        }
        crate::io::write_atomic(&self.dir.join(crate::record::STATEMENT_FILE), &bytes, None)?;
        Ok(StageResult::Done {
            outputs: vec![crate::record::STATEMENT_FILE.into()],
            info: json!({}),
            detail: format!(
                "{} subjects, {} materials, {} bytes",
                st.subject.len(),
                st.predicate.materials.len(),
                bytes.len()
            ),
            seconds: None,
        })
    }

    fn stage_sign(&mut self, key_info: &mut KeyInfo) -> Result<StageResult> {
        let payload =
            crate::io::read_limited(&self.dir.join(crate::record::STATEMENT_FILE), 64 << 20)?;
        let signed = crate::manifest::sign::sign_statement(
            self.opts.key.as_deref(),
            &payload,
            crate::record::STATEMENT_FILE,
        )?;
        let (env, keyid, key_path, public, created) = (
            signed.envelope,
            signed.keyid,
            signed.key_path,
            signed.public_key,
            signed.created,
        );
        let mut text = env.to_json();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        crate::io::write_atomic(
            &self.dir.join(crate::record::ENVELOPE_FILE),
            text.as_bytes(),
            None,
        )?;
        // The final checkpoint's OpenSSF model signature (what `model_signing verify key`
        // checks), in the run directory: inside the checkpoint it would change the checkpoint
        // digest the statement records. model_signing takes only ECDSA keys.
        let mut outputs = vec![crate::record::ENVELOPE_FILE.to_string()];
        let key = crate::manifest::keys::load_signing_key(&key_path)?;
        let mut model_sig = serde_json::Value::Null;
        if key.algorithm() == crate::manifest::keys::Algorithm::EcdsaP256 {
            let rel = self.info("pretrain")?["checkpoint"]
                .as_str()
                .context("run.json: pretrain.checkpoint")?
                .to_string();
            let sig_path = self.dir.join(crate::manifest::oms::SIGNATURE_FILE);
            let m = crate::manifest::oms::sign_model_to(&self.dir.join(&rel), &sig_path, &key)?;
            model_sig = json!({"checkpoint": rel, "root_digest": m.root_digest});
            outputs.push(crate::manifest::oms::SIGNATURE_FILE.into());
        } else {
            eprintln!(
                "crambench: no {} written: your key {} is {}, and model_signing verifies only \
                 ECDSA keys (`crambench keygen --algorithm ecdsa-p256` makes one)",
                crate::manifest::oms::SIGNATURE_FILE,
                key_path.display(),
                key.algorithm().as_str()
            );
        }
        // SLSA v1 provenance of the run, from the manifest, signed with the same key.
        let run_statement: Value = serde_json::from_slice(&payload)?;
        let started = self
            .st
            .invocations
            .first()
            .map(|i| i.started.clone())
            .unwrap_or_else(crate::manifest::statement::now_rfc3339);
        let slsa = crate::manifest::slsa::provenance(
            &run_statement,
            &started,
            &crate::manifest::statement::now_rfc3339(),
        )?;
        let mut slsa_env = crate::manifest::dsse::Envelope::new(
            crate::manifest::dsse::PAYLOAD_TYPE_IN_TOTO,
            &crate::manifest::jcs::to_vec(&slsa)?,
        );
        slsa_env.sign(&key, crate::manifest::slsa::ENVELOPE_FILE)?;
        crate::io::write_atomic(
            &self.dir.join(crate::manifest::slsa::ENVELOPE_FILE),
            slsa_env.to_json().as_bytes(),
            None,
        )?;
        outputs.push(crate::manifest::slsa::ENVELOPE_FILE.into());
        *key_info = KeyInfo {
            keyid: Some(keyid.clone()),
            signing_key: Some(key_path.clone()),
            public_key: public.clone(),
            created,
        };
        Ok(StageResult::Done {
            outputs,
            info: json!({
                "keyid": keyid,
                "public_key": public.map(|p| p.display().to_string()),
                "model_signature": model_sig,
            }),
            detail: format!("keyid {}", &keyid[..16]),
            seconds: None,
        })
    }

    fn stage_report(&mut self) -> Result<StageResult> {
        let record = crate::record::RunRecord::open(self.dir)?;
        let name = record.recipe_name().unwrap_or_default().to_string();
        let reference = crate::reference::default_for_recipe(&name);
        crate::report::write(&record, reference, self.dir)?;
        Ok(StageResult::Done {
            outputs: vec!["report.md".into(), "report.html".into()],
            info: json!({"reference": reference.id}),
            detail: format!("against reference row `{}`", reference.id),
            seconds: None,
        })
    }
}

/// A stage's energy as kept in `run.json` (`info.energy`): `{"kwh", "device"}`, or
/// `{"unavailable"}` with the reason. A stage stopped and completed by a later invocation
/// counts the completing invocation's energy only.
fn stage_energy(m: &crate::provenance::energy::EnergyMeter, kwh: Option<f64>) -> Value {
    let r = m.record();
    match kwh {
        Some(k) => json!({"kwh": k, "device": r.device}),
        None => json!({"unavailable": r.unavailable.last().cloned()
            .unwrap_or_else(|| "not measured".into())}),
    }
}

fn fmt_loss(l: Option<f64>) -> String {
    l.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// Open a dataset recorded by the data stage (for callers that need it).
pub fn dataset_of(st: &RunState) -> Result<PackedDataset> {
    let dir = st
        .stage("data")
        .and_then(|r| r.info["dir"].as_str())
        .context("run.json: the data stage has not run")?;
    PackedDataset::open(Path::new(dir))
}
