"""Finding the failing rows of a failed check: how many, and a few of them to show.

These run only for checks that failed, so a passing validation pays nothing for them. Each
builder returns an ``Explain``: a function of the split's prepared frame.
"""

from __future__ import annotations

import re

import pandas as pd

from tuneops.components.data.columns import LABEL
from tuneops.components.validation.checks import Explain
from tuneops.components.validation.display import EXAMPLES, show, show_match
from tuneops.components.validation.prepare import FOLDED, LABEL_KIND


def explain_nulls(column: str) -> Explain:
    """Rows with no value in ``column``, shown by their row number."""
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        bad = frame[column].isna()
        return int(bad.sum()), [f"row {i}" for i in frame.index[bad][:EXAMPLES]]
    return explain


def explain_regex(column: str, regex: str) -> Explain:
    """Values of ``column`` that match ``regex``, shown around the match."""
    pattern = re.compile(regex)

    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        values = frame[column].dropna()
        bad = values.astype(str).str.contains(pattern)
        shown = [show_match(v, pattern) for v in values[bad].head(EXAMPLES)]
        return int(bad.sum()), shown
    return explain


def explain_duplicates(column: str) -> Explain:
    """Rows repeating an earlier value of the split; shows the most repeated values."""
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        values = frame[column].dropna()
        repeated = values.duplicated(keep="first")
        top = values[values.isin(values[repeated])].value_counts().head(EXAMPLES)
        return int(repeated.sum()), [f"{show(value)} x{count:,}" for value, count in top.items()]
    return explain


def explain_leakage(column: str, shared_column: str) -> Explain:
    """Held-out rows marked in ``shared_column`` as also in train; shows their ``column`` values."""
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        shared = frame[shared_column].to_numpy(dtype=bool)
        return int(shared.sum()), [show(v) for v in pd.unique(frame.loc[shared, column])[:EXAMPLES]]
    return explain


def explain_kind(kind: str) -> Explain:
    """Rows whose label is of ``kind`` (e.g. float)."""
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        bad = (frame[LABEL_KIND] == kind).to_numpy()
        return int(bad.sum()), [show(v) for v in pd.unique(frame[LABEL].astype(object)[bad])[:EXAMPLES]]
    return explain


def explain_mixed_kinds(frame: pd.DataFrame) -> tuple[int, list[str]]:
    """Rows whose label kind is not the most common one; shows one label of each kind."""
    kinds = frame[LABEL_KIND].astype(object).dropna()
    counts = kinds.value_counts()
    # The rows of every kind but the most common one are the odd ones out.
    minority = kinds[kinds != counts.index[0]] if len(counts) else kinds
    shown = [f"{show(frame.at[i, LABEL])} ({kinds[i]})" for i in [kinds.index[kinds == k][0] for k in counts.index[:EXAMPLES]]]
    return int(len(minority)), shown


def explain_not_in_set(labels: list[str]) -> Explain:
    """Rows whose label is outside ``labels``; shows the commonest such labels."""
    allowed = set(labels)

    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        values = frame[LABEL].astype(object).dropna()
        bad = values[~values.isin(allowed)]
        return int(len(bad)), [f"{show(v)} x{n:,}" for v, n in bad.value_counts().head(EXAMPLES).items()]
    return explain


def explain_class_count(frame: pd.DataFrame) -> tuple[int, list[str]]:
    """The commonest classes (the count is of classes, so no row is wrong on its own)."""
    counts = frame[LABEL].astype(object).value_counts()
    return 0, [f"{show(v)} x{n:,}" for v, n in counts.head(EXAMPLES).items()]


def explain_label_change(previous: list[str]) -> Explain:
    """Labels new or missing against ``previous``; counts the rows of the new ones."""
    before = {str(label) for label in previous}

    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        now = set(frame[LABEL].astype(object).dropna().unique())
        added = sorted(now - before)
        gone = sorted(before - now)
        shown = [f"new {show(v)}" for v in added[:EXAMPLES]] + [f"missing {show(v)}" for v in gone[:EXAMPLES]]
        rows = int(frame[LABEL].astype(object).isin(added).sum())
        return rows, shown[:EXAMPLES]
    return explain


def explain_small_classes(minimum: int) -> Explain:
    """Classes of the per-class table with fewer than ``minimum`` train rows, smallest first."""
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        small = frame[frame["count"] < minimum].sort_values("count")
        return len(small), [f"{show(row.label)} ({row.count})" for row in small.head(EXAMPLES).itertuples()]
    return explain


def explain_variants(frame: pd.DataFrame) -> tuple[int, list[str]]:
    """Classes of the per-class table whose folded name another class shares, shown by group:
    ``'Positive' / 'positive' / 'positive ' (12 / 140 / 3)``."""
    shared = frame[frame[FOLDED].duplicated(keep=False)].sort_values([FOLDED, "label"])
    shown = [
        " / ".join(show(label) for label in group["label"]) + " (" + " / ".join(f"{n:,}" for n in group["count"]) + ")"
        for _, group in list(shared.groupby(FOLDED, sort=False))[:EXAMPLES]
    ]
    return len(shared), shown


def explain_imbalance(limit: float) -> Explain:
    """Classes more than ``limit`` times smaller than the largest, shown against it."""
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        largest = frame.loc[frame["count"].idxmax()]
        small = frame[frame["largest_over_count"] > limit].sort_values("count")
        shown = [
            f"{show(row.label)} {row.count:,} vs {show(largest['label'])} {int(largest['count']):,}"
            for row in small.head(EXAMPLES).itertuples()
        ]
        return len(small), shown
    return explain
