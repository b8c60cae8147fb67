"""Validation during fine-tuning: score the validation split through the predictor (the one
inference path), keep the best weights in memory and decide when to stop early.

The scores are those of ``tuneops.components.metrics`` (the macro-F1 convention of evaluation),
plus the mean cross-entropy of the true labels. In a distributed run every process scores a share
of the rows and the shares are gathered, so all processes take the same early-stopping decision.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from tuneops.components.metrics import label_scores
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.base import EncodedInputs
from tuneops.components.training.checkpoint import TrainingState
from tuneops.components.training.run_setup import EncodedSplit, RunSetup

logger = logging.getLogger(__name__)

# The smallest probability a log loss takes: a float32 softmax can round a very wrong class to 0.
PROBABILITY_FLOOR = 1e-12


class ValidationTracker:
    """Scores the validation split at evaluation steps and remembers the best weights so far.

    The early-stopping counters live in ``TrainingState`` (they are checkpointed with it); the
    best weights live here, and are checkpointed by the loop.
    """

    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup
        self.best_weights: dict | None = None

    def evaluate(self, state: TrainingState) -> dict[str, float] | None:
        """Score the validation split; keep the weights if they are the best so far; early stop.

        Returns the step's validation metrics (None without validation rows)."""
        setup = self.setup
        if len(setup.validation) == 0:
            return None
        config = setup.config
        metrics = validation_metrics(setup, setup.validation)
        state.history[-1].update({f"validation_{key}": value for key, value in metrics.items()})
        value = metrics[config.early_stopping_metric]
        lower_is_better = config.early_stopping_metric == "loss"
        if state.best_metric is None:
            improved = True
        elif lower_is_better:
            improved = value < state.best_metric - config.early_stopping_min_delta
        else:
            improved = value > state.best_metric + config.early_stopping_min_delta
        if improved:
            state.best_metric = value
            state.best_row = {"step": state.step, **metrics}
            state.evals_since_best = 0
            self.best_weights = {name: p.detach().to("cpu", copy=True) for name, p in setup.parts.trainable.items()}
        else:
            state.evals_since_best += 1
            patience = config.early_stopping_patience
            if patience is not None and state.evals_since_best >= patience:
                state.stopped_early = True
        if setup.context.is_main:
            logger.info(
                "step %d/%d: validation %s %.4f%s", state.step, setup.plan.total_steps, config.early_stopping_metric,
                value, " (best so far)" if improved else
                (f"; stopping early, best was step {state.best_row['step']}" if state.stopped_early else ""),
            )
        return metrics

    def restore_best(self) -> None:
        """Put the best weights (if any evaluation ran) back into the model."""
        import torch

        if self.best_weights is None:
            return
        with torch.no_grad():
            for name, parameter in self.setup.parts.trainable.items():
                parameter.copy_(self.best_weights[name])


def validation_metrics(setup: RunSetup, split: EncodedSplit) -> dict[str, float]:
    """Loss, macro F1 and accuracy of the live model on ``split``; each process scores a share."""
    probabilities = split_probabilities(setup, split.inputs)
    truth = split.labels
    chosen = np.clip(probabilities[np.arange(len(truth)), truth], PROBABILITY_FLOOR, 1.0)
    scores = label_scores(truth, probabilities.argmax(1), len(setup.request.labels))
    return {
        "loss": float(-np.mean(np.log(chosen.astype(np.float64)))),
        "macro_f1": scores["macro_f1"],
        "accuracy": scores["accuracy"],
    }


def split_probabilities(setup: RunSetup, encoded: EncodedInputs) -> np.ndarray:
    """Class probabilities for every row, in row order, scored with the run's precision. In a
    distributed run each process scores every ``world_size``-th row and the shares are gathered,
    so all processes return the same array."""
    context, request = setup.context, setup.request
    share = np.arange(len(encoded))[context.rank::context.world_size]
    part = dataclasses.replace(encoded, features=[encoded.features[i] for i in share], lengths=encoded.lengths[share])
    model = setup.parts.model
    was_training = model.training
    # The live model (not its DDP or compiled wrapper) behind the one inference path; the
    # predictor switches it to eval mode, the loop needs it back in training mode.
    predictor = Predictor(model, setup.parts.processor, request.labels, task=request.task,
                          max_length=request.config.max_length, device=setup.placement.device)
    try:
        scored = predictor.encoded_probabilities(part, batch_size=max(64, request.config.batch_size),
                                                 precision=setup.placement.precision)
    finally:
        model.train(was_training)
    full = np.zeros((len(encoded), len(request.labels)), dtype=np.float32)
    if context.world_size > 1:
        import torch.distributed as dist

        shares: list = [None] * context.world_size
        dist.all_gather_object(shares, (share, scored))
        for share_indices, share_scores in shares:
            full[share_indices] = share_scores
        return full
    full[share] = scored
    return full
