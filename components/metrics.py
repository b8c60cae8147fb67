"""The one place classification metrics are computed: evaluation, training's validation, selection's
probes, the classical floor and monitoring's feedback all score through here, so a macro-F1 means
the same thing everywhere.

Every metric comes from weighted confusion counts: a weight vector of ones gives the point
estimate, a 0/1 mask gives a slice, and a matrix of multinomial counts gives all bootstrap
resamples at once (a matrix product instead of a Python loop). Macro averages run over the
classes that occur in the truth or the predictions (scikit-learn's convention).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tuneops.components.errors import DataError
from tuneops.components.files import plain_json

HEADLINE = ("accuracy", "macro_precision", "macro_recall", "macro_f1",
            "weighted_precision", "weighted_recall", "weighted_f1", "roc_auc_ovr", "ece")
CALIBRATION_BINS = 15  # Guo et al. 2017 use 15 equal-width bins for ECE
_PROBABILITY_FLOOR = 1e-12


def classification_metrics(y_true: list[str], probabilities: np.ndarray, labels: list[str],
                           bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Accuracy, macro / weighted precision, recall and F1, per-class scores, one-vs-rest ROC-AUC,
    expected calibration error and log loss of ``probabilities`` (columns in the order of ``labels``).

    True labels missing from ``labels`` count as always wrong. Macro averages run over the classes
    that occur in the truth or the predictions (scikit-learn's convention).
    """
    y_true = [str(label) for label in y_true]
    if not y_true:
        raise DataError("evaluation: no rows to score")
    all_labels, full = with_unseen_labels(y_true, np.asarray(probabilities, dtype=float), list(labels))
    truth = np.array([all_labels.index(label) for label in y_true])
    scores = weighted_scores(truth, full, np.ones((1, len(truth))), all_labels, bins, per_class=True)
    result = {key: value[0] if isinstance(value, np.ndarray) else value for key, value in scores.items()}
    result["log_loss"] = float(-np.mean(np.log(np.clip(full[np.arange(len(truth)), truth], _PROBABILITY_FLOOR, 1))))
    result["support"] = len(truth)
    return plain_json(result)


def bootstrap_intervals(truth: np.ndarray, probabilities: np.ndarray, labels: list[str], samples: int, seed: int,
                        bins: int = CALIBRATION_BINS) -> dict[str, list[float]]:
    """95% percentile intervals of the headline metrics over ``samples`` bootstrap resamples.

    Each resample is a vector of multinomial counts over the rows, so all resamples are scored
    together. Zero samples gives no intervals.
    """
    if samples <= 0 or len(truth) == 0:
        return {}
    scores = weighted_scores(truth, probabilities, resample_weights(len(truth), samples, seed), labels, bins,
                             per_class=False)
    intervals = {}
    for name in HEADLINE:
        values = np.asarray(scores[name], dtype=float)
        values = values[~np.isnan(values)]
        if len(values):
            intervals[name] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return intervals


def bootstrap_label_scores(truth: np.ndarray, predictions: dict[str, np.ndarray], n_labels: int, metric: str,
                           samples: int, seed: int) -> dict[str, np.ndarray]:
    """``metric`` (a name ``weighted_scores`` returns, e.g. ``macro_f1``) of each named vector of
    predicted class indices on each of ``samples`` bootstrap resamples of the rows.

    Every prediction vector is scored on the SAME resamples (one weight matrix drawn from
    ``seed``), so ``result[a] - result[b]`` is the paired bootstrap of their difference: the rows
    both get right or both get wrong cancel, which is what makes a small difference measurable.
    Zero samples gives no values (an empty dict).
    """
    truth = np.asarray(truth, dtype=int)
    if len(truth) == 0:
        raise DataError("metrics: no rows to score")
    if samples <= 0:
        return {}
    weights = resample_weights(len(truth), samples, seed)
    identity = np.eye(n_labels)
    return {
        name: np.asarray(weighted_scores(truth, identity[np.asarray(predicted, dtype=int)], weights,
                                         list(range(n_labels)), CALIBRATION_BINS, per_class=False)[metric], dtype=float)
        for name, predicted in predictions.items()
    }


