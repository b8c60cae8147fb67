"""Test session set-up: all tuneops state (runs, BentoML store, Prefect database, prediction log)
goes to a temporary TUNEOPS_HOME, so tests never touch a user's ./.tuneops."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_HOME
    if "TUNEOPS_TEST_HOME" in os.environ:
        _SESSION_HOME = Path(os.environ["TUNEOPS_TEST_HOME"])
    else:
        _SESSION_HOME = Path(tempfile.mkdtemp(prefix="tuneops-test-"))
    os.environ["TUNEOPS_HOME"] = str(_SESSION_HOME)
    for inherited in ("BENTOML_HOME", "PREFECT_HOME", "PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        os.environ.pop(inherited, None)
    from tuneops.components.paths import configure_environment

    configure_environment()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_HOME is not None and "TUNEOPS_TEST_HOME" not in os.environ:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tuneops_home() -> Path:
    """The session's TUNEOPS_HOME (shared by every test in the session)."""
    assert _SESSION_HOME is not None
    return _SESSION_HOME
