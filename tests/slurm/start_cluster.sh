#!/usr/bin/env bash
# A two-node SLURM cluster on this one machine, for the tests and for trying `--launcher slurm` by
# hand (as root):
#
#     eval "$(tests/slurm/start_cluster.sh)"     # prints: export SLURM_CONF=...
#     sinfo; srun -N2 hostname
#     tests/slurm/start_cluster.sh stop
#
# munged, slurmctld and two slurmd (nodes n1 and n2, one CPU each, both on this host at 127.0.0.1
# on their own ports) run with a private slurm.conf in $MEDIC_SLURM_DIR (default
# /tmp/medic-slurm). No accounting (so no sacct). KillWait=10 and a 10 s credential lifetime let a
# requeued job start again in about 25 s instead of 2 minutes. Starting an already running cluster
# only prints its SLURM_CONF.
set -euo pipefail
DIR=${MEDIC_SLURM_DIR:-/tmp/medic-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${MEDIC_SLURM_PORT:-16817}

running() {  # the pid in file $1 is alive (a zombie, never reaped in a container, is not)
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] && ! grep -q ') Z ' "/proc/$pid/stat"
}

stop() {
    for f in "$DIR"/slurmd.n1.pid "$DIR"/slurmd.n2.pid "$DIR"/slurmctld.pid; do
        if running "$f"; then kill "$(cat "$f")" || true; fi
    done
    for _ in $(seq 50); do
        running "$DIR/slurmctld.pid" || running "$DIR/slurmd.n1.pid" || running "$DIR/slurmd.n2.pid" || break
        sleep 0.1
    done
}

if [ "${1:-start}" = stop ]; then
    stop
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "start_cluster.sh: needs root (slurmd runs jobs as their users)" >&2
    exit 2
fi
for cmd in munged slurmctld slurmd sinfo; do
    command -v "$cmd" >/dev/null || { echo "start_cluster.sh: $cmd not on PATH (apt-get install slurm-wlm munge)" >&2; exit 2; }
done
export SLURM_CONF=$CONF
if running "$DIR/slurmctld.pid" && running "$DIR/slurmd.n1.pid" && running "$DIR/slurmd.n2.pid"; then
    echo "export SLURM_CONF=$CONF"
    exit 0
fi
stop
mkdir -p "$DIR/state" "$DIR/spool"
HOST=$(hostname)
cat > "$CONF" <<CONF
ClusterName=medic
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=60
SchedulerParameters=sched_interval=2
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((CTLD_PORT + 1)) CPUs=1 State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((CTLD_PORT + 2)) CPUs=1 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /run/munge
if ! pgrep -x munged >/dev/null; then
    munged --force
fi
# a fresh state each time: no jobs left from an earlier session
rm -rf "$DIR/state"/* "$DIR/spool"/*
slurmctld -c -f "$CONF"
slurmd -N n1 -f "$CONF"
slurmd -N n2 -f "$CONF"
for _ in $(seq 150); do
    if [ "$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)" = 2 ]; then
        echo "export SLURM_CONF=$CONF"
        exit 0
    fi
    sleep 0.2
done
echo "start_cluster.sh: the nodes did not come up; see $DIR/*.log" >&2
sinfo >&2 || true
exit 1
