"""Resumable training: the loop's state, saved atomically every N steps and found again on resume.

A checkpoint is a directory ``checkpoints/step-<N>`` next to the run's model directory, holding the
trainable weights and the best weights so far (safetensors), the optimizer / schedule / loss-scaler
state, each process's random-number state and ``state.json`` (step, data position, history, early
stopping). It is written under a temporary name and renamed into place with ``os.replace``, so a
``step-*`` directory is always complete: a run killed mid-write leaves only a ``.tmp-*`` directory,
which the next start removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from tuneops.components.config import TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.errors import ConfigError
from tuneops.components.training.runtime import DistributedContext

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "state.json"
# Settings that change how fast or where a run works, not what it computes: a resumed run may
# change them (e.g. more loader workers, a different checkpoint interval) and still continue.
OPERATIONAL_KEYS = {"num_workers", "threads", "checkpoint_every_steps", "compile", "peak_tflops", "processes"}


@dataclass
class TrainingState:
    """Everything about the loop's progress that a resumed run needs (JSON-serialisable)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_row: dict = field(default_factory=dict)
    evals_since_best: int = 0
    stopped_early: bool = False
    rows_seen: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    model_flops: float = 0.0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0


def checkpoint_root(output_dir: Path) -> Path:
    """Where a run's checkpoints live: beside its model directory (``runs/<id>/checkpoints``)."""
    return Path(output_dir).parent / "checkpoints"


def run_fingerprint(config: TrainingConfig, checkpoint: str, labels: list[str],
                    train: pd.DataFrame, validation: pd.DataFrame, input_column: str) -> str:
    """A hash of everything that decides a run's numbers: a checkpoint resumes only a run with the
    same fingerprint (same data, labels, base checkpoint and training settings). ``input_column``
    is the task's column of model inputs."""
    digest = hashlib.sha256()
    settings = config.model_dump(mode="json", exclude=OPERATIONAL_KEYS)
    digest.update(json.dumps({"config": settings, "checkpoint": checkpoint, "labels": labels}, sort_keys=True).encode())
    for frame in (train, validation):
        content = frame[[input_column, LABEL]].astype(str)
        digest.update(pd.util.hash_pandas_object(content, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint directory under ``root``, or None."""
    if not root.is_dir():
        return None
    complete = [path for path in root.glob(f"{CHECKPOINT_PREFIX}*") if (path / STATE_FILE).exists()]
    return max(complete, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX):]), default=None)


def clear_checkpoints(root: Path) -> None:
    """Remove every checkpoint (a fresh run, or a finished one whose model is saved)."""
    shutil.rmtree(root, ignore_errors=True)


def remove_partial_checkpoints(root: Path) -> None:
    """Remove ``.tmp-*`` directories left by a run killed while writing a checkpoint."""
    if root.is_dir():
        for partial in root.glob(".tmp-*"):
            shutil.rmtree(partial, ignore_errors=True)


def save_checkpoint(root: Path, fingerprint: str, state: TrainingState, trainable: dict, best: dict | None,
                    optimizer, scheduler, scaler, context: DistributedContext) -> Path:
    """Write a checkpoint atomically; every process of a distributed run must call this together.

    Each process writes its own random-number state; the main process writes the rest and renames
    the directory into place, then removes older checkpoints (one complete checkpoint is kept).
    """
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    name = f"{CHECKPOINT_PREFIX}{state.step:08d}"
    partial = root / f".tmp-{name}"
    final = root / name
    if context.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    if context.enabled:
        dist.barrier()
    torch.save(_rng_state(), partial / f"rng-rank{context.rank}.pt")
    _fsync(partial / f"rng-rank{context.rank}.pt")
    if context.enabled:
        dist.barrier()
    if context.is_main:
        save_file(_cpu_contiguous(trainable), str(partial / "trainable.safetensors"))
        if best is not None:
            save_file(_cpu_contiguous(best), str(partial / "best.safetensors"))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            partial / "optimizer.pt",
        )
        (partial / STATE_FILE).write_text(json.dumps({"fingerprint": fingerprint, "state": asdict(state)}))
        for path in partial.iterdir():
            _fsync(path)
        os.replace(partial, final)
        _fsync(root)
        for older in root.glob(f"{CHECKPOINT_PREFIX}*"):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
    if context.enabled:
        dist.barrier()
    return final


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back: the loop state and the tensors to restore."""

    path: Path
    state: TrainingState
    trainable: dict
    best: dict | None
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    rng: dict | None


def load_checkpoint(path: Path, fingerprint: str, rank: int) -> LoadedCheckpoint:
    """Read a checkpoint for process ``rank``; refuse one written by a different run setup."""
    import torch
    from safetensors.torch import load_file

    saved = json.loads((path / STATE_FILE).read_text())
    if saved.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"config: cannot resume from {path}: the data, labels, base checkpoint or training settings "
            "differ from the interrupted run (start a new run, or restore the original config)"
        )
    # weights_only: these files could be swapped by anyone with write access to the run folder.
    extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    rng_path = path / f"rng-rank{rank}.pt"
    return LoadedCheckpoint(
        path=path,
        state=TrainingState(**saved["state"]),
        trainable=load_file(str(path / "trainable.safetensors")),
        best=load_file(str(path / "best.safetensors")) if (path / "best.safetensors").exists() else None,
        optimizer=extra["optimizer"],
        scheduler=extra["scheduler"],
        scaler=extra["scaler"],
        rng=torch.load(rng_path, map_location="cpu", weights_only=True) if rng_path.exists() else None,
    )


def restore_rng(state: dict, device: str) -> None:
    """Put back the dropout random streams saved with a checkpoint."""
    import torch

    torch.set_rng_state(state["cpu"])
    if device.startswith("cuda") and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _rng_state() -> dict:
    import torch

    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _cpu_contiguous(tensors: dict) -> dict:
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk, so a rename never points at data still in the page cache."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
