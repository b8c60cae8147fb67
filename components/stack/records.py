"""What ``tuneops up`` knows about the processes it started: one record per service in
``$TUNEOPS_HOME/stack/<service>.json`` (pid, start time, command, marker, URLs, log), and the
identity check that tells a live process of ours from a stranger that was handed a recycled pid.

A process is ours when its pid, start time and program match the record *and* its environment
carries the record's marker (``MARKER_ENV``). The marker is what identifies the rest of a service's
family too: every process it starts inherits the environment, and keeps it across ``exec`` (serving
execs ``bentoml serve``, which changes the command line but not the marker). A pid or a process
group id alone proves nothing once the record is stale: the system hands both out again.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneops.components.errors import StageError
from tuneops.components.files import atomic_write_json
from tuneops.components.paths import tuneops_home
from tuneops.components.process_identity import START_TIME_TOLERANCE_S, recorded_process

# The order services start in; ``down`` stops them in reverse.
SERVICES = ("postgres", "prefect-server", "prefect-worker", "evidently-ui", "serving")
# The environment variable that carries a started service's marker (``ServiceRecord.marker``).
MARKER_ENV = "TUNEOPS_STACK_MARKER"


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
    # Empty in records written before markers existed: only the process itself can be identified then.
    marker: str = ""
    # A signal (its name) that ``stop`` sends the recorded process alone first, for a server that
    # stops its own children in order: PostgreSQL's postmaster, whose fast shutdown is SIGINT.
    leader_signal: str = ""

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


def new_marker(name: str) -> str:
    """A marker no other process carries: the service's name and 16 random hex digits."""
    return f"{name}-{secrets.token_hex(8)}"


def carries_marker(process, record: ServiceRecord) -> bool:
    """Whether ``process`` (a ``psutil.Process``) has the record's marker in its environment and
    started no earlier than the recorded process (a family member is never older than its leader).
    False for a record without a marker, and when the environment cannot be read."""
    import psutil

    if not record.marker:
        return False
    try:
        return (process.create_time() >= record.create_time - START_TIME_TOLERANCE_S
                and process.environ().get(MARKER_ENV) == record.marker)
    except psutil.Error:
        return False


def live_process(record: ServiceRecord):
    """The recorded process if it still runs, else None. Identified by pid, start time and program
    (the command's first word: ``exec`` may change the rest), plus the marker when the record has one."""
    import psutil

    process = recorded_process(record.pid, record.create_time)
    if process is None:
        return None
    try:
        if process.cmdline()[:1] != record.command[:1]:
            return None
        if record.marker and not carries_marker(process, record):
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
