"""Monitoring: compare what the service saw with what the champion was trained on, keep the
result in the Evidently workspace, and say whether to retrain.

One monitor run (``check_traffic``):

1. reads the prediction log over its window: from where the previous run stopped to now
   (the window end is kept in ``$TUNEOPS_HOME/monitoring/state.json`` once a run has used it);
2. with at least ``monitoring.min_rows`` predictions, compares them with the champion's
   reference sample (saved with the model at packaging time) through
   ``tuneops.components.evaluation.drift.compute_drift``: text descriptors, embedding drift, prediction drift;
3. runs a small traffic report (request volume, prediction distribution, mean confidence,
   prediction drift) and stores both snapshots in the workspace project ``tuneops``, whose
   dashboard panels plot them over time;
4. scores the champion on labelled feedback (``monitoring.feedback_path``) when there is any;
5. decides: retrain when the drift share reaches ``monitoring.drift_threshold`` or the feedback
   metric (``gate.metric``) is below ``monitoring.min_metric``.

Too little traffic leaves the window open: the next run sees those rows again, with more.
``merge_feedback`` builds the data a retrain trains on: the configured data plus the feedback.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.config import DataConfig, MonitoringConfig, PipelineConfig
from tuneops.components.errors import DataError, StageError
from tuneops.components.paths import demo_dir, prediction_log_dir, tuneops_home

PROJECT_NAME = "tuneops"
PROJECT_DESCRIPTION = "Production traffic of the tuneops champion against its training reference."
# Tag of the traffic report's snapshots: panels built on metrics that a drift report may hold too
# (row counts, value counts) read only these, so no run is counted twice.
TRAFFIC_TAG = "tuneops-traffic"
STATE_FILE = "state.json"
HASHED_TEXT_PREFIX = "sha256:"
DASHBOARD_TAB = "Monitoring"

# Traffic columns as monitoring names them: the log's ``label`` is the model's prediction.
TEXT = "text"
PREDICTION = "prediction"
SCORE = "score"


def monitoring_dir() -> Path:
    """Monitor state and per-run reports: ``$TUNEOPS_HOME/monitoring``."""
    return tuneops_home() / "monitoring"


def workspace_dir() -> Path:
    """The Evidently workspace that monitoring writes and ``evidently ui`` reads."""
    return tuneops_home() / "evidently"


def new_monitor_id(now: datetime | None = None) -> str:
    """Sortable and unique, like training run ids."""
    moment = now or datetime.now(timezone.utc)
    return moment.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


# --------------------------------------------------------------------------- workspace


def dashboard_panels() -> list:
    """The dashboard of the ``tuneops`` project: drift share over time, prediction distribution,
    request volume, confidence, embedding and prediction drift. Each panel reads a metric that
    every monitor run stores (see ``traffic_report`` and ``tuneops.components.evaluation.drift``).

    The drift share panels plot Evidently's share of drifted columns in the drift report (text
    descriptors and prediction); the retrain decision's ``drift_share`` counts the embedding
    signal too (``compute_drift``), and is in each run's monitor.json and Prefect artifact.
    """
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel

    return [
        counter_panel(
            "Latest drift share",
            [PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
            description="share of monitored columns that drifted, last run",
            size="half", aggregation="last",
        ),
        counter_panel(
            "Requests monitored",
            [PanelMetric(legend="requests", metric="RowCount", tags=[TRAFFIC_TAG])],
            description="predictions compared with the reference, all runs",
            size="half", aggregation="sum",
        ),
        line_plot_panel(
            "Drift share over time",
            [PanelMetric(legend="drift share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
            description="retraining starts when this reaches monitoring.drift_threshold",
        ),
        bar_plot_panel(
            "Prediction distribution",
            [PanelMetric(legend="{{label}}", metric="UniqueValueCount",
                         metric_labels={"column": PREDICTION, "value_type": "share"}, tags=[TRAFFIC_TAG])],
            description="share of each predicted label per run",
            stacked=True,
        ),
        bar_plot_panel(
            "Request volume",
            [PanelMetric(legend="requests", metric="RowCount", tags=[TRAFFIC_TAG])],
            description="predictions logged per monitor run",
            size="half",
        ),
        line_plot_panel(
            "Mean confidence",
            [PanelMetric(legend="mean score", metric="MeanValue", metric_labels={"column": SCORE},
                         tags=[TRAFFIC_TAG])],
            description="mean top-class probability; a fall often precedes a metric drop",
            size="half",
        ),
        line_plot_panel(
            "Embedding drift",
            [PanelMetric(legend="domain classifier ROC AUC", metric="EmbeddingsDrift")],
            description="how well a classifier tells traffic from reference by the model's embeddings; 0.5 = not at all",
            size="half",
        ),
        line_plot_panel(
            "Prediction drift (p-value)",
            [PanelMetric(legend="prediction", metric="ValueDrift", metric_labels={"column": PREDICTION},
                         tags=[TRAFFIC_TAG])],
            description="chi-square p-value of predicted labels vs the reference; low means drift",
        ),
    ]


def ensure_project(workspace: Path | None = None) -> str:
    """Open (or create) the workspace and its ``tuneops`` project with the dashboard; return the
    project id. Panels are added by title, so running this again adds only what is missing."""
    from evidently.sdk.models import DashboardTabModel
    from evidently.ui.workspace import Workspace

    workspace = Path(workspace or workspace_dir())
    workspace.mkdir(parents=True, exist_ok=True)
    store = Workspace(str(workspace))
    found = store.search_project(PROJECT_NAME)
    project = found[0] if found else store.create_project(PROJECT_NAME, description=PROJECT_DESCRIPTION)
    # The dashboard model is edited and saved whole: Evidently 0.7.23's ``add_panel`` lists a
    # panel twice in a tab that already exists.
    dashboard = store.get_dashboard(project.id)
    present = {panel.title for panel in dashboard.panels}
    missing = [panel for panel in dashboard_panels() if panel.title not in present]
    if missing:
        tab = next((tab for tab in dashboard.tabs if tab.title == DASHBOARD_TAB), None)
        if tab is None:
            tab = DashboardTabModel(id=uuid.uuid4(), title=DASHBOARD_TAB, panels=[])
            dashboard.tabs.append(tab)
        for panel in missing:
            dashboard.panels.append(panel)
            tab.panels.append(panel.id)
        store.save_dashboard(project.id, dashboard)
    return str(project.id)


def store_snapshots(snapshots: list, workspace: Path | None = None) -> tuple[str, list[str]]:
    """Add snapshots to the ``tuneops`` project; return the project id and the snapshot ids."""
    from evidently.ui.workspace import Workspace

    project_id = ensure_project(workspace)
    store = Workspace(str(workspace or workspace_dir()))
    return project_id, [str(store.add_run(project_id, snapshot).id) for snapshot in snapshots]


def traffic_report(current: pd.DataFrame, reference: pd.DataFrame, timestamp: datetime,
                   metadata: dict[str, str]):
    """An Evidently snapshot of the traffic itself: request volume, prediction distribution,
    mean confidence and prediction drift against the reference's predictions."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue, RowCount, UniqueValueCount, ValueDrift

    columns = [PREDICTION, SCORE]
    definition = DataDefinition(categorical_columns=[PREDICTION], numerical_columns=[SCORE])
    metrics: list[Any] = [RowCount(), UniqueValueCount(column=PREDICTION), MeanValue(column=SCORE)]
    if PREDICTION in reference.columns and SCORE in reference.columns:
        metrics.append(ValueDrift(column=PREDICTION))
        reference_data = Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition)
    else:
        reference_data = None
    report = Report(metrics)
    return report.run(
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        reference_data, timestamp=timestamp, metadata=metadata, tags=[TRAFFIC_TAG], name="traffic",
    )


