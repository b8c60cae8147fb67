"""Data parallelism: the same fine-tune as 1 process and as 2 processes (gloo over
127.0.0.1) must compute the same steps. Dropout is switched off so the only difference left is
the order of floating-point sums when the processes' gradients are averaged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from tuneops.components.config import TrainingConfig
from tuneops.components.data.loading import LABEL
from tuneops.components.errors import StageError
from tuneops.components.training.finetune import finetune
from tests.code.test_training import CHECKPOINT, tiny_splits

# test_training.py's 240 train rows in steps of 79: three full steps and one of 3 rows per epoch.
# With 2 accumulation micro-batches over 2 processes, that last step is split [2 rows | 1 row] and
# the second process has no row in the second micro-batch (it joins the all-reduce with a
# zero-weighted placeholder). One thread per process: 2 processes share a 2-core machine.
SETTINGS = dict(learning_rate=5e-4, freeze_embeddings=True, threads=1, early_stopping_patience=None, epochs=2,
                batch_size=79, grad_accum_steps=2, dropout=0.0, eval_every_steps=4, checkpoint_every_steps=3,
                freeze_layers=1)


def test_two_gloo_processes_match_one_process(tmp_path):
    train, validation, labels = tiny_splits()
    single = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SETTINGS), tmp_path / "one" / "model")
    double = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SETTINGS | {"processes": 2}),
                      tmp_path / "two" / "model")

    assert double.world_size == 2 and single.world_size == 1
    log = (tmp_path / "two" / "distributed-inputs" / "rank0.log").read_text()
    assert "2 process(es)" in log
    single_losses = np.array([row["train_loss"] for row in single.history])
    double_losses = np.array([row["train_loss"] for row in double.history])
    assert len(single_losses) == len(double_losses) == 8
    np.testing.assert_allclose(double_losses, single_losses, atol=1e-4)
    assert double.best_validation["step"] == single.best_validation["step"]
    assert abs(double.best_validation["macro_f1"] - single.best_validation["macro_f1"]) < 0.02
    one = load_file(str(single.path / "model.safetensors"))
    two = load_file(str(double.path / "model.safetensors"))
    assert max(float((one[key] - two[key]).abs().max()) for key in one) < 1e-3
    summary = json.loads((double.path / "training_summary.json").read_text())
    assert summary["throughput"]["processes"] == 2


def test_a_failing_process_is_a_one_line_stage_error(tmp_path):
    train, validation, labels = tiny_splits()
    train.loc[0, LABEL] = "furious"
    with pytest.raises(StageError, match=r"process \d of the 2-process run failed.*'furious'"):
        finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SETTINGS | {"processes": 2}),
                 tmp_path / "model")
