"""A model fine-tuned once per test session: MiniLM, 40 steps on a few hundred demo rows.

Behavioural and evaluation tests judge this real model; it is small enough to train on a CPU
in about a minute and good enough that its behaviour means something.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.components.config import PACKAGED_MINILM, DataConfig, TrainingConfig
from tuneops.components.data.loading import DatasetSplits, as_validated, load_data
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.registry import get_task
from tuneops.components.training.finetune import finetune

TEXT_TASK = get_task("text-classification")

# 600 demo rows give ~450 training rows; 40 steps of 16 is about 1.4 epochs, enough for the
# demo's clear sentiment cues.
SESSION_ROWS = 600
TRAINING = TrainingConfig(max_steps=40, batch_size=16, max_length=64, learning_rate=1e-4,
                          eval_every_steps=20, early_stopping_patience=None, device="cpu", seed=7)


@pytest.fixture(scope="session")
def demo_splits(tmp_path_factory) -> DatasetSplits:
    """Validated demo splits (train / validation / test) with the demo's group columns."""
    return as_validated(load_data(DataConfig(max_rows=SESSION_ROWS), tmp_path_factory.mktemp("demo"), TEXT_TASK))


@pytest.fixture(scope="session")
def finetuned_dir(demo_splits, tmp_path_factory) -> Path:
    """The directory of the session's fine-tuned model (loadable with Predictor.from_dir)."""
    output = tmp_path_factory.mktemp("finetuned") / "model"
    trained = finetune(demo_splits.train, demo_splits.validation, demo_splits.labels, PACKAGED_MINILM,
                       TRAINING, output, task=TEXT_TASK)
    assert trained.last_loss < trained.first_loss, "the session model did not learn"
    return trained.path


@pytest.fixture(scope="session")
def finetuned(finetuned_dir) -> Predictor:
    """The session's fine-tuned model, loaded once."""
    return Predictor.from_dir(finetuned_dir, device="cpu")
