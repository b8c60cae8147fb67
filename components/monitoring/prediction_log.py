"""The prediction log: every prediction the service makes, for monitoring to compare with.

Storage is append-only JSON Lines under ``$TUNEOPS_HOME/predictions``, one *segment* file per
writer process and UTC day (``predictions-YYYYMMDD-<host>-<pid>-<token>.jsonl``). Why this shape:

- a record is one line, and every ``append`` is a single ``write(2)`` on an ``O_APPEND`` file
  descriptor, so a crash can only ever leave the *last* line of a segment torn; earlier lines are
  complete, and ``read`` skips a torn tail;
- one writer per file means no two processes interleave bytes within a line, and no lock is
  needed between the service's workers;
- the random token in the name means a restarted process never appends to a file that a
  crashed predecessor may have left with a torn tail (pids repeat, in containers always);
- the day in the name lets ``read(since=...)`` skip whole files written before that day.

Reading checks every record field by field (``check_record``): a line that is not JSON, or a
record with a field of the wrong kind (a timestamp that is not ISO 8601, a score that is not a
probability), is skipped and counted, never raised (``LogScan``). A write that fails (a full disk,
a file size limit) raises ``OSError``; the bytes it managed to write are cut off again and the next
``append`` starts a new segment, so a failed write never leaves half a line before a whole one.

The data is fsync'ed at most once per ``fsync_interval_s``: a killed process loses nothing that
``write`` returned for (the page cache survives it), a power cut loses at most that interval.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from tuneops.components.errors import DataError

# The logged input (``Task.log_value`` of what was classified). Its column is called "text" on
# disk: the log format predates other tasks, and logs already written must stay readable.
INPUT = "text"
COLUMNS = ["timestamp", "request_id", "model_tag", INPUT, "label", "score", "probabilities"]
_REQUIRED = ("request_id", "model_tag", INPUT, "label", "score", "probabilities")
_TEXT_FIELDS = ("request_id", "model_tag", INPUT, "label")
# A probability computed in float32 may land a hair outside [0, 1]; more than this is not rounding.
_PROBABILITY_SLACK = 1e-6
# The span of pandas' nanosecond timestamps (1677-09-21 to 2262-04-11), in whole years: a record
# stamped outside it could not be placed in the frame monitoring reads.
_EARLIEST = datetime(1678, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(2262, 1, 1, tzinfo=timezone.utc)
_SEGMENT = re.compile(r"^predictions-(?P<day>\d{8})-.+\.jsonl$")
HASH_PREFIX = "sha256:"


def hash_input(value: str) -> str:
    """What is logged instead of the input when ``serving.log_text`` is ``hash``."""
    return HASH_PREFIX + hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_hashed(values: pd.Series) -> pd.Series:
    """Which logged inputs are hashes (``hash_input``) rather than the inputs themselves."""
    return values.astype(str).str.startswith(HASH_PREFIX)


class PredictionLog:
    """Append-only store of prediction records under ``directory``; safe to share between processes.

    Records are mappings with ``request_id``, ``model_tag``, the logged input under ``INPUT``
    (``Task.log_value``), ``label``, ``score`` and ``probabilities`` (label -> probability), plus an
    optional ``timestamp`` (datetime or ISO string; now, UTC, when absent).
    """

    def __init__(self, directory: str | Path, fsync_interval_s: float = 1.0) -> None:
        self.directory = Path(directory)
        self.fsync_interval_s = fsync_interval_s
        self._token = secrets.token_hex(4)
        self._host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._fd_day: str | None = None
        self._fd_pid: int | None = None
        self._last_fsync = 0.0

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Write ``records`` as one block of lines; returns how many were written."""
        now = datetime.now(timezone.utc)
        lines = [_encode(record, now) for record in records]
        if not lines:
            return 0
        payload = "".join(lines).encode("utf-8")
        with self._lock:
            fd = self._segment_fd(now)
            size = os.fstat(fd).st_size  # one writer per segment: nobody else moves its end
            try:
                written = os.write(fd, payload)
                # A short write only happens when the disk (or the file size limit) is full.
                if written != len(payload):
                    raise OSError(f"prediction log: short write ({written} of {len(payload)} bytes); disk full?")
            except OSError:
                self._abandon_segment(fd, size)
                raise
            if time.monotonic() - self._last_fsync >= self.fsync_interval_s:
                os.fsync(fd)
                self._last_fsync = time.monotonic()
        return len(lines)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """Every valid, complete record (from all segments), oldest first, as a frame with ``COLUMNS``:
        ``scan(since, until).frame``. Damaged records are skipped; ``scan`` also counts them."""
        return self.scan(since, until).frame

    def scan(self, since: datetime | None = None, until: datetime | None = None) -> "LogScan":
        """Read the log as ``read`` does, and count what was skipped.

        ``since``/``until`` bound ``timestamp`` (naive datetimes are taken as UTC). A torn last
        line left by a crash is skipped, and so is every line that fails ``check_record`` (never
        raised: the log is evidence for monitoring, not a ledger). Skipped lines are counted in the
        segments read, whatever their timestamp (a damaged record has none to trust).
        """
        since_utc = _as_utc(since) if since is not None else None
        until_utc = _as_utc(until) if until is not None else None
        result = LogScan(frame=pd.DataFrame(columns=COLUMNS))
        rows: list[dict[str, Any]] = []
        for path in self.segments():
            day = _SEGMENT.match(path.name)["day"]
            # A segment's day is the day it was written, and a record is never written before its
            # own timestamp, so a segment written before ``since``'s day holds nothing at or after
            # ``since``. No such skip exists for ``until``: a segment written today may hold records
            # stamped yesterday (a request that crossed midnight, a replay with its own timestamps).
            if since_utc is not None and day < since_utc.strftime("%Y%m%d"):
                continue
            rows.extend(_read_segment(path, result))
        frame = pd.DataFrame(rows, columns=COLUMNS)
        # Checked records only: timestamps are parsed datetimes already, scores numbers.
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        frame["score"] = frame["score"].astype(float)
        if since_utc is not None:
            frame = frame[frame["timestamp"] >= pd.Timestamp(since_utc)]
        if until_utc is not None:
            frame = frame[frame["timestamp"] < pd.Timestamp(until_utc)]
        result.frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
        return result

    def segments(self) -> list[Path]:
        """The segment files, in name order (day first)."""
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.iterdir() if _SEGMENT.match(path.name))

    def close(self) -> None:
        """Flush to disk and close the open segment (appending again reopens one)."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    def _segment_fd(self, now: datetime) -> int:
        day = now.strftime("%Y%m%d")
        pid = os.getpid()
        # A forked child must not share the parent's segment: one writer per file.
        if self._fd is not None and (self._fd_day != day or self._fd_pid != pid):
            if self._fd_pid == pid:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            if self._fd_pid is not None and self._fd_pid != pid:
                self._token = secrets.token_hex(4)
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"predictions-{day}-{self._host}-{pid}-{self._token}.jsonl"
            self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._fd_day, self._fd_pid = day, pid
        return self._fd

    def _abandon_segment(self, fd: int, size: int) -> None:
        """After a failed write: cut the segment back to ``size`` (its last whole line) and close it,
        so the next append starts a new segment. Closing is what matters: were the cut to fail too,
        the half line stays the segment's torn tail, which readers skip, with nothing after it."""
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass
        self._fd = None
        self._token = secrets.token_hex(4)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_fd_pid", None) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class LogScan:
    """What ``PredictionLog.scan`` read: the valid records, and the lines it skipped.

    ``damaged`` counts complete lines that are not JSON or fail ``check_record``; ``torn`` the
    segments that end in half a line (a writer killed mid-write); ``first_problem`` says where the
    first skipped line is and what is wrong with it."""

    frame: pd.DataFrame
    damaged: int = 0
    torn: int = 0
    first_problem: str | None = None

    @property
    def skipped(self) -> int:
        """Lines skipped in all."""
        return self.damaged + self.torn

    def note(self) -> str | None:
        """One line for a report, None when nothing was skipped."""
        if not self.skipped:
            return None
        parts = [f"{self.damaged} damaged" if self.damaged else "", f"{self.torn} torn by a crashed writer"
                 if self.torn else ""]
        return (f"prediction log: {self.skipped} records skipped ({', '.join(filter(None, parts))}); "
                f"first: {self.first_problem}")

    def _skip(self, where: str, problem: str, torn: bool = False) -> None:
        if torn:
            self.torn += 1
        else:
            self.damaged += 1
        if self.first_problem is None:
            self.first_problem = f"{where}: {problem}"


