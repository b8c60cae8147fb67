"""The prediction log: append-only JSONL segments that survive a crash of their writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from tuneops.components.errors import DataError
from tuneops.components.monitoring.prediction_log import COLUMNS, INPUT, PredictionLog, hash_input

ROOT = Path(__file__).resolve().parents[2]


def record(request_id: str, text: str = "works well", label: str = "positive", **extra) -> dict:
    return {"request_id": request_id, "model_tag": "tuneops-classifier:v1", "text": text, "label": label,
            "score": 0.8, "probabilities": {"negative": 0.1, "neutral": 0.1, "positive": 0.8}, **extra}


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    assert log.append([record("a", "first ünïcode ✓"), record("b", label="negative")]) == 2
    assert log.append([]) == 0
    frame = log.read()
    assert list(frame.columns) == COLUMNS
    assert INPUT == "text"  # the logged input's column: the on-disk format of existing logs
    assert frame["request_id"].tolist() == ["a", "b"]
    assert frame.loc[0, "text"] == "first ünïcode ✓"
    assert frame.loc[1, "label"] == "negative"
    assert frame.loc[0, "probabilities"] == {"negative": 0.1, "neutral": 0.1, "positive": 0.8}
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    # Non-ASCII is escaped on disk: a torn write can never split a multi-byte character.
    assert all(line.isascii() for path in log.segments() for line in path.read_text().splitlines())


def test_empty_log_reads_as_empty_frame(tmp_path: Path) -> None:
    frame = PredictionLog(tmp_path / "never-written").read()
    assert frame.empty and list(frame.columns) == COLUMNS


def test_since_and_until_select_by_timestamp(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    now = datetime.now(timezone.utc)
    log.append([record("old", timestamp=now - timedelta(hours=2)), record("new", timestamp=now)])
    assert log.read(since=now - timedelta(hours=1))["request_id"].tolist() == ["new"]
    assert log.read(until=now - timedelta(hours=1))["request_id"].tolist() == ["old"]
    # A naive datetime is taken as UTC.
    naive = (now - timedelta(hours=1)).replace(tzinfo=None)
    assert log.read(since=naive)["request_id"].tolist() == ["new"]


def test_until_finds_records_stamped_before_the_day_their_segment_was_written(tmp_path: Path) -> None:
    # Segments are named by the day they were written; a record may carry an earlier timestamp
    # (a request that crossed midnight, a replay). ``until`` must still find it whatever the clock.
    log = PredictionLog(tmp_path)
    now = datetime.now(timezone.utc)
    log.append([record("three-days-ago", timestamp=now - timedelta(days=3)), record("today", timestamp=now)])
    assert log.read(until=now - timedelta(days=2))["request_id"].tolist() == ["three-days-ago"]
    assert log.read(since=now - timedelta(days=4), until=now - timedelta(days=2))["request_id"].tolist() == [
        "three-days-ago"]


def test_each_writer_has_its_own_segment_and_read_merges_them(tmp_path: Path) -> None:
    first, second = PredictionLog(tmp_path), PredictionLog(tmp_path)
    first.append([record("1")])
    second.append([record("2")])
    first.append([record("3")])
    assert len(first.segments()) == 2
    assert sorted(PredictionLog(tmp_path).read()["request_id"]) == ["1", "2", "3"]


def test_a_torn_last_line_is_skipped_and_later_writers_are_unaffected(tmp_path: Path) -> None:
    crashed = PredictionLog(tmp_path)
    crashed.append([record("kept-1"), record("kept-2")])
    segment = crashed.segments()[0]
    crashed.close()
    whole = json.dumps(record("torn", timestamp=datetime.now(timezone.utc).isoformat()))
    with open(segment, "a") as handle:  # what a writer killed in the middle of write(2) leaves
        handle.write(whole[: len(whole) // 2])
    restarted = PredictionLog(tmp_path)
    restarted.append([record("after-restart")])
    assert len(restarted.segments()) == 2  # a new writer never appends after someone's torn tail
    assert sorted(restarted.read()["request_id"]) == ["after-restart", "kept-1", "kept-2"]


WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from tuneops.components.monitoring.prediction_log import PredictionLog
log = PredictionLog(sys.argv[1])
batch = 0
print("ready", flush=True)
while True:
    log.append([{"request_id": f"{batch}-{i}", "model_tag": "m", "text": "x" * 300, "label": "l",
                 "score": 0.5, "probabilities": {"l": 0.5, "k": 0.5}} for i in range(50)])
    batch += 1
"""


