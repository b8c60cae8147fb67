"""Labelled feedback: rows whose true label someone supplied after the fact.

Monitoring scores the champion on it (``check_feedback``); a retrain trains on the configured data
plus the feedback (``merge_feedback``). Feedback files are read like training data (CSV, TSV,
JSONL, Parquet), with the task's input column and ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tuneops.components.config import DataConfig, MonitoringConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.errors import DataError
from tuneops.components.files import atomic_write_text
from tuneops.components.metrics import classification_metrics
from tuneops.components.paths import demo_dir
from tuneops.components.tasks.base import Task


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


def read_feedback(path: str | Path, data: DataConfig, task: Task) -> pd.DataFrame:
    """Labelled feedback as a frame of the task's input column and ``label`` strings.

    The columns may be named as in the training data (``task.source_column(data)`` /
    ``data.label_column``) or canonically (``task.input_column`` / ``label``). Rows with a
    blank input are dropped. DataError when the file cannot be read or lacks the columns.
    """
    from tuneops.components.data.loading import read_table

    path = Path(path)
    frame = read_table(path)
    inputs = task.input_column
    names = {}
    for canonical, configured in ((inputs, task.source_column(data)), (LABEL, data.label_column)):
        if configured in frame.columns:
            names[canonical] = configured
        elif canonical in frame.columns:
            names[canonical] = canonical
        else:
            raise DataError(f"feedback: {path.name} has no '{configured}' (or '{canonical}') column; "
                            f"columns are: {', '.join(map(str, frame.columns[:20]))}")
    feedback = pd.DataFrame({inputs: frame[names[inputs]], LABEL: frame[names[LABEL]]})
    feedback = feedback.dropna()
    feedback[inputs] = feedback[inputs].astype(str)
    feedback[LABEL] = feedback[LABEL].astype(str)
    return feedback[feedback[inputs].str.strip() != ""].reset_index(drop=True)


def check_feedback(predictor, feedback: pd.DataFrame, path: str, metric: str, config: MonitoringConfig,
                   bins: int) -> FeedbackCheck:
    """Score the champion on the feedback rows whose label it knows, with ``metric``
    (``bins``: ``evaluation.calibration_bins``, for the ECE among the scores)."""
    known = feedback[feedback[LABEL].isin(predictor.labels)]
    unknown = len(feedback) - len(known)
    note = f"{unknown} rows with labels the model does not know were left out" if unknown else ""
    if len(known) < config.min_feedback_rows:
        note = "; ".join(filter(None, [f"{len(known)} labelled rows (< monitoring.min_feedback_rows "
                                       f"{config.min_feedback_rows}): not scored", note]))
        return FeedbackCheck(str(path), len(known), metric, None, False, note)
    probabilities = predictor.predict_proba(known[predictor.task.input_column].tolist())
    scores = classification_metrics(known[LABEL].tolist(), probabilities, list(predictor.labels), bins)
    value = float(scores[metric])
    return FeedbackCheck(str(path), len(known), metric, value, value < config.min_metric, note)


@dataclass
class FeedbackMerge:
    """The data a retrain uses: where it was written and how many rows came from where."""

    path: Path
    base_rows: int
    feedback_rows: int
    skipped_rows: int

    def data_config(self, data: DataConfig) -> DataConfig:
        """``data`` reading the merged file (CSV) instead, with the configured group columns kept
        (the demo's own included: the merged file is no longer the demo, which would drop them)."""
        return data.model_copy(update={"path": str(self.path), "format": "csv", "group_columns": list(data.groups)})


def merge_feedback(data: DataConfig, feedback_path: str | Path, output_dir: Path, task: Task,
                   demo_directory: Path | None = None) -> FeedbackMerge:
    """Append the labelled feedback to the configured data (or the demo) as one CSV.

    Feedback rows whose input is already in the data, or repeated, are skipped (they would be
    duplicates, or leak between splits). Group columns the feedback lacks are ``unknown``.
    ``FeedbackMerge.data_config`` gives the data section that trains on the merged file.
    """
    from tuneops.components.data.demo import write_demo_dataset
    from tuneops.components.data.loading import read_table

    if data.path is None:
        base_path = write_demo_dataset(Path(demo_directory or demo_dir()), rows=data.demo_rows)
        base_format = "auto"
    else:
        base_path = Path(data.path).expanduser()
        base_format = data.format
    base = read_table(base_path, base_format)
    source = task.source_column(data)
    for needed in (source, data.label_column):
        if needed not in base.columns:
            raise DataError(f"retrain: the training data {base_path.name} has no '{needed}' column")
    feedback = read_feedback(feedback_path, data, task)
    inputs = task.input_column
    seen = set(base[source].astype(str))
    fresh = feedback[~feedback[inputs].isin(seen)].drop_duplicates(inputs)
    rows = pd.DataFrame({source: fresh[inputs], data.label_column: fresh[LABEL]})
    for column in data.groups:
        rows[column] = "unknown"
    merged = pd.concat([base, rows], ignore_index=True)
    target = atomic_write_text(Path(output_dir) / "training-data.csv", merged.to_csv(index=False))
    return FeedbackMerge(target, len(base), len(rows), len(feedback) - len(rows))