# ------------------------------------------------------------------------------- window


@dataclass
class MonitorWindow:
    """The part of the prediction log one run looks at: ``[start, end)``; no start = from the beginning."""

    start: datetime | None
    end: datetime


def read_state(directory: Path | None = None) -> dict[str, Any]:
    path = Path(directory or monitoring_dir()) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise StageError(f"monitoring state {path} is not valid JSON; delete it to start from the whole log") from None
    return state if isinstance(state, dict) else {}


def next_window(now: datetime | None = None, directory: Path | None = None) -> MonitorWindow:
    """From where the last completed run stopped, to ``now``."""
    state = read_state(directory)
    start = datetime.fromisoformat(state["window_end"]) if state.get("window_end") else None
    return MonitorWindow(start=start, end=now or datetime.now(timezone.utc))


def save_state(window: MonitorWindow, run_id: str, directory: Path | None = None) -> None:
    """Record that ``run_id`` consumed the log up to ``window.end`` (written atomically)."""
    directory = Path(directory or monitoring_dir())
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "window_end": window.end.isoformat(),
        "last_run_id": run_id,
        "last_run_at": datetime.now(timezone.utc).isoformat(),
    }
    partial = directory / (STATE_FILE + ".partial")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, directory / STATE_FILE)


def traffic_frame(log: pd.DataFrame) -> pd.DataFrame:
    """The prediction log as monitoring compares it: ``text``, ``prediction``, ``score``,
    ``timestamp``, ``model_tag``."""
    frame = pd.DataFrame({
        TEXT: log["text"].astype(str),
        PREDICTION: log["label"].astype(str),
        SCORE: log["score"].astype(float),
        "timestamp": log["timestamp"],
        "model_tag": log["model_tag"].astype(str),
    })
    return frame.reset_index(drop=True)


