"""The traffic as monitoring compares it: the prediction log turned into a frame with the task's
input column, ``prediction`` and ``score``, and the small Evidently report on the traffic itself
(request volume, prediction distribution, mean confidence, prediction drift)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from tuneops.components.evaluation.drift import PREDICTION
from tuneops.components.monitoring.prediction_log import INPUT
from tuneops.components.tasks.base import Task

# The log's ``label`` is the model's prediction; monitoring calls it ``prediction`` and its
# top-class probability ``score``.
SCORE = "score"
# Tag of the traffic report's snapshots: panels built on metrics that a drift report may hold too
# (row counts, value counts) read only these, so no run is counted twice.
TRAFFIC_TAG = "tuneops-traffic"


def traffic_frame(log: pd.DataFrame, task: Task) -> pd.DataFrame:
    """The prediction log as monitoring compares it: the task's input column (the logged input),
    ``prediction``, ``score``, ``timestamp``, ``model_tag``."""
    frame = pd.DataFrame({
        task.input_column: log[INPUT].astype(str),
        PREDICTION: log["label"].astype(str),
        SCORE: log["score"].astype(float),
        "timestamp": log["timestamp"],
        "model_tag": log["model_tag"].astype(str),
    })
    return frame.reset_index(drop=True)


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
