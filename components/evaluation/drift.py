"""Data drift between a reference sample (the training data) and current data (the test split,
or production traffic in the monitor flow), as an Evidently report.

What is compared, each as one *signal*:
  - the task's input descriptors (``Task.descriptors``: numbers per input, such as its length or
    the share of it never seen in the reference);
  - ``label`` (the true label) and ``prediction`` (the predicted label), when both frames have them;
  - ``embedding``: the model's own encoder output (mean-pooled), when a predictor or precomputed
    embeddings are given; tested with Evidently's distance method (mean embeddings, bootstrap).

``drift_share`` is the share of signals that drifted; the monitor flow compares it with
``monitoring.drift_threshold``. The frames hold the task's input column, ``label`` for the ground
truth and ``prediction`` for the model's answer (a prediction log's predicted label must be
renamed to ``prediction``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.data.columns import LABEL
from tuneops.components.errors import DataError, StageError
from tuneops.components.evaluation.evidently_html import write_evidently_page
from tuneops.components.files import atomic_write_json
from tuneops.components.tasks.base import Task

PREDICTION = "prediction"
EMBEDDING = "embedding"
# Fewer rows than this make every test meaningless; the monitor flow waits for more traffic.
MIN_ROWS = 10
# Embedding drift is measured on this many principal components: they keep ~94% of the variance
# of a fine-tuned MiniLM's 384-dimensional output on the demo reviews.
EMBEDDING_COMPONENTS = 32


@dataclass
class DriftResult:
    """The outcome of one drift comparison and where its report lies."""

    title: str
    drift_share: float
    drifted_columns: list[str]
    details: dict[str, dict[str, Any]]  # signal -> kind, method, score, threshold, drifted
    reference_rows: int
    current_rows: int
    html_path: Path
    json_path: Path
    snapshot: Any = field(default=None, repr=False)  # evidently Snapshot, for an Evidently workspace

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "details": self.details,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "html_path": str(self.html_path),
        }

    def summary_line(self) -> str:
        """One line for logs and reports."""
        drifted = ", ".join(self.drifted_columns) or "none"
        return (f"{self.title}: {len(self.drifted_columns)}/{len(self.details)} signals drifted "
                f"(share {self.drift_share:.2f}): {drifted}")


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    output_dir: Path,
    task: Task,
    predictor=None,
    title: str = "Data drift: reference vs current",
    *,
    reference_embeddings: np.ndarray | None = None,
    current_embeddings: np.ndarray | None = None,
    max_reference_rows: int = 1000,
    seed: int = 0,
) -> DriftResult:
    """Compare ``current`` with ``reference`` and write ``drift.html`` / ``drift.json`` into ``output_dir``.

    Both frames need the task's input column; ``label`` and ``prediction`` are compared when both
    frames have them. With a ``predictor``, missing predictions and the embeddings are computed with it;
    callers that already hold embeddings (evaluation) pass them, row-aligned with the frames.
    Raises DataError when a frame lacks the inputs or has fewer than 10 rows.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics.embeddings import DistanceDriftMethod
    from evidently.presets import DataDriftPreset

    reference, current = reference.reset_index(drop=True), current.reset_index(drop=True)
    inputs = task.input_column
    for name, frame in (("reference", reference), ("current", current)):
        if inputs not in frame.columns:
            raise DataError(f"drift: the {name} data has no '{inputs}' column")
        if len(frame) < MIN_ROWS:
            raise DataError(f"drift: the {name} data has {len(frame)} rows; at least {MIN_ROWS} are needed")
    for name, frame, embeddings in (("reference", reference, reference_embeddings),
                                    ("current", current, current_embeddings)):
        if embeddings is not None and len(embeddings) != len(frame):
            raise DataError(f"drift: {len(embeddings)} {name} embeddings for {len(frame)} rows")
    if len(reference) > max_reference_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(reference), max_reference_rows, replace=False))
        reference = reference.iloc[keep].reset_index(drop=True)
        if reference_embeddings is not None:
            reference_embeddings = reference_embeddings[keep]
    if predictor is not None:
        reference, reference_embeddings = _score(predictor, reference, reference_embeddings, inputs)
        current, current_embeddings = _score(predictor, current, current_embeddings, inputs)

    reference_table = task.descriptors(reference[inputs], None)
    current_table = task.descriptors(current[inputs], reference[inputs])
    numerical = list(reference_table.columns)
    categorical = [column for column in (LABEL, PREDICTION) if _comparable(reference, current, column)]
    for column in categorical:
        reference_table[column] = _as_category(reference[column])
        current_table[column] = _as_category(current[column])
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    with warnings.catch_warnings():
        # Evidently and scipy warn about small samples and constant columns; the verdicts stand.
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(columns=numerical + categorical)], include_tests=True).run(
            Dataset.from_pandas(current_table, data_definition=definition),
            Dataset.from_pandas(reference_table, data_definition=definition),
        )
    details = _column_verdicts(snapshot.dict(), descriptors=set(numerical))
    embedding_widgets: list[Any] = []
    if reference_embeddings is not None and current_embeddings is not None:
        reduced_reference, reduced_current = _principal_components(reference_embeddings, current_embeddings)
        # Evidently's embedding drift method, called directly: its EmbeddingsDrift metric also draws
        # a t-SNE map, which alone takes 7-25 s on a shared 2-core CPU for ~1000 rows. The distance
        # between mean embeddings is compared with its bootstrap 95th percentile over reference
        # resamples, so small production samples (~30 rows) do not read as drift. (Evidently's
        # domain-classifier method flagged up to 20% of same-distribution synthetic samples.)
        score, drifted, _ = DistanceDriftMethod(dist="euclidean", bootstrap=True)(
            pd.DataFrame(reduced_current), pd.DataFrame(reduced_reference))
        details[EMBEDDING] = {"kind": "embedding",
                              "method": "euclidean distance of mean embeddings vs bootstrap 95th percentile",
                              "score": float(score), "threshold": None, "drifted": bool(drifted)}
        embedding_widgets = _embedding_widgets(reduced_reference, reduced_current, details[EMBEDDING], seed)
    drifted_columns = [name for name, detail in details.items() if detail["drifted"]]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = output_dir / "drift.html", output_dir / "drift.json"
    _write_page(snapshot, embedding_widgets, title, html_path)
    result = DriftResult(
        title=title,
        drift_share=len(drifted_columns) / len(details) if details else 0.0,
        drifted_columns=drifted_columns,
        details=details,
        reference_rows=len(reference),
        current_rows=len(current),
        html_path=html_path,
        json_path=json_path,
        snapshot=snapshot,
    )
    atomic_write_json(json_path, result.to_json())
    return result


