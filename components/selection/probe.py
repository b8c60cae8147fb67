"""Probing one candidate on the user's data, under the time budget.

A candidate is first checked from its files (``inspect_checkpoint``), then loaded through the task
and probed: a logistic regression on its frozen mean-pooled embeddings (the cheap probe), latency
at batch 1 and 32, and optionally a short fine-tune by the training engine itself, scored again.
The validation predictions behind the score (class indices, ``row.predictions``) are kept so that
ranking can compare candidates row by row (paired bootstrap).
Everything runs through the ``Predictor`` (the one inference path) and the task; nothing here
knows what an input is.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.checkpoint_inspection import CheckpointInspection, inspect_checkpoint
from tuneops.components.checkpoints import load_for_classification
from tuneops.components.config import SelectionConfig, TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.metrics import label_scores
from tuneops.components.predictor import Predictor
from tuneops.components.selection.measure import LATENCY_BATCH, PeakMemory, measure_latency, release_memory
from tuneops.components.selection.report import EXCLUDED, FAILED, RANKED, SKIPPED, CandidateResult
from tuneops.components.tasks.base import Task

SEED = 42
# Probes cut inputs at 128 positions: enough to tell candidates apart, cheap on a CPU (training
# decides its own max_length from the data, components/training/recipe.py).
PROBE_MAX_LENGTH = 128
# Inputs per inference call while embedding; the budget is checked between calls.
EMBED_CHUNK = 64
# The short fine-tune probe: the training defaults' learning rate, a batch small enough for CPU.
FINETUNE_BATCH = 16
FINETUNE_LEARNING_RATE = 1e-4


@dataclass(frozen=True)
class ProbeData:
    """What every candidate of one selection run is probed with and under."""

    labels: list[str]
    train_sample: pd.DataFrame
    validation: pd.DataFrame
    config: SelectionConfig
    device: str
    deadline: float  # time.perf_counter() value past which probing stops
    task: Task
    training: TrainingConfig  # the run's training settings: a candidate is probed at its recipe's image size


class OutOfBudget(Exception):
    """``selection.budget_seconds`` ran out while a candidate was being probed."""


def assess_candidate(spec: str, probe: ProbeData, champion_dir: Path | None) -> CandidateResult:
    """Check one candidate from its files and, when it passes and budget is left, probe it."""
    started = time.perf_counter()
    row = CandidateResult(candidate=spec)
    inspection = inspect_checkpoint(spec, len(probe.labels), probe.task, champion_dir, probe.config.allow_pickle)
    _copy_inspection(row, inspection)
    if not inspection.usable:
        row.status, row.reason = SKIPPED, inspection.reason
    elif probe.config.max_params is not None and (row.parameters or 0) > probe.config.max_params:
        row.status, row.reason = EXCLUDED, too_large(row.parameters, probe.config.max_params)
    elif time.perf_counter() >= probe.deadline:
        row.status = EXCLUDED
        row.reason = f"not probed: selection.budget_seconds ({probe.config.budget_seconds:g} s) used up by earlier candidates"
    else:
        probe_candidate(row, inspection, probe)
    row.seconds = time.perf_counter() - started
    return row


def probe_candidate(row: CandidateResult, inspection: CheckpointInspection, probe: ProbeData) -> None:
    """Load, probe and time one usable candidate; fills ``row`` (status ranked, excluded or failed)."""
    memory = PeakMemory(probe.device)
    try:
        with memory:
            settings = probe_input_settings(inspection, probe)
            if settings.image_size is not None:
                row.notes.append(f"probed at {settings.image_size} px, the image size its run would train at")
            max_length = _frozen_probes(row, inspection, probe, settings)
            if max_length is None:  # excluded once loaded
                return
            if probe.config.probe_finetune_steps:
                # The frozen model is gone with _frozen_probes' frame; the engine loads its own copy.
                release_memory(probe.device)
                _finetune_probe(row, inspection, probe, max_length, settings.image_size)
        row.status = RANKED
    except OutOfBudget:
        row.status = EXCLUDED
        row.reason = f"probe did not finish within selection.budget_seconds ({probe.config.budget_seconds:g} s)"
    except Exception as error:  # one broken candidate must not stop the comparison of the others
        row.status = FAILED
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        row.reason = f"probe failed: {type(error).__name__}: {first}".rstrip(": ")
    finally:
        row.peak_memory_mb = memory.peak_mb
        release_memory(probe.device)


def _frozen_probes(row: CandidateResult, inspection: CheckpointInspection, probe: ProbeData,
                   settings: TrainingConfig) -> int | None:
    """Load the candidate, run the linear probe and time it, inputs prepared as ``settings`` say;
    returns the probe's maximum length, or None when the loaded model is over
    ``selection.max_params`` (row excluded).

    The model lives only in this frame, so it is freed when the function returns or raises.
    """
    import torch

    torch.manual_seed(SEED)
    processor, model = load_for_classification(inspection.loading_spec(), probe.labels, probe.task,
                                               allow_pickle=probe.config.allow_pickle)
    row.parameters = sum(parameter.numel() for parameter in model.parameters())
    if probe.config.max_params is not None and row.parameters > probe.config.max_params:
        row.status, row.reason = EXCLUDED, too_large(row.parameters, probe.config.max_params)
        return None
    max_length = min(PROBE_MAX_LENGTH, inspection.max_sequence_length or PROBE_MAX_LENGTH)
    processor = probe.task.configure_processor(processor, settings)
    predictor = Predictor(model, processor, probe.labels, task=probe.task, max_length=max_length, device=probe.device)
    row.predictions = linear_probe(predictor, probe.train_sample, probe.validation, probe.labels, probe.deadline)
    row.probe_macro_f1, row.probe_accuracy = score_predictions(
        probe.validation[LABEL].astype(str).tolist(), row.predictions, probe.labels)
    row.score = row.probe_macro_f1 if probe.config.objective == "macro_f1" else row.probe_accuracy
    row.latency_ms_batch1, row.latency_ms_batch32 = measure_latency(
        lambda inputs: predictor.predict_proba(inputs, batch_size=LATENCY_BATCH),
        probe.validation[probe.task.input_column].tolist(),
    )
    return max_length


def linear_probe(
    predictor: Predictor, train_sample: pd.DataFrame, validation: pd.DataFrame, labels: list[str], deadline: float
) -> np.ndarray:
    """The validation predictions (indices into ``labels``) of a logistic regression trained on the
    sample's frozen mean-pooled embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    column = predictor.task.input_column
    train_features = embed_within_budget(predictor, train_sample[column].tolist(), deadline)
    validation_features = embed_within_budget(predictor, validation[column].tolist(), deadline)
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=SEED))
    head.fit(train_features, train_sample[LABEL].astype(str).to_numpy())
    predicted = head.predict(validation_features)
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[p] for p in predicted], dtype=int)


