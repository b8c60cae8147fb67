"""Data parallelism: the same fine-tune as 1 process and as 2 processes (gloo over
127.0.0.1) must compute the same steps. Dropout is switched off so the only difference left is
the order of floating-point sums when the processes' gradients are averaged. The processes get
the validated settings through a handover folder, which is also how a hand-started (torchrun)
process gets them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from tuneops.components.config import TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.errors import ConfigError, StageError
from tuneops.components.training import distributed, prepare
from tuneops.components.training.finetune import finetune
from tuneops.components.training.handover import (
    SETTINGS_FILE,
    HandoverSettings,
    read_settings,
    read_splits,
    write_handover,
)
from tests.code.test_training import CHECKPOINT, TASK, tiny_splits

# test_training.py's 240 train rows in steps of 79: three full steps and one of 3 rows per epoch.
# With 2 accumulation micro-batches over 2 processes, that last step is split [2 rows | 1 row] and
# the second process has no row in the second micro-batch (it joins the all-reduce with a
# zero-weighted placeholder). One thread per process: 2 processes share a 2-core machine.
SETTINGS = dict(learning_rate=5e-4, freeze_embeddings=True, threads=1, early_stopping_patience=None, epochs=2,
                batch_size=79, grad_accum_steps=2, dropout=0.0, eval_every_steps=4, checkpoint_every_steps=3,
                freeze_layers=1, precision="fp32")  # equal to 1e-4: not what bf16 autocast holds to


def test_two_gloo_processes_match_one_process(tmp_path):
    train, validation, labels = tiny_splits()
    single = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SETTINGS), tmp_path / "one" / "model",
                      task=TASK)
    double = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SETTINGS | {"processes": 2}),
                      tmp_path / "two" / "model", task=TASK)

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
                 tmp_path / "model", task=TASK)


# ------------------------------------------------------------------ handover to the processes
def test_the_handover_carries_the_validated_config_and_bad_settings_are_one_line(tmp_path):
    train, validation, labels = tiny_splits()
    config = TrainingConfig(**(SETTINGS | {"adapter": "lora", "adapter_target_modules": ["query", "value"]}))
    settings = HandoverSettings(task=TASK.name, checkpoint=CHECKPOINT, labels=labels, training=config)
    folder = write_handover(tmp_path / "inputs", settings, train, validation, TASK.input_column)
    read = read_settings(folder)
    assert read.training == config and read.labels == labels and read.task == TASK.name
    read_train, read_validation = read_splits(folder, TASK.input_column)
    pd.testing.assert_frame_equal(read_train, train[[TASK.input_column, LABEL]])
    assert len(read_validation) == len(validation)

    document = json.loads((folder / SETTINGS_FILE).read_text())
    document["training"]["learning_rate"] = -1
    (folder / SETTINGS_FILE).write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=r"training\.learning_rate") as raised:
        read_settings(folder)
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="no handover.json"):
        read_settings(tmp_path / "elsewhere")


def test_a_hand_started_process_trains_from_a_prepared_handover(tmp_path, capsys):
    train, validation, labels = tiny_splits()
    train.to_csv(tmp_path / "train.csv", index=False)
    validation.to_csv(tmp_path / "validation.csv", index=False)
    output = tmp_path / "manual" / "model"
    code = prepare.main(["--checkpoint", CHECKPOINT, "--output-dir", str(output),
                         "--train", str(tmp_path / "train.csv"), "--validation", str(tmp_path / "validation.csv"),
                         "--set", "training.max_steps=2", "--set", "training.threads=1",
                         "--set", "training.freeze_embeddings=true"])
    assert code == 0, capsys.readouterr().err
    assert distributed.main(["--output-dir", str(output)]) == 0, capsys.readouterr().err
    assert "trained 2 steps on 1 process(es)" in capsys.readouterr().out
    args = json.loads((output / "training_args.json").read_text())
    assert args["config"]["max_steps"] == 2 and args["labels"] == labels and args["task"] == TASK.name
