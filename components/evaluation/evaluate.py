"""Evaluation of a fine-tuned model on the test split: metrics with bootstrap confidence intervals,
slices, fairness, behavioural checks and drift, written as HTML / JSON / PNG reports.

Every metric is computed from weighted confusion counts: a weight vector of ones gives the point
estimate, a 0/1 mask gives a slice, and a matrix of multinomial counts gives all bootstrap
resamples at once (a matrix product instead of a Python loop).
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.evaluation.behaviour import BehaviouralResult, run_behavioural_checks
from tuneops.components.config import EvaluationConfig
from tuneops.components.data.loading import LABEL, TEXT, DatasetSplits
from tuneops.components.evaluation.drift import PREDICTION, DriftResult, compute_drift
from tuneops.components.errors import DataError
from tuneops.components.files import plain_json
from tuneops.components.metrics import (
    HEADLINE,
    _with_unseen_labels,
    bootstrap_intervals,
    classification_metrics,
    expected_calibration_error,
    number_or_none,
    weighted_scores,
)
from tuneops.components.evaluation.fairness import (FairnessReport, assess_fairness, classification_snapshot, group_values,
                                 write_bias_report)

LENGTH_COLUMN = "text_length"


@dataclass
class SliceResult:
    """Metrics on one slice of the test split (a group value or a text-length bucket)."""

    column: str
    value: str
    support: int
    small: bool  # support below evaluation.min_slice_support: shown and flagged, not judged by the gate
    accuracy: float | None
    macro_f1: float | None
    weighted_f1: float | None

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"

    def metric(self, name: str) -> float | None:
        return getattr(self, name, None)


@dataclass
class EvaluationReport:
    """What ``evaluate`` found, and where its reports are."""

    metrics: dict[str, Any]
    intervals: dict[str, list[float]]  # headline metric -> [low, high] of the 95% bootstrap interval
    slices: list[SliceResult]
    fairness: FairnessReport
    behavioural: list[BehaviouralResult]
    drift: DriftResult | None
    labels: list[str]
    rows: int
    data_fingerprint: str
    model: str
    output_dir: Path
    min_slice_support: int
    seconds: float = 0.0
    html_path: Path | None = None
    json_path: Path | None = None
    classification_html: Path | None = None
    confusion_png: Path | None = None
    reliability_png: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bias_html(self) -> Path | None:
        return self.fairness.html_path

    @property
    def drift_html(self) -> Path | None:
        return self.drift.html_path if self.drift else None

    def slice(self, name: str) -> SliceResult | None:
        return next((s for s in self.slices if s.name == name), None)

    def reports(self) -> list[tuple[str, Path]]:
        """(title, path) of every report file written, for the run index."""
        entries = [
            ("Evaluation summary", self.html_path),
            ("Evaluation (JSON)", self.json_path),
            ("Classification report (Evidently)", self.classification_html),
            ("Bias report per group (fairlearn + Evidently)", self.bias_html),
            ("Drift: training vs test (Evidently)", self.drift_html),
            ("Confusion matrix", self.confusion_png),
            ("Reliability diagram", self.reliability_png),
        ]
        return [(title, path) for title, path in entries if path is not None and Path(path).exists()]

    def to_json(self) -> dict[str, Any]:
        return plain_json({
            "model": self.model,
            "rows": self.rows,
            "labels": self.labels,
            "data_fingerprint": self.data_fingerprint,
            "metrics": self.metrics,
            "intervals": self.intervals,
            "slices": [asdict(s) | {"name": s.name} for s in self.slices],
            "min_slice_support": self.min_slice_support,
            "fairness": self.fairness.to_json(),
            "behavioural": [b.to_json() for b in self.behavioural],
            "drift": self.drift.to_json() if self.drift else None,
            "seconds": self.seconds,
            "notes": self.notes,
            "reports": {title: str(path) for title, path in self.reports()},
        })


def evaluate(predictor, splits: DatasetSplits, config: EvaluationConfig, output_dir: Path) -> EvaluationReport:
    """Score ``predictor`` on ``splits.test`` and write every evaluation report into ``output_dir``.

    The test texts are scored once (probabilities and embeddings together); behavioural checks
    reuse those answers, drift compares a training sample with the test split.
    Raises DataError when the test split is empty.
    """
    started = time.perf_counter()
    test = splits.test.reset_index(drop=True)
    if test.empty:
        raise DataError("evaluation: the test split is empty")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    texts = test[TEXT].astype(str).tolist()
    probabilities, embeddings = predictor.predict_and_embed(texts)
    labels = list(predictor.labels)

    behavioural = run_behavioural_checks(predictor, texts, probabilities, config)

    reference = splits.train.reset_index(drop=True)
    if len(reference) > config.drift_sample_rows:
        reference = reference.sample(config.drift_sample_rows, random_state=config.seed).reset_index(drop=True)
    reference_probabilities, reference_embeddings = predictor.predict_and_embed(reference[TEXT].astype(str).tolist())
    reference_frame = reference[[TEXT, LABEL]].assign(
        **{PREDICTION: [labels[i] for i in reference_probabilities.argmax(axis=1)]})
    current_frame = test[[TEXT, LABEL]].assign(**{PREDICTION: [labels[i] for i in probabilities.argmax(axis=1)]})
    drift = compute_drift(
        reference_frame, current_frame, output_dir, title="Drift: training sample vs test split",
        reference_embeddings=reference_embeddings, current_embeddings=embeddings,
        max_reference_rows=config.drift_sample_rows, seed=config.seed,
    )
    return evaluate_predictions(
        test, probabilities, labels, splits.group_columns, config, output_dir,
        behavioural=behavioural, drift=drift, data_fingerprint=splits.fingerprint,
        model=str(predictor.manifest.get("base_checkpoint", "")),
        started=started,
    )


def evaluate_predictions(
    test: pd.DataFrame,
    probabilities: np.ndarray,
    labels: list[str],
    group_columns: list[str],
    config: EvaluationConfig,
    output_dir: Path,
    *,
    behavioural: list[BehaviouralResult] | None = None,
    drift: DriftResult | None = None,
    data_fingerprint: str = "",
    model: str = "",
    started: float | None = None,
) -> EvaluationReport:
    """Metrics, intervals, slices and fairness from given probabilities, plus every report file.

    ``evaluate`` calls this after scoring; any classifier's probabilities (columns in the order of
    ``labels``) can be judged the same way.
    """
    started = time.perf_counter() if started is None else started
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    test = test.reset_index(drop=True)
    y_true = test[LABEL].astype(str).tolist()
    all_labels, full = _with_unseen_labels(y_true, np.asarray(probabilities, dtype=float), labels)
    truth = np.array([all_labels.index(label) for label in y_true])
    predicted = full.argmax(axis=1)
    y_pred = [all_labels[i] for i in predicted]
    bins = config.calibration_bins

    metrics = classification_metrics(y_true, probabilities, labels, bins)
    intervals = bootstrap_intervals(truth, full, all_labels, config.bootstrap_samples, config.seed, bins)
    slices = slice_metrics(test, truth, full, all_labels, group_columns, config.length_buckets, bins,
                           config.min_slice_support)
    fairness = assess_fairness(test, y_true, y_pred, all_labels, group_columns, config.min_slice_support,
                               config.min_fairness_class_support)

    report = EvaluationReport(
        metrics=metrics, intervals=intervals, slices=slices, fairness=fairness,
        behavioural=list(behavioural or []), drift=drift, labels=all_labels, rows=len(truth),
        data_fingerprint=data_fingerprint, model=model, output_dir=output_dir,
        min_slice_support=config.min_slice_support,
    )
    if all_labels != list(labels):
        report.notes.append(f"test labels the model does not know: {', '.join(all_labels[len(labels):])} "
                            "(scored as always wrong)")
    report.confusion_png = _plot_confusion(truth, predicted, all_labels, output_dir / "confusion_matrix.png")
    report.reliability_png = _plot_reliability(truth, full, bins, output_dir / "reliability.png")
    if config.evidently_reports:
        report.classification_html = _write_classification_report(y_true, y_pred, full, all_labels, output_dir, report)
        if group_columns:
            write_bias_report(test, y_true, y_pred, full, all_labels, fairness, output_dir / "bias.html")
    report.seconds = time.perf_counter() - started
    report.html_path = output_dir / "evaluation.html"
    report.json_path = output_dir / "evaluation.json"
    report.json_path.write_text(json.dumps(report.to_json(), indent=2))
    report.html_path.write_text(render_html(report), encoding="utf-8")
    return report


# --- metrics ------------------------------------------------------------------------------------


def slice_metrics(test: pd.DataFrame, truth: np.ndarray, probabilities: np.ndarray, labels: list[str],
                  group_columns: list[str], length_buckets: list[int], bins: int,
                  min_support: int) -> list[SliceResult]:
    """Accuracy and F1 per value of each group column and per text-length bucket (characters)."""
    slices: list[SliceResult] = []
    columns = {column: group_values(test[column]) for column in group_columns}
    columns[LENGTH_COLUMN] = length_bucket_names(test[TEXT].astype(str).str.len().to_numpy(), length_buckets)
    for column, values in columns.items():
        names = sorted(set(values), key=_bucket_order if column == LENGTH_COLUMN else str)
        masks = np.array([values == name for name in names], dtype=float)
        scores = weighted_scores(truth, probabilities, masks, labels, bins, per_class=False)
        for row, name in enumerate(names):
            support = int(masks[row].sum())
            slices.append(SliceResult(
                column=column, value=str(name), support=support, small=support < min_support,
                accuracy=number_or_none(scores["accuracy"][row]), macro_f1=number_or_none(scores["macro_f1"][row]),
                weighted_f1=number_or_none(scores["weighted_f1"][row]),
            ))
    return slices


def length_bucket_names(lengths: np.ndarray, edges: list[int]) -> np.ndarray:
    """Bucket names such as ``<40``, ``40-79``, ``>=160`` for text lengths in characters."""
    edges = sorted(set(int(edge) for edge in edges))
    names = [f"<{edges[0]}"] + [f"{low}-{high - 1}" for low, high in zip(edges, edges[1:])] + [f">={edges[-1]}"]
    return np.array([names[int(np.searchsorted(edges, length, side="right"))] for length in lengths], dtype=object)


def _bucket_order(name: str) -> float:
    if name.startswith("<"):
        return -1.0
    if name.startswith(">="):
        return math.inf
    return float(name.split("-")[0])


# --- report files -------------------------------------------------------------------------------


def _plot_confusion(truth: np.ndarray, predicted: np.ndarray, labels: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _plot_reliability(truth: np.ndarray, probabilities: np.ndarray, bins: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confidence = probabilities.max(axis=1)
    hit = probabilities.argmax(axis=1) == truth
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    centres, accuracy, mean_confidence = [], [], []
    for b in range(bins):
        member = which == b
        if member.any():
            centres.append((b + 0.5) / bins)
            accuracy.append(hit[member].mean())
            mean_confidence.append(confidence[member].mean())
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.bar(centres, accuracy, width=1 / bins, alpha=0.7, edgecolor="black", label="accuracy per bin")
    axes.scatter(centres, mean_confidence, color="red", marker="_", s=200, label="mean confidence per bin")
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


def _write_classification_report(y_true, y_pred, probabilities, labels, output_dir: Path,
                                 report: EvaluationReport) -> Path | None:
    path = output_dir / "classification.html"
    try:
        snapshot = classification_snapshot(y_true, y_pred, probabilities, labels)
    except Exception as error:  # Evidently raises KeyError/ValueError on degenerate label sets
        report.notes.append(f"Evidently classification report not written ({type(error).__name__}: {error})")
        return None
    snapshot.save_html(str(path))  # Evidently writes nothing when given a Path object
    return path


def render_html(report: EvaluationReport) -> str:
    """The evaluation summary page (links the Evidently pages and embeds the plots)."""
    e = html.escape
    rows = []
    for name in HEADLINE + ("log_loss",):
        value = report.metrics.get(name)
        interval = report.intervals.get(name)
        rows.append([name, _f(value), f"[{_f(interval[0])}, {_f(interval[1])}]" if interval else "-"])
    per_class = [[label, _f(v["precision"]), _f(v["recall"]), _f(v["f1"]), _f(v.get("roc_auc")), v["support"]]
                 for label, v in report.metrics["per_class"].items()]
    slices = [[s.column, s.value, s.support, "small (not judged)" if s.small else "",
               _f(s.accuracy), _f(s.macro_f1), _f(s.weighted_f1)] for s in report.slices]
    gaps = [[g.column, g.metric, _f(g.value), g.label or "-", g.rate or "-",
             f"{g.low_group} {_f(g.low_value)}" if g.low_group else "-",
             f"{g.high_group} {_f(g.high_value)}" if g.high_group else "-"] for g in report.fairness.gaps]
    groups = [[g.column, g.group, g.support, "small" if g.small else "", _f(g.accuracy),
               *[_f(g.selection_rate.get(label)) for label in report.labels],
               *[_f(g.true_positive_rate.get(label)) for label in report.labels]] for g in report.fairness.groups]
    behaviour = [[b.name, b.kind, b.perturbation or "-", b.tested, b.passed,
                  _f(b.pass_rate) if b.pass_rate is not None else (b.skipped or "-"),
                  "; ".join(json.dumps(f) for f in b.failures[:3])] for b in report.behavioural]
    drift = [[name, d["kind"], d["method"], _f(d["score"]), _f(d["threshold"]), "drifted" if d["drifted"] else ""]
             for name, d in (report.drift.details.items() if report.drift else [])]
    links = "".join(f'<li><a href="{e(Path(path).name)}">{e(title)}</a></li>' for title, path in report.reports()
                    if path not in (report.html_path,))
    notes = "".join(f"<li>{e(note)}</li>" for note in report.notes + report.fairness.notes)
    labels = report.labels
    images = "".join(f'<img src="{e(Path(p).name)}" alt="{e(Path(p).stem)}" style="max-width:45%;margin:4px">'
                     for p in (report.confusion_png, report.reliability_png) if p)
    drift_line = e(report.drift.summary_line()) if report.drift else "not computed"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Evaluation: {e(report.model or 'model')}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}th{{background:#eee}}</style></head><body>
<h1>Evaluation on the test split</h1>
<p>Model: {e(report.model or '-')} &middot; rows: {report.rows} &middot; labels: {e(', '.join(labels))} &middot;
data fingerprint: {e(report.data_fingerprint or '-')} &middot; {report.seconds:.1f} s</p>
<ul>{links}</ul>
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
<h2>Metrics (95% bootstrap intervals)</h2>{_table(['metric', 'value', '95% interval'], rows)}
<h2>Per class</h2>{_table(['class', 'precision', 'recall', 'F1', 'ROC-AUC (one-vs-rest)', 'support'], per_class)}
{images}
<h2>Slices</h2><p>Slices with fewer than {report.min_slice_support} rows are flagged and not judged by the gate.</p>
{_table(['column', 'value', 'support', 'flag', 'accuracy', 'macro F1', 'weighted F1'], slices)}
<h2>Fairness</h2><p>One-vs-rest per class, maximum over classes; see docs/evaluation.md.</p>
{_table(['column', 'metric', 'gap', 'class', 'rate', 'lowest group', 'highest group'], gaps)}
{_table(['column', 'group', 'support', 'flag', 'accuracy', *[f'selection rate {x}' for x in labels],
         *[f'TPR {x}' for x in labels]], groups)}
<h2>Behavioural checks</h2>
{_table(['case', 'kind', 'perturbation', 'tested', 'passed', 'pass rate', 'examples of failures'], behaviour)}
<h2>Drift</h2><p>{drift_line}</p>
{_table(['signal', 'kind', 'method', 'score', 'threshold', 'verdict'], drift)}
</body></html>
"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)
