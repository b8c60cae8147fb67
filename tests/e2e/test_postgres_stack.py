"""The production stack as a user grows into it: `tuneops up --postgres` (tuneops' own PostgreSQL,
the Prefect server on it, a process worker, serving, the Evidently UI, all on 127.0.0.1),
`tuneops deploy`, two runs of the retrain deployment asked for at once through Prefect's REST API
and executed by the worker, the new champion served without a restart, and `tuneops down`
leaving no process behind. Two whole retrains: with the slow tests, which .ci/run runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tuneops.components.stack.records import SERVICES
from tests.e2e.helpers import cli_environment, reachable_home
from tests.e2e.stack_helpers import (
    TINY_RETRAIN, classify, pid_alive, postgres_fetch, prefect_api, stack_record, start_deployment_run, tuneops,
    wait_for_flow_run,
)


def _flow_runs_in_postgres(home: Path, port: int, ids: list[str]) -> dict[str, str]:
    """Each flow run's state as the Prefect server stored it in PostgreSQL, read with SQL."""
    password = (home / "postgres" / "password").read_text().strip()
    rows = postgres_fetch(port, password, "SELECT id::text AS id, state_type::text AS state FROM flow_run "
                                          "WHERE id = ANY($1::uuid[])", ids)
    return {row["id"]: row["state"] for row in rows}


def _state_names(client, flow_run_id: str) -> list[str]:
    answer = client.get("/flow_run_states/", params={"flow_run_id": flow_run_id})
    assert answer.status_code == 200, answer.text
    return [state["name"] for state in sorted(answer.json(), key=lambda state: state["timestamp"])]


def _marked(markers: set[str]) -> list[psutil.Process]:
    from tuneops.components.stack.records import MARKER_ENV

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER_ENV) in markers:
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_retrain_deployment_fires_on_a_worker_over_postgres_promotes_once_and_is_served():
    with reachable_home() as home:
        made = subprocess.run([sys.executable, "-m", "tests.e2e.stack_helpers", "make-champion"],
                              capture_output=True, text=True, env=cli_environment(home), timeout=900,
                              cwd=Path(__file__).resolve().parents[2])
        assert made.returncode == 0, made.stderr[-3000:]
        first_champion = made.stdout.strip().splitlines()[-1]
        set_args = [arg for override in TINY_RETRAIN for arg in ("--set", override)]
        started = tuneops(home, "up", "--postgres", "--prefect-port", "0", "--evidently-port", "0",
                          "--serving-port", "0", *set_args, timeout=900)
        try:
            assert started.returncode == 0, started.stderr[-3000:] + started.stdout[-2000:]
            assert "postgres: started" in started.stdout, started.stdout
            records = {name: stack_record(home, name) for name in SERVICES}
            postgres_port = int(records["postgres"]["extra"]["port"])
            assert records["prefect-server"]["extra"]["database"] == f"postgresql (127.0.0.1:{postgres_port}/prefect)"
            api_url = records["prefect-server"]["extra"]["api_url"]
            serving_url = records["serving"]["url"]
            deployed = tuneops(home, "deploy", "--paused", *set_args, timeout=600)
            assert deployed.returncode == 0, deployed.stderr[-3000:]

            # Two runs asked for at once: the deployment's concurrency limit of 1 makes the second
            # wait for a slot while the first trains, so they never write the registry together.
            with prefect_api(api_url) as client:
                ids = [start_deployment_run(client, "tuneops-retrain/retrain", {"reason": f"test {n}"})
                       for n in (1, 2)]
                runs = [wait_for_flow_run(client, flow_run_id, timeout_s=1800) for flow_run_id in ids]
                histories = {flow_run_id: _state_names(client, flow_run_id) for flow_run_id in ids}
            assert [run["state_type"] for run in runs] == ["COMPLETED", "COMPLETED"], [run["state"] for run in runs]
            first, second = sorted(runs, key=lambda run: run["start_time"])
            assert datetime.fromisoformat(first["end_time"]) <= datetime.fromisoformat(second["start_time"]), histories
            assert "AwaitingConcurrencySlot" in histories[second["id"]], histories
            # What the server answered is what PostgreSQL holds.
            assert _flow_runs_in_postgres(home, postgres_port, ids) == {flow_run_id: "COMPLETED" for flow_run_id in ids}

            # Both run records are whole. The first retrain beats the few-step champion; the second
            # (same data, same seed) is judged against the first's model, promoted only if it beats
            # it. The champion is the last model promoted, and the registry agrees.
            summaries = {summary["run_id"]: summary for summary in
                         (json.loads(path.read_text()) for path in (home / "runs").glob("*/summary.json"))}
            assert len(summaries) == 2, sorted(summaries)
            by_start = sorted(summaries.values(), key=lambda summary: summary["started_at"])
            statuses = [summary["status"] for summary in by_start]
            assert statuses[0] == "promoted" and statuses[1] in ("promoted", "rejected"), \
                [summary.get("gate") for summary in by_start]
            promoted = [summary["model_tag"] for summary in by_start if summary["status"] == "promoted"]
            new_champion = json.loads((home / "champion.json").read_text())["tag"]
            assert new_champion == promoted[-1] != first_champion
            listed = tuneops(home, "models", "--output", "json", timeout=300)
            assert listed.returncode == 0 and "partial entry" not in listed.stderr, listed.stderr
            models = json.loads(listed.stdout)
            assert [model["tag"] for model in models if model["is_champion"]] == [new_champion]
            assert {first_champion, *promoted} <= {model["tag"] for model in models}

            # The running service switches to the new champion without a restart.
            deadline = time.monotonic() + 180
            served = None
            while time.monotonic() < deadline:
                served = classify(serving_url, ["The blender broke after one week."])[0]["model_tag"]
                if served == new_champion:
                    break
                time.sleep(1)
            assert served == new_champion
            postmaster = psutil.Process(records["postgres"]["pid"])
            family = [postmaster, *postmaster.children(recursive=True)]
        finally:
            stopped = tuneops(home, "down", timeout=300)

        assert stopped.returncode == 0, stopped.stderr
        for name in SERVICES:
            record = records[name]
            assert f"{name}: stopped (pid {record['pid']})" in stopped.stdout, stopped.stdout
            assert not pid_alive(record["pid"], record["create_time"]), name
        assert stopped.stdout.index("serving: stopped") < stopped.stdout.index("postgres: stopped")
        assert not any(process.is_running() for process in family)
        assert not _marked({record["marker"] for record in records.values()})
        assert not list((home / "stack").glob("*.json"))
