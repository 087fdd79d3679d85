//! Where each run of a sweep stands, from its run directory alone.
//!
//! A run is **finished** when every stage of `crambench run` is recorded in its `run.json`, the
//! outputs of every stage still have their recorded digests (the run's own check, the one
//! `crambench run` makes before reusing a stage: [`crate::run::state::check_outputs`]), and the
//! signed manifest's subjects verify ([`crate::audit::audit`], digests only). It is **failed**
//! when one of those checks fails or its directory is damaged, **running** while a
//! `crambench run` holds its lock, **incomplete** when it started and stopped before the end
//! (a signal, a crash, a cancelled Slurm task: rerunning continues it), and **missing** when its
//! directory does not exist.
use super::{PlannedRun, Sweep};
use crate::run::state::{self, RunState};
use serde::Serialize;
use std::path::Path;

/// The state of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Finished,
    Running,
    Incomplete,
    Failed,
    Missing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Finished => "finished",
            State::Running => "running",
            State::Incomplete => "incomplete",
            State::Failed => "failed",
            State::Missing => "missing",
        }
    }
}

/// One run's state and what was found.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub index: usize,
    pub id: String,
    pub group: String,
    pub seed: u64,
    pub state: State,
    /// Stages recorded, of [`state::STAGES`].
    pub stages_done: usize,
    /// `crambench run` invocations recorded (restarts + 1).
    pub invocations: usize,
    /// Why it failed, or where it stopped.
    pub detail: String,
    /// The run's signed envelope (finished runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope: Option<std::path::PathBuf>,
    /// SHA-256 of the signed statement (the envelope's payload), for finished runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// The manifest's aggregate (rule, percent points), for finished runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<(String, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_mlm_loss: Option<f64>,
}

