"""The frames Great Expectations sees: labels as the strings the model will train on, the task's
prepared input column, and the derived columns and table that GX has no built-in measure for
(each label's kind, rows shared with train, the per-class counts of train).

Low-cardinality columns are categoricals: GX filters nulls and copies the frame for every
metric, which on object columns of 1M rows costs ~10 ms each time; on categoricals it is a scan
of small integer codes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.data.columns import LABEL, SPLITS
from tuneops.components.data.loading import DatasetSplits
from tuneops.components.validation.checks import InputChecks

# Derived columns are prefixed so they never clash with a user's group column names.
LABEL_KIND = "_label_kind"

# Cells that mean "missing" in exported files (pandas, R, Excel) but arrive as strings because
# loading keeps raw values. A label declared in the config is never treated as missing.
MISSING_LABEL_TOKENS = frozenset({"", "nan", "null", "na", "n/a", "<na>", "#n/a"})

_INTEGER = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][+-]?\d+|inf(?:inity)?)", re.IGNORECASE)

INFERRED = "inferred from train"


def in_train_column(input_column: str) -> str:
    """The derived column that marks held-out rows whose input is also a train row."""
    return f"_{input_column}_in_train"


def expected_labels(
    splits: DatasetSplits, previous_labels: list[str] | None, max_classes: int
) -> tuple[list[str] | None, str]:
    """The label set to enforce and where it came from: declared, else the previous run's,
    else the distinct train labels (left unset when there are too many to be classes)."""
    if splits.declared_labels:
        return [str(label) for label in splits.declared_labels], "declared"
    if previous_labels:
        return [str(label) for label in previous_labels], "previous run"
    if LABEL not in splits.train.columns:
        return None, "no label column"
    strings, _ = label_strings(splits.train[LABEL], MISSING_LABEL_TOKENS)
    distinct = list(strings.categories)  # exactly the non-missing label strings seen in train
    if len(distinct) > max_classes:
        return None, "too many to infer"
    return sorted(str(value) for value in distinct), INFERRED


def prepare_splits(
    splits: DatasetSplits, input_column: str, inputs: InputChecks, missing_tokens: frozenset[str]
) -> dict[str, pd.DataFrame]:
    """Every split prepared for GX; held-out splits also mark the rows whose input is in train."""
    frames: dict[str, pd.DataFrame] = {}
    train_inputs: pd.Series | None = None
    shared_column = in_train_column(input_column)
    for name in SPLITS:
        frame = _prepare(splits.split(name), input_column, inputs, splits.group_columns, missing_tokens)
        if name == "train":
            train_inputs = frame[input_column].dropna() if input_column in frame else None
        elif input_column in frame:
            # Leakage: held-out rows whose exact input is also a train row (hash join, O(n)).
            shared = frame[input_column].isin(train_inputs) if train_inputs is not None else False
            frame[shared_column] = np.asarray(shared & frame[input_column].notna(), dtype=bool)
        frames[name] = frame
    return frames


def _prepare(
    frame: pd.DataFrame, input_column: str, inputs: InputChecks, groups: list[str], missing_tokens: frozenset[str]
) -> pd.DataFrame:
    """The columns GX validates: the input as the task prepares it, the label as the string the
    model will see (null when missing), the group columns, and derived columns for types."""
    data: dict[str, Any] = {}
    if input_column in frame.columns:
        data.update(inputs.prepare(frame[input_column]))
    if LABEL in frame.columns:
        data[LABEL], data[LABEL_KIND] = label_strings(frame[LABEL], missing_tokens)
    for group in groups:
        if group in frame.columns and group not in data:
            try:
                data[group] = pd.Categorical(frame[group])
            except TypeError:  # unhashable cells: validated as they are
                data[group] = frame[group].to_numpy()
    return pd.DataFrame(data, index=pd.RangeIndex(len(frame)))


def categorical(row_codes: np.ndarray, values: np.ndarray) -> pd.Categorical:
    """Rows given as positions into ``values`` (-1 = missing; ``values`` may hold None and
    repeats) as a Categorical of the distinct non-null values."""
    value_codes, categories = pd.factorize(values, use_na_sentinel=True)
    codes = np.append(value_codes, -1)[row_codes]  # position -1 lands on the appended -1
    return pd.Categorical.from_codes(codes, categories=categories)


def label_strings(raw: pd.Series, missing_tokens: frozenset[str]) -> tuple[pd.Categorical, pd.Categorical]:
    """Labels as the strings the model trains on (null when missing) and each row's kind:
    text, integer, float, boolean or other. Work is done once per distinct value, not per row."""
    values = raw.to_numpy(dtype=object, na_value=None)
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except TypeError:  # unhashable cells (lists or dicts from JSON) are compared by their text
        values = np.array([v if v is None or isinstance(v, (str, int, float, bool)) else repr(v) for v in values], dtype=object)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    strings = np.empty(len(uniques), dtype=object)
    kinds = np.empty(len(uniques), dtype=object)
    for position, value in enumerate(uniques):
        text = value if isinstance(value, str) else str(value)
        missing = text.strip().lower() in missing_tokens
        strings[position] = None if missing else text
        kinds[position] = None if missing else _kind(value)
    return categorical(codes, strings), categorical(codes, kinds)


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        stripped = value.strip()
        if _INTEGER.fullmatch(stripped):
            return "integer"
        if _FLOAT.fullmatch(stripped):
            return "float"
        return "text"
    return "other"


# The per-class table's column of each class name folded (case and surrounding whitespace
# dropped): two classes with the same folded name ("Positive", "positive ") are one class
# spelled two ways far more often than two meanings.
FOLDED = "folded"


def class_table(train: pd.DataFrame, expected: list[str] | None) -> pd.DataFrame:
    """One row per class of train: its count, how many times smaller it is than the largest
    class and its ``FOLDED`` name. Declared/previous classes absent from train appear with
    count 0."""
    counts = train[LABEL].value_counts(dropna=True) if LABEL in train else pd.Series(dtype="int64")
    counts = counts[counts > 0]  # a categorical lists unused categories with count 0
    counts.index = counts.index.astype(object)
    if expected is not None:
        counts = counts.reindex(expected, fill_value=0)
    table = pd.DataFrame({"label": counts.index.astype(str), "count": counts.to_numpy(dtype="int64")})
    largest = table["count"].max() if len(table) else 0
    # A class with no examples has no ratio; the per-class minimum reports it instead.
    table["largest_over_count"] = np.where(table["count"] > 0, largest / table["count"].clip(lower=1), np.nan)
    table[FOLDED] = [label.strip().casefold() for label in table["label"]]
    return table
