"""Experiment tracking and model registry, behind one small protocol (docs/tracking.md).

A run is tracked only when the environment names a tracking server: ``MLFLOW_TRACKING_URI``, the
MLflow convention. ``tracker_from_env`` then returns a ``Tracker`` (the MLflow one,
``tuneops.components.mlflow_tracking``, imported only then: mlflow costs seconds to import);
without the variable it returns None and callers skip tracking, so there is no do-nothing tracker.

Tracking must never fail a run: ``RunTracking`` calls the tracker, and the first failure (a server
that is down, a refused request) becomes one warning line, ``error``, which the caller writes into
the run record; the rest of that run is then not tracked, so a dead server costs one timeout, not
one per call.

Only the process that runs the flow tracks. The fine-tune of a data-parallel run happens in
torchrun's processes, which never track: the flow logs the per-step history that rank 0 wrote,
once, after the fine-tune stage.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tuneops.components.config import PipelineConfig, TrackingConfig
from tuneops.components.errors import one_line

logger = logging.getLogger(__name__)

TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
# The alias that follows the champion pointer (registry.set_champion / rollback).
CHAMPION_ALIAS = "champion"
# The model version tag that names the packaged model (the BentoML tag) a version holds.
BENTOML_TAG = "bentoml_tag"
RUN_ID_TAG = "tuneops.run_id"
# Where in a tracked run the run record goes.
RECORD_ARTIFACTS = "record"
RECORD_FILES = ("summary.json", "lineage.json", "index.html", "config.yaml")
RECORD_FOLDERS = ("gate",)

T = TypeVar("T")


class Tracker(Protocol):
    """What tuneops asks of an experiment tracker with a model registry. Every method may raise;
    ``RunTracking`` turns that into a warning."""

    def start_run(self, experiment: str, name: str, tags: dict[str, str]) -> str:
        """Start a run in ``experiment`` (made if missing); returns the tracker's run id."""

    def log_params(self, params: dict[str, str]) -> None:
        """Log the run's parameters (set once)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metric values, at ``step`` when given (a curve), else as single values."""

    def log_curve(self, points: list[tuple[int, dict[str, float]]]) -> None:
        """Log metric curves: the values of each (step, values) point at that step."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags on the run."""

    def log_artifacts(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's files, under ``artifact_path`` of the run."""

    def register_model(self, local_dir: Path, name: str, tags: dict[str, str]) -> str:
        """Upload ``local_dir`` as the run's model artifacts and make it a new version of the
        registered model ``name`` (made if missing); returns the version."""

    def find_version(self, tag: str, value: str) -> tuple[str, str] | None:
        """(registered model name, version) of the newest model version whose tag ``tag`` is ``value``."""

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point the alias ``alias`` of the registered model ``name`` at ``version``."""

    def end_run(self, status: str) -> None:
        """End the run; ``status`` is tuneops's (promoted, rejected, failed, interrupted)."""


def tracker_from_env(config: TrackingConfig) -> Tracker | None:
    """The tracker the environment configures (``MLFLOW_TRACKING_URI``), or None when it names none."""
    uri = os.environ.get(TRACKING_URI_VARIABLE, "").strip()
    if not uri:
        return None
    from tuneops.components.mlflow_tracking import MlflowTracker  # lazily: mlflow is slow to import

    return MlflowTracker(uri, config.request_timeout_s)


def shown_uri(uri: str) -> str:
    """``uri`` without a user name or password, for logs and the run record."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def flat_params(config: PipelineConfig) -> dict[str, str]:
    """Every setting of ``config`` as ``section.key`` (nested ``section.sub.key``) -> text; lists
    and mappings are JSON, so a parameter reads as the config file would say it."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and all(isinstance(key, str) for key in value) and prefix != "tracking.tags":
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else key, child)
        elif isinstance(value, (dict, list)):
            flat[prefix] = json.dumps(value, sort_keys=True)
        else:
            flat[prefix] = "null" if value is None else str(value)

    walk("", config.model_dump(mode="json"))
    return flat


def history_curves(history: list[dict[str, Any]]) -> list[tuple[int, dict[str, float]]]:
    """(step, numeric values) per row of a fine-tune's history (``TrainedModel.history``): the
    training loss of every step and the validation metrics of the evaluation steps."""
    curves = []
    for row in history:
        values = {key: float(value) for key, value in row.items()
                  if key != "step" and _is_number(value)}
        if values and _is_number(row.get("step")):
            curves.append((int(row["step"]), values))
    return curves


def scored_metrics(metrics: dict[str, Any], intervals: dict[str, list[float]]) -> dict[str, float]:
    """The test split's headline numbers: every numeric metric, and ``<name>_ci_low/high`` from
    the bootstrap intervals."""
    values = {name: float(value) for name, value in metrics.items() if _is_number(value)}
    for name, bounds in intervals.items():
        if len(bounds) == 2 and all(_is_number(bound) for bound in bounds):
            values[f"{name}_ci_low"], values[f"{name}_ci_high"] = float(bounds[0]), float(bounds[1])
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class RunOutcome:
    """What a training run reached, filled in stage by stage, so that a run that stops part way
    is tracked as far as it got (``RunTracking.log_outcome``)."""

    history: list[dict[str, Any]] = field(default_factory=list)  # the fine-tune's per-step values
    test_metrics: dict[str, Any] | None = None
    test_intervals: dict[str, list[float]] = field(default_factory=dict)
    promote: bool | None = None  # the gate's final decision, infra validation included
    gate_metric: str = ""
    packaged: tuple[Path, str] | None = None  # (folder, tag) of the model left in the store
    promoted: bool = False  # the champion pointer moved to it