def embed_within_budget(predictor: Predictor, inputs: list[Any], deadline: float) -> np.ndarray:
    """``predictor.embed`` of ``inputs`` (rows in their order), in chunks of ``EMBED_CHUNK`` taken in
    the task's inference order (similar inputs together: little padding), with the budget checked
    between chunks. Raises OutOfBudget when the deadline passes."""
    order = predictor.task.inference_order(inputs)
    embeddings = None
    for start in range(0, len(inputs), EMBED_CHUNK):
        if time.perf_counter() > deadline:
            raise OutOfBudget
        index = order[start:start + EMBED_CHUNK]
        chunk = predictor.embed([inputs[i] for i in index], batch_size=EMBED_CHUNK)
        if embeddings is None:
            embeddings = np.zeros((len(inputs), chunk.shape[1]), dtype=np.float32)
        embeddings[index] = chunk
    return embeddings if embeddings is not None else np.zeros((0, 0), dtype=np.float32)


def probe_input_settings(inspection: CheckpointInspection, probe: ProbeData) -> TrainingConfig:
    """The run's training settings with the image size the recipe gives this candidate on the probe's
    training sample (unchanged for a task whose inputs have no size): upsampling 28-px digits to a
    checkpoint's 224 px would cost a probe 12x the compute of the 64 px the run trains at."""
    from tuneops.components.training.recipe import image_size_for

    side = image_size_for(probe.train_sample, str(inspection.local_dir), probe.training, probe.task)
    return probe.training.model_copy(update={"image_size": side})


