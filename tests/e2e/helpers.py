"""What the end-to-end tests share."""

from __future__ import annotations

import os
from pathlib import Path


def cli_environment(home: Path) -> dict[str, str]:
    """The environment of a CLI process whose state all lives under ``home``: the test session's
    own BentoML and Prefect homes and any Prefect server are not passed on."""
    env = {**os.environ, "TUNEOPS_HOME": str(home)}
    for inherited in ("BENTOML_HOME", "PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(inherited, None)
    return env
