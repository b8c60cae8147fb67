#!/usr/bin/env bash
# Creates .venv/ in the repository root and installs the locked dependencies plus tuneops (editable).
# Idempotent: a second run with an unchanged lock file only checks and returns.
#   --postgres   also install Debian's postgresql (initdb, postgres) for `tuneops up --postgres`
set -euo pipefail
cd "$(dirname "$0")/.."
want_postgres=0
for argument in "$@"; do
  case "$argument" in
    --postgres) want_postgres=1 ;;
    *) echo "setup: unknown option $argument (known: --postgres)" >&2; exit 2 ;;
  esac
done
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
# Debian packages, installed with apt-get when missing (as root, else through sudo -n).
apt_install() {  # apt_install PACKAGE WHAT-NEEDS-IT
  command -v apt-get >/dev/null 2>&1 || { echo "setup: no apt-get; install $1 by hand ($2 needs it)" >&2; return 0; }
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  [ "$(id -u)" = 0 ] || apt=(sudo -n "${apt[@]}")
  echo "setup: installing $1 (apt-get)"
  if ! { "${apt[@]}" install -y --no-install-recommends "$1" ||
         { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "$1"; }; } >>.venv/apt.log 2>&1; then
    echo "setup: $1 could not be installed (see .venv/apt.log); $2 needs it" >&2
  fi
}
# Headless chromium is how the tests look at the run record's pages as a person would.
command -v chromium >/dev/null 2>&1 || apt_install chromium "the report tests"
# PostgreSQL for Prefect's database (`tuneops up --postgres`); Debian keeps initdb off PATH.
if [ "$want_postgres" = 1 ] && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql "tuneops up --postgres"
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
