"""What loading refuses before (or instead of) reading a data source, each as one line.

Reading the wrong thing can hang or exhaust memory rather than fail: a FIFO named ``x.csv``
blocks the first read forever, ``/dev/urandom`` read as JSONL grows without end, and a huge file
is loaded whole by pandas. So only regular files are opened, and a source's size is checked
against ``data.max_bytes`` from ``stat`` alone, before its first byte is read. The column roles
(input, label, groups) and the shape of the labels are checked here too: both would otherwise
surface later as an internal pandas error or as classes named ``['a', 'b']``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype, is_scalar

from tuneops.components.config import DataConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tuneops.components.tasks.base import Task

# infer_dtype kinds that hold nothing but scalars: the common label columns skip the per-row scan.
_SCALAR_KINDS = frozenset({"string", "empty", "integer", "floating", "mixed-integer-float", "boolean", "decimal"})


def check_regular_file(path: Path) -> None:
    """DataError unless ``path`` (links followed) is a regular file: a FIFO would block the read
    forever and a device (``/dev/urandom``, ``/dev/zero``) never end, so neither is opened."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise DataError(f"data: {path} is not a regular file")


def check_source_size(path: Path, max_bytes: int) -> None:
    """DataError when a file, or a saved dataset folder's files together, hold more than
    ``max_bytes``, or when a file in the folder is not a regular file (the dataset loader would
    open it). Sizes come from ``stat``: nothing is read."""
    if path.is_dir():
        size = 0
        for directory, _folders, files in os.walk(path):
            for name in files:
                inside = Path(directory, name)
                check_regular_file(inside)
                size += inside.stat().st_size
    else:
        size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"data: {path} holds {size:,} bytes, over data.max_bytes ({max_bytes:,}); "
                        "raise data.max_bytes to read it, or sample the file")


def check_input_files_size(values: pd.Series, max_bytes: int, source: Path) -> None:
    """DataError when the distinct regular files named in ``values`` (absolute path strings: the
    images of a class folder or a table) hold more than ``max_bytes`` together. One ``stat`` each;
    missing and non-regular files count nothing here, as validation reports each of them (and
    never opens a non-regular one)."""
    total = files = 0
    for value in pd.unique(values.dropna()):
        if not isinstance(value, str):
            continue
        try:
            status = os.stat(value)
        except OSError:
            continue
        if stat.S_ISREG(status.st_mode):
            total += status.st_size
            files += 1
    if total > max_bytes:
        raise DataError(f"data: the {files:,} input files of {source.name} hold {total:,} bytes, over "
                        f"data.max_bytes ({max_bytes:,}); raise data.max_bytes to read them, or use fewer")


def check_column_roles(config: DataConfig, task: "Task") -> None:
    """ConfigError unless the input, label and group columns are different columns, and no group
    takes a name the splits give the input or label column (``text``, ``label``). What the config
    alone can tell (repeated groups, a group that is the label column) ``DataConfig`` refuses."""
    source = task.source_column(config)
    # A task's input column is configured as ``data.<input noun>_column`` (data.text_column).
    source_key = f"data.{task.input_noun}_column"
    if source == config.label_column:
        raise ConfigError(f"config: {source_key} and data.label_column name the same column")
    for group in config.groups:
        if group == source:
            raise ConfigError(f"config: data.group_columns names the {task.input_noun} column {group!r} "
                              f"({source_key}); a group must be another column")
        if group in (task.input_column, LABEL):
            # The splits rename the input and label columns to these names, so the group would clash.
            role = (f"{source_key} ({source!r})" if group == task.input_column
                    else f"data.label_column ({config.label_column!r})")
            raise ConfigError(f"config: data.group_columns names {group!r}, the name tuneops gives {role} in "
                              "its splits; rename that group column in the file")


def check_scalar_labels(labels: pd.Series, column: str, path: Path) -> None:
    """DataError naming the first row whose label is a list, dict or array (JSON arrays, Parquet
    list or struct columns): a label is one value, and ``str(['a', 'b'])`` must never become a class."""
    if labels.dtype != object or infer_dtype(labels, skipna=True) in _SCALAR_KINDS:
        return
    scalar = labels.map(is_scalar).to_numpy(dtype=bool)
    if scalar.all():
        return
    row = int(np.flatnonzero(~scalar)[0])
    value = labels.iloc[row]
    shown = value.tolist() if isinstance(value, np.ndarray) else value
    kind = "a dict" if isinstance(value, dict) else "a list"
    text = repr(shown)
    text = text if len(text) <= 60 else text[:57] + "..."
    raise DataError(f"data: data.label_column '{column}' holds {kind}, not one label, in row {row + 1} of "
                    f"{path.name} ({text}); give each row a single label (a name or an integer id)")
