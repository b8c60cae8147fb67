"""Text-length slices of the test split: every text falls in one bucket of characters
(``evaluation.length_buckets`` are the edges), and the evaluation scores each bucket."""

from __future__ import annotations

import numpy as np
import pandas as pd

LENGTH_COLUMN = "text_length"


def length_bucket_labels(edges: list[int]) -> list[str]:
    """The bucket names in order of length: ``<40``, ``40-79``, ..., ``>=160``."""
    edges = sorted(set(int(edge) for edge in edges))
    return [f"<{edges[0]}"] + [f"{low}-{high - 1}" for low, high in zip(edges, edges[1:])] + [f">={edges[-1]}"]


def length_bucket_names(lengths: np.ndarray, edges: list[int]) -> np.ndarray:
    """Bucket names such as ``<40``, ``40-79``, ``>=160`` for text lengths in characters."""
    names = length_bucket_labels(edges)
    edges = sorted(set(int(edge) for edge in edges))
    return np.array([names[int(np.searchsorted(edges, length, side="right"))] for length in lengths], dtype=object)


def length_slices(texts: pd.Series, edges: list[int]) -> dict[str, pd.Categorical]:
    """``{"text_length": bucket per text}``, as an ordered categorical so the report lists the
    buckets from short to long rather than alphabetically."""
    lengths = texts.astype(str).str.len().to_numpy()
    return {LENGTH_COLUMN: pd.Categorical(length_bucket_names(lengths, edges), categories=length_bucket_labels(edges),
                                          ordered=True)}
