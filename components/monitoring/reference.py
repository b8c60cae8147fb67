"""The reference sample: training rows with the model's own predictions, saved with the model at
packaging time. Monitoring compares production traffic with it (inputs, embeddings, predictions).

For a task whose prediction log keeps a *record* of each input rather than the input itself
(``Task.logs_inputs`` false: images are logged as their content hash and descriptors, never as
pixels), the sample also keeps that record of every reference input (``LOGGED``), made while the
training files still exist. Monitoring then compares record with record, and needs neither the
pixels of the traffic nor the training files, which may be moved or deleted after packaging.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneops.components.evaluation.drift import PREDICTION
from tuneops.components.errors import StageError
from tuneops.components.monitoring.traffic import SCORE
from tuneops.components.tasks.base import Task

#: the reference sample's column of what the prediction log keeps of each input (``Task.log_value``),
#: for a task whose log keeps records, not inputs
LOGGED = "logged"
# The ``serving.log_text`` mode that keeps what can be kept of an input (text: the text itself;
# images: the content hash with the descriptors); "hash" keeps the hash alone.
_FULL_LOG = "text"


def reference_sample(train: pd.DataFrame, predictor, rows: int, seed: int) -> pd.DataFrame:
    """At most ``rows`` training rows (``train.sample(rows, random_state=seed)`` when there are
    more), with the predictor's ``prediction`` and its top-class probability ``score``; for a task
    that logs records of its inputs, also the record of each input in ``LOGGED``."""
    reference = train
    if len(reference) > rows:
        reference = reference.sample(rows, random_state=seed)
    reference = reference.reset_index(drop=True).copy()
    task = predictor.task
    inputs = reference[task.input_column].tolist()
    probabilities = predictor.predict_proba(inputs)
    reference[PREDICTION] = [predictor.labels[i] for i in probabilities.argmax(1)]
    reference[SCORE] = probabilities.max(1)
    if not task.logs_inputs:
        reference[LOGGED] = [task.log_value(value, _FULL_LOG) for value in inputs]
    return reference


def comparable_reference(reference: pd.DataFrame, task: Task) -> pd.DataFrame:
    """The champion's reference sample with the columns traffic has (inputs, prediction, score).

    The input column holds what the log would keep of each reference input: the inputs
    themselves, or (``Task.logs_inputs`` false) their ``LOGGED`` records. StageError when it lacks
    those or the predictions (a model packaged before they were kept)."""
    inputs = task.input_column
    source = inputs if task.logs_inputs else LOGGED
    if source not in reference.columns:
        if task.logs_inputs:
            raise StageError(f"the champion's reference sample has no {inputs} column")
        raise StageError(f"the champion's reference sample has no logged records of its {task.input_noun}s "
                         f"(no {LOGGED} column); repackage the model")
    frame = reference.copy()
    if PREDICTION not in frame.columns:
        raise StageError("the champion's reference sample has no prediction column; repackage the model")
    frame[inputs] = frame[source].astype(str)
    frame[PREDICTION] = frame[PREDICTION].astype(str)
    frame[SCORE] = frame[SCORE].astype(float) if SCORE in frame.columns else np.nan
    return frame
