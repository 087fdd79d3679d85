//! Starting the ranks of a data-parallel pretraining and handing them their job.
//!
//! Rank 0 is the process that runs the pipeline (`crambench run` or `crambench pretrain`). It
//! opens the rendezvous, sends every other rank the pretraining job (recipe, data, output,
//! seed, budget, resume) as JSON, makes the collective (NCCL on CUDA, [`super::tcp::Tcp`] on
//! CPU), and trains as rank 0. The other ranks are either started by rank 0 itself
//! (`--devices N`: N − 1 copies of this binary on this machine, `LOCAL_RANK` = rank, with
//! `CRAMBENCH_LAUNCHER=local`), or by the user's launcher (torchrun, srun, Kubeflow) running
//! the same command on every rank; either way a process whose environment makes it rank r > 0
//! calls [`serve`]: it connects to rank 0, trains the job it gets, and exits. Rank 0 alone
//! writes the checkpoints, logs and manifest; the others keep their logs in a scratch
//! directory that is removed when they end.
//!
//! The world size is recorded beside the checkpoints (`<out>/dist.json`); resuming with
//! another one is refused (exit 4) unless forced, and a forced change is recorded there and in
//! the manifest.
use super::env::DistEnv;
use super::tcp::{tag, Control, Tcp};
use super::{Collective, Single};
use crate::error::Error;
use crate::train::run::{PretrainData, PretrainOptions};
use crate::train::PretrainSummary;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use tch::Device;

/// The world-size record beside the checkpoints.
pub const DIST_FILE: &str = "dist.json";

/// The job rank 0 sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    recipe: PathBuf,
    budget: Option<String>,
    out: PathBuf,
    resume: bool,
    seed: Option<u64>,
    /// The dataset directory, or None for the synthetic stream.
    dataset: Option<PathBuf>,
    cuda: bool,
    #[serde(default)]
    attention: Option<crate::model::attention::AttentionBackend>,
}

/// How one data-parallel pretraining ran (manifest `predicate.run.dist`).
#[derive(Debug, Clone, Serialize)]
pub struct DistRecord {
    pub world_size: usize,
    /// `single`, `tcp` or `nccl`.
    pub backend: String,
    /// Each rank's device and host, in rank order.
    pub devices: Vec<String>,
    pub launcher: super::Launcher,
    /// World sizes this pretraining has run with, when it changed (forced).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub world_size_changes: Vec<Value>,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    if !ok {
        return "?".into();
    }
    let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn device_desc(d: Device) -> String {
    format!(
        "{} on {}",
        crate::train::trainer::device_kind(d),
        hostname()
    )
}

/// Refuse to resume `out` with another world size unless `force`; record the world size.
/// Returns the recorded changes (for the manifest).
pub fn check_world(out: &Path, world: usize, resume: bool, force: bool) -> Result<Vec<Value>> {
    let path = out.join(DIST_FILE);
    if world == 1 && !path.exists() {
        // No record means world size 1: a one-process run writes nothing here, so a run
        // refused by its own checks (recipe, attention backend, data) leaves no directory.
        return Ok(Vec::new());
    }
    let mut rec: Value = if path.exists() {
        serde_json::from_slice(&crate::io::read_limited(&path, 1 << 20)?)
            .map_err(|e| Error::input(path.display(), format!("not a world-size record: {e}")))?
    } else {
        json!({"world_size": world, "changes": []})
    };
    let before = rec["world_size"].as_u64().unwrap_or(1) as usize;
    if resume && path.exists() && before != world {
        if !force {
            return Err(Error::Refused(format!(
                "{}: this pretraining ran with world size {before}, not {world}: resuming with \
                 another number of devices changes the global batch and the data each rank \
                 reads. Use --devices {before} (or the same launcher layout), or pass --force \
                 to continue anyway (recorded in the manifest)",
                out.display()
            ))
            .into());
        }
        if let Some(c) = rec["changes"].as_array_mut() {
            c.push(json!({"from": before, "to": world,
                          "at": crate::manifest::statement::now_rfc3339(), "forced": true}));
        }
    }
    rec["world_size"] = json!(world);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut bytes = serde_json::to_vec_pretty(&rec)?;
    bytes.push(b'\n');
    crate::io::write_atomic(&path, &bytes, None)?;
    Ok(rec["changes"].as_array().cloned().unwrap_or_default())
}

