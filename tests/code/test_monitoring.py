"""components/monitoring/ and components/stack/ with small real inputs: the retrain decision, the
log window, feedback merged into training data, the Evidently project and traffic report, and the
stack's rule of stopping only the processes it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from tests.browser import assert_pages_render_offline
from tuneops.components.monitoring import monitor as monitoring
from tuneops.components.config import DataConfig, MonitoringConfig, load_config
from tuneops.components.errors import DataError, StageError
from tuneops.components.tasks.registry import get_task

TEXT_TASK = get_task("text-classification")
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def tiny_predictor():
    """A real but tiny classifier (2-layer BERT, MiniLM's tokenizer, random weights)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tuneops.components.checkpoints import packaged_model_dir
    from tuneops.components.predictor import Predictor

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=3)
    return Predictor(BertForSequenceClassification(config), tokenizer, LABELS, task=TEXT_TASK, max_length=32)


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
    (tmp_path / "state.json").write_text('{"window_end": "after lunch", "last_run_id": "run-1"}')
    with pytest.raises(StageError, match='window_end "after lunch" is not an ISO 8601 time'):
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
    merged = monitoring.merge_feedback(data, tmp_path / "feedback.csv", tmp_path / "merged", TEXT_TASK)
    assert (merged.base_rows, merged.feedback_rows, merged.skipped_rows) == (90, 2, 2)
    splits = load_data(merged.data_config(data), tmp_path / "demo", TEXT_TASK)
    rows = pd.concat([frame for _, frame in splits.items()])
    assert len(rows) == 92
    added = rows[rows["text"].isin(["drone firmware bricked", "scooter app crashes"])]
    assert set(added["label"]) == {"negative"} and set(added["country"]) == {"unknown"}


def test_feedback_on_the_demo_data_keeps_the_demo_groups(tmp_path):
    pd.DataFrame({"text": ["vr headset app keeps crashing"] * 2 + ["robot vacuum is great"],
                  "label": ["negative", "negative", "positive"]}).to_json(tmp_path / "fb.jsonl", orient="records", lines=True)
    merged = monitoring.merge_feedback(DataConfig(demo_rows=300), tmp_path / "fb.jsonl", tmp_path / "merged",
                                       TEXT_TASK, demo_directory=tmp_path / "demo")
    assert merged.base_rows == 300 and merged.feedback_rows == 2
    data = merged.data_config(DataConfig(demo_rows=300))
    assert data.groups == ["product_category", "region"] and data.format == "csv"
    assert data.path == str(merged.path) and merged.path.is_file()


def test_feedback_without_a_label_column_is_one_clear_error(tmp_path):
    pd.DataFrame({"text": ["a", "b"], "sentiment": ["x", "y"]}).to_csv(tmp_path / "fb.csv", index=False)
    with pytest.raises(DataError, match="fb.csv has no 'label' \\(or 'label'\\) column"):
        monitoring.read_feedback(tmp_path / "fb.csv", DataConfig(), TEXT_TASK)


def test_feedback_is_scored_with_the_configured_calibration_bins(tiny_predictor, tmp_path):
    from tuneops.components.metrics import classification_metrics

    texts = [f"feedback review {i} about the kettle" for i in range(40)]
    feedback = pd.DataFrame({"text": texts + ["about a label never seen"], "label": LABELS * 13 + ["x", "angry"]})
    config = MonitoringConfig(min_feedback_rows=30, min_metric=0.99)
    check = monitoring.check_feedback(tiny_predictor, feedback, "fb.csv", "macro_f1", config, bins=4)
    known = feedback[feedback["label"].isin(LABELS)]
    expected = classification_metrics(known["label"].tolist(), tiny_predictor.predict_proba(known["text"].tolist()),
                                      LABELS, 4)
    assert check.rows == 39 and check.value == pytest.approx(expected["macro_f1"]) and check.below_minimum
    assert "2 rows with labels the model does not know" in check.note
    too_few = monitoring.check_feedback(tiny_predictor, known.head(5), "fb.csv", "macro_f1", config, bins=4)
    assert too_few.value is None and "not scored" in too_few.note


