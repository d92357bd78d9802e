#!/usr/bin/env bash
# A local Ray cluster for tests and benchmarks: a head and RAY_WORKERS worker nodes (default 1; one CPU each unless
# RAY_CPUS says) at 127.0.0.1:6379, then COMMAND; every Ray process it started is stopped on exit (found by its temporary folder,
# never with `ray stop`, which would stop every Ray on the machine). Run it in a network namespace of its own,
# where Ray stays on loopback and reaches nothing else:
#     unshare -n bash scripts/ray-local.sh /tmp/vv-ray-XXXX COMMAND...
# ROOT must be short (Ray's socket paths under it must fit 107 bytes) and is removed on exit.
set -u
root=${1:?usage: ray-local.sh ROOT COMMAND...}
shift
trap 'pkill -9 -f "$root/" ; rm -rf "$root"; true' EXIT
mkdir -p "$root"
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0
nodes=("--head --port=6379 --include-dashboard=false --disable-usage-stats")
for _ in $(seq "${RAY_WORKERS:-1}"); do nodes+=("--address=127.0.0.1:6379"); done
for node in "${nodes[@]}"; do
  # shellcheck disable=SC2086
  timeout 60 ray start $node --node-ip-address=127.0.0.1 --num-cpus="${RAY_CPUS:-1}" --temp-dir="$root/" \
    > "$root/start.log" 2>&1 || { cat "$root/start.log"; exit 97; }
done
"$@"
