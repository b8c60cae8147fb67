"""components/monitoring.py and flows/stack.py with small real inputs: the retrain decision, the
log window, feedback merged into training data, the Evidently project and traffic report, and the
stack's rule of stopping only the processes it started."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from tuneops.components.monitoring import monitor as monitoring
from tuneops.components.config import DataConfig, MonitoringConfig, load_config
from tuneops.components.errors import DataError, StageError


def test_retrain_when_drift_reaches_the_threshold_or_feedback_falls_below_the_minimum():
    config = MonitoringConfig(drift_threshold=0.4, min_metric=0.7)
    assert monitoring.decide_retrain(0.4, None, config).retrain is True
    calm = monitoring.decide_retrain(0.2, None, config)
    assert calm.retrain is False and "below monitoring.drift_threshold 0.40" in calm.reasons[0]
    poor = monitoring.FeedbackCheck("f.csv", 80, "macro_f1", 0.55, below_minimum=True)
    decision = monitoring.decide_retrain(0.0, poor, config)
    assert decision.retrain is True
    assert any("macro_f1 on 80 feedback rows is 0.550, below monitoring.min_metric 0.700" in r for r in decision.reasons)
    unscored = monitoring.FeedbackCheck("f.csv", 3, "macro_f1", None, below_minimum=False)
    assert monitoring.decide_retrain(None, unscored, config) == monitoring.RetrainDecision(False, [])


def test_the_window_starts_where_the_last_run_stopped(tmp_path):
    first = monitoring.next_window(datetime(2026, 1, 1, 12, tzinfo=timezone.utc), tmp_path)
    assert first.start is None
    monitoring.save_state(first, "run-1", tmp_path)
    later = datetime(2026, 1, 1, 13, tzinfo=timezone.utc)
    second = monitoring.next_window(later, tmp_path)
    assert second.start == first.end and second.end == later
    assert json.loads((tmp_path / "state.json").read_text())["last_run_id"] == "run-1"
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StageError, match="not valid JSON"):
        monitoring.next_window(later, tmp_path)


def test_without_a_champion_there_is_nothing_to_monitor(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    window = monitoring.MonitorWindow(start=None, end=datetime.now(timezone.utc))
    report = monitoring.check_traffic(load_config(None, []), tmp_path / "out", window, "run-y")
    assert report.status == "no_champion" and report.retrain is False


def test_feedback_is_appended_to_the_training_data_without_duplicates(tmp_path):
    from tuneops.components.data.loading import load_data

    base = pd.DataFrame({
        "body": [f"review number {i} about the kettle" for i in range(90)],
        "sentiment": ["positive", "negative", "neutral"] * 30,
        "country": ["de", "fr", "it"] * 30,
    })
    base.to_csv(tmp_path / "reviews.csv", index=False)
    feedback = pd.DataFrame({
        "text": ["review number 3 about the kettle", "drone firmware bricked", "drone firmware bricked",
                 "scooter app crashes", "  "],
        "label": ["negative", "negative", "negative", "negative", "neutral"],
    })
    feedback.to_csv(tmp_path / "feedback.csv", index=False)
    data = DataConfig(path=str(tmp_path / "reviews.csv"), text_column="body", label_column="sentiment",
                      group_columns=["country"])
    merged = monitoring.merge_feedback(data, tmp_path / "feedback.csv", tmp_path / "merged")
    assert (merged.base_rows, merged.feedback_rows, merged.skipped_rows) == (90, 2, 2)
    config = load_config(None, ["data.text_column=body", "data.label_column=sentiment", *merged.overrides])
    splits = load_data(config.data, tmp_path / "demo")
    rows = pd.concat([frame for _, frame in splits.items()])
    assert len(rows) == 92
    added = rows[rows["text"].isin(["drone firmware bricked", "scooter app crashes"])]
    assert set(added["label"]) == {"negative"} and set(added["country"]) == {"unknown"}


def test_feedback_on_the_demo_data_keeps_the_demo_groups(tmp_path):
    pd.DataFrame({"text": ["vr headset app keeps crashing"] * 2 + ["robot vacuum is great"],
                  "label": ["negative", "negative", "positive"]}).to_json(tmp_path / "fb.jsonl", orient="records", lines=True)
    merged = monitoring.merge_feedback(DataConfig(demo_rows=300), tmp_path / "fb.jsonl", tmp_path / "merged",
                                       demo_directory=tmp_path / "demo")
    assert merged.base_rows == 300 and merged.feedback_rows == 2
    config = load_config(None, merged.overrides)
    assert config.data.groups == ["product_category", "region"]
    assert config.data.path == str(merged.path) and merged.path.is_file()


def test_feedback_without_a_label_column_is_one_clear_error(tmp_path):
    pd.DataFrame({"text": ["a", "b"], "sentiment": ["x", "y"]}).to_csv(tmp_path / "fb.csv", index=False)
    with pytest.raises(DataError, match="fb.csv has no 'label' \\(or 'label'\\) column"):
        monitoring.read_feedback(tmp_path / "fb.csv", DataConfig())


def test_the_project_dashboard_is_created_once_with_each_panel_listed_once(tmp_path):
    from evidently.ui.workspace import Workspace

    first = monitoring.ensure_project(tmp_path)
    assert monitoring.ensure_project(tmp_path) == first
    dashboard = Workspace(str(tmp_path)).get_dashboard(first)
    titles = [panel.title for panel in dashboard.panels]
    assert len(titles) == len(set(titles)) == len(monitoring.dashboard_panels())
    assert {"Drift share over time", "Prediction distribution", "Request volume"} <= set(titles)
    assert [len(tab.panels) for tab in dashboard.tabs] == [len(titles)]
    assert len(Workspace(str(tmp_path)).search_project("tuneops")) == 1


def test_the_traffic_report_counts_requests_and_predicted_labels():
    reference = pd.DataFrame({"prediction": ["a", "b"] * 30, "score": [0.8, 0.6] * 30})
    current = pd.DataFrame({"prediction": ["a"] * 15 + ["b"] * 5, "score": [0.9] * 20})
    snapshot = monitoring.traffic_report(current, reference, datetime.now(timezone.utc), {"monitor_run": "t"})
    values = {metric["metric_name"].split("(")[0]: metric["value"] for metric in snapshot.dict()["metrics"]}
    assert values["RowCount"] == 20
    assert values["UniqueValueCount"]["shares"] == {"a": 0.75, "b": 0.25}
    assert values["MeanValue"] == pytest.approx(0.9)
    assert 0 <= values["ValueDrift"] <= 1


# --------------------------------------------------------------------------------- the stack


def _sleeper(tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)


def test_down_stops_a_recorded_process_and_its_group(tmp_path, monkeypatch):
    import psutil

    from tuneops.components.stack import supervisor as stack

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack" / "logs").mkdir(parents=True)
    # A recorded "service" that started a child of its own in the same group.
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    record = stack._spawn("evidently-ui", [sys.executable, "-c", script], stack._environment({}),
                          url="http://127.0.0.1:1", health_url=None)
    deadline = time.monotonic() + 30
    while not psutil.Process(record.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(record.pid).children()[0]
    assert stack.down(say=lambda line: None) == ["evidently-ui"]
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == psutil.STATUS_ZOMBIE
    child_gone = not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
    assert child_gone
    assert not (tmp_path / "stack" / "evidently-ui.json").exists()


def test_down_leaves_alone_a_process_whose_pid_was_reused(tmp_path, monkeypatch):
    import psutil

    from tuneops.components.stack import supervisor as stack

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack").mkdir()
    stranger = _sleeper(tmp_path)
    try:
        # The record names the stranger's pid but another start time: it is not ours.
        stale = stack.ServiceRecord(
            name="serving", pid=stranger.pid, create_time=psutil.Process(stranger.pid).create_time() - 100,
            command=["tuneops", "serve"], url="", health_url=None, log="", started_at="",
        )
        stack._write_record(stale)
        lines = []
        assert stack.down(say=lines.append) == []
        assert lines == ["serving: was not running"]
        assert stranger.poll() is None, "a process we did not start was signalled"
        assert [entry.state for entry in stack.status() if entry.name == "serving"] == ["not started"]
    finally:
        stranger.kill()
        stranger.wait()


def test_status_reports_a_recorded_service_that_died(tmp_path, monkeypatch):
    from tuneops.components.stack import supervisor as stack

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack" / "logs").mkdir(parents=True)
    record = stack._spawn("prefect-worker", [sys.executable, "-c", "pass"], stack._environment({}),
                          url="pool", health_url=None)
    subprocess_deadline = time.monotonic() + 30
    while stack._live_process(record) is not None and time.monotonic() < subprocess_deadline:
        time.sleep(0.1)
    states = {entry.name: entry.state for entry in stack.status()}
    assert states["prefect-worker"] == "stopped" and states["prefect-server"] == "not started"