def test_the_reference_sample_is_a_seeded_sample_with_the_models_predictions(tiny_predictor):
    from tuneops.components.monitoring.reference import comparable_reference, reference_sample

    train = pd.DataFrame({"text": [f"training review {i}, quite {'good' if i % 2 else 'bad'}" for i in range(60)],
                          "label": (LABELS * 20), "region": ["north", "south"] * 30})
    reference = reference_sample(train, tiny_predictor, rows=25, seed=3)
    expected_rows = train.sample(25, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(reference[list(train.columns)], expected_rows)
    probabilities = tiny_predictor.predict_proba(expected_rows["text"].tolist())
    assert reference["prediction"].tolist() == [LABELS[i] for i in probabilities.argmax(1)]
    assert reference["score"].to_numpy() == pytest.approx(probabilities.max(1), abs=1e-6)
    assert len(reference_sample(train.head(10), tiny_predictor, rows=25, seed=3)) == 10  # fewer rows: all of them
    comparable = comparable_reference(reference, TEXT_TASK)
    assert {"text", "prediction", "score"} <= set(comparable.columns)
    with pytest.raises(StageError, match="no prediction column"):
        comparable_reference(train, TEXT_TASK)


def test_a_monitor_run_compares_the_logged_traffic_with_the_champions_reference(tiny_predictor, tmp_path,
                                                                               monkeypatch):
    from tuneops.components import registry
    from tuneops.components.data.demo import generate_drifted_texts, generate_reviews
    from tuneops.components.monitoring.prediction_log import PredictionLog
    from tuneops.components.monitoring.reference import reference_sample

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path / "home"))  # an own champion pointer
    model_dir = tiny_predictor.save(tmp_path / "model")
    reviews = generate_reviews(rows=200, seed=5)
    release = registry.package_model(model_dir, {"run_id": "m"}, reference_sample(reviews, tiny_predictor, 120, 0))
    registry.set_champion(release.tag)
    log = PredictionLog(tmp_path / "log")
    texts = generate_drifted_texts(40)
    for index, prediction in enumerate(tiny_predictor.predict(texts)):
        log.append([{"request_id": str(index), "model_tag": release.tag, "text": texts[index],
                     "label": prediction.label, "score": prediction.score, "probabilities": prediction.probabilities}])
    # Well-formed but wrong records, as the issue found them: skipped and counted, the run goes on.
    whole = json.loads(log.segments()[0].read_text().splitlines()[0])
    with open(log.segments()[0], "a") as segment:
        segment.write(json.dumps({**whole, "timestamp": "03/12/2026 10:00"}) + "\n")
        segment.write(json.dumps({**whole, "score": "abc"}) + "\n")
    pd.DataFrame({"text": texts[:35], "label": LABELS * 11 + LABELS[:2]}).to_csv(tmp_path / "fb.csv", index=False)
    config = load_config(None, ["monitoring.min_rows=30", f"monitoring.feedback_path={tmp_path / 'fb.csv'}"])
    window = monitoring.MonitorWindow(start=None, end=datetime.now(timezone.utc))

    report = monitoring.check_traffic(config, tmp_path / "run", window, "run-1", workspace=tmp_path / "ws",
                                      log_directory=tmp_path / "log")
    assert report.status == "checked" and report.rows == 40 and report.consumed_window
    assert report.skipped_records == 2
    assert any(note.startswith("prediction log: 2 records skipped (2 damaged); first: ") and "line 41: timestamp"
               in note for note in report.notes), report.notes
    assert {"text_length", "oov_share", "non_letter_share", "prediction", "embedding"} <= set(report.drift_details)
    assert report.drift_share is not None and report.html_path and len(report.snapshot_ids) == 2
    assert report.feedback["rows"] == 35 and report.feedback["value"] is not None
    assert json.loads((tmp_path / "run" / "monitor.json").read_text())["drift_share"] == report.drift_share
    # The monitoring record's drift page reads offline too, drawn from its shared Evidently script.
    assert [page.name for page in assert_pages_render_offline(tmp_path / "run", tmp_path / "profile")] == ["drift.html"]

    too_little = monitoring.check_traffic(config.model_copy(update={"monitoring": config.monitoring.model_copy(
        update={"min_rows": 100, "feedback_path": None})}), tmp_path / "run-2", window, "run-2",
        workspace=tmp_path / "ws", log_directory=tmp_path / "log")
    assert too_little.status == "too_little_traffic" and not too_little.consumed_window

    hashed_log = PredictionLog(tmp_path / "hashed-log")
    hashed_log.append([{"request_id": str(index), "model_tag": release.tag,
                        "text": TEXT_TASK.log_value(text, "hash"), "label": "neutral", "score": 0.5,
                        "probabilities": {}} for index, text in enumerate(texts)])
    later = monitoring.MonitorWindow(start=None, end=datetime.now(timezone.utc))
    hashed = monitoring.check_traffic(config, tmp_path / "run-3", later, "run-3", workspace=tmp_path / "ws",
                                      log_directory=tmp_path / "hashed-log")
    assert hashed.status == "checked" and hashed.drift_share is None and len(hashed.snapshot_ids) == 1
    assert any("hashed inputs" in note and "no text or embedding drift" in note for note in hashed.notes)


