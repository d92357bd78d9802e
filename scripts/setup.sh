#!/usr/bin/env bash
# Create .venv (if missing) and install vidvec with its test tools into it. Idempotent; does nothing when
# .venv was set up from the same pyproject.toml and this script (a stamp in .venv records their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# System packages the tests use (Debian): the ffmpeg command line (HERO's extractors run it; tests compare with it)
# a single-node SLURM (scripts/slurm-local.sh starts it; gcc builds its loopback shim) and a headless browser
# (the search page's test renders it).
missing=()
command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v slurmctld >/dev/null || missing+=(slurmctld)
command -v slurmd >/dev/null || missing+=(slurmd)
command -v sbatch >/dev/null || missing+=(slurm-client)
command -v munged >/dev/null || missing+=(munge)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)  # the service page's test drives it (selenium)
command -v ip >/dev/null || missing+=(iproute2)  # the Ray tests bring up loopback in their network namespace
command -v pkill >/dev/null || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
stamp=".venv/.vidvec-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && .venv/bin/python -c "import vidvec" 2>/dev/null; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch/torchvision first and pinned: this machine's disk carries exactly these wheels.
python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
python -m pip install --quiet -e ".[test]"
rm -f .venv/.vidvec-setup-*
touch "$stamp"