def _score(predictor, frame: pd.DataFrame, embeddings: np.ndarray | None,
           inputs: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Fill in predictions and embeddings that the caller did not bring."""
    needs_prediction = PREDICTION not in frame.columns or frame[PREDICTION].isna().all()
    if not needs_prediction and embeddings is not None:
        return frame, embeddings
    probabilities, computed = predictor.predict_and_embed(frame[inputs].tolist())
    frame = frame.copy()
    if needs_prediction:
        frame[PREDICTION] = [predictor.labels[i] for i in probabilities.argmax(axis=1)]
    return frame, embeddings if embeddings is not None else computed


def _comparable(reference: pd.DataFrame, current: pd.DataFrame, column: str) -> bool:
    """A categorical column is compared when both frames have enough known values of it."""
    return all(column in frame.columns and frame[column].notna().sum() >= MIN_ROWS for frame in (reference, current))


def _as_category(values: pd.Series) -> pd.Series:
    return values.map(lambda value: None if pd.isna(value) else str(value))


def _principal_components(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project both sets onto the leading principal components of the two together.

    Fitting on both keeps the projection symmetric (components fitted on the reference alone
    overstate its spread) and keeps a direction in which the current data moved away.
    """
    from sklearn.decomposition import PCA

    both = np.vstack([reference, current]).astype(np.float64)
    components = max(1, min(EMBEDDING_COMPONENTS, both.shape[1], len(both) - 1))
    pca = PCA(n_components=components, random_state=0).fit(both)
    return pca.transform(reference), pca.transform(current)


def _embedding_widgets(reference: np.ndarray, current: np.ndarray, detail: dict[str, Any], seed: int) -> list[Any]:
    """A verdict counter and a scatter of the first two principal components, reference vs current."""
    import plotly.graph_objects as go
    from evidently.legacy.renderers.html_widgets import CounterData, counter, plotly_figure

    rng = np.random.default_rng(seed)
    figure = go.Figure()
    for name, points in (("reference", reference), ("current", current)):
        shown = points[rng.choice(len(points), min(len(points), 500), replace=False)]
        second = shown[:, 1] if shown.shape[1] > 1 else np.zeros(len(shown))
        figure.add_trace(go.Scatter(x=shown[:, 0], y=second, mode="markers", name=name, opacity=0.5))
    figure.update_layout(xaxis_title="principal component 1", yaxis_title="principal component 2")
    verdict = "detected" if detail["drifted"] else "not detected"
    return [
        counter(title="", counters=[CounterData(
            f"Embedding drift {verdict}. Method: {detail['method']}. Score: {detail['score']:.3f}",
            "Drift in the model's own embeddings")]),
        plotly_figure(title="Model embeddings, first two principal components", figure=figure),
    ]


def _write_page(snapshot, extra_widgets: list[Any], title: str, path: Path) -> None:
    """The Evidently drift report, with the embedding widgets and a title on the same page."""
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import header_text

    if not extra_widgets:
        write_evidently_page(path, snapshot.get_html_str(as_iframe=False))
        return
    # Snapshot keeps its rendered widgets privately (evidently 0.7.23, pinned); reusing them puts the
    # embedding verdict on the same page as the column drift.
    widgets = [header_text(label=title), *extra_widgets, *snapshot._widgets, *snapshot._tests_widgets]
    write_evidently_page(path, render_widgets(widgets))


def _column_verdicts(snapshot_dict: dict[str, Any], descriptors: set[str]) -> dict[str, dict[str, Any]]:
    """Per column: Evidently's method, score, threshold and its own drift verdict (from its tests)."""
    scores = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            scores[config["column"]] = (config.get("method"), float(metric["value"]), config.get("threshold"))
    verdicts: dict[str, dict[str, Any]] = {}
    for test in snapshot_dict.get("tests", []):
        params = (test.get("metric_config") or {}).get("params", {})
        column = params.get("column")
        if column in scores and test.get("id") == "drift":
            method, score, threshold = scores[column]
            status = getattr(test.get("status"), "value", test.get("status"))
            kind = "descriptor" if column in descriptors else "categorical"
            verdicts[column] = {"kind": kind, "method": method, "score": score,
                                "threshold": threshold, "drifted": status == "FAIL"}
    missing = set(scores) - set(verdicts)
    if missing:
        raise StageError(f"drift: Evidently gave no verdict for {sorted(missing)}")
    return verdicts