def check_record(row: Any) -> str | None:
    """What is wrong with one record read from the log, field by field; None when it is valid.

    Valid is what ``append`` writes: a JSON object with every field of ``COLUMNS``; ``timestamp`` an
    ISO 8601 string; ``request_id``, ``model_tag``, the input and ``label`` strings; ``score`` a
    probability; ``probabilities`` an object of label -> probability. Extra fields are ignored.
    """
    if not isinstance(row, dict):
        return f"not a JSON object but {type(row).__name__}"
    missing = [key for key in COLUMNS if key not in row]
    if missing:
        return f"no {', '.join(missing)}"
    timestamp = row["timestamp"]
    if not isinstance(timestamp, str) or _parse_timestamp(timestamp) is None:
        return f"timestamp {_shown(timestamp)} is not an ISO 8601 time"
    for key in _TEXT_FIELDS:
        if not isinstance(row[key], str):
            return f"{key} {_shown(row[key])} is not a string"
    if not _is_probability(row["score"]):
        return f"score {_shown(row['score'])} is not a number between 0 and 1"
    probabilities = row["probabilities"]
    if not isinstance(probabilities, dict):
        return f"probabilities {_shown(probabilities)} is not an object"
    for label, value in probabilities.items():
        if not _is_probability(value):
            return f"probability of {_shown(label)} {_shown(value)} is not a number between 0 and 1"
    return None