/// Ranks 1.. started by this process (`--devices N`); killed if rank 0 fails.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Pretrain as rank 0 of `world` ranks: `env` from the launcher (world size > 1) or, with
/// `devices` > 1 and no launcher ranks, ranks started here. With one rank in all, this is
/// [`crate::train::pretrain_recipe`].
pub fn pretrain_rank0(
    recipe: &Path,
    opts: &PretrainOptions,
    env: &DistEnv,
    devices: u32,
    force: bool,
) -> Result<(PretrainSummary, DistRecord)> {
    if env.world_size > 1 && devices > 1 {
        return Err(Error::input(
            "--devices",
            format!(
                "the {} launcher already started {} ranks; --devices N starts ranks itself: \
                 use one or the other",
                env.launcher.kind, env.world_size
            ),
        )
        .into());
    }
    let world = if env.world_size > 1 {
        env.world_size
    } else {
        devices.max(1) as usize
    };
    let changes = check_world(&opts.out, world, opts.resume, force)?;
    let mut record = DistRecord {
        world_size: world,
        backend: "single".into(),
        devices: vec![device_desc(opts.device)],
        launcher: env.launcher.clone(),
        world_size_changes: changes,
    };
    if world == 1 {
        let s = crate::train::run::pretrain_recipe_dist(recipe, opts, &mut Single)?;
        return Ok((s, record));
    }
    let cuda = opts.device.is_cuda();
    if cuda && env.world_size == 1 {
        let have = tch::Cuda::device_count() as usize;
        if have < world {
            return Err(Error::input(
                "--devices",
                format!("{world} CUDA devices asked for, this machine has {have}"),
            )
            .into());
        }
    }
    let (addr, port) = match (&env.master_addr, env.master_port) {
        (Some(a), Some(p)) if env.world_size > 1 => (a.clone(), p),
        _ => ("127.0.0.1".to_string(), 0),
    };
    let listener = Control::bind(&addr, port)?;
    let mut children = Children(Vec::new());
    if env.world_size == 1 {
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("rendezvous", e))?
            .port();
        let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
        for r in 1..world {
            let child = Command::new(&exe)
                .arg("pretrain")
                .arg(recipe)
                .env("CRAMBENCH_LAUNCHER", "local")
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("LOCAL_WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .spawn()
                .map_err(|e| Error::io(&exe, e))?;
            children.0.push(child);
        }
    }
    let mut control = Control::accept(listener, world)?;
    let job = Job {
        recipe: recipe.to_path_buf(),
        budget: opts.budget.clone(),
        out: opts.out.clone(),
        resume: opts.resume,
        seed: opts.seed,
        dataset: match &opts.data {
            PretrainData::Dataset(d) => Some(d.clone()),
            PretrainData::Synthetic => None,
        },
        cuda,
        attention: opts.attention,
    };
    control.send_all(tag::JOB, &serde_json::to_vec(&job)?)?;
    let mut devices_seen = vec![device_desc(opts.device)];
    devices_seen.extend(control.gather_strings()?);
    record.devices = devices_seen;
    let mut collective: Box<dyn Collective> = if cuda {
        let ordinal = match opts.device {
            Device::Cuda(i) => i,
            _ => 0,
        };
        Box::new(super::nccl::Nccl::new(control, ordinal)?)
    } else {
        Box::new(Tcp { control })
    };
    record.backend = collective.backend().into();
    let summary = crate::train::run::pretrain_recipe_dist(recipe, opts, collective.as_mut())?;
    drop(collective);
    for c in &mut children.0 {
        let st = c.wait().map_err(|e| Error::io("rank process", e))?;
        if !st.success() {
            return Err(Error::Check(format!(
                "a data-parallel rank exited with {st} after pretraining (see its output)"
            ))
            .into());
        }
    }
    children.0.clear();
    Ok((summary, record))
}

