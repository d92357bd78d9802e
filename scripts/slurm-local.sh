#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, listening on 127.0.0.1 only, for the tests and for trying vidvec's
# SLURM use (Slurm has no setting for the address its daemons listen on: they run with scripts/loopback-bind.c
# preloaded, which binds what would listen on every interface to the loopback address instead):
#   bash scripts/slurm-local.sh start   # installs Debian's slurmctld, slurmd and munge if missing, starts them
#   bash scripts/slurm-local.sh stop
#   export SLURM_CONF=/tmp/vidvec-slurm/slurm.conf   # then sbatch, squeue, sinfo, scancel talk to it
#   export LD_PRELOAD=/tmp/vidvec-slurm/loopback-bind.so  # and the jobs' srun listens on 127.0.0.1 too
# State, logs and the config live in $VIDVEC_SLURM_DIR (default /tmp/vidvec-slurm). Needs root (or sudo) to
# install and to run munged and slurmd. Idempotent: start on a running cluster only checks it.
set -euo pipefail
DIR=${VIDVEC_SLURM_DIR:-/tmp/vidvec-slurm}
CONF=$DIR/slurm.conf
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

stop() {
  for name in slurmd slurmctld; do
    if [ -f "$DIR/$name.pid" ]; then $SUDO kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true; fi
  done
  if [ -f "$DIR/munged.pid" ]; then $SUDO kill "$(cat "$DIR/munged.pid")" 2>/dev/null || true; fi
  rm -f "$DIR"/*.pid
}

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }
# sinfo waits for a controller that is not there: ask only when both daemons run
ready() { alive slurmctld && alive slurmd && SLURM_CONF=$CONF sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

start() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
     || ! command -v sbatch >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends slurmctld slurmd \
      slurm-client munge >/dev/null
  fi
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
  if ready; then echo "SLURM_CONF=$CONF (running)"; return; fi
  stop
  # munge: its own key, socket and pid under DIR, so the system's munge (if any) is left alone
  [ -f "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 2>/dev/null
                                     chmod 600 "$DIR/munge/munge.key"; }
  $SUDO munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/socket" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/seed"
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat >"$CONF" <<EOF
ClusterName=vidvec
SlurmctldHost=localhost(127.0.0.1)
SlurmctldAddr=127.0.0.1
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
KillWait=5
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=$(hostname) CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  gcc -shared -fPIC -O2 -o "$DIR/loopback-bind.so" "$(dirname "$0")/loopback-bind.c" -ldl
  $SUDO env LD_PRELOAD="$DIR/loopback-bind.so" slurmctld -f "$CONF"
  $SUDO env LD_PRELOAD="$DIR/loopback-bind.so" slurmd -f "$CONF" -N localhost
  for _ in $(seq 1 60); do
    if ready; then echo "SLURM_CONF=$CONF"; return; fi
    sleep 0.5
  done
  echo "slurm-local: the node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
