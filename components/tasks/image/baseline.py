"""The classical floor of image classification: tiny-image pixels and colour histograms with a
class-balanced logistic regression (scikit-learn).

Every selection run trains it on the same sample the pretrained candidates are probed on, and the
gate can require the fine-tuned model to beat it. Raw pixels of a 16x16 thumbnail are the classic
"tiny images" baseline (Torralba et al. 2008): weak on photographs, strong wherever the classes
differ in shape or colour layout (digits, icons, scans), which is exactly where a fine-tuned model
that learned nothing would otherwise pass. Balanced class weights and a regularisation strength
picked by cross-validation keep it honest on imbalanced data, as for the text floor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.errors import DataError
from tuneops.components.logistic_floor import LogisticFloor, fit_logistic_floor
from tuneops.components.tasks.image import IMAGE
from tuneops.components.tasks.image.decode import ImageProblem
from tuneops.components.tasks.image.descriptors import load_image

# 16x16 luma (256 features) for shape, a 4x4 RGB thumbnail (48) for the colour layout and an
# 8-bin histogram per channel (24) for the colour distribution: 328 features, a few ms per image.
_GRAY_SIDE = 16
_COLOUR_SIDE = 4
_HISTOGRAM_SIDE = 32
_BINS = 8
# Inverse regularisation strengths tried; on ties GridSearchCV keeps the first, so the more
# regularised model wins a tie. Standardised pixels are many and correlated: strong regularisation
# (small C) is usually chosen.
C_GRID = (0.01, 0.1, 1.0)
# Used without a search when a class has a single training row (no stratified split exists).
FALLBACK_C = 0.1


def image_features(inputs: list[Any]) -> np.ndarray:
    """The floor's features of image paths or bytes, shape (len(inputs), 328), float32.

    Raises DataError naming the first image that cannot be read or decoded.
    """
    from PIL import Image

    rows = np.empty((len(inputs), _GRAY_SIDE ** 2 + 3 * _COLOUR_SIDE ** 2 + 3 * _BINS), dtype=np.float32)
    edges = np.linspace(0, 256, _BINS + 1)
    for row, value in enumerate(inputs):
        try:
            _, image = load_image(value)
        except ImageProblem as problem:
            raise DataError(f"baseline: image {row} is not usable: {problem}") from None
        # Squashed to squares on purpose: the floor compares layouts, and aspect is a descriptor.
        small = image.resize((_HISTOGRAM_SIDE, _HISTOGRAM_SIDE), Image.Resampling.BOX, reducing_gap=2.0)
        gray = np.asarray(small.convert("L").resize((_GRAY_SIDE, _GRAY_SIDE), Image.Resampling.BOX),
                          dtype=np.float32)
        colour = np.asarray(small.resize((_COLOUR_SIDE, _COLOUR_SIDE), Image.Resampling.BOX), dtype=np.float32)
        pixels = np.asarray(small).reshape(-1, 3)
        histogram = [np.histogram(pixels[:, channel], bins=edges)[0] / len(pixels) for channel in range(3)]
        rows[row] = np.concatenate([gray.ravel() / 255.0, colour.ravel() / 255.0, *histogram])
    return rows


def train_baseline(train_df: pd.DataFrame, labels: list[str] | None = None) -> LogisticFloor:
    """Fit the tiny-image floor on ``train_df`` (columns ``image``: paths or bytes, ``label``).

    Features are computed once; C is chosen from ``C_GRID`` by stratified 3-fold cross-validation
    on these rows, ``FALLBACK_C`` when a class has a single row; see
    ``logistic_floor.fit_logistic_floor``. Raises DataError when there is nothing to learn from (a
    single class) or an image cannot be read.
    """
    from sklearn.preprocessing import StandardScaler

    return fit_logistic_floor(
        train_df, IMAGE, labels, steps=[("scaler", StandardScaler())], featurise=image_features,
        c_grid=C_GRID, fallback_c=FALLBACK_C, max_iter=1000, name="tiny image + logistic regression",
        architecture="16x16 pixels + colour histogram, StandardScaler + LogisticRegression(class_weight=balanced)",
        summary="balanced logistic regression on 16x16 pixels + colour histograms",
    )
