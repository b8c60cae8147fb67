#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): tuneops' CUDA path end to end, MFU and the speed ratios.
#   bash benchmarks/gpu_check.sh            on a machine with a CUDA GPU, under 8 minutes
#   bash benchmarks/gpu_check.sh --dry-run  the same steps on CPU with tiny models (tested)
# Python: .venv/bin/python when set up here, else the machine's python3 (a GPU image with torch
# and transformers). Wheels in .whl/ (carried to a machine that cannot reach a package index) are
# installed first into a scratch folder; tuneops itself runs from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=python3
[ -x .venv/bin/python ] && python_bin=.venv/bin/python
if compgen -G ".whl/*.whl" >/dev/null; then
  site="$(mktemp -d)"
  "$python_bin" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
missing="$("$python_bin" - <<'PY'
import importlib.util
needed = ("torch", "transformers", "pandas", "pydantic", "peft", "yaml", "safetensors")
print(" ".join(name for name in needed if importlib.util.find_spec(name) is None))
PY
)"
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing (run infra/setup.sh, or carry their wheels in .whl/)" >&2
  exit 2
fi
# The checkout imports as the package "tuneops" (pyproject maps the root to it): a link beside it
# makes that true without installing.
if ! "$python_bin" -c "import tuneops" 2>/dev/null; then
  link_dir="$(mktemp -d)"
  ln -s "$PWD" "$link_dir/tuneops"
  export PYTHONPATH="$link_dir${PYTHONPATH:+:$PYTHONPATH}"
fi
export TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$python_bin" benchmarks/gpu_check.py "$@"
