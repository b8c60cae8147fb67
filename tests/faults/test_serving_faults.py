"""Faults injected into a real served process on 127.0.0.1: the serving worker killed with SIGKILL
under load, a champion whose weights were altered after packaging (at swap time and when a worker
starts), no champion at all when the service starts, unauthenticated junk, and an oversize body
from a client that sends it whole before reading.

Each asserts the service still answers (/healthz 200), that /readyz says the truth (200 with the
served model, or 503 with the reason), and that predictions come back once a good model is there.

The models are real but tiny (a 2-layer BERT with MiniLM's tokenizer, random weights), as in
tests/code/test_registry.py: what is tested is how the service survives, not what it predicts,
and a tiny model keeps each verification, load and worker restart to seconds. Every loop is
bounded in count and time; the servers are stopped by pid, the killed workers are their own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tuneops.components import champion_pointer, registry
from tuneops.components.monitoring.prediction_log import PredictionLog

from tests.tiny_model import LABELS, save_tiny_text_model
from tests.e2e.serving_process import bentoml_served, served, tuneops_home, worker_pids

TOKEN = "fault-token-51c2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A cap whose oversize test body (3 times it) is more than the socket buffers take in unread.
MAX_REQUEST_BYTES = 2_000_000
SETTINGS = {
    "max_items": 8, "max_text_chars": 300, "max_request_bytes": MAX_REQUEST_BYTES,
    # One intra-op thread and a long queue deadline: the machine is shared (tests/e2e/test_serving.py).
    "torch_threads": 1, "max_latency_ms": 30000, "reload_check_s": 0.5,
}
# A fresh worker imports torch, transformers and BentoML before it answers: seconds on a quiet
# machine, tens on a loaded one.
RESTART_TIMEOUT_S = 120


@dataclass
class Server:
    url: str
    home: Path
    process: object

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def classify(self, texts: list[str]) -> httpx.Response:
        return httpx.post(f"{self.url}/classify", json={"texts": texts}, headers=AUTH, timeout=60)

    def promote(self, tag: str) -> None:
        with tuneops_home(self.home):
            registry.set_champion(tag)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("fault-model"))


@pytest.fixture(scope="module")
def package(tiny_model_dir: Path):
    """Packages the tiny model as a new release (a new tag) each call."""
    reference = pd.DataFrame({"text": [f"review number {i}" for i in range(12)],
                              "label": [LABELS[i % 3] for i in range(12)],
                              "prediction": [LABELS[(i + 1) % 3] for i in range(12)]})

    def make(run_id: str) -> registry.ModelRelease:
        return registry.package_model(tiny_model_dir, {"run_id": run_id, "metrics": {"macro_f1": 0.5}}, reference)

    return make


@pytest.fixture(scope="module")
def good(package) -> tuple[registry.ModelRelease, registry.ModelRelease]:
    return package("fault-good-a"), package("fault-good-b")


@pytest.fixture(scope="module")
def server(good, tmp_path_factory):
    """``tuneops serve`` of a good champion; the tests below break it in turn (in file order)."""
    home = tmp_path_factory.mktemp("fault-home")
    with tuneops_home(home):
        registry.set_champion(good[0].tag)
    settings = [f"serving.{key}={value}" for key, value in SETTINGS.items()]
    with served(home, settings, TOKEN) as (url, process):
        yield Server(url, home, process)


def damaged_champion(home: Path, release: registry.ModelRelease) -> None:
    """Make ``release`` the champion in ``home`` with its weights altered after packaging.

    ``set_champion`` refuses a damaged model, so the pointer is written (verified) in a scratch
    home from a copy of ``home``'s, the weights are damaged, and only then does the new pointer
    replace ``home``'s, atomically as the registry does: a server watching ``home`` cannot load
    the model in between, while it was still whole.
    """
    scratch = home / f"scratch-{secrets.token_hex(3)}"
    scratch.mkdir()
    source = home / champion_pointer.POINTER_FILE
    if source.exists():
        shutil.copy2(source, scratch / source.name)
    with tuneops_home(scratch):
        registry.set_champion(release.tag)
        prepared = champion_pointer.pointer_path()
    weights = release.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # same size, different bytes: only the checksum can tell
    weights.write_bytes(bytes(data))
    os.replace(prepared, source)


def kill_worker(server_process) -> int:
    """SIGKILL the one serving worker of a server this test started; returns its pid."""
    pids = worker_pids(server_process)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def wait_for(condition, timeout: float, what: str, step: float = 0.3):
    """Poll ``condition`` (exceptions count as not yet) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (httpx.HTTPError, OSError) as error:
            value, last = None, error
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def readiness(server: Server) -> tuple[int, dict]:
    response = server.get("/readyz")
    return response.status_code, response.json()