# ------------------------------------------------------------------------------- feedback


@dataclass
class FeedbackCheck:
    """The champion scored on labelled feedback."""

    path: str
    rows: int
    metric: str
    value: float | None
    below_minimum: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_feedback(path: str | Path, data: DataConfig) -> pd.DataFrame:
    """Labelled feedback (CSV, TSV, JSONL, Parquet) as ``text``, ``label`` strings.

    The columns may be named as in the training data (``data.text_column`` / ``label_column``)
    or ``text`` / ``label``. DataError when the file cannot be read or lacks them.
    """
    from tuneops.components.data.loading import read_table

    path = Path(path)
    frame = read_table(path)
    names = {}
    for canonical, configured in (("text", data.text_column), ("label", data.label_column)):
        if configured in frame.columns:
            names[canonical] = configured
        elif canonical in frame.columns:
            names[canonical] = canonical
        else:
            raise DataError(f"feedback: {path.name} has no '{configured}' (or '{canonical}') column; "
                            f"columns are: {', '.join(map(str, frame.columns[:20]))}")
    feedback = pd.DataFrame({"text": frame[names["text"]], "label": frame[names["label"]]})
    feedback = feedback.dropna()
    feedback["text"] = feedback["text"].astype(str)
    feedback["label"] = feedback["label"].astype(str)
    return feedback[feedback["text"].str.strip() != ""].reset_index(drop=True)


def check_feedback(predictor, feedback: pd.DataFrame, path: str, metric: str,
                   config: MonitoringConfig) -> FeedbackCheck:
    """Score the champion on the feedback rows whose label it knows, with ``metric``."""
    from tuneops.components.metrics import classification_metrics

    known = feedback[feedback["label"].isin(predictor.labels)]
    unknown = len(feedback) - len(known)
    note = f"{unknown} rows with labels the model does not know were left out" if unknown else ""
    if len(known) < config.min_feedback_rows:
        note = "; ".join(filter(None, [f"{len(known)} labelled rows (< monitoring.min_feedback_rows "
                                       f"{config.min_feedback_rows}): not scored", note]))
        return FeedbackCheck(str(path), len(known), metric, None, False, note)
    probabilities = predictor.predict_proba(known["text"].tolist())
    scores = classification_metrics(known["label"].tolist(), probabilities, list(predictor.labels))
    value = float(scores[metric])
    return FeedbackCheck(str(path), len(known), metric, value, value < config.min_metric, note)


@dataclass
class FeedbackMerge:
    """The data a retrain uses: where it was written, and the ``--set`` overrides pointing at it."""

    path: Path
    overrides: list[str]
    base_rows: int
    feedback_rows: int
    skipped_rows: int


