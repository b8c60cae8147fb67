"""What the tests of the local stack share (``tuneops up`` on SQLite and on PostgreSQL): the CLI
run in a home of its own, the stack's records, Prefect's REST API, HTTP traffic to serving, and a
first champion made quickly (this module run as a script)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.helpers import cli_environment

# Small enough for a 2-core CPU, big enough that the retrained model passes the gate's behavioural
# checks (30 steps sometimes leave 'clear neutral reviews' below its pass rate): ~35 s of training.
TINY_RETRAIN = [
    "data.max_rows=600",
    "training.max_steps=90",
    "training.batch_size=16",
    "training.eval_every_steps=30",
    "selection.candidates=[packaged:all-MiniLM-L6-v2]",
    "selection.probe_rows=200",
    "evaluation.bootstrap_samples=50",
    # Serving follows the champion pointer; a short check keeps the test's wait short.
    "serving.reload_check_s=0.5",
]


def tuneops(home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneops.flows.cli", *args], capture_output=True, text=True,
                          env=cli_environment(home), timeout=timeout)


def stack_record(home: Path, name: str) -> dict:
    return json.loads((home / "stack" / f"{name}.json").read_text())


def pid_alive(pid: int, create_time: float) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - create_time) < 0.5 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def classify(base_url: str, texts: list[str]) -> list[dict]:
    results = []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for start in range(0, len(texts), 20):
            answer = client.post("/classify", json={"texts": texts[start:start + 20]})
            assert answer.status_code == 200, answer.text[:500]
            results.extend(answer.json())
    return results


class _RetryBusyServer(httpx.HTTPTransport):
    """Retry what Prefect's server answers 503 to: it says so when its SQLite database is busy,
    and Prefect's own client retries those the same way (a few times, backing off)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(6):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(0.5 * 2 ** attempt)
        return super().handle_request(request)


def prefect_api(api_url: str) -> httpx.Client:
    """A client of the stack's Prefect REST API."""
    return httpx.Client(base_url=api_url, timeout=30, transport=_RetryBusyServer())


def postgres_fetch(port: int, password: str, query: str, *args, database: str = "prefect") -> list[dict]:
    """The rows of ``query`` on tuneops' own PostgreSQL (role ``tuneops`` on 127.0.0.1:``port``)."""
    import asyncio

    import asyncpg

    async def fetch() -> list[dict]:
        connection = await asyncpg.connect(host="127.0.0.1", port=port, user="tuneops", password=password,
                                           database=database, timeout=10)
        try:
            return [dict(row) for row in await connection.fetch(query, *args)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def start_deployment_run(client: httpx.Client, name: str, parameters: dict | None = None) -> str:
    """Ask the server for a run of the deployment ``flow/deployment``; its flow run id."""
    flow, _, deployment = name.partition("/")
    found = client.get(f"/deployments/name/{flow}/{deployment}")
    assert found.status_code == 200, found.text
    created = client.post(f"/deployments/{found.json()['id']}/create_flow_run",
                          json={"parameters": parameters} if parameters else {})
    assert created.status_code in (200, 201), created.text
    return created.json()["id"]


def wait_for_flow_run(client: httpx.Client, flow_run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        run = client.get(f"/flow_runs/{flow_run_id}").json()
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") or time.monotonic() > deadline:
            return run
        time.sleep(2)


def make_champion() -> str:
    """Fine-tune MiniLM for a few steps on demo rows and make it the champion, with the reference
    sample packaging keeps for monitoring. Run as ``python -m tests.e2e.stack_helpers make-champion``."""
    from tuneops.components.paths import configure_environment

    configure_environment()
    from tuneops.components import registry
    from tuneops.components.config import PACKAGED_MINILM, load_config
    from tuneops.components.data.loading import as_validated, load_data
    from tuneops.components.monitoring.reference import reference_sample
    from tuneops.components.paths import demo_dir, tuneops_home
    from tuneops.components.predictor import Predictor
    from tuneops.components.tasks.registry import get_task
    from tuneops.components.training.finetune import finetune

    config = load_config(None, ["data.max_rows=300", "training.max_steps=8", "training.batch_size=16"])
    task = get_task(config.task)
    splits = as_validated(load_data(config.data, demo_dir(), task))
    trained = finetune(splits.train, splits.validation, splits.labels, PACKAGED_MINILM, config.training,
                       tuneops_home() / "fixture-model" / "model", task=task)
    # Every training row, as packaging keeps them: the reference monitoring compares traffic with.
    reference = reference_sample(splits.train, Predictor.from_dir(trained.path), len(splits.train), seed=0)
    release = registry.package_model(trained.path, {
        "run_id": "monitoring-fixture", "labels": splits.labels, "gate": "promote",
        "metrics": {}, "data_fingerprint": splits.fingerprint, "base_checkpoint": PACKAGED_MINILM,
    }, reference)
    registry.set_champion(release.tag)
    return release.tag


if __name__ == "__main__":
    if sys.argv[1:] == ["make-champion"]:
        print(make_champion())
