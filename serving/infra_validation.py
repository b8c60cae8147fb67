"""Infrastructure validation: before the champion pointer moves, the packaged model must serve.

Evaluation scores the model inside the training process. Production runs something else: the
copy in the model store, loaded by ``bentoml serve`` in a fresh process with the service's own
imports, request schema, auth and batching. TFX's InfraValidator checks that gap before a model
is pushed; this does the same here. The packaged model is served pinned, by a real ``bentoml serve``
on a free 127.0.0.1 port, and must

1. start and report ready within ``startup_timeout_s``;
2. answer ``requests`` test inputs, one request each, with 200 and the labels and probabilities
   the in-process model gives (within ``PROBABILITY_TOLERANCE``: the same weights on the same CPU
   differ only by float rounding);
3. do so with a p95 latency within ``max_p95_latency_ms``.

The check's server has its own ``TUNEOPS_HOME`` inside the run directory (the model store stays
the real one), so its predictions land in a log of their own there, never in the production
prediction log that monitoring reads, and its server log is kept beside them for a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tuneops.components import registry
from tuneops.components.config import InfraValidationConfig, ServingConfig
from tuneops.components.errors import TuneopsError
from tuneops.components.paths import SOURCE_ROOT
from tuneops.components.process_guard import die_with_parent
from tuneops.components.tasks.base import Task
from tuneops.serving.guard import STARTING
from tuneops.serving.settings import SERVICE_IMPORT, serving_environment

PROBABILITY_TOLERANCE = 1e-3
_STOP_GRACE_S = 20.0


@dataclass
class InfraValidation:
    """What the serving check found: passed or not, why, and what it measured."""

    passed: bool
    message: str
    startup_s: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    server_log: str | None = None

    @property
    def p95_ms(self) -> float | None:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "p95_ms": self.p95_ms}


def validate_serving(tag: str, inputs: list[Any], expected: np.ndarray, labels: list[str], task: Task,
                     config: InfraValidationConfig, serving: ServingConfig, output_dir: Path) -> InfraValidation:
    """Serve the packaged model ``tag`` and check it answers ``inputs`` as ``expected`` (the
    in-process probabilities, one row per input, columns in ``labels`` order), in time."""
    import httpx

    try:
        # What the service checks before loading (complete files, checksums), here in one line
        # rather than after a server start.
        registry.verify_model(tag)
    except TuneopsError as error:
        return InfraValidation(False, f"the packaged model does not verify: {error}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / "server.log"
    token = secrets.token_urlsafe(24)
    port = _free_port()
    settings = serving.model_copy(update={"host": "127.0.0.1", "port": port, "workers": 1})
    env = {**os.environ, "TUNEOPS_HOME": str(output_dir / "home"), serving.auth_token_env: token,
           **serving_environment(settings, tag)}
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", "127.0.0.1",
               "--port", str(port), "--working-dir", str(SOURCE_ROOT)]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with _server(command, env, log_path) as process, httpx.Client(timeout=60.0) as client:
        problem = _wait_ready(client, url, process, config.startup_timeout_s)
        startup_s = round(time.monotonic() - started, 1)
        if problem:
            return InfraValidation(False, f"the packaged model {tag} did not start serving: {problem}"
                                   f"{_last_error(log_path)}", startup_s, server_log=str(log_path))
        headers = {"Authorization": f"Bearer {token}"}
        latencies = []
        for index, value in enumerate(inputs):
            sent = time.perf_counter()
            try:
                answer = client.post(f"{url}/classify", json=task.request_body([value]), headers=headers)
            except httpx.HTTPError as error:
                return InfraValidation(False, f"the served model {tag} did not answer request {index + 1}: "
                                              f"{type(error).__name__}", startup_s, latencies, str(log_path))
            latencies.append(round((time.perf_counter() - sent) * 1000, 1))
            mismatch = _mismatch(answer, expected[index], labels)
            if mismatch:
                return InfraValidation(False, f"the served model {tag}, request {index + 1}: {mismatch}",
                                       startup_s, latencies, str(log_path))
    result = InfraValidation(True, "", startup_s, latencies, str(log_path))
    summary = (f"{len(latencies)} test inputs answered as in process, p95 {result.p95_ms:.0f} ms "
               f"(bound {config.max_p95_latency_ms:.0f} ms), ready in {startup_s:.0f} s")
    if result.p95_ms > config.max_p95_latency_ms:
        result.passed = False
        result.message = f"the served model {tag} is too slow: {summary}"
    else:
        result.message = f"the served model {tag}: {summary}"
    return result


def _mismatch(answer, expected: np.ndarray, labels: list[str]) -> str | None:
    """Why one answer is not the in-process prediction, or None."""
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
    try:
        (prediction,) = answer.json()
        served = np.array([float(prediction["probabilities"][label]) for label in labels])
    except (ValueError, KeyError, TypeError) as error:
        return f"an answer of another shape than one prediction over {labels}: {error}"
    wanted = labels[int(np.argmax(expected))]
    if prediction["label"] != wanted:
        return f"label {prediction['label']!r}, the model in process says {wanted!r}"
    difference = float(np.abs(served - expected).max())
    if difference > PROBABILITY_TOLERANCE:
        return f"probabilities differ from the in-process ones by up to {difference:.4f}"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _server(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """The server process, in a session of its own, stopped with its whole group afterwards; it
    gets SIGTERM if this process dies first (die_with_parent)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=SOURCE_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    try:
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server and its workers, SIGKILL what is left after the grace period. By
    psutil handles taken while they run: a pid the system has since reused is never signalled."""
    import psutil

    try:
        leader = psutil.Process(process.pid)
        family = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        family = []
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=_STOP_GRACE_S)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()
    process.wait()


def _wait_ready(client, url: str, process: subprocess.Popen, timeout_s: float) -> str | None:
    """None once /readyz answers 200; else why not (the server exited, or the time ran out)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    said = ""  # what the service last gave as its reason for not being ready
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"the server exited with {process.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            answer = client.get(f"{url}/readyz", timeout=3.0)
            if answer.status_code == 200:
                return None
            said, model_failed = _not_ready_reason(answer)
            if model_failed:
                # The service came up but its pinned model did not load: waiting will not change that.
                return f"not ready: {said}"
        time.sleep(0.5)
    return f"not ready within {timeout_s:.0f} s" + (f" (/readyz: {said})" if said else "")


def _not_ready_reason(answer) -> tuple[str, bool]:
    """The reason a not-ready /readyz gives (the guard's ``error``, else the text, shortened),
    and whether it says the model failed to load (the guard's answer, past its start-up)."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    guarded = isinstance(body, dict) and body.get("ready") is False and isinstance(body.get("error"), str)
    reason = body["error"] if guarded else answer.text
    return " ".join(reason.split())[:300], guarded and reason != STARTING


def _last_error(log_path: Path) -> str:
    """The server log's last line that names an error, as '; <line>' (or nothing)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return f"; {line.strip()[:300]}"
    return ""
