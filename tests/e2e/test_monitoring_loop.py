"""The monitoring loop on a real local stack: `tuneops up` (Prefect server + process worker +
serving + Evidently UI, all on 127.0.0.1), `tuneops deploy`, traffic over HTTP, the monitor
deployment run by the worker, and `tuneops down`.

The module's stack is shared by its tests and lives in its own TUNEOPS_HOME. The first champion
is fine-tuned for a few steps by ``tests.e2e.stack_helpers`` run as a script (in that home), so the default suite
does not wait for a whole training run; the slow test runs the whole retrain spine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import cli_environment
from tests.e2e.stack_helpers import (
    TINY_RETRAIN, classify, pid_alive, prefect_api, stack_record, start_deployment_run, tuneops, wait_for_flow_run,
)

TRAFFIC_ROWS = 120


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A champion, the local stack with serving, and the deployments; stopped at the end."""
    home = tmp_path_factory.mktemp("monitoring-home")
    made = subprocess.run([sys.executable, "-m", "tests.e2e.stack_helpers", "make-champion"],
                          capture_output=True, text=True, env=cli_environment(home), timeout=900,
                          cwd=Path(__file__).resolve().parents[2])
    assert made.returncode == 0, made.stderr[-3000:]
    champion_tag = made.stdout.strip().splitlines()[-1]
    feedback = home / "feedback.csv"  # written by the slow test only
    overrides = [*TINY_RETRAIN, f"monitoring.feedback_path={feedback}"]
    set_args = [arg for override in overrides for arg in ("--set", override)]
    started = tuneops(home, "up", "--prefect-port", "0", "--evidently-port", "0", "--serving-port", "0",
                      *set_args, timeout=900)
    try:
        assert started.returncode == 0, started.stderr[-3000:] + started.stdout[-2000:]
        # Paused schedules: no hourly monitor run may start in the middle of a test; the tests
        # start runs themselves (and the monitor starts the retrain).
        deployed = tuneops(home, "deploy", "--paused", *set_args, timeout=600)
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        yield {
            "home": home,
            "champion": champion_tag,
            "feedback": feedback,
            "api_url": stack_record(home, "prefect-server")["extra"]["api_url"],
            "serving_url": stack_record(home, "serving")["url"],
            "evidently_url": stack_record(home, "evidently-ui")["url"],
            "up_output": started.stdout,
            "deploy_output": deployed.stdout,
        }
    finally:
        tuneops(home, "down", timeout=300)


def run_monitor(stack: dict) -> tuple[dict, dict]:
    """Run the monitor deployment on the worker; return its flow run (as JSON) and monitor.json."""
    flow_run = _run_deployment(stack["api_url"], "tuneops-monitor/monitor", timeout_s=600)
    assert flow_run["state_type"] == "COMPLETED", flow_run
    reports = sorted((stack["home"] / "monitoring" / "runs").glob("*/monitor.json"))
    assert reports, "the monitor run wrote no monitor.json"
    return flow_run, json.loads(reports[-1].read_text())


def _run_deployment(api_url: str, name: str, timeout_s: float) -> dict:
    with prefect_api(api_url) as client:
        return wait_for_flow_run(client, start_deployment_run(client, name), timeout_s)


def _flow_runs_of(api_url: str, flow_name: str) -> list[dict]:
    with prefect_api(api_url) as client:
        answer = client.post("/flow_runs/filter", json={"flows": {"name": {"any_": [flow_name]}}})
        assert answer.status_code == 200, answer.text
        return answer.json()


def _undrifted_texts(rows: int) -> list[str]:
    from tuneops.components.data.demo import generate_reviews

    # Another seed than the training data's: new reviews of the same kind.
    return generate_reviews(rows=rows, seed=2024)["text"].tolist()


# ------------------------------------------------------------------------------ default suite