def wait_readiness(server: Server, predicate, timeout: float, what: str) -> tuple[int, dict]:
    """The first /readyz (status, body) for which ``predicate(status, body)`` holds."""
    def check():
        status, body = readiness(server)
        return (status, body) if predicate(status, body) else None

    return wait_for(check, timeout, what)


def new_worker_answers(server: Server, killed: int):
    """True once a worker other than ``killed`` serves and /readyz answers."""
    pids = worker_pids(server.process)
    return pids and killed not in pids and server.get("/readyz").status_code in (200, 503)


class Load:
    """Clients posting to the server from threads until stopped: at most ``per_client`` requests
    each, so the load is bounded in count as well as in time."""

    def __init__(self, server: Server, clients: int = 4, per_client: int = 500) -> None:
        self.server, self.per_client = server, per_client
        self.answered: list[tuple[str, str]] = []  # (request id, model tag) of each 200
        self.failed: list[object] = []  # a status other than 200, or the transport error's name
        self._done, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(index,)) for index in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in self._threads)

    def _client(self, index: int) -> None:
        with httpx.Client(headers=AUTH, timeout=60) as session:
            for number in range(self.per_client):
                if self._done.is_set():
                    return
                request_id = f"load-{index}-{number}"
                try:
                    response = session.post(f"{self.server.url}/classify", json={"texts": [f"text {number}"] * 2},
                                            headers={"X-Request-ID": request_id})
                except httpx.HTTPError as error:  # a connection the killed worker held
                    with self._lock:
                        self.failed.append(type(error).__name__)
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.answered.append((request_id, response.json()[0]["model_tag"]))
                    else:
                        self.failed.append(response.status_code)


def test_a_damaged_champion_and_a_worker_killed_under_load(server: Server, good, package) -> None:
    """The issue's sequence, under load: a champion damaged after promotion is refused by the
    running worker; the worker is killed; the new one starts anyway, on the previous champion;
    nothing but the killed worker's own connections fails, and the log has no torn line."""
    first, second = good
    wait_readiness(server, lambda status, body: status == 200, 60, "the server to be ready")
    damaged = package("fault-damaged-swap")
    with Load(server) as load:
        wait_for(lambda: len(load.answered) >= 20, 60, "20 answered requests")
        damaged_champion(server.home, damaged)
        # The running worker refuses the swap and keeps serving the model it has.
        status, body = wait_readiness(server, lambda status, body: "warning" in body, 30, "the refused swap")
        assert status == 200 and body["model_tag"] == first.tag
        assert damaged.tag in body["warning"] and "checksum" in body["warning"]
        answered_before_kill = len(load.answered)

        killed = kill_worker(server.process)
        wait_for(lambda: new_worker_answers(server, killed), RESTART_TIMEOUT_S, "a new worker")
        wait_for(lambda: len(load.answered) > answered_before_kill + 10, 60, "answers from the new worker")
    # Whatever failed, failed at the transport (the killed worker's connections): no live worker
    # answered anything but 200, and every answer came from the model that verified.
    assert not [status for status in load.failed if isinstance(status, int)], load.failed
    assert {tag for _, tag in load.answered} == {first.tag}

    # The new worker started on the previous champion that verifies, and says so; the pointer
    # still names the damaged one (rolling back is a person's decision).
    assert server.get("/healthz").status_code == 200
    status, body = readiness(server)
    assert status == 200 and body["model_tag"] == first.tag
    assert damaged.tag in body["warning"] and f"previous champion {first.tag}" in body["warning"]
    with tuneops_home(server.home):
        assert registry.champion_tag() == damaged.tag

    # The log: every line of every segment is whole JSON (a SIGKILL cannot tear a write(2)), and
    # every answered request is in it (its record is written before its answer is sent).
    segments = sorted((server.home / "predictions").glob("predictions-*.jsonl"))
    assert len(segments) >= 2  # the killed worker's and the new one's: never appended to each other
    for segment in segments:
        for line in segment.read_bytes().splitlines():
            json.loads(line)
    logged = set(PredictionLog(server.home / "predictions").read()["request_id"])
    assert {request_id for request_id, _ in load.answered} <= logged

    # A good champion is taken up without a restart, and the warning goes.
    server.promote(second.tag)
    wait_readiness(server, lambda status, body: body.get("model_tag") == second.tag, 60, "the good champion")
    assert "warning" not in readiness(server)[1]
    assert server.classify(["served by the new champion"]).json()[0]["model_tag"] == second.tag


