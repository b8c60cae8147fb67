"""The run record: ``runs/<run-id>/`` with summary.json, lineage.json and an index.html that links
every report a stage wrote. It is rewritten after every stage, so a run that fails half-way still
leaves a record that says where and why.

A run that is stopped from outside says so: Ctrl-C and SIGTERM end it as ``interrupted``. A
``kill -9`` (or the OOM killer) leaves no chance to write anything, so the record also names the
process that writes it (pid, start time, host): whoever reads a record that says ``running`` while
that process is gone (``read_summary``) records it as ``interrupted`` then.

``--resume`` continues only an interrupted or failed run, only with the config it was started with
(``config_fingerprint``, stored in the record), and only when no live process still runs it; the
run id must look like one ``new_run_id`` makes, so it cannot name a path."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from tuneops.components.config import PipelineConfig
from tuneops.components.errors import ConfigError, StageError
from tuneops.components.files import atomic_write_json, atomic_write_text, file_lock
from tuneops.components.paths import SOURCE_ROOT, run_dir as run_directory, runs_dir
from tuneops.components.process_identity import recorded_process, start_time
from tuneops.components.run_index import render_index
from tuneops.components.training.checkpoint import OPERATIONAL_KEYS
from tuneops.components.training.runtime import peak_rss_mib

TRACKED_PACKAGES = (
    "torch", "transformers", "datasets", "accelerate", "peft", "prefect", "great_expectations",
    "evidently", "bentoml", "fairlearn", "scikit-learn", "pandas", "numpy",
)
SUMMARY_FILE = "summary.json"
# Held while a reader or a resume changes a record it did not start (see read_summary, resume).
LOCK_FILE = ".record.lock"
RUN_ID_PATTERN = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
RUN_ID_EXAMPLE = "20250101-120000-a1b2c3"
FINISHED = ("promoted", "rejected")
INTERRUPTED = "interrupted"
# The config sections that decide what a run computes; serving and monitoring do not, and neither
# do the training settings that only change how fast it runs (checkpoint.OPERATIONAL_KEYS).
_FINGERPRINTED = ("task", "data", "validation", "selection", "training", "evaluation", "gate")


def new_run_id() -> str:
    """Sortable and unique: UTC timestamp plus a random suffix."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def check_run_id(run_id: Any, context: str = "run") -> str:
    """``run_id`` if it has the form ``new_run_id`` makes (so it names a folder under ``runs/`` and
    never a path elsewhere); ConfigError otherwise."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise ConfigError(f"{context}: {run_id!r} is not a run id (like {RUN_ID_EXAMPLE}, as `tuneops run` "
                          "prints it)")
    return run_id


def config_fingerprint(config: PipelineConfig) -> dict[str, str]:
    """A short hash per config section that decides what a run computes (``_FINGERPRINTED``): a
    run resumes only with the same ones, and a refusal can name the sections that changed."""
    dumped = config.model_dump(mode="json")
    dumped["training"] = config.training.model_dump(mode="json", exclude=OPERATIONAL_KEYS)
    return {name: hashlib.sha256(json.dumps(dumped[name], sort_keys=True).encode()).hexdigest()[:16]
            for name in _FINGERPRINTED}


def is_interruption(error: BaseException) -> bool:
    """Whether ``error`` stops a run from outside rather than failing it: Ctrl-C, a termination
    signal (Prefect raises SIGTERM as a BaseException), an exit. Failures are ``Exception``s."""
    return not isinstance(error, Exception)


def interruption_message(error: BaseException) -> str:
    """The record's one line for an interruption (``is_interruption``)."""
    number = getattr(error, "signal", None)
    if isinstance(number, int):
        with contextlib.suppress(ValueError):
            return f"interrupted by {signal.Signals(number).name}"
    return f"interrupted ({type(error).__name__})"


@dataclass
class Report:
    title: str
    path: str  # relative to the run directory
    stage: str


