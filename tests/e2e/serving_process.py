"""Starting and stopping a real `tuneops serve` (or a bare `bentoml serve`, as the serving image
runs it) on 127.0.0.1 for the serving tests (text, images, faults)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def tuneops_home(home: Path):
    """Run registry calls against the server's TUNEOPS_HOME (the pointer is read per call)."""
    before = os.environ["TUNEOPS_HOME"]
    os.environ["TUNEOPS_HOME"] = str(home)
    try:
        yield
    finally:
        os.environ["TUNEOPS_HOME"] = before


@contextlib.contextmanager
def served(home: Path, settings: list[str], token: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``tuneops serve`` of ``home``'s champion on a free port, with ``--set`` ``settings`` and the
    bearer ``token``; yields (url, process) once /readyz answers, and stops it by its pid after."""
    port = free_port()
    env = {**os.environ, "TUNEOPS_HOME": str(home), "TUNEOPS_API_TOKEN": token}
    command = [sys.executable, "-m", "tuneops.flows.cli", "serve", "--port", str(port)]
    for setting in settings:
        command += ["--set", setting]
    with open(home / "server.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, home / "server.log")
            yield f"http://127.0.0.1:{port}", process
        finally:
            stop(process)


@contextlib.contextmanager
def bentoml_served(home: Path, settings: dict, token: str, via_cli: bool = False
                   ) -> Iterator[tuple[str, subprocess.Popen]]:
    """``bentoml serve`` of the service module on a free port, as the serving image starts it
    (or, ``via_cli``, as ``tuneops serve`` following the champion starts it): it starts whatever
    ``home``'s pointer says (nothing, a damaged model). ``settings`` are ``serving`` config keys.
    Yields (url, process) once /healthz answers (ready or not), and stops it by its pid after."""
    from tuneops.components.config import ServingConfig
    from tuneops.serving.settings import SERVICE_IMPORT, serving_environment

    port = free_port()
    env = {**os.environ, "TUNEOPS_HOME": str(home), "TUNEOPS_API_TOKEN": token,
           **serving_environment(ServingConfig(**settings), None)}
    env.pop("TUNEOPS_SERVE_MODEL", None)
    if via_cli:
        command = [sys.executable, "-m", "tuneops.flows.cli", "serve", "--port", str(port)]
        for key, value in settings.items():
            command += ["--set", f"serving.{key}={value}"]
    else:
        command = [sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", "127.0.0.1", "--port",
                   str(port)]
    with open(home / "server.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, home / "server.log", path="/healthz")
            yield f"http://127.0.0.1:{port}", process
        finally:
            stop(process)


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180, path: str = "/readyz") -> None:
    """Wait until ``path`` answers 200 (fail with the log's tail if the server exits or never does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def worker_pids(process: subprocess.Popen) -> list[int]:
    """The BentoML worker processes of a server this test started (its descendants that serve)."""
    import psutil

    pids = []
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "_bentoml_impl.worker" in " ".join(child.cmdline()):
                pids.append(child.pid)
    return pids


def stop(process: subprocess.Popen) -> None:
    """Stop a server this test started: SIGTERM to its pid, then its process group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group created for this server only
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
