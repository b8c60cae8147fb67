"""Slices of the test split: each value of each group column, and each bucket of the task's own
input properties (``Task.slice_values``, such as a length bucket), scored like the whole split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneops.components.config import EvaluationConfig
from tuneops.components.evaluation.fairness import group_values
from tuneops.components.evaluation.report import SliceResult
from tuneops.components.metrics import number_or_none, weighted_scores
from tuneops.components.tasks.base import Task


def slice_metrics(test: pd.DataFrame, truth: np.ndarray, probabilities: np.ndarray, labels: list[str],
                  group_columns: list[str], task: Task, config: EvaluationConfig) -> list[SliceResult]:
    """Accuracy and F1 per value of each group column and per bucket of the task's slices.

    Group values are listed in string order; a task slice given as an ordered categorical keeps its
    own order (short to long, say). Slices below ``evaluation.min_slice_support`` are flagged.
    """
    slices: list[SliceResult] = []
    columns = {column: group_values(test[column]) for column in group_columns}
    columns.update(task.slice_values(test[task.input_column], config))
    for column, values in columns.items():
        names = _ordered_names(values)
        values = np.asarray(values, dtype=object)
        masks = np.array([values == name for name in names], dtype=float)
        scores = weighted_scores(truth, probabilities, masks, labels, config.calibration_bins, per_class=False)
        for row, name in enumerate(names):
            support = int(masks[row].sum())
            slices.append(SliceResult(
                column=column, value=str(name), support=support, small=support < config.min_slice_support,
                accuracy=number_or_none(scores["accuracy"][row]), macro_f1=number_or_none(scores["macro_f1"][row]),
                weighted_f1=number_or_none(scores["weighted_f1"][row]),
            ))
    return slices


def _ordered_names(values) -> list:
    """The distinct values present, in the categorical's order when it has one."""
    if isinstance(values, pd.Categorical) and values.ordered:
        present = set(np.asarray(values, dtype=object))
        return [name for name in values.categories if name in present]
    return sorted(set(values), key=str)
