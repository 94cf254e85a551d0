#!/usr/bin/env bash
# The GPU check (benchmarks/device_check.py) on a lent GPU machine, in one command.
#
# The GPU machine has torch with CUDA, torchvision, numpy, scipy, pyyaml and tqdm, but not the attacks'
# advertorch and torchattacks (nor Ray, MLflow or Optuna, which the check does not use), and no network.
#
# 1. Here, once per change of the code:   bash scripts/device_check.sh prepare
#    builds .whl/ (tune_div, advertorch, torchattacks wheels) and .device_data/ (the MNIST archives),
#    both git-ignored.
# 2. The device tool's run, pasted as it is:
#      command:   bash scripts/device_check.sh run
#      carry:     [".whl", ".device_data"]
#      timeout_s: 590
#    It installs the wheels into /tmp/site, runs the check (at most 8 minutes of sections) and leaves
#    device_check.json, device_check.md and device_check.log in $OUT.
# 3. Here: copy the JSON and the summary to benchmarks/results/, commit them, and apply the defaults:
#      python benchmarks/device_check.py --apply benchmarks/results/device_check.json
set -euo pipefail
cd "$(dirname "$0")/.."

# What the GPU machine lacks of what the check imports (tests/test_device_check.py holds this list
# against the core packages' imports).
WHEELS="advertorch==0.2.3 torchattacks==3.5.1"
PYTHON=${PYTHON:-python3}

case "${1:-}" in
  prepare)
    PY=.venv/bin/python
    [ -x "$PY" ] || { echo "device_check.sh: run scripts/setup.sh first (it makes .venv)" >&2; exit 2; }
    data=${TUNE_DIV_DATA:-../shared/data}
    [ -f "$data/MNIST/raw/train-images-idx3-ubyte.gz" ] || {
      echo "device_check.sh: no MNIST archives under $data/MNIST/raw; set TUNE_DIV_DATA to the data folder" >&2
      exit 2; }
    rm -rf .whl && mkdir -p .whl .device_data/MNIST/raw
    PIP="$PY -m pip --quiet --disable-pip-version-check"
    # pure-Python wheels, built here (advertorch ships only a source archive)
    $PIP wheel --no-deps -w .whl $WHEELS
    $PIP wheel --no-deps --no-build-isolation -w .whl .
    cp "$data"/MNIST/raw/*-ubyte.gz .device_data/MNIST/raw/
    du -sh .whl .device_data
    echo "ready: run 'bash scripts/device_check.sh run' on the device with carry [\".whl\", \".device_data\"]"
    ;;
  run)
    OUT=${OUT:-device_check}
    mkdir -p "$OUT"
    ls .whl/*.whl >/dev/null 2>&1 || { echo "device_check.sh: no .whl/; run 'prepare' here first" >&2; exit 2; }
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl
    export PYTHONPATH=/tmp/site TUNE_DIV_DATA=$PWD/.device_data TUNE_DIV_CACHE=/tmp/tune_div_cache \
      TUNE_DIV_OFFLINE=1 PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/device_check.log" || true
    set -o pipefail
    "$PYTHON" benchmarks/device_check.py --device "${DEVICE:-cuda}" --time-limit "${TIME_LIMIT:-400}" \
      --out "$OUT" "${@:2}" 2>&1 | tee -a "$OUT/device_check.log"
    ;;
  *)
    echo "usage: bash scripts/device_check.sh prepare | run [device_check.py options]" >&2
    exit 2
    ;;
esac
