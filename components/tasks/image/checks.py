"""What validation checks about image inputs (``ImageClassification.input_checks``).

``prepare`` reads each file once (bounded, regular files only, through ``decode``) and gives
Great Expectations the input column as the content hash of the file's bytes, so the generic
duplicate and leakage checks compare image *content* (a copy under another name is still a
duplicate), plus derived columns that the checks read:

- ``image_decodes``: every file is a whole image in a supported format (missing, empty, corrupt,
  truncated, a text file named ``.jpg`` are reported with the file name and the reason);
- ``image_pixels``: width x height from the header within ``validation.max_image_pixels``, checked
  *before* decoding, so a decompression bomb is refused without being expanded;
- ``image_size``: both sides within ``validation.min_image_side`` / ``max_image_side``;
- ``image_mode`` (warn by default): grayscale, palette, alpha and other modes are converted to
  RGB for the model; the report counts them by mode.

Their names are the keys of ``ValidationConfig.severity``: user-facing, so never renamed.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.config import ValidationConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.tasks.image.decode import (
    ImageLimits, ImageProblem, content_hash, decode_bytes, decode_image, image_header, read_image_bytes,
)
from tuneops.components.validation.checks import Check, Explain, InputChecks
from tuneops.components.validation.contact_sheet import contact_sheet
from tuneops.components.validation.display import EXAMPLES, show
from tuneops.components.validation.prepare import categorical

# Derived columns (prefixed so they never clash with a user's group columns).
IMAGE_FILE = "_image_file"
IMAGE_ERROR = "_image_error"
IMAGE_WIDTH = "_image_width"
IMAGE_HEIGHT = "_image_height"
IMAGE_PIXELS = "_image_pixels"
# The side that decides the size check: the shorter one when it is under the minimum, else the
# longer one; so one "between min and max" expectation covers both bounds.
IMAGE_SIDE = "_image_limiting_side"
IMAGE_MODE = "_image_mode"
IMAGE_FORMAT = "_image_format"

# Pillow's modes in words, for the conversion report.
MODE_NAMES = {
    "1": "1-bit", "L": "grayscale", "LA": "grayscale + alpha", "P": "palette", "PA": "palette + alpha",
    "RGBA": "RGB + alpha", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV",
    "I": "32-bit grayscale", "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale", "F": "float grayscale",
}
# Thumbnails of the contact sheet: at most this many pixels a side (the page shows them 72 high).
THUMBNAIL_SIDE = 96


@dataclass(frozen=True)
class Inspection:
    """What validation learns about one input: its content hash and header, or why it is unusable."""

    content: str | None = None
    error: str | None = None
    width: float = np.nan
    height: float = np.nan
    pixels: float = np.nan
    mode: str | None = None
    format: str | None = None


def image_limits(config: ValidationConfig) -> ImageLimits:
    """The limits of one image that ``config`` sets."""
    return ImageLimits(max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels,
                       min_side=config.min_image_side, max_side=config.max_image_side)


def image_checks(config: ValidationConfig, column: str) -> InputChecks:
    """The image checks of ``column`` (paths or bytes) with the limits of ``config``."""
    import great_expectations.expectations as gxe

    limits = image_limits(config)
    schema = [
        Check("image_decodes", "images decode", column, gxe.ExpectColumnValuesToBeNull,
              {"column": IMAGE_ERROR},
              "files that are not decodable images (missing, empty, corrupt, truncated or not an image)",
              _explain_errors),
        Check("image_pixels", "image pixel count within the limit", column, gxe.ExpectColumnValuesToBeBetween,
              {"column": IMAGE_PIXELS, "max_value": config.max_image_pixels},
              f"images over {config.max_image_pixels:,} pixels (validation.max_image_pixels), refused from "
              "their header without decoding (a decompression bomb?)",
              _explain_pixels(config.max_image_pixels)),
    ]
    content = [
        Check("image_size", "image sides within bounds", column, gxe.ExpectColumnValuesToBeBetween,
              {"column": IMAGE_SIDE, "min_value": config.min_image_side, "max_value": config.max_image_side},
              f"images with a side under {config.min_image_side:,} or over {config.max_image_side:,} pixels "
              "(validation.min_image_side / max_image_side)",
              _explain_sides(config.min_image_side, config.max_image_side)),
        Check("image_mode", "images in RGB", column, gxe.ExpectColumnValuesToBeInSet,
              {"column": IMAGE_MODE, "value_set": ["RGB"]},
              "images that are not RGB (grayscale, palette, alpha...): converted to RGB for the model, "
              "transparency over white", _explain_modes),
    ]
    return InputChecks(prepare=lambda raw: image_columns(column, raw, limits, config.min_image_side),
                       schema=schema, content=content, preview=lambda frame: _preview(frame, limits))


def image_columns(column: str, raw: pd.Series, limits: ImageLimits, min_side: int) -> dict[str, Any]:
    """The frame columns GX sees for one split: the content hash as ``column`` and the derived columns.

    Each file is read once; files with the same bytes are inspected once.
    """
    values = raw.to_numpy(dtype=object, na_value=None)
    seen: dict[str, Inspection] = {}
    found = [inspect_image(value, limits, seen) for value in values]
    width = np.array([i.width for i in found], dtype=np.float64)
    height = np.array([i.height for i in found], dtype=np.float64)
    shorter, longer = np.fmin(width, height), np.fmax(width, height)
    rows = np.arange(len(found))
    return {
        column: np.array([i.content for i in found], dtype=object),
        IMAGE_FILE: np.array([_name(value) for value in values], dtype=object),
        IMAGE_ERROR: np.array([i.error for i in found], dtype=object),
        IMAGE_WIDTH: width,
        IMAGE_HEIGHT: height,
        IMAGE_PIXELS: np.array([i.pixels for i in found], dtype=np.float64),
        IMAGE_SIDE: np.where(shorter < min_side, shorter, longer),
        IMAGE_MODE: categorical(rows, np.array([i.mode for i in found], dtype=object)),
        IMAGE_FORMAT: categorical(rows, np.array([i.format for i in found], dtype=object)),
    }


def inspect_image(value: Any, limits: ImageLimits, seen: dict[str, Inspection] | None = None) -> Inspection:
    """Read one input (a path or bytes) once and inspect it: the header's size and mode, then a
    full decode, but only when the pixel count is within ``limits`` (a bomb is never expanded).

    Sides are measured, not enforced, here: the size check reports them. ``seen`` reuses the
    inspection of identical bytes.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return Inspection(error="no image path")
    try:
        data = read_image_bytes(value, limits)
    except ImageProblem as problem:
        return Inspection(error=_reason(problem, value))
    content = content_hash(data)
    if seen is not None and content in seen:
        return seen[content]
    # The header is read with no size limit: the pixel and size checks report sizes themselves.
    measured = ImageLimits(max_bytes=limits.max_bytes, max_pixels=sys.maxsize, min_side=1, max_side=sys.maxsize)
    try:
        header = image_header(data, measured)
    except ImageProblem as problem:
        if not _beyond_pillow_limit(problem):
            inspection = Inspection(content=content, error=_reason(problem, value))
        else:
            # Pillow refuses to open a header above twice its own limit and gives no size; the
            # image has at least that many pixels, which the pixel check reports.
            from PIL import Image

            floor = float(2 * (Image.MAX_IMAGE_PIXELS or 0) + 1)
            error = None if floor > limits.max_pixels else f"over Pillow's limit of {floor - 1:,.0f} pixels"
            inspection = Inspection(content=content, error=error, pixels=floor)
    else:
        error = None
        if header.pixels <= limits.max_pixels:
            try:
                # Every pixel decoded once: corrupt and truncated data fail here, not in training.
                decode_bytes(data, ImageLimits(max_bytes=limits.max_bytes, max_pixels=limits.max_pixels, max_side=sys.maxsize))
            except ImageProblem as problem:
                error = _reason(problem, value)
        inspection = Inspection(content=content, error=error, width=header.width, height=header.height,
                                pixels=header.pixels, mode=header.mode, format=header.format)
    if seen is not None:
        seen[content] = inspection
    return inspection