@dataclass
class RunRecord:
    """Collects what a run did and writes it out as it goes."""

    run_dir: Path
    run_id: str
    config: PipelineConfig
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None

    @classmethod
    def start(cls, run_id: str, config: PipelineConfig) -> "RunRecord":
        """Begin the record of a new run ``runs/<run_id>/``; ConfigError when ``run_id`` is not a
        run id or names a run that exists."""
        check_new_run(run_id)
        return cls._begin(run_id, config)

    @classmethod
    def resume(cls, run_id: str, config: PipelineConfig) -> tuple["RunRecord", dict[str, Any]]:
        """Take over the record of the run ``run_id`` to continue it, when ``check_resumable``
        allows; returns the new record and the run's previous summary. The check and the takeover
        happen under the run's lock, so of two resumes of one run only the first goes ahead."""
        check_resumable(run_id, config)  # before the lock: a missing run gets no folder made
        directory = run_directory(run_id)
        with file_lock(directory / LOCK_FILE):
            previous = _resumable(run_id, _judged_summary(directory), config)
            return cls._begin(run_id, config), previous

    @classmethod
    def _begin(cls, run_id: str, config: PipelineConfig) -> "RunRecord":
        run_dir = run_directory(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config.to_yaml())
        record = cls(run_dir=run_dir, run_id=run_id, config=config)
        record.fields["started_at"] = _now()
        record.fields["process"] = _this_process()
        record.fields["config_fingerprint"] = config_fingerprint(config)
        record.lineage.update(
            {
                "run_id": run_id,
                "config_hash": config.config_hash(),
                "code_version": code_version(),
                "packages": package_versions(),
            }
        )
        record.write()
        return record

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage and record its status; the record is written whether it passes or fails."""
        entry: dict[str, Any] = {"status": "running"}
        self.stages[name] = entry
        # Written at the start too: a run killed inside the stage (kill -9) still names the stage.
        self.write()
        started = time.perf_counter()
        try:
            yield entry
        except BaseException as error:
            if is_interruption(error):
                entry["status"], entry["error"] = INTERRUPTED, interruption_message(error)
            else:
                entry["status"] = "failed"
                entry["error"] = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise
        else:
            entry["status"] = "completed"
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 2)
            self.write()

    def skip(self, name: str, reason: str) -> None:
        self.stages[name] = {"status": "skipped", "reason": reason, "seconds": 0.0}

    def add_report(self, title: str, path: str | Path | None, stage: str) -> None:
        """Link a report file written inside the run directory from index.html."""
        if path is None:
            return
        absolute = Path(path) if Path(path).is_absolute() else self.run_dir / path
        if absolute.exists():
            self.reports.append(Report(title, os.path.relpath(absolute, self.run_dir), stage))

    def interrupted(self, message: str) -> None:
        """End the record as ``interrupted`` (stopped from outside: Ctrl-C, SIGTERM; resumable as
        it is). The stage it stopped in says so too, whatever exception the stop surfaced as."""
        if self.stages:
            last = self.stages[next(reversed(self.stages))]
            if last.get("status") in ("running", "failed"):
                last["status"], last["error"] = INTERRUPTED, message
        self.finish(INTERRUPTED, error=message)

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.fields["finished_at"] = _now()
        # The run's memory high-water mark (training processes of a distributed run included).
        self.fields["peak_rss_mib"] = round(peak_rss_mib(include_children=True), 1)
        self.write()

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "task": self.config.task,
            "status": self.status,
            "error": self.error,
            "stages": self.stages,
            "warnings": self.warnings,
            "reports": [report.__dict__ for report in self.reports],
            **self.fields,
        }

    def release_metadata(self, metrics: dict[str, Any], labels: list[str], promote: bool) -> dict[str, Any]:
        """The lineage a packaged model carries: which run, data, config, code and base checkpoint
        (and its exact revision) made it, its test metrics and the gate's verdict
        (``registry.package_model`` stores it)."""
        return {
            "run_id": self.run_id,
            "metrics": metrics,
            "data_fingerprint": self.lineage.get("data_fingerprint"),
            "config_hash": self.lineage["config_hash"],
            "base_checkpoint": self.lineage.get("base_checkpoint"),
            # None (dropped from the store's metadata) when the checkpoint could not be pinned.
            "base_checkpoint_revision": self.lineage.get("base_checkpoint_revision"),
            "labels": list(labels),
            "code_version": self.lineage["code_version"],
            "gate": "promote" if promote else "reject",
        }

    def write(self) -> None:
        """Write summary.json, lineage.json and index.html atomically."""
        summary = self.summary()
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        atomic_write_json(self.run_dir / "lineage.json", self.lineage)
        atomic_write_text(self.run_dir / "index.html", render_index(summary, self.lineage))


def check_new_run(run_id: str) -> str:
    """``run_id`` for a new run: a run id (``check_run_id``) that no run has yet."""
    check_run_id(run_id)
    if (run_directory(run_id) / SUMMARY_FILE).exists():
        raise ConfigError(f"run {run_id} already exists; `tuneops run --resume {run_id}` continues it")
    return run_id


def check_resumable(run_id: str, config: PipelineConfig) -> dict[str, Any]:
    """The summary of the run ``run_id`` if ``--resume`` may continue it with ``config``: it was
    interrupted or failed, no live process runs it, and it was started with the same config
    (``config_fingerprint``). ConfigError saying why not otherwise."""
    return _resumable(run_id, read_summary(run_id, context="resume"), config)


def _resumable(run_id: str, summary: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    status = summary.get("status")
    if status == "running":
        process = summary.get("process") or {}
        raise ConfigError(f"resume: run {run_id} is still running (pid {process.get('pid')} on "
                          f"{process.get('host')}); stop it first, or wait for it")
    if status in FINISHED:
        raise ConfigError(f"resume: run {run_id} already finished ({status}); a finished run is not resumed, "
                          "`tuneops run` starts a new one")
    recorded = summary.get("config_fingerprint")
    if not isinstance(recorded, dict):
        raise ConfigError(f"resume: run {run_id} has no config fingerprint (recorded by an older tuneops); "
                          "start a new run")
    current = config_fingerprint(config)
    changed = sorted(name for name in set(recorded) | set(current) if recorded.get(name) != current.get(name))
    if changed:
        raise ConfigError(f"resume: run {run_id} was started with a different config (changed: "
                          f"{', '.join(changed)}); resume it with its own "
                          f"({run_directory(run_id) / 'config.yaml'}) or start a new run")
    return summary


def check_run_request(run_id: str | None, config: PipelineConfig, resume: bool) -> None:
    """What a run's id and resume flag must satisfy, checked before anything starts:
    ``check_resumable`` for a resume, ``check_new_run`` for a new run given an id."""
    if resume:
        if run_id is None:
            raise ConfigError("resume: which run? Give its id (`tuneops run --resume RUN_ID`)")
        check_resumable(run_id, config)
    elif run_id is not None:
        check_new_run(run_id)


def read_summary(run_id: str, context: str = "run") -> dict[str, Any]:
    """summary.json of the run ``run_id``, its status judged: a record that says ``running`` while
    the process that wrote it is gone (a ``kill -9`` lets it write nothing more) is recorded as
    ``interrupted`` first. ConfigError when there is no such run."""
    directory = run_directory(check_run_id(run_id, context))
    path = directory / SUMMARY_FILE
    if not path.is_file():
        raise ConfigError(f"{context}: no run {run_id!r} under {directory.parent}")
    summary = _load_summary(path)
    if _writer_gone(summary):
        with file_lock(directory / LOCK_FILE):
            summary = _judged_summary(directory)  # again under the lock: a resume may have taken it over
    return summary


def list_runs() -> list[dict[str, Any]]:
    """Every run's summary (``read_summary``: statuses judged), newest first."""
    root = runs_dir()
    ids = [path.name for path in root.iterdir()
           if RUN_ID_PATTERN.fullmatch(path.name) and (path / SUMMARY_FILE).is_file()] if root.is_dir() else []
    return [read_summary(run_id) for run_id in sorted(ids, reverse=True)]


