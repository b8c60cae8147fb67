"""The reference sample: training rows with the model's own predictions, saved with the model at
packaging time. Monitoring compares production traffic with it (inputs, embeddings, predictions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneops.components.evaluation.drift import PREDICTION
from tuneops.components.errors import StageError
from tuneops.components.monitoring.traffic import SCORE
from tuneops.components.tasks.base import Task


def reference_sample(train: pd.DataFrame, predictor, rows: int, seed: int) -> pd.DataFrame:
    """At most ``rows`` training rows (``train.sample(rows, random_state=seed)`` when there are
    more), with the predictor's ``prediction`` and its top-class probability ``score``."""
    reference = train
    if len(reference) > rows:
        reference = reference.sample(rows, random_state=seed)
    reference = reference.reset_index(drop=True).copy()
    probabilities = predictor.predict_proba(reference[predictor.task.input_column].tolist())
    reference[PREDICTION] = [predictor.labels[i] for i in probabilities.argmax(1)]
    reference[SCORE] = probabilities.max(1)
    return reference


def comparable_reference(reference: pd.DataFrame, task: Task) -> pd.DataFrame:
    """The champion's reference sample with the columns traffic has (inputs, prediction, score).
    StageError when it lacks the inputs or the predictions (a model packaged before they were kept)."""
    inputs = task.input_column
    if inputs not in reference.columns:
        raise StageError(f"the champion's reference sample has no {inputs} column")
    frame = reference.copy()
    if PREDICTION not in frame.columns:
        raise StageError("the champion's reference sample has no prediction column; repackage the model")
    frame[inputs] = frame[inputs].astype(str)
    frame[PREDICTION] = frame[PREDICTION].astype(str)
    frame[SCORE] = frame[SCORE].astype(float) if SCORE in frame.columns else np.nan
    return frame