/// The CUDA device of local rank `local_rank` among the `visible` devices: the local rank
/// itself, or the one device a launcher left visible to this rank (`srun --gpus-per-task 1`
/// sets CUDA_VISIBLE_DEVICES per task, so every rank sees its GPU as device 0).
pub fn local_ordinal(local_rank: usize, visible: usize) -> Result<usize> {
    match visible {
        0 => Err(Error::input("LOCAL_RANK", "CUDA is not available to this rank").into()),
        1 => Ok(0),
        n if local_rank < n => Ok(local_rank),
        n => Err(Error::input(
            "environment variable LOCAL_RANK",
            format!("is {local_rank}, but this rank sees {n} CUDA devices"),
        )
        .into()),
    }
}

/// Tell the other ranks of the launcher that there is nothing to pretrain (the stage was
/// complete before this invocation).
pub fn release(env: &DistEnv) -> Result<()> {
    if env.world_size == 1 || env.rank != 0 {
        return Ok(());
    }
    let (Some(addr), Some(port)) = (&env.master_addr, env.master_port) else {
        return Ok(());
    };
    let mut c = Control::listen(addr, port, env.world_size)?;
    c.send_all(tag::EXIT, b"")
}

/// A rank r > 0: connect to rank 0, pretrain the job it sends (or nothing), return.
pub fn serve(env: &DistEnv, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    let (Some(addr), Some(port)) = (&env.master_addr, env.master_port) else {
        return Err(Error::input("MASTER_ADDR", "not set for a data-parallel rank").into());
    };
    let mut control = Control::connect(addr, port, env.rank, env.world_size)?;
    let (t, payload) = control.recv()?;
    if t == tag::EXIT {
        return Ok(());
    }
    if t != tag::JOB {
        return Err(Error::Check(format!("rank {}: expected a job from rank 0", env.rank)).into());
    }
    let job: Job = serde_json::from_slice(&payload)
        .map_err(|e| Error::Check(format!("rank {}: bad job from rank 0: {e}", env.rank)))?;
    let device = if job.cuda {
        Device::Cuda(local_ordinal(
            env.local_rank,
            tch::Cuda::device_count().max(0) as usize,
        )?)
    } else {
        Device::Cpu
    };
    control.send_string(&device_desc(device))?;
    let mut collective: Box<dyn Collective> = if let Device::Cuda(ordinal) = device {
        Box::new(super::nccl::Nccl::new(control, ordinal)?)
    } else {
        Box::new(Tcp { control })
    };
    let opts = PretrainOptions {
        budget: job.budget,
        out: job.out,
        resume: job.resume,
        seed: job.seed,
        device,
        progress: false,
        stop,
        data: match job.dataset {
            Some(d) => PretrainData::Dataset(d),
            None => PretrainData::Synthetic,
        },
        attention: job.attention,
    };
    let scratch = super::log_dir(collective.as_ref(), &opts.out);
    let r = crate::train::run::pretrain_recipe_dist(&job.recipe, &opts, collective.as_mut());
    let _ = std::fs::remove_dir_all(&scratch);
    r.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ranks_map_to_visible_devices() {
        assert_eq!(local_ordinal(3, 8).unwrap(), 3);
        assert_eq!(local_ordinal(3, 1).unwrap(), 0, "one GPU per task");
        assert!(local_ordinal(0, 0).is_err());
        let e = local_ordinal(4, 2).unwrap_err();
        assert!(e.to_string().contains("LOCAL_RANK"), "{e}");
    }

    #[test]
    fn resuming_with_another_world_size_is_refused_unless_forced() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_world(d.path(), 2, false, false).unwrap().is_empty());
        let e = check_world(d.path(), 1, true, false).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Refused);
        assert!(e.to_string().contains("world size 2, not 1"), "{e}");
        let changes = check_world(d.path(), 1, true, true).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0]["from"], 2);
        assert_eq!(changes[0]["to"], 1);
        // The same size again: nothing new.
        assert_eq!(check_world(d.path(), 1, true, false).unwrap().len(), 1);
    }
}
