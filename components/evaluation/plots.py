"""The evaluation's pictures (matplotlib without a display): the confusion matrix and the
reliability diagram as PNG files in the report folder, and the slice and fairness bar charts as
inline PNG data URIs for the evaluation page. The reliability diagram draws the same bins as the
ECE it names, with each bin's row count, so a bar that rests on three rows is seen to.

Nothing here refers to anything outside the run folder: pages that show these render offline.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneops.components.metrics import expected_calibration_error, reliability_bins

if TYPE_CHECKING:
    from tuneops.components.evaluation.fairness import FairnessGap
    from tuneops.components.evaluation.report import SliceResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: the plots are files
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(truth: np.ndarray, predicted: np.ndarray, labels: list[str], path: Path) -> Path:
    """Counts of (true, predicted) class pairs on the test split."""
    plt = _pyplot()
    k = len(labels)
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (truth, predicted), 1)
    size = max(4.0, 0.6 * k + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(k), labels, rotation=45, ha="right")
    axes.set_yticks(range(k), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            axes.text(j, i, str(counts[i, j]), ha="center", va="center",
                      color="white" if counts[i, j] > counts.max() / 2 else "black")
    axes.set_title("Confusion matrix (test split)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def reliability_table(truth: np.ndarray, probabilities: np.ndarray, bins: int) -> list[dict[str, float]]:
    """The reliability diagram's non-empty bins as rows: confidence range, row count, accuracy and
    mean confidence (the page's table under the diagram and ``evaluation.json``'s ``reliability``)."""
    table = reliability_bins(truth, probabilities, bins)
    return [{"low": float(centre - 0.5 / bins), "high": float(centre + 0.5 / bins), "rows": int(count),
             "accuracy": float(accuracy), "confidence": float(confidence)}
            for centre, count, accuracy, confidence in zip(table["centre"], table["count"], table["accuracy"],
                                                           table["confidence"])]


def plot_reliability(truth: np.ndarray, probabilities: np.ndarray, bins: int, path: Path) -> Path:
    """Accuracy and mean confidence per confidence bin (``evaluation.calibration_bins``), with the ECE,
    and under it the rows per bin (each bar labelled with its count)."""
    plt = _pyplot()
    table = reliability_bins(truth, probabilities, bins)
    figure, (axes, counts) = plt.subplots(2, 1, figsize=(5, 6.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.bar(table["centre"], table["accuracy"], width=1 / bins, alpha=0.7, edgecolor="black",
             label="accuracy per bin")
    axes.scatter(table["centre"], table["confidence"], color="red", marker="_", s=200,
                 label="mean confidence per bin")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.08)  # room for the count labels over bars at accuracy 1
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability diagram, ECE {expected_calibration_error(truth, probabilities, bins):.3f}")
    axes.legend(loc="upper left")
    for centre, accuracy, count in zip(table["centre"], table["accuracy"], table["count"]):
        axes.annotate(f"n={int(count)}", (centre, accuracy), textcoords="offset points", xytext=(0, 2),
                      ha="center", fontsize=7)
    counts.bar(table["centre"], table["count"], width=1 / bins, color="#57606a", edgecolor="black")
    counts.set_ylabel("rows")
    counts.set_xlabel("confidence (top-label probability)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def slice_chart(slices: list[SliceResult], metric: str) -> str | None:
    """Horizontal bars of ``metric`` per slice, one panel per slice column, with each slice's 95%
    bootstrap interval as an error bar; slices too small to be judged are drawn hatched and pale.
    Returns a PNG data URI, or None when no slice has the metric."""
    columns: dict[str, list[SliceResult]] = {}
    for piece in slices:
        if piece.metric(metric) is not None:
            columns.setdefault(piece.column, []).append(piece)
    if not columns:
        return None
    plt = _pyplot()
    heights = [max(1.2, 0.32 * len(pieces) + 0.8) for pieces in columns.values()]
    figure, panels = plt.subplots(len(columns), 1, figsize=(7, sum(heights)), squeeze=False,
                                  gridspec_kw={"height_ratios": heights})
    for axes, (column, pieces) in zip(panels[:, 0], columns.items()):
        values = np.array([piece.metric(metric) for piece in pieces], dtype=float)
        low, high = _error_bar(values, [piece.intervals.get(metric) for piece in pieces])
        positions = np.arange(len(pieces))
        bars = axes.barh(positions, values, xerr=[low, high], capsize=3, color="#0969da", alpha=0.8,
                         error_kw={"elinewidth": 1})
        for bar, piece in zip(bars, pieces):
            if piece.small:
                bar.set_alpha(0.3)
                bar.set_hatch("//")
        axes.set_yticks(positions, [f"{piece.value} (n={piece.support})" for piece in pieces])
        axes.invert_yaxis()  # the first slice on top, as in the table
        axes.set_xlim(0, 1)
        axes.set_title(column, fontsize=10, loc="left")
    panels[-1, 0].set_xlabel(f"{metric} with 95% bootstrap interval (hatched: too few rows to be judged)")
    figure.tight_layout()
    return _data_uri(figure)


def fairness_chart(gaps: list[FairnessGap], limit: float | None) -> str | None:
    """Bars of each group column's fairness gaps (one bar per metric), with ``limit``
    (``gate.max_fairness_gap``) as a vertical line; gaps that could not be judged are left out.
    Returns a PNG data URI, or None when there is no judged gap."""
    judged = [gap for gap in gaps if gap.value is not None]
    if not judged:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, max(1.6, 0.35 * len(judged) + 1.0)))
    positions = np.arange(len(judged))
    colours = ["#cf222e" if limit is not None and gap.value > limit else "#1a7f37" for gap in judged]
    axes.barh(positions, [gap.value for gap in judged], color=colours, alpha=0.8)
    axes.set_yticks(positions, [f"{gap.column}: {_SHORT.get(gap.metric, gap.metric)}" for gap in judged])
    axes.invert_yaxis()
    top = max([gap.value for gap in judged] + [limit or 0.0])
    axes.set_xlim(0, min(1.0, max(0.1, top * 1.15)))
    if limit is not None:
        axes.axvline(limit, color="black", linestyle="--", label=f"gate.max_fairness_gap {limit:.2f}")
        axes.legend(loc="lower right", fontsize=8)
    axes.set_xlabel("gap (largest over classes, one-vs-rest)")
    figure.tight_layout()
    return _data_uri(figure)


_SHORT = {"equalized_odds_difference": "equalized odds", "demographic_parity_difference": "demographic parity"}


def _error_bar(values: np.ndarray, intervals: list[list[float] | None]) -> tuple[np.ndarray, np.ndarray]:
    """Distances below and above each value to its interval's ends (zero where there is none).

    A percentile interval need not contain the point estimate on a tiny slice; the distance is
    clipped at zero so matplotlib draws the bar rather than failing on a negative length."""
    low = np.array([value - interval[0] if interval else 0.0 for value, interval in zip(values, intervals)])
    high = np.array([interval[1] - value if interval else 0.0 for value, interval in zip(values, intervals)])
    return np.clip(low, 0, None), np.clip(high, 0, None)


def _data_uri(figure: Any) -> str:
    """The figure as an inline PNG (``data:`` URI), so the page carries it without a request."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
