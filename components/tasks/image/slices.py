"""Image slices of the test split: every image falls in one size bucket (by its shorter side) and
one brightness bucket (by its mean luma), and the evaluation scores each bucket, as it scores text
length buckets. A model that is fine on large, well-lit photos but fails on small or dark ones
shows up here rather than hiding in the average.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneops.components.config import EvaluationConfig
from tuneops.components.tasks.image.descriptors import image_descriptors

SIZE_COLUMN = "image_size"
BRIGHTNESS_COLUMN = "brightness"
UNREADABLE = "unreadable"
# Shorter side in pixels. Under 128 a picture is upscaled for a 224-pixel model input (thumbnails,
# CIFAR, MNIST); 384 and more is a photo that is downscaled a lot.
SIDE_EDGES = (128, 384)
# Mean luma in [0, 1]: most photographs average 0.3-0.6; under 0.3 is a night or backlit shot, from
# 0.7 an overexposed or white-background one.
BRIGHTNESS_EDGES = (0.3, 0.7)


def size_bucket_labels(edges: tuple[int, int] = SIDE_EDGES) -> list[str]:
    """The size bucket names from small to large: ``small (<128 px)``, ``medium (128-383 px)``, ..."""
    low, high = edges
    return [f"small (<{low} px)", f"medium ({low}-{high - 1} px)", f"large (>={high} px)"]


def brightness_bucket_labels(edges: tuple[float, float] = BRIGHTNESS_EDGES) -> list[str]:
    """The brightness bucket names from dark to bright: ``dark (<0.3)``, ``normal (0.3-0.7)``, ..."""
    low, high = edges
    return [f"dark (<{low:g})", f"normal ({low:g}-{high:g})", f"bright (>={high:g})"]


def size_slices(inputs: pd.Series, config: EvaluationConfig | None = None, *,
                side_edges: tuple[int, int] = SIDE_EDGES,
                brightness_edges: tuple[float, float] = BRIGHTNESS_EDGES) -> dict[str, pd.Categorical]:
    """``{"image_size": bucket per image, "brightness": bucket per image}`` for image paths or bytes.

    ``config`` is the evaluation section the spine hands every task's slices; the image buckets'
    edges are ``side_edges`` and ``brightness_edges`` (the evaluation section has no image
    fields yet).

    Both are ordered categoricals, so the report lists small to large and dark to bright; an
    image that cannot be read (only possible when validation's decode check was set to warn) is
    in an ``unreadable`` bucket of each. Each image is decoded once, for both.
    """
    described = image_descriptors(inputs)
    shorter = np.fmin(described["width"].to_numpy(), described["height"].to_numpy())
    return {
        SIZE_COLUMN: _bucketed(shorter, side_edges, size_bucket_labels(side_edges)),
        BRIGHTNESS_COLUMN: _bucketed(described["brightness"].to_numpy(), brightness_edges,
                                     brightness_bucket_labels(brightness_edges)),
    }


def _bucketed(values: np.ndarray, edges: tuple[float, float], names: list[str]) -> pd.Categorical:
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    buckets = np.where(np.isnan(values), UNREADABLE, np.asarray(names, dtype=object)[np.minimum(index, 2)])
    return pd.Categorical(buckets, categories=[*names, UNREADABLE], ordered=True)
