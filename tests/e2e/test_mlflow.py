"""MLflow tracking and registry against a real ``mlflow server`` (SQLite backend, artifacts served
by the server) on 127.0.0.1: two tiny ``tuneops run``s log their config, curves, test metrics,
gate and record, register their models, and the ``champion`` alias follows ``tuneops promote`` /
``rollback``. Everything is read back through MLflow's REST API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.e2e.helpers import cli_environment
from tests.e2e.serving_process import free_port, stop, wait_ready

MODEL_NAME = "tuneops-classifier"
TINY = ["--set", "data.max_rows=300", "--set", "training.max_steps=6", "--set", "training.batch_size=16",
        "--set", "training.eval_every_steps=3",
        "--set", "selection.candidates=[packaged:all-MiniLM-L6-v2@layers=1]",
        "--set", "evaluation.bootstrap_samples=20", "--set", "gate.infra_validation.enabled=false",
        # A 6-step model is no good: the gate is opened wide so that both runs promote.
        "--set", "gate.require_beat_baseline=false", "--set", "gate.tolerance=1", "--set", "gate.max_slice_drop=1",
        "--set", "gate.max_fairness_gap=1", "--set", "gate.min_behavioural_pass_rate=0",
        "--set", "tracking.experiment=e2e",
        "--set", "tracking.tags={team: search}"]


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server that this module starts and stops (by its pid)."""
    directory = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = directory / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
             "--artifacts-destination", str(directory / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log, timeout=120, path="/health")
        yield url
    finally:
        stop(process)


def tuneops(*args: str, home: Path, url: str, timeout: int = 600) -> subprocess.CompletedProcess:
    environment = {**cli_environment(home), "MLFLOW_TRACKING_URI": url}
    return subprocess.run([sys.executable, "-m", "tuneops.flows.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def api(url: str, endpoint: str, **params) -> dict:
    response = httpx.get(f"{url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def search_run(url: str, run_id: str) -> dict:
    experiment = api(url, "experiments/get-by-name", experiment_name="e2e")["experiment"]
    response = httpx.post(f"{url}/api/2.0/mlflow/runs/search", timeout=30, json={
        "experiment_ids": [experiment["experiment_id"]], "filter": f"tags.`tuneops.run_id` = '{run_id}'"})
    assert response.status_code == 200, response.text
    runs = response.json()["runs"]
    assert len(runs) == 1
    return runs[0]


def champion_version(url: str) -> str:
    return api(url, "registered-models/alias", name=MODEL_NAME, alias="champion")["model_version"]["version"]


# Two tiny runs and four CLI calls against a real server (about 85 s): with the slow runs, which
# `.ci/run` runs too, to keep the default suite well inside its time.
@pytest.mark.slow
def test_runs_are_tracked_and_the_champion_alias_follows_promotions(mlflow_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    first = tuneops("run", *TINY, "-o", "json", home=tmp_path, url=mlflow_url)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    assert summary["status"] == "promoted", summary.get("gate", {}).get("reasons")
    assert summary["tracking"]["error"] is None and not any("tracking" in line for line in summary["warnings"])
    assert summary["tracking"]["model_version"] == "1"

    run = search_run(mlflow_url, summary["run_id"])
    mlflow_run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED" and summary["tracking"]["run_id"] == mlflow_run_id
    params = {param["key"]: param["value"] for param in run["data"]["params"]}
    assert params["training.max_steps"] == "6" and params["gate.require_beat_baseline"] == "False"
    assert params["selection.candidates"] == '["packaged:all-MiniLM-L6-v2@layers=1"]'
    tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    assert tags["team"] == "search" and tags["gate.decision"] == "promote"
    metrics = {metric["key"]: metric["value"] for metric in run["data"]["metrics"]}
    assert metrics["macro_f1"] == pytest.approx(summary["metrics"]["macro_f1"])
    assert metrics["macro_f1_ci_low"] <= metrics["macro_f1"] <= metrics["macro_f1_ci_high"]
    assert metrics["gate_promote"] == 1.0

    # The training loss of every step, and the validation metric at the evaluation steps.
    loss = api(mlflow_url, "metrics/get-history", run_id=mlflow_run_id, metric_key="train_loss")["metrics"]
    assert sorted(point["step"] for point in loss) == list(range(1, 7))
    validation = api(mlflow_url, "metrics/get-history", run_id=mlflow_run_id, metric_key="validation_macro_f1")
    assert sorted(point["step"] for point in validation["metrics"]) == [3, 6]

    def listed(path: str) -> set[str]:
        files = api(mlflow_url, "artifacts/list", run_id=mlflow_run_id, path=path).get("files", [])
        return {Path(entry["path"]).name for entry in files}

    assert {"summary.json", "lineage.json", "index.html", "gate"} <= listed("record")
    assert "gate.json" in listed("record/gate")
    # The packaged BentoML model folder: weights, the reference sample and the lineage it was saved with.
    model_files = listed("model")
    assert {"reference.parquet", "lineage.json"} <= model_files and any(name.endswith(".safetensors")
                                                                       for name in model_files), model_files

    version = api(mlflow_url, "model-versions/get", name=MODEL_NAME, version="1")["model_version"]
    version_tags = {tag["key"]: tag["value"] for tag in version["tags"]}
    assert version["run_id"] == mlflow_run_id and version_tags["bentoml_tag"] == summary["model_tag"]
    registered = api(mlflow_url, "registered-models/get", name=MODEL_NAME)["registered_model"]
    assert {alias["alias"]: alias["version"] for alias in registered["aliases"]} == {"champion": "1"}

    # A second model, then the alias follows rollback and promote as the champion pointer does.
    second = tuneops("run", *TINY, "-o", "json", home=tmp_path, url=mlflow_url)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout)["status"] == "promoted"
    assert champion_version(mlflow_url) == "2"
    rolled = tuneops("rollback", home=tmp_path, url=mlflow_url, timeout=180)
    assert rolled.returncode == 0 and "warning" not in rolled.stderr, rolled.stderr[-2000:]
    assert champion_version(mlflow_url) == "1"
    promoted = tuneops("promote", json.loads(second.stdout)["model_tag"], home=tmp_path, url=mlflow_url, timeout=180)
    assert promoted.returncode == 0 and "warning" not in promoted.stderr, promoted.stderr[-2000:]
    assert champion_version(mlflow_url) == "2"
    print(f"tracked two runs and three alias moves in {time.monotonic() - started:.0f} s")


@pytest.mark.slow  # a whole run or two: with the slow runs (.ci/run runs them too)
def test_a_tracking_server_that_is_down_is_one_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = tuneops("run", *TINY, "-o", "json", home=tmp_path, url=closed)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "promoted" and summary["model_tag"]
    assert summary["tracking"]["run_id"] is None and summary["tracking"]["error"].startswith("tracking: could not")
    assert [line for line in summary["warnings"] if line.startswith("tracking:")] == [summary["tracking"]["error"]]
    promoted = tuneops("promote", summary["model_tag"], home=tmp_path, url=closed, timeout=180)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert "warning: tracking: could not move the champion alias" in promoted.stderr


def test_without_a_tracking_uri_mlflow_is_not_imported() -> None:
    environment = {key: value for key, value in cli_environment(Path.cwd()).items() if key != "MLFLOW_TRACKING_URI"}
    code = ("import sys; from tuneops.components.config import TrackingConfig; "
            "from tuneops.components.tracking import tracker_from_env; import tuneops.flows.training_flow; "
            "assert tracker_from_env(TrackingConfig()) is None; print('mlflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
