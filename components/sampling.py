"""The one way rows are sampled: stratified by label, seeded, so every stage that needs a subset
(data splits, ``data.max_rows``, selection's probes) draws it alike."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneops.components.data.columns import LABEL


def stratified_sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """At most ``rows`` rows of ``frame`` with each label in its original share (at least one each)."""
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    labels = frame[LABEL].astype(str)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for value, count in labels.value_counts().items():
        positions = np.flatnonzero((labels == value).to_numpy())
        take = max(1, int(round(count * rows / len(frame))))
        picked.append(rng.choice(positions, size=min(take, count), replace=False))
    chosen = np.sort(np.concatenate(picked))
    return frame.iloc[chosen].reset_index(drop=True)


def stratified_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ``fraction`` of the rows, stratified by label where every class allows it.

    Classes too small to stratify fall back to a seeded random split; validation then reports
    them (minimum examples per class) rather than the split crashing.
    """
    rng = np.random.default_rng(seed)
    labels = frame[LABEL].astype(str)
    counts = labels.value_counts()
    held_out: list[np.ndarray] = []
    if len(counts) > 1 and counts.min() >= 2:
        for value in counts.index:
            positions = np.flatnonzero((labels == value).to_numpy())
            rng.shuffle(positions)
            take = max(1, int(round(len(positions) * fraction)))
            held_out.append(positions[:take])
        chosen = np.sort(np.concatenate(held_out))
    else:
        positions = rng.permutation(len(frame))
        chosen = np.sort(positions[: max(1, int(round(len(frame) * fraction)))])
    mask = np.zeros(len(frame), dtype=bool)
    mask[chosen] = True
    return frame[~mask], frame[mask]
