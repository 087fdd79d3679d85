//! Who this process is in a data-parallel run, from the environment its launcher set.
//!
//! Read in this order (the first that applies wins):
//!
//! 1. **crambench** itself (`crambench run --devices N` starts its ranks with
//!    `CRAMBENCH_LAUNCHER=local` and the torchrun variables below);
//! 2. **torchrun** / torch elastic: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
//!    `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_RUN_ID`, `TORCHELASTIC_RESTART_COUNT`;
//! 3. **Kubeflow** (PyTorchJob: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` in a pod,
//!    i.e. with `KUBERNETES_SERVICE_HOST`; one process per pod, so the local rank is 0; or the
//!    elastic `PET_*` variables: `PET_NNODES`, `PET_NPROC_PER_NODE`, `PET_NODE_RANK`,
//!    `PET_MASTER_ADDR`, `PET_MASTER_PORT`);
//! 4. plain `RANK`/`WORLD_SIZE` (any other launcher that follows torch.distributed's env://);
//! 5. **Slurm**: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_JOB_ID`,
//!    `SLURM_ARRAY_JOB_ID`, `SLURM_ARRAY_TASK_ID`, `SLURM_RESTART_COUNT`; the rendezvous is
//!    `MASTER_ADDR`/`MASTER_PORT` when set, else `SLURM_LAUNCH_NODE_IPADDR` and a port derived
//!    from the job id;
//! 6. **MPI** (Kubeflow's MPIJob, `mpirun`): `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
//!    `OMPI_COMM_WORLD_LOCAL_RANK` (or `PMI_RANK`/`PMI_SIZE`);
//! 7. none of these: one process, launched by hand (`local`).
//!
//! A variable that is set but not a number, or a rank outside the world, is bad input naming the
//! variable (exit 2).
use crate::error::Error;
use anyhow::Result;
use serde::Serialize;

/// How the process was launched, as the manifest records it (`predicate.run.invocations[].launcher`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Launcher {
    /// `local`, `torchrun`, `kubeflow`, `env`, `slurm`, `mpi`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_task_id: Option<String>,
    /// Restarts the launcher counts (Slurm's requeues, torch elastic's restarts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u64>,
}

/// This process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    /// Rendezvous host and port (rank 0 listens there); `None` for world size 1.
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
    pub launcher: Launcher,
}

