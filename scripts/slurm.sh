#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the sweep tests (tests/sweep_slurm.rs)
# and for trying `crambench sweep --launcher slurm` without a cluster.
#
#   scripts/slurm.sh install   apt-get install Debian's slurm-wlm and munge when missing
#   scripts/slurm.sh start     write a minimal slurm.conf for this host into $STATE and start
#                              munged, slurmctld and slurmd (prints `export SLURM_CONF=...`)
#   scripts/slurm.sh stop      stop the three daemons started by `start`
#   scripts/slurm.sh env       print the environment a client needs (SLURM_CONF)
#
# Everything lives in $CRAMBENCH_SLURM_DIR (default /tmp/crambench-slurm): config, spool, state,
# logs, the munge socket and key. Nothing is written to /etc/slurm; the daemons run as root with
# cgroup-free plugins (proctrack/linuxproc, task/none), so they work in a container without
# cgroup delegation. Ports: $CRAMBENCH_SLURM_PORT (slurmctld, default 16817) and the next one
# (slurmd).
set -euo pipefail
STATE=${CRAMBENCH_SLURM_DIR:-/tmp/crambench-slurm}
PORT=${CRAMBENCH_SLURM_PORT:-16817}
SBIN=/usr/sbin

install() {
    if [[ -x $SBIN/slurmctld && -x $SBIN/slurmd && -x $SBIN/munged && -x /usr/bin/sbatch ]]; then
        return 0
    fi
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        if ! command -v sudo >/dev/null; then
            echo "scripts/slurm.sh: slurm-wlm is not installed and installing it needs root" >&2
            exit 3
        fi
        sudo=(sudo)
    fi
    if ! command -v apt-get >/dev/null; then
        echo "scripts/slurm.sh: no apt-get: install Slurm (slurmctld, slurmd, munge) yourself" >&2
        exit 3
    fi
    echo "scripts/slurm.sh: installing slurm-wlm and munge (apt-get)" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends slurm-wlm munge >&2
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    install
    mkdir -p "$STATE"/{spool,state,log,munge}
    chmod 700 "$STATE" "$STATE/munge"
    local host
    host=$(hostname -s)
    if [[ ! -f $STATE/munge/munge.key ]]; then
        head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
        chmod 400 "$STATE/munge/munge.key"
    fi
    # This machine as slurmd sees it (CPUs, sockets, cores, memory), on loopback.
    local node
    node=$($SBIN/slurmd -C | head -n1)
    cat >"$STATE/slurm.conf" <<CONF
# Written by scripts/slurm.sh: one node, cgroup-free, state under $STATE.
ClusterName=crambench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=60
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmdSpoolDir=$STATE/spool
StateSaveLocation=$STATE/state
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$STATE/slurm.conf
    if ! running "$STATE/munged.pid"; then
        $SBIN/munged --force --socket="$STATE/munge/munge.socket" \
            --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munged.pid" \
            --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
    fi
    if ! running "$STATE/slurmctld.pid"; then
        $SBIN/slurmctld -c -f "$SLURM_CONF"
    fi
    if ! running "$STATE/slurmd.pid"; then
        $SBIN/slurmd -f "$SLURM_CONF"
    fi
    # Ready when the node takes jobs.
    for _ in $(seq 1 60); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 1
    done
    echo "scripts/slurm.sh: the node did not become idle within 60 s; see $STATE/log/" >&2
    sinfo -N -l >&2 || true
    tail -n 20 "$STATE"/log/*.log >&2 || true
    exit 1
}

stop() {
    for d in slurmd slurmctld munged; do
        local pidf=$STATE/$d.pid
        if running "$pidf"; then
            kill "$(cat "$pidf")"
            for _ in $(seq 1 50); do running "$pidf" || break; sleep 0.2; done
        fi
        rm -f "$pidf"
    done
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$STATE/slurm.conf" ;;
    *) echo "usage: scripts/slurm.sh install|start|stop|env" >&2; exit 2 ;;
esac
