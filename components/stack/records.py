"""What ``tuneops up`` knows about the processes it started: one record per service in
``$TUNEOPS_HOME/stack/<service>.json`` (pid, start time, command, URLs, log), and the identity
check that tells a live process of ours from a stranger that was handed a recycled pid."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneops.components.errors import StageError
from tuneops.components.files import atomic_write_json
from tuneops.components.paths import tuneops_home

# The order services start in; ``down`` stops them in reverse.
SERVICES = ("prefect-server", "prefect-worker", "evidently-ui", "serving")
# A recorded start time within this many seconds of the live process's is the same process.
_START_TIME_TOLERANCE_S = 0.5


@dataclass
class ServiceRecord:
    """What ``up`` wrote about one started process: enough to find, check and stop it."""

    name: str
    pid: int
    create_time: float
    command: list[str]
    url: str
    health_url: str | None
    log: str
    started_at: str
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ServiceStatus:
    """One line of ``tuneops status``."""

    name: str
    state: str  # running | starting | stopped | not started
    url: str = ""
    pid: int | None = None
    detail: str = ""


def stack_dir() -> Path:
    """Where the pid files and logs of the local stack live."""
    return tuneops_home() / "stack"


def record_path(name: str) -> Path:
    return stack_dir() / f"{name}.json"


def write_record(record: ServiceRecord) -> None:
    """Write a service's record atomically (``status`` may read it at the same moment)."""
    atomic_write_json(record_path(record.name), record.to_json())


def read_record(name: str) -> ServiceRecord | None:
    """The record of ``name``, None when there is none; StageError when it is damaged."""
    path = record_path(name)
    try:
        return ServiceRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        raise StageError(f"stack: {path} is damaged; stop its process by hand and delete the file") from None


def remove_record(name: str) -> None:
    record_path(name).unlink(missing_ok=True)


def live_process(record: ServiceRecord):
    """The recorded process if it still runs, identified by pid *and* start time, else None."""
    import psutil

    try:
        process = psutil.Process(record.pid)
        if abs(process.create_time() - record.create_time) > _START_TIME_TOLERANCE_S \
                or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def running(name: str) -> ServiceRecord | None:
    """The record of ``name`` if its process still runs; a stale record is removed."""
    record = read_record(name)
    if record is None:
        return None
    if live_process(record) is None:
        remove_record(name)
        return None
    return record


def prefect_api_url() -> str | None:
    """The Prefect API to talk to: ``PREFECT_API_URL`` if set, else the server ``tuneops up``
    started (when it is still running), else None (Prefect's ephemeral server)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    record = read_record("prefect-server")
    if record is not None and live_process(record) is not None:
        return record.extra.get("api_url")
    return None
