//! `crambench sweep --launcher local`: the runs one after another in this process.
//!
//! A run that is finished ([`super::status::check_run`]: every stage done, outputs verified
//! against the signed manifest) is skipped; every other run is handed to `crambench run`
//! ([`crate::run::run`]) with the same options a Slurm task would pass, which continues it at
//! its first incomplete stage. A run that fails does not stop the sweep: the others still run,
//! and the sweep fails at the end naming every failed run. A signal stops the current run with
//! a checkpoint (as `crambench run` does) and the sweep after it.
use super::status::{check_run, State};
use super::Sweep;
use crate::error::Error;
use crate::run::{RunOptions, RunOutcome};
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What `crambench run` gets besides the sweep file's `[run]` table.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub device: tch::Device,
    /// `--devices` of every run (the sweep file's `run.devices` unless overridden).
    pub devices: u32,
    pub data_root: PathBuf,
    pub progress: bool,
    pub stop: Arc<AtomicBool>,
}

/// What happened to one run.
#[derive(Debug, Clone, Serialize)]
pub struct LocalResult {
    pub index: usize,
    pub id: String,
    /// `skipped` (finished before, verified), `ran`, `stopped` or `failed`.
    pub status: String,
    pub detail: String,
}

/// Run every run of `sweep` that is not finished.
pub fn run_all(sweep: &Sweep, opts: &LocalOptions) -> Result<Vec<LocalResult>> {
    sweep.prepare()?;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for run in &sweep.runs {
        if opts.stop.load(Ordering::SeqCst) {
            break;
        }
        let before = check_run(run);
        if before.state == State::Finished {
            results.push(LocalResult {
                index: run.index,
                id: run.id.clone(),
                status: "skipped".into(),
                detail: "finished earlier; outputs verified".into(),
            });
            continue;
        }
        if opts.progress {
            eprintln!(
                "== sweep {} run {}/{}: {} ({})",
                sweep.file.name,
                run.index + 1,
                sweep.runs.len(),
                run.id,
                before.state.as_str()
            );
        }
        let s = &sweep.file.run;
        let ro = RunOptions {
            recipe: run.recipe.clone(),
            out_root: run.out_root.clone(),
            budget: run.budget.clone(),
            key: s.key.as_ref().map(|k| sweep.resolve(k)),
            force: false,
            seed: Some(run.seed),
            device: opts.device,
            devices: opts.devices,
            data_root: opts.data_root.clone(),
            glue_data: s.glue_data.as_ref().map(|g| sweep.resolve(g)),
            // Each run's recipe keeps its own lock beside it (`<recipe>.lock`).
            lock: None,
            locked: false,
            delete_raw: false,
            threads: s.threads,
            include_host: false,
            progress: opts.progress,
            stop: opts.stop.clone(),
        };
        match crate::run::run(&ro) {
            Ok(RunOutcome { complete: true, .. }) => results.push(LocalResult {
                index: run.index,
                id: run.id.clone(),
                status: "ran".into(),
                detail: "complete".into(),
            }),
            Ok(_) => {
                results.push(LocalResult {
                    index: run.index,
                    id: run.id.clone(),
                    status: "stopped".into(),
                    detail: "stopped by a signal; rerun the sweep to continue".into(),
                });
                break;
            }
            Err(e) => {
                let code = crate::error::exit_code_of(&e);
                if opts.progress {
                    eprintln!("crambench: sweep run {} failed: {e:#}", run.id);
                }
                results.push(LocalResult {
                    index: run.index,
                    id: run.id.clone(),
                    status: "failed".into(),
                    detail: format!("{e:#}"),
                });
                failed.push((run.id.clone(), code, format!("{e:#}")));
            }
        }
    }
    if let Some((_, code, _)) = failed.first() {
        let list: Vec<String> = failed
            .iter()
            .map(|(id, _, m)| format!("{id}: {m}"))
            .collect();
        let msg = format!(
            "{} of {} runs of sweep {} failed:\n  {}",
            failed.len(),
            sweep.runs.len(),
            sweep.file.name,
            list.join("\n  ")
        );
        // The first failure's class decides the exit code (bad input, I/O, refusal, check).
        return Err(match code {
            crate::ExitCode::BadInput => Error::input(sweep.path.display(), msg),
            crate::ExitCode::Refused => Error::Refused(msg),
            _ => Error::Check(msg),
        }
        .into());
    }
    Ok(results)
}
