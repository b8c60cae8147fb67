"""The floor of the selection table: the task's classical baseline, trained on the same sample the
candidates are probed on and scored on the same validation rows."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from tuneops.components.data.columns import LABEL
from tuneops.components.metrics import classification_metrics
from tuneops.components.selection.measure import PeakMemory, measure_latency
from tuneops.components.selection.report import BASELINE, CandidateResult
from tuneops.components.tasks.base import Task

# The floor's figures selection reports (classification_metrics computes more).
FLOOR_METRICS = ("accuracy", "macro_f1", "weighted_f1")


def probe_baseline(
    task: Task, train_sample: pd.DataFrame, validation: pd.DataFrame, objective: str
) -> tuple[CandidateResult, dict[str, Any]]:
    """Fit ``task.baseline`` on the sample; its table row and its validation metrics
    (``accuracy``, ``macro_f1``, ``weighted_f1``, plus the row counts)."""
    started = time.perf_counter()
    inputs = validation[task.input_column].tolist()
    memory = PeakMemory("cpu")
    with memory:
        floor = task.baseline(train_sample)
        probabilities = floor.predict_proba(inputs)
        row = CandidateResult(candidate=f"baseline: {floor.name}", status=BASELINE, architecture=floor.architecture)
        row.latency_ms_batch1, row.latency_ms_batch32 = measure_latency(floor.predict_proba, inputs)
    scores = classification_metrics(validation[LABEL].astype(str).tolist(), probabilities, floor.labels)
    metrics = {name: scores[name] for name in FLOOR_METRICS}
    row.parameters = floor.parameter_count
    row.probe_macro_f1, row.probe_accuracy = metrics["macro_f1"], metrics["accuracy"]
    row.score = metrics[objective]
    row.peak_memory_mb = memory.peak_mb
    row.seconds = time.perf_counter() - started
    row.notes.append("the floor: trained on the same sample the candidates are probed on")
    return row, {**metrics, "train_rows": len(train_sample), "validation_rows": len(validation)}