fn num<T: std::str::FromStr>(get: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<Option<T>> {
    match get(var) {
        None => Ok(None),
        Some(v) => v.trim().parse::<T>().map(Some).map_err(|_| {
            Error::input(
                format!("environment variable {var}"),
                format!("{v:?} is not a non-negative integer"),
            )
            .into()
        }),
    }
}

fn port(get: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<Option<u16>> {
    match num::<u32>(get, var)? {
        None => Ok(None),
        Some(p) if (1..=65535).contains(&p) => Ok(Some(p as u16)),
        Some(p) => Err(Error::input(
            format!("environment variable {var}"),
            format!("{p} is not a TCP port (1-65535)"),
        )
        .into()),
    }
}

impl DistEnv {
    /// One process, launched by hand.
    pub fn single() -> DistEnv {
        DistEnv {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: None,
            master_port: None,
            launcher: Launcher {
                kind: "local".into(),
                job_id: None,
                array_job_id: None,
                array_task_id: None,
                restart_count: None,
            },
        }
    }

    /// From this process's environment.
    pub fn detect() -> Result<DistEnv> {
        Self::from_vars(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From `get` (a variable's value, `None` when unset): see the module doc.
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<DistEnv> {
        let mut e = DistEnv::single();
        let slurm = |e: &mut DistEnv| -> Result<()> {
            if get("SLURM_JOB_ID").is_some() {
                e.launcher.job_id = get("SLURM_JOB_ID");
                e.launcher.array_job_id = get("SLURM_ARRAY_JOB_ID");
                e.launcher.array_task_id = get("SLURM_ARRAY_TASK_ID");
                e.launcher.restart_count = num(get, "SLURM_RESTART_COUNT")?;
            }
            Ok(())
        };
        let has = |k: &str| get(k).is_some();
        let (kind, rank, world, local): (&str, Option<usize>, Option<usize>, Option<usize>) =
            if has("CRAMBENCH_LAUNCHER") && has("RANK") {
                (
                    "local",
                    num(get, "RANK")?,
                    num(get, "WORLD_SIZE")?,
                    num(get, "LOCAL_RANK")?,
                )
            } else if has("RANK") && (has("LOCAL_RANK") || has("TORCHELASTIC_RUN_ID")) {
                (
                    "torchrun",
                    num(get, "RANK")?,
                    num(get, "WORLD_SIZE")?,
                    num(get, "LOCAL_RANK")?,
                )
            } else if has("PET_NNODES") && has("PET_NODE_RANK") && !has("RANK") {
                // Kubeflow's elastic variables (one process per node unless PET_NPROC_PER_NODE).
                let nnodes: Option<usize> = num(get, "PET_NNODES")?;
                let per: usize = num(get, "PET_NPROC_PER_NODE")?.unwrap_or(1);
                if per != 1 {
                    return Err(Error::input(
                        "environment variable PET_NPROC_PER_NODE",
                        format!(
                            "is {per}: start the processes of a node with torchrun (which sets \
                             RANK and LOCAL_RANK) or set PET_NPROC_PER_NODE=1"
                        ),
                    )
                    .into());
                }
                ("kubeflow", num(get, "PET_NODE_RANK")?, nnodes, Some(0))
            } else if has("RANK") && has("KUBERNETES_SERVICE_HOST") {
                (
                    "kubeflow",
                    num(get, "RANK")?,
                    num(get, "WORLD_SIZE")?,
                    Some(0),
                )
            } else if has("RANK") {
                ("env", num(get, "RANK")?, num(get, "WORLD_SIZE")?, Some(0))
            } else if has("SLURM_PROCID") || has("SLURM_JOB_ID") {
                (
                    "slurm",
                    num(get, "SLURM_PROCID")?.or(Some(0)),
                    num(get, "SLURM_NTASKS")?.or(Some(1)),
                    num(get, "SLURM_LOCALID")?.or(Some(0)),
                )
            } else if has("OMPI_COMM_WORLD_RANK") {
                (
                    "mpi",
                    num(get, "OMPI_COMM_WORLD_RANK")?,
                    num(get, "OMPI_COMM_WORLD_SIZE")?,
                    num(get, "OMPI_COMM_WORLD_LOCAL_RANK")?,
                )
            } else if has("PMI_RANK") {
                ("mpi", num(get, "PMI_RANK")?, num(get, "PMI_SIZE")?, Some(0))
            } else {
                slurm(&mut e)?;
                return Ok(e);
            };
        e.launcher.kind = kind.into();
        // A Slurm job is recorded whoever started the ranks inside it (srun + torchrun).
        slurm(&mut e)?;
        if kind == "torchrun" {
            e.launcher.restart_count =
                num(get, "TORCHELASTIC_RESTART_COUNT")?.or(e.launcher.restart_count);
            if e.launcher.job_id.is_none() {
                e.launcher.job_id = get("TORCHELASTIC_RUN_ID");
            }
        }
        let world_var = match kind {
            "slurm" => "SLURM_NTASKS",
            "mpi" => "OMPI_COMM_WORLD_SIZE",
            "kubeflow" if !has("RANK") => "PET_NNODES",
            _ => "WORLD_SIZE",
        };
        let world = world.ok_or_else(|| {
            Error::input(
                format!("environment variable {world_var}"),
                format!("is not set, but the {kind} launcher's rank is"),
            )
        })?;
        let rank = rank.unwrap_or(0);
        if world == 0 || rank >= world {
            return Err(Error::input(
                format!("environment variable {world_var}"),
                format!("is {world}, which does not hold rank {rank}"),
            )
            .into());
        }
        e.rank = rank;
        e.world_size = world;
        e.local_rank = local.unwrap_or(0);
        if world > 1 {
            let (addr_var, port_var) = if kind == "kubeflow" && !has("MASTER_ADDR") {
                ("PET_MASTER_ADDR", "PET_MASTER_PORT")
            } else {
                ("MASTER_ADDR", "MASTER_PORT")
            };
            e.master_addr = get(addr_var).or_else(|| {
                (kind == "slurm")
                    .then(|| get("SLURM_LAUNCH_NODE_IPADDR"))
                    .flatten()
            });
            e.master_port = port(get, port_var)?;
            if e.master_port.is_none() && kind == "slurm" {
                // One port per job, so two jobs on a node do not meet.
                let job: u64 = num(get, "SLURM_JOB_ID")?.unwrap_or(0);
                e.master_port = Some(20000 + (job % 20000) as u16);
            }
            if e.master_addr.is_none() {
                return Err(Error::input(
                    format!("environment variable {addr_var}"),
                    format!(
                        "is not set: world size {world} needs the rendezvous address of rank 0"
                    ),
                )
                .into());
            }
            if e.master_port.is_none() {
                return Err(Error::input(
                    format!("environment variable {port_var}"),
                    format!("is not set: world size {world} needs the rendezvous port of rank 0"),
                )
                .into());
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<DistEnv> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(&|k| m.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_one_local_process() {
        assert_eq!(env(&[]).unwrap(), DistEnv::single());
    }

    #[test]
    fn torchrun() {
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RUN_ID", "abc"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (3, 8, 1));
        assert_eq!(e.master_addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.master_port, Some(29500));
        assert_eq!(e.launcher.kind, "torchrun");
        assert_eq!(e.launcher.restart_count, Some(2));
        assert_eq!(e.launcher.job_id.as_deref(), Some("abc"));
    }

    #[test]
    fn torchrun_inside_slurm_records_the_job() {
        let e = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "29500"),
            ("SLURM_JOB_ID", "77"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap();
        assert_eq!(e.launcher.kind, "torchrun");
        assert_eq!(e.world_size, 2);
        assert_eq!(e.launcher.job_id.as_deref(), Some("77"));
    }

    #[test]
    fn slurm_tasks_and_arrays() {
        let e = env(&[
            ("SLURM_JOB_ID", "1234"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_LAUNCH_NODE_IPADDR", "192.168.1.5"),
            ("SLURM_ARRAY_JOB_ID", "1200"),
            ("SLURM_ARRAY_TASK_ID", "34"),
            ("SLURM_RESTART_COUNT", "1"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (1, 4, 1));
        assert_eq!(e.master_addr.as_deref(), Some("192.168.1.5"));
        assert_eq!(e.master_port, Some(20000 + 1234));
        assert_eq!(e.launcher.kind, "slurm");
        assert_eq!(e.launcher.array_job_id.as_deref(), Some("1200"));
        assert_eq!(e.launcher.array_task_id.as_deref(), Some("34"));
        assert_eq!(e.launcher.restart_count, Some(1));
        // A batch script's one task: world size 1, the job recorded.
        let e = env(&[
            ("SLURM_JOB_ID", "9"),
            ("SLURM_ARRAY_JOB_ID", "8"),
            ("SLURM_ARRAY_TASK_ID", "1"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world_size), (0, 1));
        assert_eq!(e.launcher.kind, "slurm");
        assert_eq!(e.master_addr, None);
    }

    #[test]
    fn kubeflow_and_mpi() {
        let e = env(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "3"),
            ("MASTER_ADDR", "job-master-0"),
            ("MASTER_PORT", "23456"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (2, 3, 0));
        assert_eq!(e.launcher.kind, "kubeflow");
        let e = env(&[
            ("PET_NNODES", "2"),
            ("PET_NODE_RANK", "1"),
            ("PET_MASTER_ADDR", "m"),
            ("PET_MASTER_PORT", "23456"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world_size), (1, 2));
        assert_eq!(e.master_addr.as_deref(), Some("m"));
        let e = env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (1, 2, 1));
        assert_eq!(e.launcher.kind, "mpi");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, want) in [
            (vec![("RANK", "x"), ("LOCAL_RANK", "0")], "RANK"),
            (
                vec![("RANK", "2"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")],
                "WORLD_SIZE",
            ),
            (vec![("RANK", "0"), ("LOCAL_RANK", "0")], "WORLD_SIZE"),
            (
                vec![
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("LOCAL_RANK", "0"),
                    ("MASTER_PORT", "1"),
                ],
                "MASTER_ADDR",
            ),
            (
                vec![
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("LOCAL_RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT",
            ),
            (
                vec![("SLURM_JOB_ID", "1"), ("SLURM_NTASKS", "two")],
                "SLURM_NTASKS",
            ),
        ] {
            let e = env(&vars).unwrap_err();
            assert_eq!(
                crate::error::exit_code_of(&e),
                crate::ExitCode::BadInput,
                "{vars:?}"
            );
            assert!(
                e.to_string()
                    .contains(&format!("environment variable {want}")),
                "{vars:?}: {e}"
            );
        }
    }
}
