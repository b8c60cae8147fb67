"""Faults in the monitoring loop, made real: a prediction log writer killed with SIGKILL in the
middle of a write, a writer that runs out of room (a file size limit standing in for a full disk),
and `tuneops monitor` itself killed with SIGKILL in the middle of a run.

Every process is started here, on this machine, and ended here by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tuneops.components.monitoring.prediction_log import PredictionLog

ROOT = Path(__file__).resolve().parents[2]

# One write(2) of BATCH_RECORDS records of RECORD_TEXT characters (8 MiB): long enough that a
# SIGKILL sent while the segment ends in half a line lands inside the write. The loop is bounded.
RECORD_TEXT = 64 * 1024
BATCH_RECORDS = 128
MAX_BATCHES = 12
WRITER = """
import sys
from tuneops.components.monitoring.prediction_log import PredictionLog
log = PredictionLog(sys.argv[1])
text = "x" * int(sys.argv[2])
for batch in range(int(sys.argv[4])):
    log.append([{"request_id": f"{batch}-{i}", "model_tag": "m", "text": text, "label": "l", "score": 0.5,
                 "probabilities": {"l": 0.5, "k": 0.5}} for i in range(int(sys.argv[3]))])
"""


def _kill_while_writing(directory: Path, timeout_s: float = 30.0) -> bool:
    """Start a writer, SIGKILL it as soon as its segment ends in half a line (a write under way),
    or when it has ended; return whether the kill came while a line was half written."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(RECORD_TEXT),
                               str(BATCH_RECORDS), str(MAX_BATCHES)], cwd=ROOT)
    mid_write = False
    try:
        deadline = time.monotonic() + timeout_s
        while writer.poll() is None and time.monotonic() < deadline:
            segments = PredictionLog(directory).segments()
            if segments:
                with open(segments[0], "rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    if size and os.pread(handle.fileno(), 1, size - 1) != b"\n":
                        writer.send_signal(signal.SIGKILL)
                        mid_write = True
                        break
    finally:
        if writer.poll() is None:
            writer.send_signal(signal.SIGKILL)
        writer.wait()
    return mid_write


def test_a_writer_killed_mid_write_leaves_a_log_that_reads_whole_and_takes_new_appends(tmp_path):
    torn = False
    # A kill that arrives just after the write finished leaves no torn line; a few tries make one.
    for attempt in range(4):
        directory = tmp_path / f"log-{attempt}"
        _kill_while_writing(directory)
        segment = PredictionLog(directory).segments()[0]
        data = segment.read_bytes()
        complete_lines = data.count(b"\n")
        scan = PredictionLog(directory).scan()
        # No torn line is returned: every record read is whole, and there is one per complete line.
        assert len(scan.frame) == complete_lines and scan.damaged == 0
        assert (scan.frame["text"].str.len() == RECORD_TEXT).all() and (scan.frame["score"] == 0.5).all()
        assert scan.frame["request_id"].is_unique
        assert scan.torn == (0 if data.endswith(b"\n") else 1)
        # A new writer appends to a segment of its own; the torn tail stays the old one's last line.
        after = PredictionLog(directory)
        after.append([{"request_id": "after-kill", "model_tag": "m", "text": "new", "label": "l", "score": 0.9,
                       "probabilities": {"l": 0.9, "k": 0.1}}])
        again = PredictionLog(directory).scan()
        assert len(again.frame) == complete_lines + 1 and again.frame["request_id"].iloc[-1] == "after-kill"
        assert again.torn == scan.torn and again.damaged == 0
        for path in PredictionLog(directory).segments():
            path.unlink()  # up to ~100 MiB each: not kept in pytest's temporary folders
        if scan.torn:
            torn = True
            break
    assert torn, "no SIGKILL landed inside a write in 4 tries"


# A writer under a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored so the write fails instead of
# the process dying): what a full disk does to write(2). Records have a fixed timestamp, so every
# batch has the same size and the limit decides where the failing write falls.
LIMITED_WRITER = """
import json, resource, signal, sys
from tuneops.components.monitoring.prediction_log import PredictionLog
log = PredictionLog(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
outcomes = []
for batch in range(12):
    try:
        log.append([{"request_id": f"{batch}-{i}", "model_tag": "m", "text": "y" * 300, "label": "l",
                     "score": 0.5, "probabilities": {"l": 0.5, "k": 0.5},
                     "timestamp": "2026-01-01T00:00:00+00:00"} for i in range(10)])
        outcomes.append("ok")
    except OSError as error:
        outcomes.append(f"OSError: {error}")
print(json.dumps(outcomes))
"""


def _batch_bytes(tmp_path: Path) -> int:
    probe = PredictionLog(tmp_path / "probe")
    probe.append([{"request_id": f"0-{i}", "model_tag": "m", "text": "y" * 300, "label": "l", "score": 0.5,
                   "probabilities": {"l": 0.5, "k": 0.5}, "timestamp": "2026-01-01T00:00:00+00:00"}
                  for i in range(10)])
    probe.close()
    return probe.segments()[0].stat().st_size


@pytest.mark.parametrize("room", ["half a batch", "no room at all"])
def test_a_full_disk_is_an_oserror_and_the_log_stays_parseable(tmp_path, room):
    batch = _batch_bytes(tmp_path)
    # Four batches fit; the fifth is cut short (half a batch of room) or cannot start (none).
    limit = 4 * batch + (batch // 2 if room == "half a batch" else 0)
    directory = tmp_path / "log"
    result = subprocess.run([sys.executable, "-c", LIMITED_WRITER, str(directory), str(limit)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = json.loads(result.stdout)
    assert outcomes[:4] == ["ok"] * 4 and outcomes[4].startswith("OSError: "), outcomes
    if room == "half a batch":
        assert "short write" in outcomes[4]
    # After a failure the writer moves to a new segment, which has room for four batches again.
    assert outcomes[5:9] == ["ok"] * 4 and outcomes[9].startswith("OSError: "), outcomes
    segments = PredictionLog(directory).segments()
    assert all(path.read_bytes().endswith(b"\n") for path in segments)  # the half lines were cut off
    assert all(path.stat().st_size <= limit for path in segments)
    scan = PredictionLog(directory).scan()
    assert scan.skipped == 0
    written = {f"{batch}-{i}" for batch, outcome in enumerate(outcomes) if outcome == "ok" for i in range(10)}
    assert set(scan.frame["request_id"]) == written and len(scan.frame) == len(written)


# --------------------------------------------------------------------- tuneops monitor, killed

LABELS = ["negative", "neutral", "positive"]


def _champion_and_traffic(home: Path, monkeypatch) -> list[str]:
    """A tiny random-weight classifier as the champion of ``home``, 40 of its predictions in the
    log, two well-formed but wrong records, and a small feedback file; returns the --set options."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tuneops.components import registry
    from tuneops.components.checkpoints import packaged_model_dir
    from tuneops.components.data.demo import generate_drifted_texts, generate_reviews
    from tuneops.components.monitoring.reference import reference_sample
    from tuneops.components.predictor import Predictor
    from tuneops.components.tasks.registry import get_task

    monkeypatch.setenv("TUNEOPS_HOME", str(home))
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=3)
    predictor = Predictor(BertForSequenceClassification(config), tokenizer, LABELS,
                          task=get_task("text-classification"), max_length=32)
    model_dir = predictor.save(home / "model")
    release = registry.package_model(model_dir, {"run_id": "faults"},
                                     reference_sample(generate_reviews(rows=120, seed=5), predictor, 100, 0))
    registry.set_champion(release.tag)
    log = PredictionLog(home / "predictions")
    texts = generate_drifted_texts(40)
    log.append([{"request_id": str(index), "model_tag": release.tag, "text": text, "label": prediction.label,
                 "score": prediction.score, "probabilities": prediction.probabilities}
                for index, (text, prediction) in enumerate(zip(texts, predictor.predict(texts)))])
    log.close()
    whole = json.loads(log.segments()[0].read_text().splitlines()[0])
    with open(log.segments()[0], "a") as segment:
        segment.write(json.dumps({**whole, "request_id": "bad-time", "timestamp": "not a time"}) + "\n")
        segment.write(json.dumps({**whole, "request_id": "bad-score", "score": "abc"}) + "\n")
    feedback = home / "feedback.csv"
    pd.DataFrame({"text": texts[:10], "label": LABELS * 3 + ["sarcastic"]}).to_csv(feedback, index=False)
    return ["--set", "monitoring.min_rows=30", "--set", f"monitoring.feedback_path={feedback}"]


def _monitor(home: Path, options: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TUNEOPS_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)  # Prefect's temporary server, started and stopped by the command
    return subprocess.Popen([sys.executable, "-m", "tuneops.flows.cli", "monitor", "--no-trigger", *options],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _json_files(*folders: Path) -> list[Path]:
    return [path for folder in folders for path in folder.rglob("*.json") if ".tuneops-staging-" not in str(path)]


@pytest.mark.slow  # a whole run or two: with the slow runs (.ci/run runs them too)
def test_a_monitor_run_killed_mid_run_leaves_nothing_half_registered_and_a_rerun_works(tmp_path, monkeypatch):
    home = tmp_path / "home"
    options = _champion_and_traffic(home, monkeypatch)
    runs, workspace, state = home / "monitoring" / "runs", home / "evidently", home / "monitoring" / "state.json"

    killed = _monitor(home, options)
    children: list[psutil.Process] = []
    try:
        # The run's folder appears when the drift comparison writes its report: the run is well under
        # way, its snapshots not yet registered and its window not yet consumed.
        deadline = time.monotonic() + 240
        while killed.poll() is None and time.monotonic() < deadline and not (runs.is_dir() and any(runs.iterdir())):
            time.sleep(0.01)
        assert killed.poll() is None, f"the monitor run ended before it could be killed: {killed.communicate()}"
        # Its children: Prefect's temporary server and the guard that stops it when its parent dies.
        children = psutil.Process(killed.pid).children(recursive=True)
        killed.send_signal(signal.SIGKILL)
    finally:
        if killed.poll() is None:
            killed.send_signal(signal.SIGKILL)
        killed.communicate()
    try:
        _, orphans = psutil.wait_procs(children, timeout=30)
        assert not orphans, f"left running after `tuneops monitor` was killed: {orphans}"
    finally:
        for process in children:
            if process.is_running():
                process.kill()
    [killed_run] = [path.name for path in runs.iterdir()]

    # Nothing the killed run left is half written, and nothing of it is registered.
    assert not state.exists(), "the killed run's window was marked as consumed"
    for path in _json_files(home / "monitoring", workspace):
        json.loads(path.read_text())
    assert not (runs / killed_run / "monitor.json").exists()

    rerun = _monitor(home, options)
    try:
        stdout, stderr = rerun.communicate(timeout=300)
    finally:
        if rerun.poll() is None:
            rerun.send_signal(signal.SIGKILL)
            rerun.communicate()
    assert rerun.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    [summary] = [line for line in stdout.splitlines() if line.startswith("monitor ")]
    assert ": checked, 40 predictions, drift share " in summary, stdout
    rerun_id = summary.split()[1].rstrip(":")
    # The damaged records and the feedback rows left out are told, not hidden.
    assert "prediction log: 2 records skipped (2 damaged); first: " in stdout, stdout
    assert "1 rows with labels the model does not know were left out" in stdout, stdout
    assert "not scored" in stdout, stdout
    assert json.loads(state.read_text())["last_run_id"] == rerun_id
    report = json.loads((runs / rerun_id / "monitor.json").read_text())
    assert report["skipped_records"] == 2 and len(report["snapshot_ids"]) == 2

    from evidently.ui.workspace import Workspace

    store = Workspace(str(workspace))
    [project] = store.search_project("tuneops")
    # The project holds the rerun's two snapshots (traffic and drift), each whole, and no other.
    assert sorted(str(snapshot_id) for snapshot_id in store.list_runs(project.id)) == sorted(report["snapshot_ids"])
    stored = [store.get_run(project.id, snapshot_id) for snapshot_id in report["snapshot_ids"]]
    assert [snapshot.metadata.get("monitor_run") for snapshot in stored if "tuneops-traffic" in snapshot.tags] == [
        rerun_id]
    assert not list(workspace.glob(".tuneops-staging-*"))