def probe_training_config(steps: int, max_length: int, device: str, image_size: int | None = None) -> TrainingConfig:
    """The training settings of the short fine-tune probe: ``steps`` AdamW steps of batch 16 at a
    constant learning rate of 1e-4 on the probe's device, evaluated once at the end, with neither
    early stopping nor intermediate checkpoints; images at ``image_size``."""
    return TrainingConfig(
        image_size=image_size,
        max_steps=steps,
        batch_size=FINETUNE_BATCH,
        learning_rate=FINETUNE_LEARNING_RATE,
        lr_schedule="constant",
        warmup_ratio=0.0,
        max_grad_norm=None,
        max_length=max_length,
        seed=SEED,
        device="cpu" if device == "cpu" else "cuda",
        eval_every_steps=steps,
        early_stopping_patience=None,
        # A checkpoint is only written before the last step, so this many steps never writes one.
        checkpoint_every_steps=steps,
    )


def _finetune_probe(row: CandidateResult, inspection: CheckpointInspection, probe: ProbeData,
                    max_length: int, image_size: int | None) -> None:
    """A few steps of the training engine on the sample, into a temporary directory, then scored
    on the validation rows through the saved model; its score then counts."""
    from tuneops.components.training.finetune import finetune

    wanted = probe.config.probe_finetune_steps
    if time.perf_counter() > probe.deadline:
        row.notes.append(f"fine-tune probe not run: selection.budget_seconds used up before its first of {wanted} steps")
        return

    def stop_at_deadline(step: int, total: int, loss: float) -> None:
        # The engine cannot be paused mid-run; past the deadline the probe as a whole is over budget.
        if time.perf_counter() > probe.deadline:
            raise OutOfBudget

    with tempfile.TemporaryDirectory(prefix="tuneops-finetune-probe-") as scratch:
        trained = finetune(
            probe.train_sample, probe.validation, probe.labels, _engine_checkpoint(inspection),
            probe_training_config(wanted, max_length, probe.device, image_size),
            Path(scratch) / "model",
            task=probe.task, progress=stop_at_deadline,
        )
        row.finetune_steps = trained.steps
        tuned = Predictor.from_dir(trained.path, device=probe.device)
        probabilities = tuned.predict_proba(probe.validation[probe.task.input_column].tolist())
    # The fine-tune probe's predictions replace the linear probe's: they are what the score now says.
    row.predictions = probabilities.argmax(axis=1)
    row.finetune_macro_f1, row.finetune_accuracy = score_predictions(
        probe.validation[LABEL].astype(str).tolist(), row.predictions, probe.labels)
    row.score = row.finetune_macro_f1 if probe.config.objective == "macro_f1" else row.finetune_accuracy


def score_predictions(truth: list[str], predicted_index: np.ndarray, labels: list[str]) -> tuple[float, float]:
    """(macro-F1, accuracy) of predicted label indices, by the shared metrics module; a true label
    outside ``labels`` counts as always wrong."""
    truth_index, n_labels = truth_indices(truth, labels)
    scores = label_scores(truth_index, np.asarray(predicted_index), n_labels)
    return scores["macro_f1"], scores["accuracy"]


def truth_indices(truth: list[str], labels: list[str]) -> tuple[np.ndarray, int]:
    """The true labels as class indices, and how many classes there are: those of ``labels``, then
    any true label outside them (which no prediction can hit), so that it counts as always wrong."""
    index = {label: i for i, label in enumerate(labels)}
    unseen = sorted(set(truth) - set(index))
    index.update({label: len(labels) + i for i, label in enumerate(unseen)})
    return np.array([index[label] for label in truth], dtype=int), len(labels) + len(unseen)


def too_large(parameters: int, limit: int) -> str:
    """The reason a candidate over ``selection.max_params`` is excluded."""
    return f"{parameters:,} parameters > selection.max_params {limit:,}"


def _engine_checkpoint(inspection: CheckpointInspection) -> str:
    """The candidate as a spec the training engine parses, pointing at its local files."""
    spec = inspection.loading_spec()
    return spec.source if spec.keep_layers is None else f"{spec.source}@layers={spec.keep_layers}"


def _copy_inspection(row: CandidateResult, inspection: CheckpointInspection) -> None:
    row.architecture = inspection.architecture
    row.parameters = inspection.parameters
    row.layers = inspection.layers
    row.max_sequence_length = inspection.max_sequence_length
    row.weights = inspection.weights
    row.notes.extend(inspection.notes or [])
    if inspection.layers is not None and inspection.checkpoint_layers not in (None, inspection.layers):
        row.notes.append(f"first {inspection.layers} of {inspection.checkpoint_layers} layers kept")
