"""Feeding the fine-tune loop: map labels to class indices once, plan length-grouped batches,
split each optimizer step into micro-batches (gradient accumulation) and per-process shares (data
parallelism), and collate them through the task with dynamic padding.

The plan of an epoch depends only on (seed, epoch, lengths, batch size), never on the number of
processes or on where a run was resumed, so a resumed or distributed run sees the same global
batches in the same order as an uninterrupted single-process one. Inputs stay the task's: this
module sees only ``EncodedInputs.lengths`` (what padding costs) and hands rows to ``task.collate``,
with a random stream for the task's augmentation (``training.augment``) seeded by the seed, the
step, the micro-batch and the process: a resumed run augments its batches exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tuneops.components.errors import DataError
from tuneops.components.tasks.base import Augmentation, EncodedInputs, Task

# Sort windows of 50 batches by length (as HF's group_by_length does with its "megabatches"):
# batches of similar lengths pad little, while batch order stays random across the epoch.
WINDOW_BATCHES = 50
# Keeps the augmentation streams apart from the epoch plans' ([seed, epoch]) for any seed.
AUGMENT_STREAM = 0xA06


def augmentation_rng(seed: int, step: int, micro: int, rank: int) -> np.random.Generator:
    """The random stream of the augmentation of one micro-batch share: a function of where it is
    in the run only, so a resumed (or repeated) run draws the same augmentations."""
    return np.random.default_rng([seed, AUGMENT_STREAM, step, micro, rank])


def encode_labels(labels: pd.Series, label_ids: dict[str, int], split: str) -> np.ndarray:
    """Class indices of ``labels`` (int64), in row order.

    Raises DataError naming the first label that is not in the label set.
    """
    labels = labels.astype(str)
    unknown = sorted(set(labels) - set(label_ids))
    if unknown:
        raise DataError(f"data: {split} has label {unknown[0]!r} which is not in the label set {sorted(label_ids)}")
    return labels.map(label_ids).to_numpy(dtype=np.int64)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The global batches of one epoch: shuffled, grouped by length within windows, in random order.

    Every row appears exactly once; within a batch, rows are sorted by length.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * WINDOW_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batches(batch: np.ndarray, accumulation: int, world_size: int, rank: int) -> list[tuple[np.ndarray, bool]]:
    """This process's share of each micro-batch of one optimizer step, as (indices, is_placeholder).

    The step's rows (sorted by length) are cut into ``accumulation`` contiguous micro-batches, so
    each holds similar lengths, and each micro-batch is dealt round-robin to the processes, so each
    gets a similar amount of work. A process whose share is empty (a tiny last batch) runs the
    first row of the micro-batch with a loss weight of 0: every process must join each gradient
    all-reduce, and a zero-weighted row contributes an exactly zero gradient.
    """
    pieces = np.array_split(batch, min(accumulation, len(batch)))
    shares = []
    for piece in pieces:
        share = piece[rank::world_size]
        shares.append((share, False) if len(share) else (piece[:1], True))
    return shares


def padded_width(lengths: np.ndarray, multiple: int) -> int:
    """Longest length among rows, rounded up to ``multiple``: the width dynamic padding gives them
    (8 keeps tensor-core shapes on GPUs). Used to count padded tokens for the throughput figures."""
    longest = int(lengths.max()) if len(lengths) else 0
    return -(-longest // multiple) * multiple


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (k · count_c)`` per class (scikit-learn's 'balanced'); absent classes get weight 1."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.ones(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = len(labels) / (n_classes * counts[present])
    return weights


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step processed across all processes (the same numbers on every rank)."""

    rows: int
    real_tokens: int
    padded_tokens: int
    sequence_lengths: tuple[int, ...]


class StepDataset:
    """Item ``i`` = this process's micro-batches for optimizer step ``i`` of a list of global
    batches (each: the task's ``model(**inputs)`` tensors, the labels and the loss weight), plus the
    step's global statistics. A ``torch.utils.data.Dataset`` by protocol, so a DataLoader's workers
    can collate (and pin) ahead of the compute.

    With ``augment_seed`` (training batches when ``training.augment``; never validation) each
    micro-batch is collated with ``augmentation_rng(augment_seed, first_step + i, micro, rank)``:
    ``first_step`` is the number of optimizer steps the run made before item 0."""

    def __init__(self, task: Task, encoded: EncodedInputs, labels: np.ndarray, batches: list[np.ndarray],
                 accumulation: int, world_size: int, rank: int, pad_multiple: int,
                 class_weights: np.ndarray | None, augment_seed: int | None = None, first_step: int = 0,
                 augment_operations: tuple[str, ...] = ("flip", "crop", "jitter")) -> None:
        self.task = task
        self.encoded = encoded
        self.labels = labels
        self.batches = batches
        self.accumulation = accumulation
        self.world_size = world_size
        self.rank = rank
        self.pad_multiple = pad_multiple
        self.class_weights = class_weights
        self.lengths = encoded.lengths
        self.augment_seed = augment_seed
        self.augment_operations = tuple(augment_operations)
        self.first_step = first_step

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        import torch

        batch = self.batches[index]
        labels = self.labels[batch]
        # The loss is a sum over this process's rows divided by the step's global normaliser (row
        # count, or summed class weights): exactly the global mean, however the rows are split.
        normaliser = float(self.class_weights[labels].sum()) if self.class_weights is not None else float(len(batch))
        micro = []
        for position, (share, placeholder) in enumerate(
                micro_batches(batch, self.accumulation, self.world_size, self.rank)):
            augment = (None if self.augment_seed is None else Augmentation(
                augmentation_rng(self.augment_seed, self.first_step + index, position, self.rank),
                self.augment_operations))
            micro.append({
                "inputs": self.task.collate(self.encoded, share, self.pad_multiple, augment=augment),
                "labels": torch.from_numpy(self.labels[share]),
                "loss_weight": 0.0 if placeholder else 1.0 / normaliser,
            })
        return {"micro": micro, "stats": self.global_stats(batch)}

    def global_stats(self, batch: np.ndarray) -> StepStats:
        """Rows, real and padded tokens of a whole step, over every process's micro-batches."""
        padded = 0
        for piece in np.array_split(batch, min(self.accumulation, len(batch))):
            for rank in range(self.world_size):
                share = piece[rank::self.world_size]
                padded += len(share) * padded_width(self.lengths[share], self.pad_multiple)
        lengths = self.lengths[batch]
        return StepStats(
            rows=len(batch),
            real_tokens=int(lengths.sum()),
            padded_tokens=padded,
            sequence_lengths=tuple(int(n) for n in lengths),
        )


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``rows`` (the last batch may be short)."""
    return max(1, -(-rows // batch_size))
