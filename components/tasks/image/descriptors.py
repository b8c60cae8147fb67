"""Per-image descriptors for drift: brightness, contrast, colourfulness, width, height, aspect ratio
and file size, computed from a small thumbnail so thousands of images take seconds.

Drift compares these numbers between a reference sample (training images) and current data (the
test split, or production traffic); ``ImageClassification.descriptors`` is where the spine finds them.
Serving never keeps pixels: the prediction log keeps ``log_record`` (the content hash and these
descriptors, as one JSON string), and ``image_descriptors`` reads such records back as well as
image paths and bytes, so traffic and reference are described alike.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.tasks.image.decode import ImageProblem, content_hash, decode_bytes, default_limits
from tuneops.components.tasks.image.decode import read_image_bytes

DESCRIPTORS = ("brightness", "contrast", "colourfulness", "width", "height", "aspect_ratio", "file_bytes")
#: the key of the content hash in a ``log_record``
HASH_KEY = "image"

# Descriptors are measured on a thumbnail whose longer side is at most this many pixels: decoding
# dominates the cost, and mean brightness and colour barely move with the scale (the contrast of
# fine texture does, but reference and current are measured at the same scale).
_THUMBNAIL_SIDE = 64
# ITU-R BT.601 luma weights, the ones Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_image(value: Any):
    """``(file bytes, decoded RGB PIL image)`` of a path or bytes, through decode.py, within
    ``decode.default_limits`` (the bounds the model's own reads apply: an image is either usable
    everywhere or nowhere). Raises ImageProblem with a one-line reason (named after the file)."""
    data = read_image_bytes(value, default_limits())
    name = Path(value).name if isinstance(value, (str, os.PathLike)) else ""
    return data, decode_bytes(data, default_limits(), name=name)


def thumbnail(image, side: int = _THUMBNAIL_SIDE) -> np.ndarray:
    """The image shrunk (box filter, aspect kept) to at most ``side`` pixels a side, as float32
    RGB in [0, 1], shape (height, width, 3)."""
    from PIL import Image

    width, height = image.size
    scale = min(1.0, side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap: an integer box reduction first, then the exact resize: fast on large photos.
    small = image.resize(size, Image.Resampling.BOX, reducing_gap=2.0) if scale < 1.0 else image
    return np.asarray(small, dtype=np.float32) / 255.0


def describe_image(image, file_bytes: int) -> dict[str, float]:
    """The descriptors of one decoded RGB image whose file has ``file_bytes`` bytes.

    - brightness: mean luma in [0, 1] (0 black, 1 white);
    - contrast: standard deviation of luma, in [0, 0.5];
    - colourfulness: Hasler & Suesstrunk's (2003) metric on [0, 1] channels (0 for gray images);
    - width, height (pixels), aspect_ratio (width / height) and file_bytes, from the full image.
    """
    pixels = thumbnail(image)
    luma = pixels @ _LUMA
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    rg, yb = red - green, 0.5 * (red + green) - blue
    colourfulness = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()),
                                                                                      float(yb.mean()))
    width, height = image.size
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "colourfulness": colourfulness,
        "width": float(width),
        "height": float(height),
        "aspect_ratio": width / height,
        "file_bytes": float(file_bytes),
    }


def describe_bytes(data: bytes) -> dict[str, float]:
    """The descriptors of one image file's bytes; every descriptor NaN when it cannot be decoded
    (serving describes images it already validated, so NaN means the log was handed junk)."""
    try:
        _, image = load_image(bytes(data))
    except ImageProblem:
        return dict.fromkeys(DESCRIPTORS, math.nan)
    return describe_image(image, len(data))


def log_record(data: bytes, descriptors: dict[str, float] | None = None) -> str:
    """What the prediction log keeps of one served image: ``{"image": "sha256:...", "brightness": ...}``
    as compact JSON (``descriptors`` when already computed, else ``describe_bytes(data)``).

    A JSON object, not a bare hash, so the monitor's ``is_hashed`` keeps it for drift."""
    described = descriptors if descriptors is not None else describe_bytes(data)
    record = {HASH_KEY: content_hash(bytes(data))}
    record.update({name: _json_number(described.get(name, math.nan)) for name in DESCRIPTORS})
    return json.dumps(record, separators=(",", ":"))


def image_descriptors(inputs: pd.Series, reference: pd.Series | None = None) -> pd.DataFrame:
    """One row of ``DESCRIPTORS`` per input, in order; a row of NaN for an input that is not a
    readable image.

    Inputs are image paths, image bytes, or ``log_record`` strings from the prediction log.
    ``reference`` is accepted for the task seam and not needed: unlike text's vocabulary share,
    every image descriptor is a property of the image alone.
    """
    rows = [_describe_value(value) for value in inputs.tolist()]
    return pd.DataFrame(rows, columns=list(DESCRIPTORS), dtype=float)


def _describe_value(value: Any) -> dict[str, float]:
    if isinstance(value, str) and value.startswith("{"):
        return _from_record(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return describe_bytes(bytes(value))
    try:
        data, image = load_image(value)
    except ImageProblem:
        return dict.fromkeys(DESCRIPTORS, math.nan)
    return describe_image(image, len(data))


def _from_record(text: str) -> dict[str, float]:
    """The descriptors of a ``log_record``; NaN for what it lacks (an older or foreign record)."""
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    return {name: _float_or_nan(record.get(name)) for name in DESCRIPTORS}


def _float_or_nan(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _json_number(value: float) -> float | None:
    """NaN is not JSON: an unknown descriptor is logged as null and read back as NaN."""
    return float(value) if math.isfinite(value) else None
