"""The evaluation's two pictures: the confusion matrix and the reliability diagram (PNG, matplotlib
without a display). The reliability diagram draws the same bins as the ECE it names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuneops.components.metrics import expected_calibration_error, reliability_bins


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


def plot_reliability(truth: np.ndarray, probabilities: np.ndarray, bins: int, path: Path) -> Path:
    """Accuracy and mean confidence per confidence bin (``evaluation.calibration_bins``), with the ECE."""
    plt = _pyplot()
    table = reliability_bins(truth, probabilities, bins)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.bar(table["centre"], table["accuracy"], width=1 / bins, alpha=0.7, edgecolor="black",
             label="accuracy per bin")
    axes.scatter(table["centre"], table["confidence"], color="red", marker="_", s=200,
                 label="mean confidence per bin")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (top-label probability)")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability diagram, ECE {expected_calibration_error(truth, probabilities, bins):.3f}")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