def _is_probability(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and -_PROBABILITY_SLACK <= value <= 1 + _PROBABILITY_SLACK)


def _parse_timestamp(value: str) -> datetime | None:
    """``value`` as a UTC datetime (naive = UTC), None when it is not ISO 8601 or outside the
    span pandas can hold."""
    try:
        moment = _as_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None
    return moment if _EARLIEST <= moment < _LATEST else None


def _shown(value: Any) -> str:
    """A field's value for a one-line message: its JSON, cut short."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _encode(record: Mapping[str, Any], now: datetime) -> str:
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise DataError(f"prediction log: record lacks {', '.join(missing)}")
    timestamp = record.get("timestamp") or now
    if not isinstance(timestamp, datetime):
        # Refused here, not only skipped by readers: a record the log cannot place in time is lost.
        parsed = _parse_timestamp(str(timestamp))
        if parsed is None:
            raise DataError(f"prediction log: timestamp {_shown(str(timestamp))} is not an ISO 8601 time")
        timestamp = parsed
    row = {
        "timestamp": _as_utc(timestamp).isoformat(),
        "request_id": str(record["request_id"]),
        "model_tag": str(record["model_tag"]),
        INPUT: str(record[INPUT]),
        "label": str(record["label"]),
        "score": float(record["score"]),
        "probabilities": {str(k): float(v) for k, v in dict(record["probabilities"]).items()},
    }
    # ensure_ascii keeps every line pure ASCII: no multi-byte character can be split by a torn write.
    return json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n"


def _read_segment(path: Path, scan: LogScan) -> list[dict[str, Any]]:
    """The valid records of one segment; what is skipped is counted in ``scan``."""
    rows = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path.name} line {number}"
            if not raw.endswith(b"\n"):
                # The torn tail of a crashed writer: everything before it is whole.
                scan._skip(where, "torn (no line end)", torn=True)
                break
            try:
                row = json.loads(raw)
            except ValueError:
                scan._skip(where, "not JSON")
                continue
            problem = check_record(row)
            if problem is not None:
                scan._skip(where, problem)
                continue
            kept = {key: row[key] for key in COLUMNS}
            kept["timestamp"] = _parse_timestamp(row["timestamp"])
            rows.append(kept)
    return rows


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