def test_up_prints_urls_and_status_reports_every_service_running(stack):
    for name in ("prefect server", "prefect worker", "evidently ui", "serving"):
        assert f"{name}: started" in stack["up_output"], stack["up_output"]
    assert stack["api_url"] in stack["up_output"] and stack["evidently_url"] in stack["up_output"]
    assert "deployed tuneops-retrain/retrain (cron '0 3 * * 1', paused" in stack["deploy_output"]
    assert "deployed tuneops-monitor/monitor (cron '0 * * * *', paused" in stack["deploy_output"]
    with prefect_api(stack["api_url"]) as client:
        for name, cron in (("tuneops-retrain/retrain", "0 3 * * 1"), ("tuneops-monitor/monitor", "0 * * * *")):
            deployment = client.get(f"/deployments/name/{name}").json()
            assert [entry["schedule"]["cron"] for entry in deployment["schedules"]] == [cron]
            assert deployment["work_pool_name"] == "tuneops-process"
            assert deployment["parameters"]["overrides"][:len(TINY_RETRAIN)] == TINY_RETRAIN
            assert deployment["job_variables"]["env"]["TUNEOPS_HOME"] == str(stack["home"])
    result = tuneops(stack["home"], "status", timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    for name in ("prefect-server", "prefect-worker", "evidently-ui", "serving"):
        assert "running" in rows[name], result.stdout
    assert stack["serving_url"] in rows["serving"]
    assert "sqlite" in rows["prefect-server"]
    # A second `up` starts nothing new: the running services are kept.
    again = tuneops(stack["home"], "up", "--no-serve", timeout=300)
    assert again.returncode == 0 and ": started" not in again.stdout, again.stdout
    # The running server stays on its database: moving to PostgreSQL takes a `down` first.
    moved = tuneops(stack["home"], "up", "--postgres", "--no-serve", timeout=300)
    assert moved.returncode == 2 and ": started" not in moved.stdout, moved.stdout + moved.stderr
    assert moved.stderr.strip().splitlines() == [
        f"error: the running Prefect server keeps its database in {stack_record(stack['home'], 'prefect-server')['extra']['database']}; "
        "run `tuneops down` first to start it on PostgreSQL"], moved.stderr
    assert not (stack["home"] / "postgres").exists()


def test_evidently_ui_project_page_shows_the_dashboard(stack):
    from datetime import datetime, timezone

    import pandas as pd

    from tuneops.components.monitoring import monitor as monitoring

    workspace = stack["home"] / "evidently"
    project_id = monitoring.ensure_project(workspace)
    base = stack["evidently_url"]
    page = httpx.get(f"{base}/projects/{project_id}", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<div id=\"root\"" in page.text or "<script" in page.text
    projects = httpx.get(f"{base}/api/projects", timeout=30).json()
    assert any(project["id"] == project_id and project["name"] == "tuneops" for project in projects)
    dashboard = httpx.get(f"{base}/api/v2/dashboards/{project_id}", timeout=30).json()
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Drift share over time", "Prediction distribution", "Request volume"} <= titles
    assert len(dashboard["tabs"]) == 1 and len(dashboard["tabs"][0]["panels"]) == len(dashboard["panels"])

    # A snapshot stored while the UI runs shows up in the panels' series.
    reference = pd.DataFrame({"prediction": ["negative", "neutral", "positive"] * 20, "score": [0.9, 0.6, 0.8] * 20})
    current = pd.DataFrame({"prediction": ["negative"] * 30 + ["positive"] * 10, "score": [0.7] * 40})
    snapshot = monitoring.traffic_report(current, reference, datetime.now(timezone.utc), {"monitor_run": "ui-test"})
    monitoring.store_snapshots([snapshot], workspace)
    filters = [{"tags": value["tags"], "metadata": value["metadata"], "metric": value["metric"],
                "metric_labels": value["metric_labels"]}
               for panel in dashboard["panels"] for value in panel["values"]]
    # The UI learns of new snapshot files through a file watcher: on a busy machine that takes a moment.
    deadline = time.monotonic() + 60
    while True:
        series = httpx.post(f"{base}/api/v2/snapshots/{project_id}/data_series_batch",
                            json={"series_filter": filters}, timeout=30).json()
        by_metric = {}
        for entry in series["series"]:
            by_metric.setdefault(entry["metric_type"].rsplit(":", 1)[1], []).append(entry)
        if "RowCount" in by_metric or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "RowCount" in by_metric, series
    assert 40.0 in by_metric["RowCount"][0]["values"]
    shares = {entry["params"]["label"]: entry["values"][-1] for entry in by_metric["UniqueValueCount"]}
    assert shares["negative"] == pytest.approx(0.75) and shares["positive"] == pytest.approx(0.25)


def test_undrifted_traffic_is_compared_and_does_not_trigger_a_retrain(stack):
    texts = _undrifted_texts(TRAFFIC_ROWS)
    answers = classify(stack["serving_url"], texts)
    assert {answer["model_tag"] for answer in answers} == {stack["champion"]}

    flow_run, report = run_monitor(stack)
    assert report["status"] == "checked", report
    assert report["rows"] == TRAFFIC_ROWS
    assert report["champion_tag"] == stack["champion"]
    assert report["drift_share"] is not None and report["drift_share"] < 0.5, report["drift_details"]
    assert report["retrain"] is False and report["retrain_flow_run_id"] is None
    assert any("below monitoring.drift_threshold" in reason for reason in report["reasons"])
    assert Path(report["html_path"]).is_file()
    assert len(report["snapshot_ids"]) == 2  # the traffic report and the drift report
    state = json.loads((stack["home"] / "monitoring" / "state.json").read_text())
    assert state["last_run_id"] == report["run_id"]
    assert _flow_runs_of(stack["api_url"], "tuneops-retrain") == []

    # The next run starts where this one stopped: without new traffic it only waits.
    _, second = run_monitor(stack)
    assert second["status"] == "too_little_traffic" and second["rows"] == 0 and second["retrain"] is False
    assert _flow_runs_of(stack["api_url"], "tuneops-retrain") == []


# ------------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_drifted_traffic_triggers_a_retrain_whose_champion_is_served(stack):
    import pandas as pd

    from tuneops.components.data.demo import generate_drifted_texts

    # Labelled feedback on the new kind of traffic: complaints about gadgets, all negative.
    feedback_texts = generate_drifted_texts(120, seed=5)
    pd.DataFrame({"text": feedback_texts, "label": "negative"}).to_csv(stack["feedback"], index=False)

    answers = classify(stack["serving_url"], generate_drifted_texts(TRAFFIC_ROWS, seed=11))
    assert {answer["model_tag"] for answer in answers} == {stack["champion"]}
    _, report = run_monitor(stack)
    assert report["status"] == "checked" and report["rows"] == TRAFFIC_ROWS, report
    assert report["drift_share"] >= 0.5, report["drift_details"]
    assert report["retrain"] is True and report["retrain_flow_run_id"], report
    assert report["feedback"]["rows"] == 120

    # Drift persists while the retrain trains: the next monitor run does not queue a second one.
    classify(stack["serving_url"], generate_drifted_texts(60, seed=12))
    _, again = run_monitor(stack)
    assert again["retrain"] is True and again["retrain_flow_run_id"] == report["retrain_flow_run_id"], again
    assert any("already running or due" in note for note in again["notes"])

    with prefect_api(stack["api_url"]) as client:
        retrain = wait_for_flow_run(client, report["retrain_flow_run_id"], timeout_s=1200)
    assert retrain["state_type"] == "COMPLETED", retrain["state"]
    assert retrain["parameters"]["feedback_path"] == str(stack["feedback"])
    runs = [json.loads(path.read_text()) for path in (stack["home"] / "runs").glob("*/summary.json")]
    assert len(runs) == 1
    summary = runs[0]
    assert summary["status"] == "promoted", summary.get("gate")
    assert str(stack["home"] / "monitoring" / "retrain-data") in summary["data"]["source"]
    new_champion = json.loads((stack["home"] / "champion.json").read_text())["tag"]
    assert new_champion == summary["model_tag"] != stack["champion"]
    assert len(_flow_runs_of(stack["api_url"], "tuneops-retrain")) == 1

    # The running service switches to the new champion without a restart.
    deadline = time.monotonic() + 180
    served = None
    while time.monotonic() < deadline:
        served = classify(stack["serving_url"], ["Firmware 3.1 bricked the drone twice."])[0]["model_tag"]
        if served == new_champion:
            break
        time.sleep(1)
    assert served == new_champion


def test_down_stops_exactly_what_up_started(stack):
    home = stack["home"]
    records = [stack_record(home, name) for name in ("prefect-server", "prefect-worker", "evidently-ui", "serving")]
    assert all(pid_alive(record["pid"], record["create_time"]) for record in records)
    result = tuneops(home, "down", timeout=300)
    assert result.returncode == 0, result.stderr
    for record in records:
        assert f"{record['name']}: stopped (pid {record['pid']})" in result.stdout
        assert not pid_alive(record["pid"], record["create_time"]), record["name"]
    assert not list((home / "stack").glob("*.json"))
    status = tuneops(home, "status", timeout=120)
    assert status.returncode == 0 and "running" not in status.stdout