def test_unauthenticated_junk_grows_no_metrics_series(server: Server) -> None:
    def junk(count: int, offset: int) -> None:
        with httpx.Client(timeout=30) as session:
            for number in range(offset, offset + count):
                path = f"/probe-{secrets.token_hex(8)}-{number}"
                response = (session.post(server.url + path, content=b"x" * 100, headers={"X-Request-ID": path[1:]})
                            if number % 2 else session.get(server.url + path + "?q=" + secrets.token_hex(4)))
                assert response.status_code == 401

    junk(20, 0)  # the first unknown path adds the one series all of them share
    before = server.get("/metrics").text
    junk(300, 20)
    after = server.get("/metrics").text
    assert "/probe-" not in after and 'endpoint="/{other}"' in after
    # Same series, larger counts: the text grows by digits at most, not by series.
    assert len(after.splitlines()) == len(before.splitlines())
    assert len(after) - len(before) < 1000


def test_an_oversize_body_sent_whole_still_gets_its_413(server: Server) -> None:
    # urllib writes the whole body before it reads the answer, like most simple clients. 6 MB is
    # more than the loopback socket buffers take in unread (they grow to a few MB), so a server
    # that answered without reading would close on unread data, and the client would see a reset
    # or a broken pipe instead of the 413 (checked: it does, at this size, without the drain).
    body = json.dumps({"texts": ["x" * (3 * MAX_REQUEST_BYTES)]}).encode()
    request = urllib.request.Request(f"{server.url}/classify", data=body,
                                     headers={**AUTH, "content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=60)
    assert answer.value.code == 413
    assert json.loads(answer.value.read())["error"].startswith(f"request body over {MAX_REQUEST_BYTES} bytes")
    # The same without a token: the 401 is read as well.
    request = urllib.request.Request(f"{server.url}/classify", data=body, headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=60)
    assert answer.value.code == 401
    assert server.classify(["still serving"]).status_code == 200


def test_no_champion_at_start_up_then_a_damaged_one_then_a_good_one(good, package, tmp_path: Path) -> None:
    first, _ = good
    home = tmp_path / "home"
    home.mkdir()
    # Through `tuneops serve` (following the champion), which starts the service as the image does.
    with bentoml_served(home, SETTINGS, TOKEN, via_cli=True) as (url, process):
        server = Server(url, home, process)
        assert "no model yet: not ready" in (home / "server.log").read_text()
        # No champion: up, alive, not ready, and it says why; /classify refuses in one line.
        assert server.get("/healthz").status_code == 200
        status, body = readiness(server)
        assert status == 503 and body["ready"] is False and "no champion" in body["error"]
        response = server.classify(["anyone there?"])
        assert response.status_code == 503
        assert response.json()["error"].startswith("not ready: no champion") and "\n" not in response.text

        # A damaged champion appears, with nothing before it to fall back to: still not ready.
        damaged = package("fault-damaged-first")
        damaged_champion(home, damaged)
        status, body = wait_readiness(server, lambda status, body: damaged.tag in body.get("error", ""), 30,
                                      "the damaged champion's reason")
        assert status == 503 and "checksum" in body["error"]
        assert server.get("/healthz").status_code == 200
        assert server.classify(["still not"]).status_code == 503

        # A good champion: ready by itself, and predictions come back.
        server.promote(first.tag)
        wait_readiness(server, lambda status, body: status == 200, 60, "the good champion to be served")
        response = server.classify(["finally"])
        assert response.status_code == 200 and response.json()[0]["model_tag"] == first.tag
        refused = [float(line.rsplit(" ", 1)[1]) for line in server.get("/metrics").text.splitlines()
                   if line.startswith('tuneops_requests_rejected_total{reason="not_ready"}')]
        assert refused == [2.0]


def test_a_process_starting_on_a_damaged_champion_starts_unready_and_recovers(good, package, tmp_path,
                                                                                monkeypatch) -> None:
    """What a fresh worker does when the champion is damaged and nothing before it verifies (the
    served case of a worker restarted on a damaged champion is the load test above, with a
    previous champion to fall back to): in process, as the service's ``__init__`` calls it."""
    from tuneops.serving.model_holder import ModelHolder

    first, _ = good
    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    damaged = package("fault-damaged-alone")
    damaged_champion(tmp_path, damaged)
    holder = ModelHolder(task_name="text-classification", check_interval_s=60)
    state = holder.start()  # must not raise, whatever the champion is
    try:
        assert not state.ready and state.model_tag is None
        assert damaged.tag in state.reason and "checksum" in state.reason and "no previous champion" in state.reason
        assert holder.check_now() is False  # the pointer has not changed: no retry yet
        registry.set_champion(first.tag)
        assert holder.check_now() is True
        assert holder.readiness() == type(state)(True, first.tag, "")
    finally:
        holder.stop()