def _beyond_pillow_limit(problem: ImageProblem) -> bool:
    """Whether ``image_header`` refused the image because Pillow's own bomb guard fired before
    the size was known."""
    return problem.kind == "bomb"


def _reason(problem: ImageProblem, value: Any) -> str:
    """The problem's message without a leading file name (the report shows the file itself)."""
    message = str(problem)
    name = Path(value).name + ": " if isinstance(value, (str, os.PathLike)) else ""
    return message[len(name):] if name and message.startswith(name) else message


def _name(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, os.PathLike)) and str(value).strip() else None


def _short(file: Any) -> str:
    """A file as its class folder and name (``cat/1.jpg``), enough to find it."""
    if not isinstance(file, str):
        return "row"
    path = Path(file)
    return show(f"{path.parent.name}/{path.name}" if path.parent.name else path.name, 60)


def _explain_errors(frame: pd.DataFrame) -> tuple[int, list[str]]:
    bad = frame[IMAGE_ERROR].notna().to_numpy()
    shown = [f"{_short(file)}: {error}" for file, error in
             zip(frame.loc[bad, IMAGE_FILE].head(EXAMPLES), frame.loc[bad, IMAGE_ERROR].head(EXAMPLES))]
    return int(bad.sum()), shown


def _explain_pixels(limit: int) -> Explain:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        bad = (frame[IMAGE_PIXELS] > limit).to_numpy()
        return int(bad.sum()), _sizes(frame, bad)
    return explain


