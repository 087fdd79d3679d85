//! `crambench sweep --launcher slurm`: one `sbatch` script with a job array.
//!
//! The script (`<sweep>/sweep.sbatch`) asks for one array task per run that is not finished
//! (`#SBATCH --array=0-N%K`, or the list of the indices still to do), writes each task's
//! output to `<sweep>/logs/<name>_%A_%a.{out,err}` (appended across requeues), asks for the
//! sweep's GPUs, time limit, partition and CPUs, and marks the job requeueable. Each task maps
//! `SLURM_ARRAY_TASK_ID` to its run and `exec`s `crambench run` with that run's arguments, so
//! Slurm's SIGTERM (a cancellation, the time limit, a preemption) reaches `crambench run`,
//! which stops with a checkpoint; the same command — a requeued task, or the next
//! `crambench sweep` that submits the unfinished runs again — continues the run.
//!
//! `crambench run` reads `SLURM_ARRAY_JOB_ID`, `SLURM_ARRAY_TASK_ID` and `SLURM_RESTART_COUNT`
//! from its environment and records them in the manifest ([`crate::train::dist::Launcher`]).
use super::Sweep;
use crate::error::Error;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The script's file name in the sweep directory.
pub const SCRIPT_FILE: &str = "sweep.sbatch";
/// Submissions recorded in the sweep directory (job id, indices, time), one JSON line each.
pub const SUBMISSIONS_FILE: &str = "submissions.jsonl";

/// Flags that override the sweep file's `[slurm]` table.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub time: Option<String>,
    pub gpus: Option<u32>,
    pub max_parallel: Option<u32>,
    /// The crambench binary each task runs (default: this one).
    pub crambench: Option<PathBuf>,
    /// `sbatch` to submit with (default: `sbatch` on PATH).
    pub sbatch: Option<PathBuf>,
}

/// Quote `s` for bash (single quotes; a single quote becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `#SBATCH` values are read up to the end of the line: refuse newlines and control characters.
fn check_line(what: &str, v: &str) -> Result<()> {
    if v.chars().any(|c| c.is_control()) || v.trim().is_empty() {
        return Err(
            Error::input(what, format!("{v:?} is empty or holds a control character")).into(),
        );
    }
    Ok(())
}

/// The `--array` value: `0-N` for a contiguous range, else a list; `%K` when limited.
pub fn array_spec(indices: &[usize], max_parallel: Option<u32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if end > start {
            format!("{start}-{end}")
        } else {
            start.to_string()
        });
        i += 1;
    }
    let mut s = parts.join(",");
    if let Some(k) = max_parallel.filter(|k| *k > 0) {
        s += &format!("%{k}");
    }
    s
}