def merge_feedback(data: DataConfig, feedback_path: str | Path, output_dir: Path,
                   demo_directory: Path | None = None) -> FeedbackMerge:
    """Append the labelled feedback to the configured data (or the demo) as one CSV.

    Feedback rows whose text is already in the data, or repeated, are skipped (they would be
    duplicates, or leak between splits). Group columns the feedback lacks are ``unknown``. The
    returned overrides point ``data.path`` at the merged file and keep the group columns.
    """
    from tuneops.components.data.loading import read_table
    from tuneops.components.data.demo import write_demo_dataset

    if data.path is None:
        base_path = write_demo_dataset(Path(demo_directory or demo_dir()), rows=data.demo_rows)
        base_format = "auto"
    else:
        base_path = Path(data.path).expanduser()
        base_format = data.format
    base = read_table(base_path, base_format)
    for needed in (data.text_column, data.label_column):
        if needed not in base.columns:
            raise DataError(f"retrain: the training data {base_path.name} has no '{needed}' column")
    feedback = read_feedback(feedback_path, data)
    seen = set(base[data.text_column].astype(str))
    fresh = feedback[~feedback["text"].isin(seen)].drop_duplicates("text")
    rows = pd.DataFrame({data.text_column: fresh["text"], data.label_column: fresh["label"]})
    for column in data.groups:
        rows[column] = "unknown"
    merged = pd.concat([base, rows], ignore_index=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / "training-data.csv"
    merged.to_csv(target, index=False)
    # JSON is valid YAML: paths and column names with ':' or ',' survive the --set parser quoted.
    overrides = [f"data.path={json.dumps(str(target))}", "data.format=csv",
                 f"data.group_columns={json.dumps(list(data.groups))}"]
    return FeedbackMerge(target, overrides, len(base), len(rows), len(feedback) - len(rows))


# ------------------------------------------------------------------------------- decision


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


# ------------------------------------------------------------------------------- one run


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

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def write(self, output_dir: Path) -> Path:
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / "monitor.json"
        self.json_path = str(path)
        partial = output_dir / "monitor.json.partial"
        partial.write_text(json.dumps(self.to_json(), indent=2, default=str))
        os.replace(partial, path)
        return path


def check_traffic(config: PipelineConfig, output_dir: Path, window: MonitorWindow, run_id: str,
                  workspace: Path | None = None, log_directory: Path | None = None) -> MonitorReport:
    """One monitor run over ``window`` (see the module docstring); writes its reports to
    ``output_dir`` and its snapshots to the workspace. Does not trigger anything itself."""
    from tuneops.components import registry
    from tuneops.components.monitoring.prediction_log import PredictionLog

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

    log = PredictionLog(log_directory or prediction_log_dir()).read(since=window.start, until=window.end)
    traffic = traffic_frame(log)
    report.rows = len(traffic)
    predictor = None
    drift_share = None
    if len(traffic) < settings.min_rows:
        report.status = "too_little_traffic"
        report.reasons.append(f"{len(traffic)} predictions since the last run (< monitoring.min_rows "
                              f"{settings.min_rows}); the window stays open")
    else:
        from tuneops.components.predictor import Predictor

        report.consumed_window = True
        if len(traffic) > settings.max_rows:
            report.notes.append(f"{len(traffic)} predictions; the newest {settings.max_rows} were compared")
            traffic = traffic.tail(settings.max_rows).reset_index(drop=True)
        reference = _reference_frame(champion.reference())
        predictor = Predictor.from_dir(champion.model_dir)
        drift_share = _compare(report, traffic, reference, predictor, output_dir, workspace, window)

    feedback = None
    if settings.feedback_path and Path(settings.feedback_path).exists():
        from tuneops.components.predictor import Predictor

        predictor = predictor or Predictor.from_dir(champion.model_dir)
        feedback = check_feedback(predictor, read_feedback(settings.feedback_path, config.data),
                                  settings.feedback_path, config.gate.metric, settings)
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

    metadata = {"monitor_run": report.run_id, "model_tag": str(report.champion_tag)}
    snapshots = [traffic_report(traffic, reference, window.end, metadata)]
    drift_share = None
    texts = traffic[~traffic[TEXT].str.startswith(HASHED_TEXT_PREFIX)]
    if texts.empty:
        report.notes.append("the prediction log keeps hashed texts (serving.log_text: hash): "
                            "no text or embedding drift, only the prediction distribution")
    else:
        if len(texts) < len(traffic):
            report.notes.append(f"{len(traffic) - len(texts)} hashed texts left out of the drift report")
        current = texts[[TEXT, PREDICTION, SCORE]].reset_index(drop=True)
        result = compute_drift(reference[[TEXT, PREDICTION, SCORE]], current, output_dir / "drift",
                               predictor=predictor, title=f"Traffic vs reference, monitor run {report.run_id}")
        drift_share = float(result.drift_share)
        report.drift_share = drift_share
        report.drifted_columns = list(result.drifted_columns)
        report.drift_details = _plain(result.details)
        report.html_path = str(result.html_path) if result.html_path else None
        snapshots.append(result.snapshot)
    report.project_id, report.snapshot_ids = store_snapshots(snapshots, workspace)
    return drift_share


def _reference_frame(reference: pd.DataFrame) -> pd.DataFrame:
    """The champion's reference sample with the columns traffic has (prediction, score)."""
    if TEXT not in reference.columns:
        raise StageError("the champion's reference sample has no text column")
    frame = reference.copy()
    if PREDICTION not in frame.columns:
        raise StageError("the champion's reference sample has no prediction column; repackage the model")
    frame[TEXT] = frame[TEXT].astype(str)
    frame[PREDICTION] = frame[PREDICTION].astype(str)
    frame[SCORE] = frame[SCORE].astype(float) if SCORE in frame.columns else np.nan
    return frame


def _plain(value: Any) -> Any:
    """JSON-friendly copy of drift details (numpy numbers to floats)."""
    return json.loads(json.dumps(value, default=lambda item: item.item() if hasattr(item, "item") else str(item)))
