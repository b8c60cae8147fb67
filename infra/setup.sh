#!/usr/bin/env bash
# Creates .venv/ in the repository root and installs the locked dependencies plus tuneops (editable).
# Idempotent: a second run with an unchanged lock file only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-python3.11}"
if ! command -v "$python_bin" >/dev/null 2>&1; then
  echo "setup: $python_bin not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
stamp=.venv/.tuneops-installed
wanted="$(cat requirements.lock pyproject.toml | sha256sum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  # torch is pinned without a local label: on a machine whose pip index carries the CPU build
  # that one is taken, elsewhere pip takes the CUDA build of the same version.
  echo "setup: installing the locked dependencies into .venv (a few minutes the first time)"
  log=.venv/setup.log
  if ! { .venv/bin/python -m pip install --disable-pip-version-check -r requirements.lock &&
         .venv/bin/python -m pip install --disable-pip-version-check --no-deps -e . ; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -n 25 >&2
    echo "setup: pip failed; full log in $log" >&2
    exit 1
  fi
  echo "$wanted" > "$stamp"
fi
# Debian's chromium, headless, is how the tests look at the run record's pages as a person would.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get); [ "$(id -u)" = 0 ] || apt=(sudo -n "${apt[@]}")
  echo "setup: installing chromium (apt-get)"
  if ! { "${apt[@]}" install -y --no-install-recommends chromium ||
         { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends chromium; }; } >.venv/apt.log 2>&1; then
    echo "setup: chromium could not be installed (see .venv/apt.log); the report tests need it" >&2
  fi
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