fn held(dir: &Path) -> bool {
    let lock = dir.join(crate::run::LOCK_FILE);
    if !lock.exists() {
        return false;
    }
    // A shared, non-blocking flock on the lock file (opened read-only, nothing written) fails
    // only while a `crambench run` holds its exclusive lock.
    let Ok(f) = std::fs::File::open(&lock) else {
        return false;
    };
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this function owns; released when `f` closes.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// Check one run (see the module doc).
pub fn check_run(run: &PlannedRun) -> RunStatus {
    check_run_trusting(run, None)
}

/// [`check_run`], and with `trusted` keys a finished run's envelope must also verify under
/// them (else the run is failed): what `sweep collect` summarises.
pub fn check_run_trusting(
    run: &PlannedRun,
    trusted: Option<&[crate::manifest::keys::PublicKey]>,
) -> RunStatus {
    let mut s = RunStatus {
        index: run.index,
        id: run.id.clone(),
        group: run.group.clone(),
        seed: run.seed,
        state: State::Missing,
        stages_done: 0,
        invocations: 0,
        detail: String::new(),
        envelope: None,
        manifest_sha256: None,
        aggregate: None,
        final_mlm_loss: None,
    };
    let dir = &run.dir;
    if !dir.exists() {
        s.detail = format!("{} does not exist", dir.display());
        return s;
    }
    let running = held(dir);
    let st = match RunState::load(dir) {
        Ok(Some(st)) => st,
        Ok(None) => {
            s.state = if running {
                State::Running
            } else {
                State::Incomplete
            };
            s.detail = "started; no run.json yet".into();
            return s;
        }
        Err(e) => {
            s.state = State::Failed;
            s.detail = format!("{e:#}");
            return s;
        }
    };
    s.invocations = st.invocations.len();
    s.stages_done = state::STAGES
        .iter()
        .take_while(|k| st.stage(**k).is_some())
        .count();
    if st.master_seed != run.seed {
        s.state = State::Failed;
        s.detail = format!(
            "run.json has master seed {}, not the sweep's {}",
            st.master_seed, run.seed
        );
        return s;
    }
    // The run's own verification of every completed stage.
    for stage in &state::STAGES[..s.stages_done] {
        let rec = st.stage(*stage).expect("counted above");
        match state::check_outputs(dir, rec) {
            Ok(None) => {}
            Ok(Some((file, found))) => {
                s.state = State::Failed;
                s.detail = format!("output {file} of stage `{stage}` changed ({found})");
                return s;
            }
            Err(e) => {
                s.state = State::Failed;
                s.detail = format!("stage `{stage}`: {e:#}");
                return s;
            }
        }
    }
    if s.stages_done < state::STAGES.len() {
        s.state = if running {
            State::Running
        } else {
            State::Incomplete
        };
        s.detail = format!(
            "{} of {} stages done; next: {}",
            s.stages_done,
            state::STAGES.len(),
            state::STAGES[s.stages_done]
        );
        return s;
    }
    // The signed manifest and what it vouches for.
    let record = match crate::record::RunRecord::open(dir) {
        Ok(r) => r,
        Err(e) => {
            s.state = State::Failed;
            s.detail = format!("{e:#}");
            return s;
        }
    };
    if !record.signed() {
        s.state = State::Failed;
        s.detail = format!("{} is missing or unsigned", crate::record::ENVELOPE_FILE);
        return s;
    }
    let statement = crate::io::read_limited(&dir.join(crate::record::STATEMENT_FILE), 64 << 20);
    if statement.ok().as_deref() != Some(record.payload.as_slice()) {
        s.state = State::Failed;
        s.detail = format!(
            "{} is not the statement {} signs",
            crate::record::STATEMENT_FILE,
            crate::record::ENVELOPE_FILE
        );
        return s;
    }
    let audit = crate::audit::audit(
        &record,
        &crate::audit::Options {
            digests_only: true,
            ..Default::default()
        },
        &mut crate::audit::GoldCache::default(),
    );
    if let Some(bad) = audit.failures().next() {
        s.state = State::Failed;
        s.detail = format!("{} {}: {}", bad.status.as_str(), bad.name, bad.detail);
        return s;
    }
    if let Some(Err(e)) = trusted.map(|keys| record.verify(keys, 1)) {
        s.state = State::Failed;
        s.detail = format!("{e:#}");
        return s;
    }
    s.state = State::Finished;
    s.detail = "outputs verified against the signed manifest".into();
    s.envelope = Some(dir.join(crate::record::ENVELOPE_FILE));
    s.manifest_sha256 = Some(crate::provenance::hash::sha256_hex(&record.payload));
    s.aggregate = record.aggregate().map(|(r, v)| (r.to_string(), v));
    s.final_mlm_loss = record
        .predicate
        .pretraining
        .as_ref()
        .and_then(|p| p.final_mlm_loss);
    s
}

/// Every run of `sweep`, in index order.
pub fn check_all(sweep: &Sweep) -> Vec<RunStatus> {
    check_all_trusting(sweep, None)
}

/// Every run of `sweep`, in index order, checked by [`check_run_trusting`].
pub fn check_all_trusting(
    sweep: &Sweep,
    trusted: Option<&[crate::manifest::keys::PublicKey]>,
) -> Vec<RunStatus> {
    sweep
        .runs
        .iter()
        .map(|r| check_run_trusting(r, trusted))
        .collect()
}

/// Counts per state, for one line.
pub fn counts(all: &[RunStatus]) -> String {
    let mut parts = Vec::new();
    for st in [
        State::Finished,
        State::Running,
        State::Incomplete,
        State::Failed,
        State::Missing,
    ] {
        let n = all.iter().filter(|s| s.state == st).count();
        if n > 0 {
            parts.push(format!("{n} {}", st.as_str()));
        }
    }
    format!("{} runs: {}", all.len(), parts.join(", "))
}

/// One line per run, for people.
pub fn table(all: &[RunStatus]) -> String {
    let mut t = String::new();
    for s in all {
        let agg = s
            .aggregate
            .as_ref()
            .map(|(r, v)| format!(" {r} {v:.2}"))
            .unwrap_or_default();
        t += &format!(
            "{:>4} {:<32} {:<10} {}{agg}\n",
            s.index,
            s.id,
            s.state.as_str(),
            s.detail
        );
    }
    t += &counts(all);
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_run_directory_is_running_while_its_lock_is_held() {
        let d = tempfile::tempdir().unwrap();
        let lock = d.path().join(crate::run::LOCK_FILE);
        assert!(!super::held(d.path()));
        let l = crate::io::Lock::acquire(&lock, "run directory").unwrap();
        let before = std::fs::read(&lock).unwrap();
        assert!(super::held(d.path()));
        assert_eq!(
            std::fs::read(&lock).unwrap(),
            before,
            "probing writes nothing"
        );
        drop(l);
        // A process another test thread forks at this moment holds the inherited descriptor
        // (and so the lock) until its exec closes it: wait for that, a few milliseconds.
        let mut released = false;
        for _ in 0..200 {
            if !super::held(d.path()) {
                released = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(released);
    }
}
