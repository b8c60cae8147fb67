"""Evaluation of a fine-tuned model on the test split: metrics with bootstrap confidence intervals,
slices, fairness, behavioural checks and drift, written as HTML / JSON / PNG reports.

The pieces live beside this module (``report``, ``slices``, ``fairness``, ``behaviour``, ``drift``,
``plots``, ``page``, ``evidently_pages``); the metrics are ``tuneops.components.metrics``. The task
(``predictor.task``) says which column holds the inputs and adds its own slices, descriptors and
behavioural cases.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from tuneops.components.config import EvaluationConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.data.loading import DatasetSplits
from tuneops.components.errors import DataError
from tuneops.components.evaluation.behaviour import BehaviouralResult, run_behavioural_checks
from tuneops.components.evaluation.drift import PREDICTION, DriftResult, compute_drift
from tuneops.components.evaluation.evidently_pages import write_bias_report, write_classification_report
from tuneops.components.evaluation.fairness import assess_fairness
from tuneops.components.evaluation.page import write_evaluation_page
from tuneops.components.evaluation.plots import plot_confusion, plot_reliability, reliability_table
from tuneops.components.evaluation.report import EvaluationReport, SliceResult
from tuneops.components.evaluation.slices import slice_metrics
from tuneops.components.files import atomic_write_json
from tuneops.components.metrics import bootstrap_intervals, classification_metrics, with_unseen_labels
from tuneops.components.tasks.base import Task

__all__ = ["EvaluationReport", "SliceResult", "evaluate", "evaluate_predictions"]


def evaluate(predictor, splits: DatasetSplits, config: EvaluationConfig, output_dir: Path, *,
             max_fairness_gap: float | None = None) -> EvaluationReport:
    """Score ``predictor`` on ``splits.test`` and write every evaluation report into ``output_dir``.

    The test inputs are scored once (probabilities and embeddings together); behavioural checks
    reuse those answers, drift compares a training sample with the test split. ``max_fairness_gap``
    (``gate.max_fairness_gap``) is drawn as the limit on the fairness chart.
    Raises DataError when the test split is empty.
    """
    started = time.perf_counter()
    task = predictor.task
    column = task.input_column
    test = splits.test.reset_index(drop=True)
    if test.empty:
        raise DataError("evaluation: the test split is empty")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    inputs = test[column].tolist()
    probabilities, embeddings = predictor.predict_and_embed(inputs)
    labels = list(predictor.labels)

    behavioural = run_behavioural_checks(predictor, inputs, probabilities, config, task, truth=test[LABEL].tolist())

    reference = splits.train.reset_index(drop=True)
    if len(reference) > config.drift_sample_rows:
        reference = reference.sample(config.drift_sample_rows, random_state=config.seed).reset_index(drop=True)
    reference_probabilities, reference_embeddings = predictor.predict_and_embed(reference[column].tolist())
    reference_frame = reference[[column, LABEL]].assign(
        **{PREDICTION: [labels[i] for i in reference_probabilities.argmax(axis=1)]})
    current_frame = test[[column, LABEL]].assign(**{PREDICTION: [labels[i] for i in probabilities.argmax(axis=1)]})
    drift = compute_drift(
        reference_frame, current_frame, output_dir, task, title="Drift: training sample vs test split",
        reference_embeddings=reference_embeddings, current_embeddings=embeddings,
        max_reference_rows=config.drift_sample_rows, seed=config.seed,
    )
    return evaluate_predictions(
        test, probabilities, labels, splits.group_columns, config, output_dir, task,
        behavioural=behavioural, drift=drift, data_fingerprint=splits.fingerprint,
        model=str(predictor.manifest.get("base_checkpoint", "")),
        started=started, max_fairness_gap=max_fairness_gap,
    )


def evaluate_predictions(
    test: pd.DataFrame,
    probabilities: np.ndarray,
    labels: list[str],
    group_columns: list[str],
    config: EvaluationConfig,
    output_dir: Path,
    task: Task,
    *,
    behavioural: list[BehaviouralResult] | None = None,
    drift: DriftResult | None = None,
    data_fingerprint: str = "",
    model: str = "",
    started: float | None = None,
    max_fairness_gap: float | None = None,
) -> EvaluationReport:
    """Metrics, intervals, slices and fairness from given probabilities, plus every report file.

    ``evaluate`` calls this after scoring; any classifier's probabilities (columns in the order of
    ``labels``) on ``task``'s inputs can be judged the same way.
    """
    started = time.perf_counter() if started is None else started
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    test = test.reset_index(drop=True)
    y_true = test[LABEL].astype(str).tolist()
    all_labels, full = with_unseen_labels(y_true, np.asarray(probabilities, dtype=float), labels)
    truth = np.array([all_labels.index(label) for label in y_true])
    predicted = full.argmax(axis=1)
    y_pred = [all_labels[i] for i in predicted]
    bins = config.calibration_bins

    metrics = classification_metrics(y_true, probabilities, labels, bins)
    intervals = bootstrap_intervals(truth, full, all_labels, config.bootstrap_samples, config.seed, bins)
    slices = slice_metrics(test, truth, full, all_labels, group_columns, task, config)
    fairness = assess_fairness(test, y_true, y_pred, all_labels, group_columns, config.min_slice_support,
                               config.min_fairness_class_support)

    report = EvaluationReport(
        metrics=metrics, intervals=intervals, slices=slices, fairness=fairness,
        behavioural=list(behavioural or []), drift=drift, labels=all_labels, rows=len(truth),
        data_fingerprint=data_fingerprint, model=model, output_dir=output_dir,
        min_slice_support=config.min_slice_support, bootstrap_samples=config.bootstrap_samples, seed=config.seed,
        max_fairness_gap=max_fairness_gap, y_true=y_true, y_pred=y_pred,
        reliability=reliability_table(truth, full, bins),
    )
    if all_labels != list(labels):
        report.notes.append(f"test labels the model does not know: {', '.join(all_labels[len(labels):])} "
                            "(scored as always wrong)")
    report.confusion_png = plot_confusion(truth, predicted, all_labels, output_dir / "confusion_matrix.png")
    report.reliability_png = plot_reliability(truth, full, bins, output_dir / "reliability.png")
    if config.evidently_reports:
        report.classification_html = write_classification_report(
            y_true, y_pred, full, all_labels, output_dir / "classification.html", report.notes)
        if group_columns:
            write_bias_report(test, y_true, y_pred, full, all_labels, fairness, output_dir / "bias.html")
    report.seconds = time.perf_counter() - started
    report.html_path = output_dir / "evaluation.html"
    report.json_path = output_dir / "evaluation.json"
    atomic_write_json(report.json_path, report.to_json())
    write_evaluation_page(report, report.html_path)
    return report