def _explain_sides(low: int, high: int) -> Explain:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        side = frame[IMAGE_SIDE]
        bad = ((side < low) | (side > high)).to_numpy()
        return int(bad.sum()), _sizes(frame, bad)
    return explain


def _sizes(frame: pd.DataFrame, bad: np.ndarray) -> list[str]:
    """A few failing rows as ``'cat/1.png' 30000x30000`` (or ``over N pixels`` without a size)."""
    shown = []
    chosen = frame.loc[bad].head(EXAMPLES)
    for file, width, height, pixels in zip(chosen[IMAGE_FILE], chosen[IMAGE_WIDTH], chosen[IMAGE_HEIGHT],
                                           chosen[IMAGE_PIXELS]):
        size = f"{width:.0f}x{height:.0f}" if width == width else f"over {pixels - 1:,.0f} pixels"
        shown.append(f"{_short(file)} {size}")
    return shown


def _explain_modes(frame: pd.DataFrame) -> tuple[int, list[str]]:
    modes = frame[IMAGE_MODE].astype(object)
    converted = modes[modes.notna() & (modes != "RGB")]
    counts = converted.value_counts()
    return int(len(converted)), [f"{mode} ({MODE_NAMES.get(mode, 'other')}) x{count:,}"
                                 for mode, count in counts.head(EXAMPLES).items()]


def _preview(frame: pd.DataFrame, limits: ImageLimits) -> str:
    """The contact sheet of train: only images that passed every check are decoded again."""
    if IMAGE_FILE not in frame or LABEL not in frame:
        return ""
    usable = (frame[IMAGE_ERROR].isna() & frame[IMAGE_FILE].notna() & (frame[IMAGE_PIXELS] <= limits.max_pixels)
              & frame[IMAGE_SIDE].between(limits.min_side, limits.max_side)).to_numpy()
    chosen = frame.loc[usable]
    files = chosen[IMAGE_FILE].tolist()
    return contact_sheet(chosen[LABEL].astype(object).tolist(), files, [_short(file) for file in files],
                         lambda file: thumbnail(file, limits))


def thumbnail(value: Any, limits: ImageLimits) -> bytes | None:
    """A PNG thumbnail of one image (at most ``THUMBNAIL_SIDE`` a side), or None when it cannot be decoded."""
    try:
        image = decode_image(value, limits)
    except ImageProblem:
        return None
    # Small images stay small: the page scales every thumbnail to one height, pixelated.
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
