"""The Evidently workspace that monitoring writes and ``evidently ui`` reads: the ``tuneops``
project, its dashboard panels, and the snapshots each monitor run adds.

Snapshots are registered whole or not at all: each is written into a staging folder first and
renamed into the project once complete, so a monitor run killed mid-write never leaves half a
snapshot for the UI (which fails on the first unreadable one). A run that did not consume its
window (killed before saving its state, or its retrain could not be started) is superseded by the
next run over the same window start: that one compares the same predictions and more, and its
snapshots replace the earlier ones, so no prediction is counted twice on the dashboard.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from tuneops.components.evaluation.drift import PREDICTION
from tuneops.components.files import atomic_write_json
from tuneops.components.monitoring.traffic import SCORE, TRAFFIC_TAG
from tuneops.components.paths import tuneops_home

PROJECT_NAME = "tuneops"
PROJECT_DESCRIPTION = "Production traffic of the tuneops champion against its training reference."
DASHBOARD_TAB = "Monitoring"
# In the workspace root, beside the project folders (which Evidently finds by their UUID names):
# the snapshots of the latest run and its window start, and the staging folders of runs under way.
OPEN_WINDOW_FILE = "tuneops-open-window.json"
_STAGING_PREFIX = ".tuneops-staging-"


def workspace_dir() -> Path:
    """The Evidently workspace that monitoring writes and ``evidently ui`` reads."""
    return tuneops_home() / "evidently"


def dashboard_panels() -> list:
    """The dashboard of the ``tuneops`` project: drift share over time, prediction distribution,
    request volume, confidence, embedding and prediction drift. Each panel reads a metric that
    every monitor run stores (see ``monitoring.traffic.traffic_report`` and ``tuneops.components.evaluation.drift``).

    The drift share panels plot Evidently's share of drifted columns in the drift report (input
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


def store_snapshots(snapshots: list, workspace: Path | None = None,
                    window_start: str | None = None) -> tuple[str, list[str]]:
    """Add snapshots to the ``tuneops`` project, each whole or not at all; return the project id
    and the snapshot ids.

    ``window_start`` (a monitor run's window start; any fixed text for "the whole log") marks the
    snapshots as one run's over that window: snapshots that the previous run stored for the same
    window start are removed once these are in (see the module docstring). None stores them
    without that bookkeeping.
    """
    from evidently.ui.workspace import Workspace

    workspace = Path(workspace or workspace_dir())
    project_id = ensure_project(workspace)
    store = Workspace(str(workspace))
    _remove_abandoned_staging(workspace)
    index = workspace / OPEN_WINDOW_FILE
    superseded = _open_window_snapshots(index, project_id, window_start) if window_start is not None else []
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=workspace))
    try:
        staged = [Workspace(str(staging)).add_run(project_id, snapshot) for snapshot in snapshots]
        ids = [str(ref.id) for ref in staged]
        if window_start is not None:
            # Listed before they are renamed in: a run killed between the two leaves ids that the
            # next run over this window removes (a missing one is no error), never unlisted ones.
            atomic_write_json(index, {"project_id": project_id, "window_start": window_start,
                                      "snapshot_ids": superseded + ids})
        for ref in staged:
            source = Path(ref.url)
            with open(source, "rb") as handle:
                os.fsync(handle.fileno())
            target = workspace / source.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            _announce_to_ui(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    present = {str(snapshot_id) for snapshot_id in store.list_runs(project_id)}
    for snapshot_id in superseded:
        if snapshot_id in present:
            store.delete_run(project_id, snapshot_id)
    if window_start is not None:
        atomic_write_json(index, {"project_id": project_id, "window_start": window_start, "snapshot_ids": ids})
    return project_id, ids


def _announce_to_ui(snapshot: Path) -> None:
    """Make a running Evidently UI load a snapshot renamed into place. Its file watcher ignores
    the rename (the event's source path is the staging folder, not a project's) and attribute
    changes; it reloads on a modification of the final path. Truncating the file to its own
    length is one, and leaves every byte as it was."""
    with open(snapshot, "r+b") as handle:
        handle.truncate(os.fstat(handle.fileno()).st_size)


def _open_window_snapshots(index: Path, project_id: str, window_start: str) -> list[str]:
    """The snapshot ids the previous run stored for ``window_start``, if it was over that window."""
    try:
        previous = json.loads(index.read_text())
    except (FileNotFoundError, ValueError):
        return []  # written atomically, so only ever missing; a damaged one only loses this cleanup
    if not isinstance(previous, dict) or previous.get("project_id") != project_id \
            or previous.get("window_start") != window_start:
        return []
    return [str(snapshot_id) for snapshot_id in previous.get("snapshot_ids") or []]


def _remove_abandoned_staging(workspace: Path) -> None:
    """Staging folders whose writer (the pid in the name) is gone: a killed run's, never registered."""
    import psutil

    for folder in workspace.glob(f"{_STAGING_PREFIX}*"):
        pid = folder.name[len(_STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
