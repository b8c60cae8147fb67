"""The Evidently workspace that monitoring writes and ``evidently ui`` reads: the ``tuneops``
project, its dashboard panels, and the snapshots each monitor run adds."""

from __future__ import annotations

import uuid
from pathlib import Path

from tuneops.components.evaluation.drift import PREDICTION
from tuneops.components.monitoring.traffic import SCORE, TRAFFIC_TAG
from tuneops.components.paths import tuneops_home

PROJECT_NAME = "tuneops"
PROJECT_DESCRIPTION = "Production traffic of the tuneops champion against its training reference."
DASHBOARD_TAB = "Monitoring"


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


def store_snapshots(snapshots: list, workspace: Path | None = None) -> tuple[str, list[str]]:
    """Add snapshots to the ``tuneops`` project; return the project id and the snapshot ids."""
    from evidently.ui.workspace import Workspace

    project_id = ensure_project(workspace)
    store = Workspace(str(workspace or workspace_dir()))
    return project_id, [str(store.add_run(project_id, snapshot).id) for snapshot in snapshots]