def _judged_summary(directory: Path) -> dict[str, Any]:
    """The run's summary, recorded as interrupted first if its writer is gone. The caller holds
    the run's lock (flock is per open file: taking it again here would wait for ever)."""
    summary = _load_summary(directory / SUMMARY_FILE)
    return _record_interrupted(directory, summary) if _writer_gone(summary) else summary


def _load_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        summary = None  # written atomically by RunRecord: only a hand edit gets here
    if not isinstance(summary, dict):
        raise StageError(f"run record {path} is not a JSON object; fix or delete it")
    return summary


def _this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "started": start_time(os.getpid()), "host": socket.gethostname()}


def _writer_gone(summary: dict[str, Any]) -> bool:
    """Whether ``summary`` says running although its writer no longer runs. A process on another
    host cannot be checked from here, nor one of a record without a process: those stay as they are."""
    process = summary.get("process")
    if summary.get("status") != "running" or not isinstance(process, dict):
        return False
    if process.get("host") != socket.gethostname():
        return False
    try:
        pid, started = int(process["pid"]), float(process["started"])
    except (KeyError, TypeError, ValueError):
        return False  # a damaged entry: cannot tell, leave the record as it is
    return recorded_process(pid, started) is None


def _record_interrupted(directory: Path, summary: dict[str, Any]) -> dict[str, Any]:
    process = summary["process"]
    message = f"interrupted: its process (pid {process.get('pid')}) ended before the run did (killed?)"
    stages = {name: ({**entry, "status": INTERRUPTED, "error": message} if entry.get("status") == "running" else entry)
              for name, entry in (summary.get("stages") or {}).items()}
    summary = {**summary, "status": INTERRUPTED, "error": summary.get("error") or message, "stages": stages}
    atomic_write_json(directory / SUMMARY_FILE, summary)
    lineage_path = directory / "lineage.json"
    lineage = json.loads(lineage_path.read_text()) if lineage_path.is_file() else {}
    atomic_write_text(directory / "index.html", render_index(summary, lineage))
    return summary


def code_version() -> str:
    """The git commit of the tuneops source (with ``-dirty`` if modified), else the package version."""
    source = SOURCE_ROOT
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "tuneops-" + _version("tuneops")


def package_versions() -> dict[str, str]:
    return {name: _version(name) for name in TRACKED_PACKAGES}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
