"""Where tuneops keeps its state: everything lives under ``$TUNEOPS_HOME`` (default ``./.tuneops``).

Nothing here runs at import time; callers ask for paths when they need them.
"""

from __future__ import annotations

import os
from pathlib import Path

# The tuneops source tree: the folder that holds components/, flows/, serving/ and infra/ (the
# package ``tuneops`` itself, installed editable or not).
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def tuneops_home() -> Path:
    """The state directory, absolute. Created on first use by whoever writes into it."""
    return Path(os.environ.get("TUNEOPS_HOME", ".tuneops")).expanduser().resolve()


def runs_dir() -> Path:
    return tuneops_home() / "runs"


def run_dir(run_id: str) -> Path:
    return runs_dir() / run_id


def demo_dir() -> Path:
    return tuneops_home() / "demo"


def prediction_log_dir() -> Path:
    return tuneops_home() / "predictions"


def kept_inputs_dir() -> Path:
    """Where served images are kept when ``serving.keep_images`` is on (beside the log that names them)."""
    return prediction_log_dir() / "images"


# torch's OpenMP threads wait for each other passively (sleep) instead of spinning. On a machine
# shared with other work, a spinning thread burns the slice its descheduled sibling needs: with 4
# busy processes on 2 cores a MiniLM training step was 1.8-3.4x faster passive; alone on the
# machine it was 0-16% slower (benchmarks/bench_contention.py, docs/training.md). It must be set
# before torch loads its OpenMP runtime; a value in the environment wins.
OMP_WAIT_POLICY = "PASSIVE"


def configure_environment() -> None:
    """Point BentoML's model store and Prefect's local database into ``$TUNEOPS_HOME``.

    Both libraries read these variables when first imported, so the CLI calls this before
    importing them. A user's own ``BENTOML_HOME`` / ``PREFECT_HOME`` wins.
    """
    home = tuneops_home()
    os.environ.setdefault("BENTOML_HOME", str(home / "bentoml"))
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # Prefect's SQLite database cannot create its parent directory itself.
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    # Telemetry would try the network; tuneops runs offline by default.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's ephemeral server gets 20 s to start by default: too little on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