def test_records_written_before_a_kill_9_all_read_back_whole(tmp_path: Path) -> None:
    """A real crash: SIGKILL a process while it appends as fast as it can."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(ROOT)], stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline().strip() == b"ready"
        time.sleep(1.0)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    frame = PredictionLog(tmp_path).read()
    assert len(frame) >= 50
    assert frame["request_id"].is_unique
    assert (frame["text"] == "x" * 300).all() and (frame["score"] == 0.5).all()
    # Complete batches are whole; only the very last one may have been cut, from its end.
    counts = frame["request_id"].str.split("-").str[0].astype(int).value_counts().sort_index()
    assert (counts.iloc[:-1] == 50).all()
    lines = PredictionLog(tmp_path).segments()[0].read_bytes().split(b"\n")
    assert len(frame) == sum(1 for line in lines[:-1] if line)


def test_hash_input_is_stable_and_hides_the_input() -> None:
    assert hash_input("secret order 123") == hash_input("secret order 123")
    assert hash_input("secret order 123") != hash_input("secret order 124")
    assert "secret" not in hash_input("secret order 123") and hash_input("x").startswith("sha256:")


def test_a_record_missing_fields_is_refused(tmp_path: Path) -> None:
    incomplete = record("a")
    del incomplete["label"]
    with pytest.raises(DataError, match="label"):
        PredictionLog(tmp_path).append([incomplete])
    assert not any(path.stat().st_size for path in PredictionLog(tmp_path).segments())


def test_a_forked_child_writes_its_own_segment(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append([record("parent")])
    pid = os.fork()
    if pid == 0:  # child: append and leave without running the parent's cleanup
        try:
            log.append([record("child")])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    log.append([record("parent-2")])
    assert len(log.segments()) == 2
    assert sorted(log.read()["request_id"]) == ["child", "parent", "parent-2"]


def test_well_formed_but_wrong_records_are_skipped_field_by_field_and_counted(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append([record("good-1"), record("good-2")])
    good = json.loads(log.segments()[0].read_text().splitlines()[0])
    wrong = [
        {**good, "request_id": "bad-time", "timestamp": "yesterday at noon"},
        {**good, "request_id": "bad-score", "score": "abc"},
        {**good, "request_id": "score-above-one", "score": 1.5},
        {**good, "request_id": "bool-score", "score": True},
        {**good, "request_id": "numeric-time", "timestamp": 1767225600},
        {**good, "request_id": "year-one", "timestamp": "0001-01-01T00:00:00+00:00"},
        {**good, "request_id": "list-probabilities", "probabilities": [0.2, 0.8]},
        {**good, "request_id": "text-probability", "probabilities": {"positive": "high"}},
        {**good, "request_id": 7},
        {key: value for key, value in good.items() if key != "label"},
    ]
    lines = [json.dumps(row) for row in wrong] + ['{"score": NaN}', "[1, 2]", "not json at all"]
    # A segment named as a writer would name it, written by hand: records no writer of ours makes.
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    (tmp_path / f"predictions-{day}-elsewhere-1-0000.jsonl").write_text("\n".join(lines) + "\n")
    log.append([record("good-3")])

    scan = PredictionLog(tmp_path).scan()
    assert scan.frame["request_id"].tolist() == ["good-1", "good-2", "good-3"]
    assert scan.frame["score"].dtype == float and str(scan.frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert (scan.damaged, scan.torn, scan.skipped) == (len(lines), 0, len(lines))
    assert scan.first_problem == f"predictions-{day}-elsewhere-1-0000.jsonl line 1: " \
                                 'timestamp "yesterday at noon" is not an ISO 8601 time'
    assert scan.note().startswith(f"prediction log: {len(lines)} records skipped ({len(lines)} damaged); first: ")
    assert PredictionLog(tmp_path).read()["request_id"].tolist() == ["good-1", "good-2", "good-3"]
    # Each wrong field is named.
    from tuneops.components.monitoring.prediction_log import check_record

    problems = [check_record(row) for row in wrong]
    assert problems[1] == 'score "abc" is not a number between 0 and 1'
    assert "probabilities [0.2, 0.8] is not an object" == problems[6]
    assert problems[8] == "request_id 7 is not a string" and problems[9] == "no label"
    assert check_record(good) is None


def test_a_torn_tail_is_counted_apart_from_damaged_records(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append([record("kept")])
    log.close()
    with open(log.segments()[0], "a") as handle:
        handle.write('{"timestamp": "2026-')
    scan = PredictionLog(tmp_path).scan()
    assert scan.frame["request_id"].tolist() == ["kept"]
    assert (scan.damaged, scan.torn) == (0, 1) and "torn by a crashed writer" in scan.note()
    assert PredictionLog(tmp_path / "empty").scan().note() is None


def test_a_timestamp_that_is_not_iso_8601_is_refused_when_appended(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    with pytest.raises(DataError, match="timestamp \"last tuesday\" is not an ISO 8601 time"):
        log.append([record("a", timestamp="last tuesday")])
    # An ISO string in another zone is kept as the same moment, in UTC.
    log.append([record("b", timestamp="2026-03-01T12:00:00+02:00")])
    assert log.read()["timestamp"].tolist() == [pd.Timestamp("2026-03-01T10:00:00Z")]