class RunTracking:
    """One training run's tracking: calls a ``Tracker``, never raises (see the module's docstring)."""

    def __init__(self, tracker: Tracker, config: TrackingConfig, uri: str) -> None:
        self.tracker = tracker
        self.config = config
        self.uri = shown_uri(uri)
        self.run_id: str | None = None
        self.model_version: str | None = None
        self.error: str | None = None

    @classmethod
    def start(cls, config: PipelineConfig, run_id: str) -> "RunTracking | None":
        """Start tracking the run ``run_id`` with its config as parameters; None when the
        environment configures no tracker. A failure to start is kept in ``error``."""
        tracker = tracker_from_env(config.tracking)
        if tracker is None:
            return None
        tracking = cls(tracker, config.tracking, os.environ[TRACKING_URI_VARIABLE].strip())
        tags = {**config.tracking.tags, RUN_ID_TAG: run_id, "tuneops.task": config.task}
        tracking.run_id = tracking._call("start the run",
                                         lambda: tracker.start_run(config.tracking.experiment, run_id, tags))
        tracking._call("log the config", lambda: tracker.log_params(flat_params(config)))
        return tracking

    def log_outcome(self, outcome: RunOutcome) -> None:
        """Log what the run reached: curves, test metrics, gate, the registered model version
        and the champion alias."""
        points = history_curves(outcome.history)
        if points:
            self._call("log the training curve", lambda: self.tracker.log_curve(points))
        if outcome.test_metrics is not None:
            metrics = scored_metrics(outcome.test_metrics, outcome.test_intervals)
            self._call("log the test metrics", lambda: self.tracker.log_metrics(metrics))
        if outcome.promote is not None:
            self._log_gate(outcome.promote, outcome.gate_metric)
        if outcome.packaged is not None:
            self._register(*outcome.packaged, promote=bool(outcome.promote))
            if outcome.promoted:
                self._set_champion()

    def finish(self, run_dir: Path, status: str) -> None:
        """Upload the run record (summary, lineage, gate, index.html) and end the run."""
        for name in RECORD_FILES:
            if (run_dir / name).is_file():
                self._call("upload the run record", lambda: self.tracker.log_artifacts(run_dir / name, RECORD_ARTIFACTS))
        for name in RECORD_FOLDERS:
            if (run_dir / name).is_dir():
                self._call("upload the run record",
                           lambda: self.tracker.log_artifacts(run_dir / name, f"{RECORD_ARTIFACTS}/{name}"))
        self._call("end the run", lambda: self.tracker.end_run(status))

    def _log_gate(self, promote: bool, metric: str) -> None:
        # A tag and a 0/1 metric (to chart decisions across runs).
        self._call("log the gate decision", lambda: (
            self.tracker.set_tags({"gate.decision": "promote" if promote else "reject", "gate.metric": metric}),
            self.tracker.log_metrics({"gate_promote": 1.0 if promote else 0.0}),
        ))

    def _register(self, model_dir: Path, bentoml_tag: str, promote: bool) -> None:
        # The packaged model (its BentoML folder) becomes a version of ``registered_model``.
        tags = {BENTOML_TAG: bentoml_tag, "gate": "promote" if promote else "reject"}
        self.model_version = self._call("register the model", lambda: self.tracker.register_model(
            model_dir, self.config.registered_model, tags))

    def _set_champion(self) -> None:
        if self.model_version is not None:
            version = self.model_version
            self._call("move the champion alias", lambda: self.tracker.set_alias(
                self.config.registered_model, CHAMPION_ALIAS, version))

    def to_json(self) -> dict[str, Any]:
        """What the run record says about tracking."""
        return {"uri": self.uri, "experiment": self.config.experiment, "run_id": self.run_id,
                "registered_model": self.config.registered_model, "model_version": self.model_version,
                "error": self.error}

    def _call(self, what: str, action: Callable[[], T]) -> T | None:
        if self.error is not None:
            return None
        try:
            return action()
        except Exception as error:  # any tracker failure: the run goes on without tracking
            self.error = f"tracking: could not {what} at {self.uri} ({one_line(error, 300)}); the rest of this run is not tracked"
            logger.warning(self.error)
            return None


def move_champion_alias(bentoml_tag: str) -> str | None:
    """After ``tuneops promote`` / ``rollback``: point the ``champion`` alias at the registered
    version holding ``bentoml_tag``. Returns a warning line when that did not happen while a
    tracker is configured (the promotion itself stands), else None."""
    tracker = tracker_from_env(TrackingConfig())
    if tracker is None:
        return None
    uri = shown_uri(os.environ[TRACKING_URI_VARIABLE].strip())
    try:
        found = tracker.find_version(BENTOML_TAG, bentoml_tag)
        if found is None:
            return (f"tracking: {bentoml_tag} is no registered model version at {uri} (packaged without "
                    f"tracking); the {CHAMPION_ALIAS} alias was not moved")
        name, version = found
        tracker.set_alias(name, CHAMPION_ALIAS, version)
    except Exception as error:  # the champion pointer moved; the registry only follows it
        return f"tracking: could not move the {CHAMPION_ALIAS} alias at {uri} ({one_line(error, 300)})"
    return None
