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

The data is fsync'ed at most once per ``fsync_interval_s``: a killed process loses nothing that
``write`` returned for (the page cache survives it), a power cut loses at most that interval.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import threading
import time
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
            written = os.write(fd, payload)
            # A short write only happens when the disk is full; say so rather than leave half a line.
            if written != len(payload):
                raise OSError(f"prediction log: short write ({written} of {len(payload)} bytes); disk full?")
            if time.monotonic() - self._last_fsync >= self.fsync_interval_s:
                os.fsync(fd)
                self._last_fsync = time.monotonic()
        return len(lines)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """Every complete record (from all segments), oldest first, as a frame with ``COLUMNS``.

        ``since``/``until`` bound ``timestamp`` (naive datetimes are taken as UTC). A torn last
        line left by a crash is skipped; a damaged line elsewhere is skipped too (never raised),
        since the log is evidence for monitoring, not a ledger.
        """
        since_utc = _as_utc(since) if since is not None else None
        until_utc = _as_utc(until) if until is not None else None
        rows: list[dict[str, Any]] = []
        for path in self.segments():
            day = _SEGMENT.match(path.name)["day"]
            # A segment's day is the day it was written, and a record is never written before its
            # own timestamp, so a segment written before ``since``'s day holds nothing at or after
            # ``since``. No such skip exists for ``until``: a segment written today may hold records
            # stamped yesterday (a request that crossed midnight, a replay with its own timestamps).
            if since_utc is not None and day < since_utc.strftime("%Y%m%d"):
                continue
            rows.extend(_read_segment(path))
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        frame["score"] = frame["score"].astype(float)
        if since_utc is not None:
            frame = frame[frame["timestamp"] >= pd.Timestamp(since_utc)]
        if until_utc is not None:
            frame = frame[frame["timestamp"] < pd.Timestamp(until_utc)]
        return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)

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

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_fd_pid", None) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass


def _encode(record: Mapping[str, Any], now: datetime) -> str:
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise DataError(f"prediction log: record lacks {', '.join(missing)}")
    timestamp = record.get("timestamp") or now
    if isinstance(timestamp, datetime):
        timestamp = _as_utc(timestamp).isoformat()
    row = {
        "timestamp": str(timestamp),
        "request_id": str(record["request_id"]),
        "model_tag": str(record["model_tag"]),
        INPUT: str(record[INPUT]),
        "label": str(record["label"]),
        "score": float(record["score"]),
        "probabilities": {str(k): float(v) for k, v in dict(record["probabilities"]).items()},
    }
    # ensure_ascii keeps every line pure ASCII: no multi-byte character can be split by a torn write.
    return json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n"


def _read_segment(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # the torn tail of a crashed writer: everything before it is whole
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            if isinstance(row, dict) and all(key in row for key in COLUMNS):
                rows.append({key: row[key] for key in COLUMNS})
    return rows


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
