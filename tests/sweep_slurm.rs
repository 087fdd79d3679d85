//! `crambench sweep --launcher slurm` on a real single-node Slurm cluster (Debian's slurm-wlm:
//! munged, slurmctld and slurmd on this machine, configured and started by
//! `scripts/slurm.sh start` in a temporary directory, stopped at the end): a sweep of the tiny
//! recipe × 2 seeds on CPU finishes through one job array; a task requeued mid-run
//! (`scontrol requeue`, as a preemption does) continues its run, and so does a task cancelled
//! mid-run with `scancel` and submitted again; `sweep status` and `sweep collect` read
//! the results, and the signed summary names both run manifests by digest.
//!
//! Skipped (with a message) where Slurm cannot be installed or started, unless
//! `CRAMBENCH_REQUIRE_SLURM=1` (as `make test` sets after `scripts/slurm.sh install`).
mod common;
use serde_json::Value;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Long enough for the tiny runs on a loaded machine; only a guard against hanging forever.
const PATIENCE: Duration = Duration::from_secs(1800);

struct Slurm {
    dir: tempfile::TempDir,
}

impl Slurm {
    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn script(&self, verb: &str, port: u16) -> std::process::Output {
        Command::new("bash")
            .arg(common::repo_root().join("scripts/slurm.sh"))
            .arg(verb)
            .env("CRAMBENCH_SLURM_DIR", self.dir.path())
            .env("CRAMBENCH_SLURM_PORT", port.to_string())
            .output()
            .expect("run scripts/slurm.sh")
    }

