"""What the end-to-end tests share."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def cli_environment(home: Path) -> dict[str, str]:
    """The environment of a CLI process whose state all lives under ``home``: the test session's
    own BentoML and Prefect homes and any Prefect server are not passed on."""
    env = {**os.environ, "TUNEOPS_HOME": str(home)}
    for inherited in ("BENTOML_HOME", "PREFECT_HOME", "PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        env.pop(inherited, None)
    return env


@contextmanager
def reachable_home() -> Iterator[Path]:
    """A fresh TUNEOPS_HOME that a server run as another account can enter, deleted afterwards.

    PostgreSQL refuses to run as root, so tests run as root start it as the ``postgres`` account;
    pytest's temporary folders are private to their owner (0700), so this one is made in the
    system's temporary folder with search permission for others (not read permission)."""
    home = Path(tempfile.mkdtemp(prefix="tuneops-pg-"))
    home.chmod(0o711)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)
