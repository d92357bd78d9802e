#!/usr/bin/env bash
# Install vidvec (unless .venv is already current) and run the test suite; arguments go to pytest
# (e.g. -m "not slow" for the quick part, or a test file). The 25 slowest tests are listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q --durations=25 "$@"
