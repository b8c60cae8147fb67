"""Monitoring: compare what the service saw with what the champion was trained on, keep the
result in the Evidently workspace, and say whether to retrain.

One monitor run (``check_traffic``):

1. reads the prediction log over its window (``monitoring.window``): from where the previous
   run stopped to now; damaged records are skipped, counted and named in a note;
2. with at least ``monitoring.min_rows`` predictions, compares them with the champion's
   reference sample (``monitoring.reference``, saved with the model at packaging time) through
   ``tuneops.components.evaluation.drift.compute_drift``: the task's input descriptors, embedding
   drift, prediction drift (for a task whose log keeps records of its inputs, not the inputs:
   images, ``Task.logs_inputs`` false, the records' descriptors and the predictions only);
3. runs a small traffic report (``monitoring.traffic``: request volume, prediction distribution,
   mean confidence, prediction drift) and stores both snapshots in the workspace project
   ``tuneops`` (``monitoring.workspace``), whose dashboard panels plot them over time; a run over
   the same window start as the previous one (which did not consume it) replaces its snapshots;
4. scores the champion on labelled feedback (``monitoring.feedback_path``) when there is any;
5. decides: retrain when the drift share reaches ``monitoring.drift_threshold`` or the feedback
   metric (``gate.metric``) is below ``monitoring.min_metric``.

Too little traffic leaves the window open: the next run sees those rows again, with more.
``merge_feedback`` builds the data a retrain trains on: the configured data plus the feedback.
The names the flows use are importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tuneops.components.config import MonitoringConfig, PipelineConfig
from tuneops.components.evaluation.drift import PREDICTION
from tuneops.components.files import atomic_write_json, plain_json
from tuneops.components.monitoring.feedback import (FeedbackCheck, FeedbackMerge, check_feedback, merge_feedback,
                                                    read_feedback)
from tuneops.components.monitoring.prediction_log import PredictionLog, is_hashed
from tuneops.components.monitoring.reference import comparable_reference
from tuneops.components.monitoring.traffic import SCORE, TRAFFIC_TAG, traffic_frame, traffic_report
from tuneops.components.monitoring.window import (MonitorWindow, monitoring_dir, new_monitor_id, next_window,
                                                  read_state, save_state)
from tuneops.components.monitoring.workspace import (PROJECT_NAME, dashboard_panels, ensure_project,
                                                     store_snapshots, workspace_dir)
from tuneops.components.paths import prediction_log_dir

__all__ = [
    "PROJECT_NAME", "TRAFFIC_TAG", "FeedbackCheck", "FeedbackMerge", "MonitorReport", "MonitorWindow",
    "RetrainDecision", "check_feedback", "check_traffic", "dashboard_panels", "decide_retrain", "ensure_project",
    "merge_feedback", "monitoring_dir", "new_monitor_id", "next_window", "read_feedback", "read_state",
    "save_state", "store_snapshots", "traffic_frame", "traffic_report", "workspace_dir",
]


@dataclass
class RetrainDecision:
    retrain: bool
    reasons: list[str]


def decide_retrain(drift_share: float | None, feedback: FeedbackCheck | None,
                   config: MonitoringConfig) -> RetrainDecision:
    """Retrain when the drift share reaches the threshold or feedback falls below the minimum."""
    reasons, retrain = [], False
    if drift_share is not None:
        if drift_share >= config.drift_threshold:
            retrain = True
            reasons.append(f"drift share {drift_share:.2f} reached monitoring.drift_threshold {config.drift_threshold:.2f}")
        else:
            reasons.append(f"drift share {drift_share:.2f} is below monitoring.drift_threshold {config.drift_threshold:.2f}")
    if feedback is not None and feedback.value is not None:
        if feedback.below_minimum:
            retrain = True
            reasons.append(f"{feedback.metric} on {feedback.rows} feedback rows is {feedback.value:.3f}, "
                           f"below monitoring.min_metric {config.min_metric:.3f}")
        else:
            reasons.append(f"{feedback.metric} on {feedback.rows} feedback rows is {feedback.value:.3f} "
                           f"(monitoring.min_metric {config.min_metric:.3f})")
    return RetrainDecision(retrain, reasons)


@dataclass
class MonitorReport:
    """What one monitor run saw and decided; ``monitor.json`` in its output directory."""

    run_id: str
    status: str  # checked | too_little_traffic | no_champion
    window_start: str | None
    window_end: str
    rows: int
    champion_tag: str | None
    retrain: bool
    reasons: list[str]
    drift_share: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    drift_details: dict[str, Any] = field(default_factory=dict)
    feedback: dict[str, Any] | None = None
    project_id: str | None = None
    snapshot_ids: list[str] = field(default_factory=list)
    html_path: str | None = None
    json_path: str | None = None
    consumed_window: bool = False
    retrain_flow_run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    # Prediction log lines skipped as damaged or torn (``PredictionLog.scan``); a note says which.
    skipped_records: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def write(self, output_dir: Path) -> Path:
        """Write ``monitor.json`` into ``output_dir`` (atomically); returns its path."""
        path = Path(output_dir) / "monitor.json"
        self.json_path = str(path)
        return atomic_write_json(path, self.to_json())


def check_traffic(config: PipelineConfig, output_dir: Path, window: MonitorWindow, run_id: str,
                  workspace: Path | None = None, log_directory: Path | None = None) -> MonitorReport:
    """One monitor run over ``window`` (see the module docstring); writes its reports to
    ``output_dir`` and its snapshots to the workspace. Does not trigger anything itself.

    The task is the champion's own (its predictor's): it is what served, and logged, the traffic.
    """
    from tuneops.components import registry
    from tuneops.components.predictor import Predictor

    settings = config.monitoring
    report = MonitorReport(
        run_id=run_id, status="checked", window_start=window.start.isoformat() if window.start else None,
        window_end=window.end.isoformat(), rows=0, champion_tag=None, retrain=False, reasons=[],
    )
    champion = registry.champion()
    if champion is None:
        report.status = "no_champion"
        report.reasons.append("no champion model yet: nothing is served, so nothing to monitor")
        report.write(output_dir)
        return report
    report.champion_tag = champion.tag

    scan = PredictionLog(log_directory or prediction_log_dir()).scan(since=window.start, until=window.end)
    log = scan.frame
    report.rows = len(log)
    report.skipped_records = scan.skipped
    if scan.note():
        report.notes.append(scan.note())
    predictor = None
    drift_share = None
    if len(log) < settings.min_rows:
        report.status = "too_little_traffic"
        report.reasons.append(f"{len(log)} predictions since the last run (< monitoring.min_rows "
                              f"{settings.min_rows}); the window stays open")
    else:
        report.consumed_window = True
        predictor = Predictor.from_dir(champion.model_dir)
        traffic = traffic_frame(log, predictor.task)
        if len(traffic) > settings.max_rows:
            report.notes.append(f"{len(traffic)} predictions; the newest {settings.max_rows} were compared")
            traffic = traffic.tail(settings.max_rows).reset_index(drop=True)
        reference = comparable_reference(champion.reference(), predictor.task)
        drift_share = _compare(report, traffic, reference, predictor, output_dir, workspace, window)

    feedback = None
    if settings.feedback_path and Path(settings.feedback_path).exists():
        predictor = predictor or Predictor.from_dir(champion.model_dir)
        feedback = check_feedback(predictor, read_feedback(settings.feedback_path, config.data, predictor.task),
                                  settings.feedback_path, config.gate.metric, settings,
                                  config.evaluation.calibration_bins)
        report.feedback = feedback.to_json()
    elif settings.feedback_path:
        report.notes.append(f"no feedback file at {settings.feedback_path} yet")

    decision = decide_retrain(drift_share, feedback, settings)
    report.retrain = decision.retrain
    report.reasons.extend(decision.reasons)
    report.write(output_dir)
    return report


def _compare(report: MonitorReport, traffic: pd.DataFrame, reference: pd.DataFrame, predictor,
             output_dir: Path, workspace: Path | None, window: MonitorWindow) -> float | None:
    """Drift report + traffic report, both into the workspace; returns the drift share."""
    from tuneops.components.evaluation.drift import compute_drift

    task = predictor.task
    inputs = task.input_column
    metadata = {"monitor_run": report.run_id, "model_tag": str(report.champion_tag)}
    snapshots = [traffic_report(traffic, reference, window.end, metadata)]
    drift_share = None
    readable = traffic[~is_hashed(traffic[inputs])]
    if readable.empty:
        report.notes.append(f"the prediction log keeps hashed inputs (serving.log_text: hash): "
                            f"no {task.input_noun} or embedding drift, only the prediction distribution")
    else:
        if len(readable) < len(traffic):
            report.notes.append(f"{len(traffic) - len(readable)} hashed inputs left out of the drift report")
        if not task.logs_inputs:
            report.notes.append(f"the prediction log keeps a record of each {task.input_noun} (content hash and "
                                f"descriptors), not the {task.input_noun}: drift compares the descriptors and the "
                                f"predictions; logged {task.input_noun}s are not re-scored, no embedding drift")
        columns = [inputs, PREDICTION, SCORE]
        # Re-scoring (and embedding) logged traffic needs the inputs themselves; records only describe them.
        result = compute_drift(reference[columns], readable[columns].reset_index(drop=True), output_dir / "drift",
                               task, predictor=predictor if task.logs_inputs else None,
                               title=f"Traffic vs reference, monitor run {report.run_id}")
        drift_share = float(result.drift_share)
        report.drift_share = drift_share
        report.drifted_columns = list(result.drifted_columns)
        report.drift_details = plain_json(result.details)
        report.html_path = str(result.html_path) if result.html_path else None
        snapshots.append(result.snapshot)
    # The window start names the run's window: a rerun over it replaces what this run stored.
    report.project_id, report.snapshot_ids = store_snapshots(snapshots, workspace,
                                                             window_start=report.window_start or "start of the log")
    return drift_share