def test_the_traffic_frame_names_the_logged_input_as_the_task_does():
    from tuneops.components.monitoring.prediction_log import hash_input, is_hashed

    log = pd.DataFrame({"timestamp": pd.to_datetime(["2026-01-01T00:00:00Z"] * 2), "request_id": ["a", "b"],
                        "model_tag": ["m:v1"] * 2, "text": ["works well", hash_input("secret")],
                        "label": ["positive", "neutral"], "score": [0.9, 0.5], "probabilities": [{}, {}]})
    traffic = monitoring.traffic_frame(log, TEXT_TASK)
    assert list(traffic.columns) == [TEXT_TASK.input_column, "prediction", "score", "timestamp", "model_tag"]
    assert traffic["prediction"].tolist() == ["positive", "neutral"]
    assert is_hashed(traffic[TEXT_TASK.input_column]).tolist() == [False, True]


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


def test_a_rerun_over_the_same_window_replaces_the_snapshots_of_the_run_before(tmp_path):
    """A run that did not consume its window (killed before saving its state) is superseded by the
    next run over that window; a run over a new window keeps what came before."""
    from evidently.ui.workspace import Workspace

    reference = pd.DataFrame({"prediction": ["a", "b"] * 10, "score": [0.8, 0.6] * 10})

    def snapshot(run: str):
        return monitoring.traffic_report(reference, reference, datetime.now(timezone.utc), {"monitor_run": run})

    project, killed = monitoring.store_snapshots([snapshot("killed"), snapshot("killed")], tmp_path, "start")
    _, rerun = monitoring.store_snapshots([snapshot("rerun")], tmp_path, "start")
    _, next_window = monitoring.store_snapshots([snapshot("next")], tmp_path, "2026-01-01T13:00:00+00:00")
    _, unrelated = monitoring.store_snapshots([snapshot("by hand")], tmp_path)
    stored = {str(snapshot_id) for snapshot_id in Workspace(str(tmp_path)).list_runs(project)}
    assert stored == set(rerun + next_window + unrelated) and not stored & set(killed)
    for snapshot_id in stored:  # each is whole: Evidently reads it back
        assert Workspace(str(tmp_path)).get_run(project, snapshot_id) is not None
    # Nothing staged is left behind, and a staging folder of a writer that is gone is cleared.
    abandoned = tmp_path / ".tuneops-staging-999999999-x"
    (abandoned / project / "snapshots").mkdir(parents=True)
    monitoring.store_snapshots([snapshot("later")], tmp_path)
    assert not list(tmp_path.glob(".tuneops-staging-*"))


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

    from tuneops.components.stack import processes, supervisor

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack" / "logs").mkdir(parents=True)
    # A recorded "service" that started a child of its own in the same group.
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    record = processes.spawn("evidently-ui", [sys.executable, "-c", script], processes.environment({}),
                          url="http://127.0.0.1:1", health_url=None)
    deadline = time.monotonic() + 30
    while not psutil.Process(record.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(record.pid).children()[0]
    assert supervisor.down(say=lambda line: None) == ["evidently-ui"]
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == psutil.STATUS_ZOMBIE
    child_gone = not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
    assert child_gone
    assert not (tmp_path / "stack" / "evidently-ui.json").exists()


def test_down_leaves_alone_a_process_whose_pid_was_reused(tmp_path, monkeypatch):
    import psutil

    from tuneops.components.stack import records, supervisor

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack").mkdir()
    stranger = _sleeper(tmp_path)
    try:
        # The record names the stranger's pid but another start time: it is not ours.
        stale = records.ServiceRecord(
            name="serving", pid=stranger.pid, create_time=psutil.Process(stranger.pid).create_time() - 100,
            command=["tuneops", "serve"], url="", health_url=None, log="", started_at="",
        )
        records.write_record(stale)
        lines = []
        assert supervisor.down(say=lines.append) == []
        assert lines == ["serving: was not running"]
        assert stranger.poll() is None, "a process we did not start was signalled"
        assert [entry.state for entry in supervisor.status() if entry.name == "serving"] == ["not started"]
    finally:
        stranger.kill()
        stranger.wait()


def test_status_reports_a_recorded_service_that_died(tmp_path, monkeypatch):
    from tuneops.components.stack import processes, records, supervisor

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack" / "logs").mkdir(parents=True)
    record = processes.spawn("prefect-worker", [sys.executable, "-c", "pass"], processes.environment({}),
                          url="pool", health_url=None)
    subprocess_deadline = time.monotonic() + 30
    while records.live_process(record) is not None and time.monotonic() < subprocess_deadline:
        time.sleep(0.1)
    states = {entry.name: entry.state for entry in supervisor.status()}
    assert states["prefect-worker"] == "stopped" and states["prefect-server"] == "not started"


def test_down_never_signals_a_strangers_group_that_a_stale_record_names(tmp_path, monkeypatch):
    """The stale record's pid is now the id of another program's process group, whose leader has
    exited (a shell that left `sleep` running): `status` says stopped, and `down` must not signal."""
    import psutil

    from tuneops.components.stack import records

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack").mkdir()
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!"], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    sleeper = int(shell.stdout.readline())
    shell.wait()
    try:
        assert os.getpgid(sleeper) == shell.pid and not psutil.pid_exists(shell.pid)
        started = psutil.Process(sleeper).create_time() - 3600
        for name, marker in (("prefect-server", records.new_marker("prefect-server")), ("serving", "")):
            # One record as `up` writes it now (with a marker), one as older versions did (none).
            records.write_record(records.ServiceRecord(
                name=name, pid=shell.pid, create_time=started, command=[sys.executable, "-m", "prefect"],
                url="", health_url=None, log="", started_at="", marker=marker))
        env = {**os.environ, "TUNEOPS_HOME": str(tmp_path)}
        status = subprocess.run([sys.executable, "-m", "tuneops.flows.cli", "status"], capture_output=True,
                                text=True, env=env, timeout=120)
        assert status.returncode == 1 and status.stdout.count("stopped") == 2, status.stdout + status.stderr
        down = subprocess.run([sys.executable, "-m", "tuneops.flows.cli", "down"], capture_output=True, text=True,
                              env=env, timeout=120)
        assert down.returncode == 0, down.stderr
        assert "serving: was not running" in down.stdout and "prefect-server: was not running" in down.stdout
        time.sleep(0.5)  # a SIGTERM, had one been sent, has arrived by now
        assert psutil.Process(sleeper).status() != psutil.STATUS_ZOMBIE, "a stranger's process group was signalled"
        assert not list((tmp_path / "stack").glob("*.json"))
    finally:
        os.kill(sleeper, signal.SIGKILL)


def test_down_never_signals_a_process_of_another_program_with_the_recorded_pid_and_start_time(tmp_path,
                                                                                            monkeypatch):
    import psutil

    from tuneops.components.stack import records, supervisor

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    (tmp_path / "stack").mkdir()
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # Pid and start time match; the program does not (and the stranger has no marker).
        records.write_record(records.ServiceRecord(
            name="evidently-ui", pid=stranger.pid, create_time=psutil.Process(stranger.pid).create_time(),
            command=[sys.executable, "-m", "evidently.cli", "ui"], url="", health_url=None, log="", started_at=""))
        assert records.live_process(records.read_record("evidently-ui")) is None
        lines = []
        assert supervisor.down(say=lines.append) == [] and lines == ["evidently-ui: was not running"]
        time.sleep(0.5)
        assert stranger.poll() is None, "a process of another program was signalled"
    finally:
        stranger.kill()
        stranger.wait()


LEAVES_A_CHILD = """
import subprocess, sys
child = subprocess.Popen(["sleep", "60"])
open(sys.argv[1], "w").write(str(child.pid))
"""


def test_down_stops_what_is_left_of_our_group_after_its_leader_exited(tmp_path, monkeypatch):
    import psutil

    from tuneops.components.stack import processes, records, supervisor

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path))
    pid_file = tmp_path / "child.pid"
    record = processes.spawn("prefect-worker", [sys.executable, "-c", LEAVES_A_CHILD, str(pid_file)],
                             processes.environment({}), url="pool", health_url=None)
    deadline = time.monotonic() + 30
    while (records.live_process(record) is not None or not pid_file.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(int(pid_file.read_text()))
    try:
        assert records.live_process(record) is None and child.is_running()
        assert child.environ()[records.MARKER_ENV] == record.marker
        assert supervisor.down(say=lambda line: None) == ["prefect-worker"]
        child.wait(timeout=30)
    finally:
        if child.is_running():
            child.kill()