def resample_weights(rows: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` bootstrap resamples of ``rows`` rows as multinomial counts (samples x rows), so
    every resample is scored at once by ``weighted_scores``."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(rows, np.full(rows, 1 / rows), size=samples).astype(float)


def expected_calibration_error(truth: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE of the top-label confidence over ``bins`` equal-width bins (Guo et al., 2017)."""
    return float(_ece(truth, probabilities, np.ones((1, len(truth))), bins)[0])


def label_scores(truth: np.ndarray, predicted: np.ndarray, n_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 of predicted class indices: the cheap pair that training's early
    stopping and selection's probes need, in the same convention as ``classification_metrics``."""
    truth = np.asarray(truth, dtype=int)
    predicted = np.asarray(predicted, dtype=int)
    if len(truth) == 0:
        raise DataError("metrics: no rows to score")
    one_hot = np.eye(n_labels)[predicted]
    scores = weighted_scores(truth, one_hot, np.ones((1, len(truth))), list(range(n_labels)), CALIBRATION_BINS,
                             per_class=False)
    return {"accuracy": float(scores["accuracy"][0]), "macro_f1": float(scores["macro_f1"][0])}


def weighted_scores(truth: np.ndarray, probabilities: np.ndarray, weights: np.ndarray, labels: list[str], bins: int,
                    per_class: bool) -> dict[str, Any]:
    """Every metric for each row of ``weights`` (shape: samples x rows) at once."""
    k = len(labels)
    predicted = probabilities.argmax(axis=1)
    cell = np.zeros((len(truth), k * k))
    cell[np.arange(len(truth)), truth * k + predicted] = 1.0
    confusion = (weights @ cell).reshape(-1, k, k)  # [sample, true, predicted]
    support = confusion.sum(axis=2)
    predicted_count = confusion.sum(axis=1)
    correct = np.einsum("bii->bi", confusion)
    total = support.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, correct / predicted_count, 0.0)
        recall = np.where(support > 0, correct / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        present = (support > 0) | (predicted_count > 0)
        n_present = present.sum(axis=1)
        scores: dict[str, Any] = {
            "accuracy": np.where(total > 0, correct.sum(axis=1) / total, np.nan),
            "macro_precision": np.where(n_present > 0, (precision * present).sum(axis=1) / n_present, np.nan),
            "macro_recall": np.where(n_present > 0, (recall * present).sum(axis=1) / n_present, np.nan),
            "macro_f1": np.where(n_present > 0, (f1 * present).sum(axis=1) / n_present, np.nan),
            "weighted_precision": np.where(total > 0, (precision * support).sum(axis=1) / total, np.nan),
            "weighted_recall": np.where(total > 0, (recall * support).sum(axis=1) / total, np.nan),
            "weighted_f1": np.where(total > 0, (f1 * support).sum(axis=1) / total, np.nan),
        }
    scores["roc_auc_ovr"] = _roc_auc_ovr(truth, probabilities, weights)
    scores["ece"] = _ece(truth, probabilities, weights, bins)
    if per_class:
        scores["per_class"] = {
            label: {"precision": float(precision[0, i]), "recall": float(recall[0, i]),
                    "f1": float(f1[0, i]), "support": int(support[0, i]),
                    "roc_auc": number_or_none(_roc_auc_one(truth == i, probabilities[:, i], weights)[0])}
            for i, label in enumerate(labels)
        }
        scores["confusion_matrix"] = confusion[0].astype(int).tolist()
    return scores


def _roc_auc_one(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC of one class against the rest, for each weight row (ties count half)."""
    unique, position = np.unique(score, return_inverse=True)
    negative_weight = np.zeros((weights.shape[0], len(unique)))
    np.add.at(negative_weight.T, position[~positive], weights[:, ~positive].T)
    below = np.cumsum(negative_weight, axis=1) - negative_weight  # negatives scored strictly lower
    credit = below[:, position] + 0.5 * negative_weight[:, position]
    positive_total = weights[:, positive].sum(axis=1)
    negative_total = weights[:, ~positive].sum(axis=1)
    wins = (weights * credit * positive).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((positive_total > 0) & (negative_total > 0), wins / (positive_total * negative_total), np.nan)


def _roc_auc_ovr(truth: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest ROC-AUC over the classes that have positives and negatives."""
    per_class = np.array([_roc_auc_one(truth == i, probabilities[:, i], weights)
                          for i in range(probabilities.shape[1])])
    with np.errstate(invalid="ignore"):
        counted = (~np.isnan(per_class)).sum(axis=0)
        return np.where(counted > 0, np.nansum(per_class, axis=0) / np.maximum(counted, 1), np.nan)


def reliability_bins(truth: np.ndarray, probabilities: np.ndarray,
                     bins: int = CALIBRATION_BINS) -> dict[str, np.ndarray]:
    """The bins behind the ECE (the reliability diagram's bars): for each non-empty bin of top-label
    confidence, its centre, the accuracy and mean confidence of its rows, and how many rows it holds."""
    confidence = probabilities.max(axis=1)
    hit = probabilities.argmax(axis=1) == truth
    which = _confidence_bin(confidence, bins)
    count = np.bincount(which, minlength=bins)
    filled = np.flatnonzero(count)
    return {
        "centre": (filled + 0.5) / bins,
        "accuracy": np.bincount(which, weights=hit, minlength=bins)[filled] / count[filled],
        "confidence": np.bincount(which, weights=confidence, minlength=bins)[filled] / count[filled],
        "count": count[filled],
    }


def _confidence_bin(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]; a confidence of exactly 1 falls in the last one."""
    return np.minimum((confidence * bins).astype(int), bins - 1)


def _ece(truth: np.ndarray, probabilities: np.ndarray, weights: np.ndarray, bins: int) -> np.ndarray:
    confidence = probabilities.max(axis=1)
    hit = (probabilities.argmax(axis=1) == truth).astype(float)
    which = _confidence_bin(confidence, bins)
    member = np.zeros((len(truth), bins))
    member[np.arange(len(truth)), which] = 1.0
    count = weights @ member
    accuracy_sum = weights @ (member * hit[:, None])
    confidence_sum = weights @ (member * confidence[:, None])
    total = count.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(accuracy_sum - confidence_sum).sum(axis=1) / total, np.nan)


def with_unseen_labels(y_true: list[str], probabilities: np.ndarray,
                       labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Append zero-probability columns for true labels the model does not know."""
    if probabilities.ndim != 2 or probabilities.shape != (len(y_true), len(labels)):
        raise DataError(f"evaluation: probabilities of shape {probabilities.shape} for {len(y_true)} rows "
                        f"and {len(labels)} labels")
    unseen = sorted(set(y_true) - set(labels))
    if not unseen:
        return list(labels), probabilities
    return list(labels) + unseen, np.hstack([probabilities, np.zeros((len(y_true), len(unseen)))])


def number_or_none(value: Any) -> float | None:
    """A float, or None for NaN (a metric that is undefined on these rows)."""
    value = float(value)
    return None if math.isnan(value) else value


def percentile_interval(values: np.ndarray) -> list[float] | None:
    """The 95% percentile interval of bootstrap values, NaNs (undefined resamples) left out; None
    when no resample gave a value."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def paired_comparison(truth: np.ndarray, predictions: dict[str, np.ndarray], n_labels: int, metrics: list[str],
                      pairs: list[tuple[str, str]], samples: int, seed: int) -> dict[str, dict[str, Any]]:
    """Each model's label metrics and each pair's difference, with 95% paired-bootstrap intervals.

    ``predictions`` maps a model's name to its predicted class indices on the rows of ``truth``;
    ``metrics`` are names ``weighted_scores`` returns that depend on the predicted label only
    (accuracy, macro / weighted F1, ...). Every model is scored on the SAME ``samples`` resamples
    (one weight matrix from ``seed``), and a pair ``(a, b)``'s interval is the percentile interval
    of ``a - b`` over those resamples: rows both models get right or wrong cancel, so the
    difference is measured far more tightly than two separate intervals suggest. The result is
    ``{metric: {model: {"value", "interval"}, "a - b": {"value", "interval"}}}``; with zero samples
    every interval is None.
    """
    truth = np.asarray(truth, dtype=int)
    if len(truth) == 0:
        raise DataError("metrics: no rows to score")
    identity = np.eye(n_labels)
    names = list(range(n_labels))
    point_weights = np.ones((1, len(truth)))
    weights = resample_weights(len(truth), samples, seed) if samples > 0 else None
    points, resampled = {}, {}
    for model, predicted in predictions.items():
        one_hot = identity[np.asarray(predicted, dtype=int)]
        points[model] = weighted_scores(truth, one_hot, point_weights, names, CALIBRATION_BINS, per_class=False)
        if weights is not None:
            resampled[model] = weighted_scores(truth, one_hot, weights, names, CALIBRATION_BINS, per_class=False)
    result: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        entry: dict[str, Any] = {}
        for model in predictions:
            entry[model] = {"value": number_or_none(points[model][metric][0]),
                            "interval": percentile_interval(resampled[model][metric]) if resampled else None}
        for a, b in pairs:
            value = points[a][metric][0] - points[b][metric][0]
            differences = (np.asarray(resampled[a][metric], dtype=float) - np.asarray(resampled[b][metric], dtype=float)
                           if resampled else None)
            entry[f"{a} - {b}"] = {"value": number_or_none(value),
                                   "interval": percentile_interval(differences) if differences is not None else None}
        result[metric] = entry
    return result
