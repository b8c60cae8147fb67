"""Slices of the test split: each value of each group column, and each bucket of the task's own
input properties (``Task.slice_values``, such as a length bucket), scored like the whole split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneops.components.config import EvaluationConfig
from tuneops.components.evaluation.fairness import group_values
from tuneops.components.evaluation.report import SliceResult
from tuneops.components.metrics import number_or_none, percentile_interval, resample_weights, weighted_scores
from tuneops.components.tasks.base import Task


def slice_metrics(test: pd.DataFrame, truth: np.ndarray, probabilities: np.ndarray, labels: list[str],
                  group_columns: list[str], task: Task, config: EvaluationConfig) -> list[SliceResult]:
    """Accuracy and F1 per value of each group column and per bucket of the task's slices.

    Group values are listed in string order; a task slice given as an ordered categorical keeps its
    own order (short to long, say). Slices below ``evaluation.min_slice_support`` are flagged. Each
    slice carries 95% bootstrap intervals of its scores (``evaluation.bootstrap_samples``).
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
                intervals=_slice_intervals(truth, probabilities, masks[row] > 0, len(labels), config),
            ))
    return slices


_SLICE_METRICS = ("accuracy", "macro_f1", "weighted_f1")


def _slice_intervals(truth: np.ndarray, probabilities: np.ndarray, member: np.ndarray, n_labels: int,
                     config: EvaluationConfig) -> dict[str, list[float]]:
    """95% intervals of a slice's label scores, resampling the slice's own rows.

    Within-slice resampling keeps the slice's size fixed, which is the question a reader asks of a
    slice ("how sure is this number, given these rows?"), and costs one resample matrix the size of
    the slice rather than of the whole split. The scores depend on the predicted label only, so
    one-hot predictions stand in for the probabilities (cheap ROC-AUC / ECE side computations).
    """
    rows = int(member.sum())
    if config.bootstrap_samples <= 0 or rows == 0:
        return {}
    one_hot = np.eye(n_labels)[probabilities[member].argmax(axis=1)]
    weights = resample_weights(rows, config.bootstrap_samples, config.seed)
    scores = weighted_scores(truth[member], one_hot, weights, list(range(n_labels)), config.calibration_bins,
                             per_class=False)
    intervals = {name: percentile_interval(scores[name]) for name in _SLICE_METRICS}
    return {name: interval for name, interval in intervals.items() if interval is not None}


def _ordered_names(values) -> list:
    """The distinct values present, in the categorical's order when it has one."""
    if isinstance(values, pd.Categorical) and values.ordered:
        present = set(np.asarray(values, dtype=object))
        return [name for name in values.categories if name in present]
    return sorted(set(values), key=str)
