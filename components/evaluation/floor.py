"""The score floor: the task's classical baseline (a cheap model, such as TF-IDF + logistic
regression) fitted on the training split and scored on the test split. With no champion yet, the gate asks the first
fine-tuned model to beat it (``gate.require_beat_baseline``)."""

from __future__ import annotations

from typing import Any

from tuneops.components.data.columns import LABEL
from tuneops.components.data.loading import DatasetSplits
from tuneops.components.metrics import classification_metrics
from tuneops.components.tasks.base import Task


def score_floor(splits: DatasetSplits, task: Task, bins: int) -> dict[str, Any]:
    """``classification_metrics`` of ``task.baseline(splits.train)`` on ``splits.test``, with
    ``bins`` calibration bins (``evaluation.calibration_bins``) for its ECE, plus what the floor is:
    ``floor`` (its description, e.g. "balanced TF-IDF + logistic regression (C=4, ...)") and its
    chosen settings as ``floor_<name>`` (text: ``floor_C``, ``floor_cv_macro_f1``, ``floor_cv_folds``),
    and ``predictions``: its predicted label for each test row, in the test split's order, which the
    gate needs for its paired-bootstrap difference against the model on the same rows."""
    floor = task.baseline(splits.train)
    probabilities = floor.predict_proba(splits.test[task.input_column].tolist())
    metrics = classification_metrics(splits.test[LABEL].tolist(), probabilities, floor.labels, bins)
    # The numbers travel with what produced them, so the gate's reason and the run record can say
    # which floor the model was held to.
    metrics["floor"] = floor.description
    metrics["predictions"] = [str(floor.labels[i]) for i in probabilities.argmax(axis=1)]
    metrics.update({f"floor_{key}": value for key, value in floor.settings.items()})
    return metrics
