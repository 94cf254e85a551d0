#!/usr/bin/env bash
# Create ./.venv and install tune_div with its pinned dependencies (idempotent; re-running is fast).
# torch goes first and alone, so pip takes the pinned CPU wheel where the machine offers one instead
# of resolving an unpinned torch with gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip --quiet --disable-pip-version-check"
$PIP install torch==2.13.0
$PIP install -r requirements.txt
$PIP install --no-deps torchattacks==3.5.1   # pins an old requests; its real needs are already here
$PIP install --no-deps --no-build-isolation -e . 2>/dev/null || $PIP install --no-deps -e .