    fn start() -> Option<Slurm> {
        let s = Slurm {
            dir: tempfile::Builder::new()
                .prefix("cb-slurm")
                .tempdir()
                .unwrap(),
        };
        let port = free_port_pair();
        let out = s.script("start", port);
        if out.status.success() {
            return Some(s);
        }
        let why = format!(
            "scripts/slurm.sh start failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if std::env::var("CRAMBENCH_REQUIRE_SLURM").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        None
    }

    /// A Slurm client command against this cluster.
    fn cmd(&self, prog: &str, args: &[&str]) -> String {
        let out = Command::new(prog)
            .args(args)
            .env("SLURM_CONF", self.conf())
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until job `id` has left the queue.
    fn wait_gone(&self, id: &str) {
        let t = Instant::now();
        while !self
            .cmd("squeue", &["-h", "-j", id, "-o", "%i"])
            .trim()
            .is_empty()
        {
            assert!(t.elapsed() < PATIENCE, "job {id} still queued");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new("scancel")
            .args(["-u", "root"])
            .env("SLURM_CONF", self.conf())
            .output();
        let _ = self.script("stop", 0);
    }
}

/// Two consecutive free TCP ports (slurmctld, slurmd).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65535 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn job_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "job")
        .nth(1)
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .trim_end_matches(':')
        .to_string()
}

/// Wait until the run in `dir` has recorded its pretraining (it is then fine-tuning).
fn wait_for_glue(dir: &Path) {
    let t = Instant::now();
    loop {
        let st = std::fs::read(dir.join("run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if st.is_some_and(|s| s["stages"].get("pretrain").is_some()) {
            return;
        }
        assert!(
            t.elapsed() < PATIENCE,
            "{} never reached its GLUE stage",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_sweep_runs_as_a_slurm_job_array_and_resumes_a_cancelled_task() {
    let Some(slurm) = Slurm::start() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let cfg = w.join("cfg");
    let conf = slurm.conf();
    let env = [
        ("CRAMBENCH_CONFIG_DIR", cfg.to_str().unwrap()),
        ("SLURM_CONF", conf.to_str().unwrap()),
    ];
    let (code, _, err) = common::run_in_env(w, &env, &["keygen", "--out", "keys", "--name", "t"]);
    assert_eq!(code, 0, "{err}");
    let recipe = common::repo_root().join("tests/fixtures/recipes/sweep-tiny.toml");
    std::fs::write(
        w.join("s.toml"),
        format!(
            "name = \"tiny\"\nrecipes = [{:?}]\nseeds = [1, 2]\nout = \"sw\"\n\
             [run]\ndevice = \"cpu\"\ndata_dir = \"dc\"\nthreads = 1\nkey = \"keys/t.key\"\n\
             [slurm]\nmax_parallel = 1\ntime = \"00:30:00\"\ncpus_per_task = 1\n",
            recipe.display().to_string()
        ),
    )
    .unwrap();
    let sw = w.join("sw");
    let status = || -> Vec<Value> {
        let (code, out, err) =
            common::run_in_env(w, &env, &["sweep", "status", "s.toml", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };

    // Submit the array: both runs.
    let (code, out, err) = common::run_in_env(w, &env, &["sweep", "s.toml", "--launcher", "slurm"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 array task(s) (0-1)"), "{out}");
    let first = job_id(&out);
    let script = std::fs::read_to_string(sw.join("sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1%1"), "{script}");

    // Requeue task 0 once it is past pretraining (in its GLUE stage), as a preemption would:
    // Slurm stops it (SIGTERM) and starts it again with SLURM_RESTART_COUNT=1.
    let run0 = sw.join("runs/sweep-tiny-s1/sweep-tiny");
    let run1 = sw.join("runs/sweep-tiny-s2/sweep-tiny");
    wait_for_glue(&run0);
    slurm.cmd("scontrol", &["requeue", &format!("{first}_0")]);
    // A requeued job waits two minutes before it is eligible again; not this one.
    slurm.cmd(
        "scontrol",
        &["update", &format!("JobId={first}_0"), "StartTime=now"],
    );
    // Cancel task 1 in its GLUE stage.
    wait_for_glue(&run1);
    slurm.cmd("scancel", &[&format!("{first}_1")]);
    slurm.wait_gone(&first);
    let s = status();
    assert_eq!(s[0]["state"], "finished", "{s:?}");
    assert_eq!(s[1]["state"], "incomplete", "{s:?}");
    assert!(
        sw.join(format!("logs/tiny_{first}_0.err")).is_file(),
        "per-task logs %A_%a"
    );

    // Submit again: only the unfinished run, which continues.
    let (code, out, err) = common::run_in_env(w, &env, &["sweep", "s.toml", "--launcher", "slurm"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 array task(s) (1)"), "{out}");
    let second = job_id(&out);
    assert_ne!(first, second);
    slurm.wait_gone(&second);
    let s = status();
    assert!(
        s.iter().all(|r| r["state"] == "finished"),
        "{s:?}\n{}",
        std::fs::read_to_string(sw.join(format!("logs/tiny_{second}_1.err"))).unwrap_or_default()
    );
    // The requeued task continued its own run under the same array task.
    let m0 = json(&run0.join("manifest.json"));
    let inv0 = m0["predicate"]["pipeline"]["invocations"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(inv0.len(), 2, "{inv0:?}");
    assert_eq!(inv0[1]["launcher"]["array_job_id"], first.as_str());
    assert_eq!(inv0[1]["launcher"]["array_task_id"], "0");
    assert_eq!(inv0[1]["launcher"]["restart_count"], 1);
    let log0 = std::fs::read_to_string(run0.join("pretrain/metrics.jsonl")).unwrap();
    assert_eq!(
        log0.matches("\"kind\":\"start\"").count(),
        1,
        "pretrained once"
    );
    // The cancelled run resumed: two invocations, pretraining done once, the jobs recorded.
    let m = json(&run1.join("manifest.json"));
    let run = &m["predicate"]["pipeline"];
    assert_eq!(run["restarts"], 1, "{run}");
    let inv = run["invocations"].as_array().unwrap();
    assert_eq!(inv[0]["launcher"]["kind"], "slurm");
    assert_eq!(inv[0]["launcher"]["array_job_id"], first.as_str());
    assert_eq!(inv[0]["launcher"]["array_task_id"], "1");
    assert_eq!(inv[1]["launcher"]["array_job_id"], second.as_str());
    assert_eq!(run["dist"]["world_size"], 1);
    let log = std::fs::read_to_string(run1.join("pretrain/metrics.jsonl")).unwrap();
    assert_eq!(
        log.matches("\"kind\":\"start\"").count(),
        1,
        "pretrained once"
    );

    // Nothing left to submit.
    let (code, out, _) = common::run_in_env(w, &env, &["sweep", "s.toml", "--launcher", "slurm"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to submit"), "{out}");

    // Runs signed by a key the summary does not trust: refused by name, nothing written.
    let (code, _, err) =
        common::run_in_env(w, &env, &["keygen", "--out", "keys", "--name", "other"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = common::run_in_env(
        w,
        &env,
        &[
            "sweep",
            "collect",
            "s.toml",
            "--key",
            "keys/t.key",
            "--trust",
            "keys/other.pub",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sweep-tiny-s1") && err.contains("not valid under the trusted keys"),
        "{err}"
    );
    assert!(!sw.join("summary.json").exists());

    // The summary over both seeds, signed, naming both manifests by digest (the runs are
    // signed by the key that signs the summary, trusted by default).
    let (code, out, err) = common::run_in_env(
        w,
        &env,
        &["sweep", "collect", "s.toml", "--key", "keys/t.key"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let summary = json(&sw.join("summary.json"));
    let g = &summary["predicate"]["groups"][0];
    assert_eq!(g["seeds"], serde_json::json!([1, 2]));
    let runs = g["aggregate"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let mut sorted: Vec<f64> = runs.iter().map(|v| v.as_f64().unwrap()).collect();
    sorted.sort_by(f64::total_cmp);
    let median = g["aggregate"]["median"].as_f64().unwrap();
    assert!((median - (sorted[0] + sorted[1]) / 2.0).abs() < 1e-9);
    let subjects = summary["subject"].as_array().unwrap();
    assert_eq!(subjects.len(), 2);
    for (sub, id) in subjects.iter().zip(["sweep-tiny-s1", "sweep-tiny-s2"]) {
        let bytes = std::fs::read(sw.join(format!("runs/{id}/sweep-tiny/manifest.json"))).unwrap();
        assert_eq!(
            sub["digest"]["sha256"].as_str().unwrap(),
            hex::encode(sha2::Sha256::digest(&bytes))
        );
    }
    let (code, out, err) = common::run_in_env(
        w,
        &env,
        &[
            "verify",
            sw.join("summary.dsse.json").to_str().unwrap(),
            "--key",
            "keys/t.pub",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // The local launcher skips the runs whose outputs verify.
    let (code, out, err) = common::run_in_env(
        w,
        &env,
        &["sweep", "s.toml", "--launcher", "local", "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let local: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(local.iter().all(|r| r["status"] == "skipped"), "{local:?}");

    // A changed output: status says failed, collect refuses and leaves the summary alone.
    let before = std::fs::read(sw.join("summary.json")).unwrap();
    let glue = sw.join("runs/sweep-tiny-s1/sweep-tiny/glue/glue.json");
    let mut text = std::fs::read(&glue).unwrap();
    text.extend_from_slice(b" ");
    std::fs::write(&glue, text).unwrap();
    let s = status();
    assert_eq!(s[0]["state"], "failed", "{s:?}");
    assert!(
        s[0]["detail"].as_str().unwrap().contains("glue/glue.json"),
        "{s:?}"
    );
    let (code, _, err) = common::run_in_env(
        w,
        &env,
        &["sweep", "collect", "s.toml", "--key", "keys/t.key"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sweep-tiny-s1"), "{err}");
    assert_eq!(std::fs::read(sw.join("summary.json")).unwrap(), before);
}
