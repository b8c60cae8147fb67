"""Bias checks: per-group rates and fairness gaps (fairlearn). The per-group Evidently page is
``tuneops.components.evaluation.evidently_pages.write_bias_report``.

Fairness for a multiclass model is measured one class at a time (one-vs-rest): for class ``c``,
"selected" means "predicted ``c``" and a "positive" is an input whose true label is ``c``. Then, across
the values of one group column (e.g. every ``region``):

  - demographic parity difference (DP) = max - min over groups of the selection rate P(pred = c);
  - equalized odds difference (EO) = the larger of the max - min over groups of the true-positive
    rate P(pred = c | true = c) and of the false-positive rate P(pred = c | true != c).

These are fairlearn's definitions (``demographic_parity_difference`` / ``equalized_odds_difference``,
between groups); the per-group rates come from one ``fairlearn.metrics.MetricFrame`` per column and
the differences are taken over the eligible groups. A column's gap is the maximum over classes.

Only groups with at least ``min_group_support`` rows take part, and for EO a group joins a class's
comparison only when it holds at least ``min_class_support`` positives and negatives of that class:
rates over a handful of rows are noise, not bias. Groups left out are listed, never hidden.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MISSING_GROUP = "(missing)"
FAIRNESS_METRICS = ("equalized_odds_difference", "demographic_parity_difference")


@dataclass
class GroupRates:
    """One group of one column: its size, accuracy and per-class rates."""

    column: str
    group: str
    support: int
    small: bool
    accuracy: float
    selection_rate: dict[str, float]
    true_positive_rate: dict[str, float | None]  # None: no true examples of the class in the group


@dataclass
class FairnessGap:
    """The largest gap of one fairness metric across the groups of one column."""

    column: str
    metric: str
    value: float | None  # None: fewer than two groups had enough support to compare
    label: str | None = None  # the class where the gap is largest
    rate: str | None = None  # the rate that differs most: selection / true-positive / false-positive
    low_group: str | None = None
    low_value: float | None = None
    high_group: str | None = None
    high_value: float | None = None
    groups_compared: list[str] = field(default_factory=list)
    per_class: dict[str, float | None] = field(default_factory=dict)

    def describe(self) -> str:
        """One line naming the column, metric, class and the two groups behind the gap."""
        if self.value is None:
            return f"{self.column}: {self.metric} not judged (fewer than two groups with enough support)"
        return (f"{self.column}: {self.metric} {self.value:.2f} (class {self.label}: {self.rate} "
                f"{self.low_group} {self.low_value:.2f} vs {self.high_group} {self.high_value:.2f})")


@dataclass
class FairnessReport:
    """Per-group rates and fairness gaps for every group column, and where the per-group Evidently page is."""

    groups: list[GroupRates]
    gaps: list[FairnessGap]
    excluded_groups: dict[str, list[str]]  # column -> groups too small to take part in the gaps
    html_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def gap(self, column: str, metric: str) -> FairnessGap | None:
        return next((g for g in self.gaps if g.column == column and g.metric == metric), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [asdict(group) for group in self.groups],
            "gaps": [asdict(gap) for gap in self.gaps],
            "excluded_groups": self.excluded_groups,
            "html_path": str(self.html_path) if self.html_path else None,
            "notes": self.notes,
        }


def group_values(values: pd.Series) -> np.ndarray:
    """Group column values as strings; missing values form their own group."""
    return np.array([MISSING_GROUP if pd.isna(value) else str(value) for value in values], dtype=object)


def assess_fairness(
    frame: pd.DataFrame,
    y_true: list[str],
    y_pred: list[str],
    labels: list[str],
    group_columns: list[str],
    min_group_support: int,
    min_class_support: int,
) -> FairnessReport:
    """Per-group selection rate / TPR and the DP and EO gaps of each group column (see module doc)."""
    truth, predicted = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    groups: list[GroupRates] = []
    gaps: list[FairnessGap] = []
    excluded: dict[str, list[str]] = {}
    for column in group_columns:
        values = group_values(frame[column])
        table = group_rate_table(truth, predicted, values, labels)
        eligible = table.index[table["support"] >= min_group_support]
        excluded[column] = [str(g) for g in table.index if g not in eligible]
        for group, row in table.iterrows():
            groups.append(GroupRates(
                column=column, group=str(group), support=int(row["support"]),
                small=bool(row["support"] < min_group_support), accuracy=float(row["accuracy"]),
                selection_rate={label: float(row[f"selection_rate:{label}"]) for label in labels},
                true_positive_rate={label: _optional(row[f"true_positive_rate:{label}"]) for label in labels},
            ))
        for metric in ("demographic_parity_difference", "equalized_odds_difference"):
            gaps.append(_largest_gap(column, metric, table.loc[eligible], labels, min_class_support))
    return FairnessReport(groups=groups, gaps=gaps, excluded_groups=excluded)


def group_rate_table(truth: np.ndarray, predicted: np.ndarray, groups: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One fairlearn MetricFrame over all classes: per group, its support, accuracy, and per class the
    selection rate, true- and false-positive rates and the counts of positives and negatives."""
    from fairlearn.metrics import MetricFrame

    metrics = {"support": lambda t, p: len(t), "accuracy": lambda t, p: float(np.mean(t == p))}
    for label in labels:
        metrics[f"selection_rate:{label}"] = lambda t, p, c=label: float(np.mean(p == c))
        metrics[f"true_positive_rate:{label}"] = lambda t, p, c=label: _rate(p[t == c] == c)
        metrics[f"false_positive_rate:{label}"] = lambda t, p, c=label: _rate(p[t != c] == c)
        metrics[f"positives:{label}"] = lambda t, p, c=label: int(np.sum(t == c))
        metrics[f"negatives:{label}"] = lambda t, p, c=label: int(np.sum(t != c))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = MetricFrame(metrics=metrics, y_true=truth, y_pred=predicted, sensitive_features=groups).by_group
    frame.index = [str(g) for g in frame.index]
    return frame


def _largest_gap(column: str, metric: str, table: pd.DataFrame, labels: list[str],
                 min_class_support: int) -> FairnessGap:
    """The class with the widest gap of ``metric`` across the groups in ``table`` (already eligible)."""
    best = FairnessGap(column=column, metric=metric, value=None)
    per_class: dict[str, float | None] = {}
    for label in labels:
        if metric == "demographic_parity_difference":
            members = table
            rates = ["selection_rate"]
        else:
            members = table[(table[f"positives:{label}"] >= min_class_support)
                            & (table[f"negatives:{label}"] >= min_class_support)]
            rates = ["true_positive_rate", "false_positive_rate"]
        if len(members) < 2:
            per_class[label] = None
            continue
        spreads = {rate: float(members[f"{rate}:{label}"].max() - members[f"{rate}:{label}"].min()) for rate in rates}
        rate = max(spreads, key=spreads.get)
        per_class[label] = spreads[rate]
        if best.value is None or spreads[rate] > best.value:
            column_values = members[f"{rate}:{label}"]
            best = FairnessGap(
                column=column, metric=metric, value=spreads[rate], label=label, rate=rate,
                low_group=str(column_values.idxmin()), low_value=float(column_values.min()),
                high_group=str(column_values.idxmax()), high_value=float(column_values.max()),
                groups_compared=sorted(str(g) for g in members.index),
            )
    best.per_class = per_class
    return best


def _rate(hits: np.ndarray) -> float:
    return float(np.mean(hits)) if len(hits) else float("nan")


def _optional(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