/// The sbatch script for the runs at `indices`.
pub fn script(sweep: &Sweep, indices: &[usize], opts: &SlurmOptions) -> Result<String> {
    let cfg = &sweep.file.slurm;
    let exe = match &opts.crambench {
        Some(p) => super::absolute(p)?,
        None => std::env::current_exe().map_err(|e| Error::io("current executable", e))?,
    };
    let logs = sweep.out.join("logs");
    let name = &sweep.file.name;
    let mut s = String::from("#!/bin/bash\n");
    let mut sb = |line: String| s.push_str(&format!("#SBATCH {line}\n"));
    sb(format!("--job-name=crambench-{name}"));
    sb(format!(
        "--array={}",
        array_spec(indices, opts.max_parallel.or(cfg.max_parallel))
    ));
    // Slurm expands %A (array job id) and %a (task index); a path with spaces is fine here.
    sb(format!("--output={}/{name}_%A_%a.out", logs.display()));
    sb(format!("--error={}/{name}_%A_%a.err", logs.display()));
    sb("--open-mode=append".into());
    sb("--requeue".into());
    sb("--nodes=1".into());
    sb("--ntasks=1".into());
    if let Some(p) = opts.partition.as_ref().or(cfg.partition.as_ref()) {
        check_line("slurm.partition", p)?;
        sb(format!("--partition={p}"));
    }
    if let Some(t) = opts.time.as_ref().or(cfg.time.as_ref()) {
        check_line("slurm.time", t)?;
        sb(format!("--time={t}"));
    }
    let gpus = opts.gpus.or(cfg.gpus).unwrap_or(0);
    if gpus > 0 {
        sb(format!("--gpus={gpus}"));
    }
    if let Some(c) = cfg.cpus_per_task {
        sb(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &cfg.mem {
        check_line("slurm.mem", m)?;
        sb(format!("--mem={m}"));
    }
    if let Some(a) = &cfg.account {
        check_line("slurm.account", a)?;
        sb(format!("--account={a}"));
    }
    for (i, extra) in cfg.sbatch.iter().enumerate() {
        check_line(&format!("slurm.sbatch[{i}]"), extra)?;
        sb(extra.clone());
    }
    s += &format!(
        "# Written by `crambench sweep {}` ({} runs; sweep file sha256 {}).\n\
         # Each array task runs its own `crambench run`; rerunning one continues it.\n\
         set -euo pipefail\n\
         task=\"${{SLURM_ARRAY_TASK_ID:?not a Slurm array task}}\"\n\
         case \"$task\" in\n",
        shell_quote(&sweep.path.display().to_string()),
        sweep.runs.len(),
        &sweep.sha256[..16],
    );
    let exe_q = shell_quote(&exe.display().to_string());
    for run in &sweep.runs {
        let args: Vec<String> = sweep.run_args(run).iter().map(|a| shell_quote(a)).collect();
        s += &format!(
            "  {}) id={}; args=({}) ;;\n",
            run.index,
            shell_quote(&run.id),
            args.join(" ")
        );
    }
    s += "  *) echo \"crambench sweep: no run with index $task\" >&2; exit 2 ;;\nesac\n";
    s += &format!(
        "echo \"crambench sweep {}: task $task = run $id (job ${{SLURM_ARRAY_JOB_ID:-?}}_$task, \
         restart ${{SLURM_RESTART_COUNT:-0}}, $(hostname))\" >&2\n",
        shell_quote(name)
    );
    s += &format!("exec {exe_q} \"${{args[@]}}\"\n");
    Ok(s)
}

/// The result of [`launch`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Launched {
    pub script: PathBuf,
    /// Array indices in the script.
    pub indices: Vec<usize>,
    /// The job id `sbatch` printed (None with `--dry-run` or when nothing was left to run).
    pub job_id: Option<String>,
}

/// Write the script for the runs not finished, and submit it unless `dry_run`.
pub fn launch(sweep: &Sweep, opts: &SlurmOptions, dry_run: bool) -> Result<Launched> {
    sweep.prepare()?;
    let status = super::status::check_all(sweep);
    let indices: Vec<usize> = status
        .iter()
        .filter(|s| s.state != super::status::State::Finished)
        .map(|s| s.index)
        .collect();
    let script_path = sweep.out.join(SCRIPT_FILE);
    if indices.is_empty() {
        return Ok(Launched {
            script: script_path,
            indices,
            job_id: None,
        });
    }
    let text = script(sweep, &indices, opts)?;
    let logs = sweep.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    crate::io::write_atomic(&script_path, text.as_bytes(), Some(0o755))?;
    if dry_run {
        return Ok(Launched {
            script: script_path,
            indices,
            job_id: None,
        });
    }
    let job_id = submit(&script_path, opts.sbatch.as_deref())?;
    let line = serde_json::json!({
        "job_id": job_id,
        "indices": indices,
        "submitted": crate::manifest::statement::now_rfc3339(),
        "script_sha256": crate::provenance::hash::sha256_hex(text.as_bytes()),
    });
    let log = sweep.out.join(SUBMISSIONS_FILE);
    let mut old = std::fs::read(&log).unwrap_or_default();
    old.extend_from_slice(format!("{line}\n").as_bytes());
    crate::io::write_atomic(&log, &old, None)?;
    Ok(Launched {
        script: script_path,
        indices,
        job_id: Some(job_id),
    })
}

/// `sbatch --parsable SCRIPT`; returns the job id.
pub fn submit(script: &Path, sbatch: Option<&Path>) -> Result<String> {
    let prog = sbatch.unwrap_or(Path::new("sbatch"));
    let out = Command::new(prog)
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| Error::Io {
            path: prog.display().to_string(),
            source: std::io::Error::new(
                e.kind(),
                format!(
                    "{e}: cannot run sbatch (is Slurm installed here? `--dry-run` writes the \
                         script only)"
                ),
            ),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(Error::Refused(format!(
            "sbatch refused {}: {}",
            script.display(),
            stderr.trim()
        ))
        .into());
    }
    // --parsable prints `jobid` or `jobid;cluster`.
    let id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            Error::Check(format!("sbatch printed {:?}, not a job id", stdout.trim())).into(),
        );
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs() {
        assert_eq!(array_spec(&[0, 1, 2, 3], Some(2)), "0-3%2");
        assert_eq!(array_spec(&[1, 3, 4, 5, 9], None), "1,3-5,9");
        assert_eq!(array_spec(&[7], Some(0)), "7");
    }

    #[test]
    fn quoting_survives_bash() {
        for s in ["plain", "with space", "it's", "$HOME", "a\"b", "`x`", ""] {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn the_script_maps_each_task_to_its_run() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.toml"), "name = \"a\"\n").unwrap();
        let f = d.path().join("s.toml");
        std::fs::write(
            &f,
            "name = \"s\"\nrecipes = [\"a.toml\"]\nseeds = [1, 2, 3]\nbudgets = [\"5s\"]\n\
             [slurm]\npartition = \"gpu\"\ntime = \"01:00:00\"\ngpus = 2\nmax_parallel = 2\n\
             [run]\ndevices = 2\n",
        )
        .unwrap();
        let s = Sweep::load(&f, Some(&d.path().join("out dir"))).unwrap();
        let text = script(
            &s,
            &[0, 2],
            &SlurmOptions {
                crambench: Some("/opt/cb/crambench".into()),
                time: Some("00:30:00".into()),
                ..Default::default()
            },
        )
        .unwrap();
        for want in [
            "#SBATCH --array=0,2%2\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --time=00:30:00\n",
            "#SBATCH --gpus=2\n",
            "_%A_%a.out\n",
            "#SBATCH --requeue\n",
            "exec /opt/cb/crambench \"${args[@]}\"\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        // Run the script's mapping with a stand-in crambench that prints its arguments.
        let fake = d.path().join("fake");
        std::fs::write(&fake, "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let text = script(
            &s,
            &[0, 1, 2],
            &SlurmOptions {
                crambench: Some(fake),
                ..Default::default()
            },
        )
        .unwrap();
        let sh = d.path().join("x.sbatch");
        std::fs::write(&sh, &text).unwrap();
        let out = std::process::Command::new("bash")
            .arg(&sh)
            .env("SLURM_ARRAY_TASK_ID", "2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(args, s.run_args(&s.runs[2]));
        assert!(
            args.iter().any(|a| a.contains("out dir/runs/a-b5s-s3")),
            "{args:?}"
        );
        let out = std::process::Command::new("bash")
            .arg(&sh)
            .env("SLURM_ARRAY_TASK_ID", "7")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        // Nothing to inject through the sweep file's #SBATCH values.
        let mut bad = s.clone();
        bad.file.slurm.partition = Some("gpu\n#SBATCH --uid=0".into());
        let e = script(&bad, &[0], &SlurmOptions::default()).unwrap_err();
        assert!(format!("{e:#}").contains("slurm.partition"), "{e:#}");
    }
}
