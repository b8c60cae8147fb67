"""The run record's rules for stopped and resumed runs: a run id is an id, a finished run or a
changed config is not resumed, a stop from outside is recorded as ``interrupted``, and a record
whose writer was killed reads as ``interrupted`` (judged from the pid and start time it names).

Each test has its own TUNEOPS_HOME; the killed writer is a real child process, stopped by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.exceptions import TerminationSignal

from tuneops.components.config import load_config
from tuneops.components.errors import ConfigError, StageError
from tuneops.components.run_record import (
    RunRecord, check_resumable, check_run_id, check_run_request, interruption_message, is_interruption,
    list_runs, new_run_id, read_summary,
)

# A child that starts a run record, enters a stage, says so and waits to be killed.
WRITER = r"""
import sys, time
from tuneops.components.config import load_config
from tuneops.components.run_record import RunRecord
record = RunRecord.start(sys.argv[1], load_config(None))
with record.stage("finetune"):
    print("in stage", flush=True)
    time.sleep(120)
"""


@pytest.fixture(autouse=True)
def own_home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TUNEOPS_HOME", str(home))
    return home


def test_a_run_id_is_an_id_and_never_a_path() -> None:
    made = new_run_id()
    assert check_run_id(made) == made
    config = load_config(None)
    for bad in (f"../../other-home/runs/{made}", f"/tmp/{made}", "20250101-120000-A1B2C3", made[:-1], "", 20250101):
        with pytest.raises(ConfigError, match="is not a run id"):
            check_run_id(bad, "resume")
        with pytest.raises(ConfigError, match="^resume: .* is not a run id"):
            check_run_request(bad, config, resume=True)
        with pytest.raises(ConfigError, match="^run: .* is not a run id"):
            check_run_request(bad, config, resume=False)
    with pytest.raises(ConfigError, match="^resume: which run"):
        check_run_request(None, config, resume=True)
    with pytest.raises(ConfigError, match=f"^resume: no run '{made}'"):
        check_run_request(made, config, resume=True)
    check_run_request(None, config, resume=False)
    check_run_request(made, config, resume=False)  # a new run may be given its id


def test_a_finished_run_or_a_changed_config_is_not_resumed(own_home: Path) -> None:
    config = load_config(None)
    finished = RunRecord.start(new_run_id(), config)
    finished.finish("promoted")
    with pytest.raises(ConfigError, match=f"run {finished.run_id} already finished \\(promoted\\)"):
        check_resumable(finished.run_id, config)
    with pytest.raises(ConfigError, match="already exists; `tuneops run --resume"):
        RunRecord.start(finished.run_id, config)

    failed = RunRecord.start(new_run_id(), config)
    failed.finish("failed", error="stage validate failed")
    assert check_resumable(failed.run_id, config)["status"] == "failed"
    # Settings that only change speed or serving may differ; what decides the numbers may not.
    same = load_config(None, ["training.num_workers=3", "training.checkpoint_every_steps=7", "serving.port=3999"])
    assert check_resumable(failed.run_id, same)["status"] == "failed"
    for changed, section in ((["training.max_steps=1"], "training"), (["data.max_rows=50"], "data"),
                             (["data.max_rows=50", "gate.tolerance=0.5"], "data, gate")):
        with pytest.raises(ConfigError, match=f"different config \\(changed: {section}\\)"):
            check_resumable(failed.run_id, load_config(None, changed))
    # A record without a fingerprint (an older tuneops) cannot show it is the same config.
    path = failed.run_dir / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "config_fingerprint": None}))
    with pytest.raises(ConfigError, match="no config fingerprint"):
        check_resumable(failed.run_id, config)
    path.write_text("[]")
    with pytest.raises(StageError, match=f"run record {path} is not a JSON object"):
        check_resumable(failed.run_id, config)


def test_a_stop_from_outside_is_recorded_as_interrupted_and_a_failure_as_failed() -> None:
    assert is_interruption(KeyboardInterrupt()) and is_interruption(TerminationSignal(signal.SIGTERM))
    assert not is_interruption(StageError("x")) and not is_interruption(ValueError("x"))
    assert interruption_message(TerminationSignal(signal.SIGTERM)) == "interrupted by SIGTERM"
    assert interruption_message(KeyboardInterrupt()) == "interrupted (KeyboardInterrupt)"

    record = RunRecord.start(new_run_id(), load_config(None))
    with pytest.raises(StageError):
        with record.stage("load_data"):
            raise StageError("no data")
    with pytest.raises(TerminationSignal):
        with record.stage("validate"):
            raise TerminationSignal(signal.SIGTERM)
    assert record.stages["load_data"]["status"] == "failed"
    assert record.stages["validate"] == {**record.stages["validate"], "status": "interrupted",
                                         "error": "interrupted by SIGTERM"}
    record.interrupted("interrupted by SIGTERM")
    summary = read_summary(record.run_id)
    assert (summary["status"], summary["error"]) == ("interrupted", "interrupted by SIGTERM")
    assert check_resumable(record.run_id, load_config(None))["status"] == "interrupted"


def test_a_record_whose_writer_was_killed_reads_as_interrupted_and_is_resumed_once(own_home: Path) -> None:
    listed_id, resumed_id = sorted(new_run_id()[:-6] + suffix for suffix in ("aaaaaa", "bbbbbb"))
    writers = {run_id: subprocess.Popen([sys.executable, "-c", WRITER, run_id], stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "TUNEOPS_HOME": str(own_home)})
               for run_id in (listed_id, resumed_id)}
    try:
        for run_id, writer in writers.items():
            assert writer.stdout.readline() == "in stage\n"
            live = read_summary(run_id)
            assert live["status"] == "running" and live["process"]["pid"] == writer.pid
            assert live["stages"]["finetune"]["status"] == "running"  # written when the stage began
            with pytest.raises(ConfigError, match=f"run {run_id} is still running \\(pid {writer.pid} "):
                check_resumable(run_id, load_config(None))
    finally:
        for writer in writers.values():
            writer.kill()
            writer.wait(timeout=30)
    assert [writer.returncode for writer in writers.values()] == [-signal.SIGKILL] * 2

    run_dir = own_home / "runs" / listed_id
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"  # all it could write
    assert [summary["status"] for summary in list_runs()] == ["interrupted", "interrupted"]
    recorded = json.loads((run_dir / "summary.json").read_text())
    assert recorded["status"] == "interrupted" and f"pid {writers[listed_id].pid}" in recorded["error"]
    assert recorded["stages"]["finetune"]["status"] == "interrupted"
    assert "interrupted" in (run_dir / "index.html").read_text()

    # Resumed straight away, with nothing read before: the resume judges the record itself.
    path = own_home / "runs" / resumed_id / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running", "error": None}))
    record, previous = RunRecord.resume(resumed_id, load_config(None))
    assert previous["status"] == "interrupted" and record.run_id == resumed_id
    assert read_summary(resumed_id)["process"]["pid"] == os.getpid()
    # This process runs it now: a second resume is refused while it lives.
    with pytest.raises(ConfigError, match=f"still running \\(pid {os.getpid()} "):
        RunRecord.resume(resumed_id, load_config(None))
