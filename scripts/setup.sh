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

# A real browser for tests/test_browser.py: Debian's Chromium and its driver (browser builds are not
# downloaded). Installed when missing and we are root; otherwise we say how.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver (apt) for the browser test"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: the browser test (tests/test_browser.py) needs chromium and chromedriver on PATH;" \
      "install them, e.g. sudo apt-get install chromium chromium-driver" >&2
  fi
fi
