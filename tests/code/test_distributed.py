"""Data parallelism: the same fine-tune as 1 process and as 2 processes (gloo over
127.0.0.1) must compute the same steps. Dropout is switched off so the only difference left is
the order of floating-point sums when the processes' gradients are averaged. The processes get
the validated settings through a handover folder, which is also how a hand-started (torchrun)
process gets them. The hand-started path is tested as documented (infra/distributed.md):
``prepare`` writes the handover, then one process by hand, or two through torchrun itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from tuneops.components.config import TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.errors import ConfigError, StageError
from tuneops.components.training import distributed, prepare
from tuneops.components.training.finetune import TrainedModel, finetune
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


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> TrainedModel:
    """The single-process fine-tune with SETTINGS that every multi-process run here must match."""
    train, validation, labels = tiny_splits()
    return finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SETTINGS),
                    tmp_path_factory.mktemp("one") / "model", task=TASK)


def assert_same_steps(multi: TrainedModel, single: TrainedModel) -> None:
    """Every optimizer step's train loss of ``multi`` equals ``single``'s to 1e-4."""
    single_losses = np.array([row["train_loss"] for row in single.history])
    multi_losses = np.array([row["train_loss"] for row in multi.history])
    assert len(single_losses) == len(multi_losses) == 8
    np.testing.assert_allclose(multi_losses, single_losses, atol=1e-4)


def test_two_gloo_processes_match_one_process(tmp_path, one_process):
    train, validation, labels = tiny_splits()
    single = one_process
    double = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SETTINGS | {"processes": 2}),
                      tmp_path / "two" / "model", task=TASK)

    assert double.world_size == 2 and single.world_size == 1
    log = (tmp_path / "two" / "distributed-inputs" / "rank0.log").read_text()
    assert "2 process(es)" in log
    assert_same_steps(double, single)
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


def prepare_from_files(directory: Path, output: Path, training: dict[str, object]) -> int:
    """The documented first step of a hand-started run: ``prepare`` on train/validation files
    (the tiny splits, written into ``directory``) with ``training`` as ``--set`` overrides; its exit code."""
    train, validation, _ = tiny_splits()
    train.to_csv(directory / "train.csv", index=False)
    validation.to_csv(directory / "validation.csv", index=False)
    # JSON scalars are YAML scalars, which is how --set parses a value (null, true, 0.0005, "fp32").
    overrides = [part for key, value in training.items() for part in ("--set", f"training.{key}={json.dumps(value)}")]
    return prepare.main(["--checkpoint", CHECKPOINT, "--output-dir", str(output),
                         "--train", str(directory / "train.csv"), "--validation", str(directory / "validation.csv"),
                         *overrides])


def test_a_hand_started_process_trains_from_a_prepared_handover(tmp_path, capsys):
    labels = tiny_splits()[2]
    output = tmp_path / "manual" / "model"
    code = prepare_from_files(tmp_path, output, {"max_steps": 2, "threads": 1, "freeze_embeddings": True})
    assert code == 0, capsys.readouterr().err
    assert distributed.main(["--output-dir", str(output)]) == 0, capsys.readouterr().err
    assert "trained 2 steps on 1 process(es)" in capsys.readouterr().out
    args = json.loads((output / "training_args.json").read_text())
    assert args["config"]["max_steps"] == 2 and args["labels"] == labels and args["task"] == TASK.name


# ------------------------------------------------------------------ torchrun itself
TORCHRUN_TIMEOUT_S = 300


def run_torchrun(arguments: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``python -m torch.distributed.run ARGUMENTS``; its exit code and stderr.

    On a timeout torchrun is sent SIGTERM first: its agent then stops the ranks, which it starts in
    sessions of their own, so killing torchrun outright would leave them behind.
    """
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *arguments], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        return -1, f"timed out after {TORCHRUN_TIMEOUT_S} s\n{stderr}"
    return process.returncode, stderr


def rank_output(log_dir: Path, stream: str, characters: int = 1500) -> str:
    """The end of each rank's ``stream`` (stdout / stderr) that torchrun's ``--redirects`` wrote
    under ``log_dir`` (``<run id>/attempt_<n>/<local rank>/<stream>.log``)."""
    logs = sorted(log_dir.glob(f"*/attempt_*/*/{stream}.log"))
    return "\n".join(f"[rank {log.parent.name} {stream}] {log.read_text(errors='replace')[-characters:]}"
                     for log in logs) or f"no rank {stream} logs under {log_dir}"


def test_torchrun_starts_two_processes_that_match_one_process(tmp_path, one_process):
    """infra/distributed.md's manual recipe with torchrun itself: ``prepare``, then 2 processes of
    the entry point through a c10d rendezvous on 127.0.0.1, compared step by step with 1 process."""
    output = tmp_path / "torchrun" / "model"
    output.parent.mkdir()
    assert prepare_from_files(output.parent, output, SETTINGS) == 0
    logs = tmp_path / "torchrun-logs"
    # Port 0: the rendezvous store binds a free port itself (as --standalone does), so no race for
    # a port picked beforehand; the ranks reach it on 127.0.0.1, though torchrun's stores still
    # listen on every interface. Each rank's output goes to its own files under --log-dir.
    arguments = ["--nnodes", "1", "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
                 "--log-dir", str(logs), "--redirects", "3",
                 "-m", distributed.__name__, "--output-dir", str(output)]
    # gloo / NCCL on loopback; one thread per process (SETTINGS has threads=1 too) on a shared machine.
    env = os.environ | {"TUNEOPS_HOME": str(tmp_path / "home"), "GLOO_SOCKET_IFNAME": "lo",
                        "NCCL_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    code, stderr = run_torchrun(arguments, cwd=tmp_path, env=env)
    assert code == 0, f"torchrun exited {code}: {stderr[-1500:]}\n{rank_output(logs, 'stderr')}"

    assert "trained 8 steps on 2 process(es)" in rank_output(logs, "stdout")
    assert (output / "model.safetensors").is_file()
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["throughput"]["processes"] == 2 and summary["world_size"] == 2
    assert_same_steps(TrainedModel.from_dir(output), one_process)
