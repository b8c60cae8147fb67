"""What an evaluation found: the metrics with their intervals, the slices, fairness, behaviour and
drift, and where each report file lies. The gate judges two of these; ``evaluation.json`` is one
written out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneops.components.evaluation.behaviour import BehaviouralResult
from tuneops.components.evaluation.drift import DriftResult
from tuneops.components.evaluation.fairness import FairnessReport
from tuneops.components.files import plain_json


@dataclass
class SliceResult:
    """Metrics on one slice of the test split (a group value, or a bucket of an input property)."""

    column: str
    value: str
    support: int
    small: bool  # support below evaluation.min_slice_support: shown and flagged, not judged by the gate
    accuracy: float | None
    macro_f1: float | None
    weighted_f1: float | None
    # metric -> [low, high]: 95% bootstrap interval over resamples of the slice's own rows (empty
    # with evaluation.bootstrap_samples = 0); the evaluation page draws it as the slice's error bar.
    intervals: dict[str, list[float]] = field(default_factory=dict)

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
    # The reliability diagram's bins as a table: lower / upper confidence, rows, accuracy, mean confidence.
    reliability: list[dict[str, float]] = field(default_factory=list)
    # The bootstrap the intervals came from, so the gate resamples the same way for its paired differences.
    bootstrap_samples: int = 0
    seed: int = 0
    # gate.max_fairness_gap when the caller passed it: the line on the fairness chart (None: no line).
    max_fairness_gap: float | None = None
    # Per-row true and predicted labels in test-row order, for the gate's paired comparison. Kept in
    # memory only (not in evaluation.json): a test split can have many rows.
    y_true: list[str] = field(default_factory=list, repr=False)
    y_pred: list[str] = field(default_factory=list, repr=False)

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
            "reliability": self.reliability,
            "bootstrap_samples": self.bootstrap_samples,
            "seed": self.seed,
            "max_fairness_gap": self.max_fairness_gap,
            "fairness": self.fairness.to_json(),
            "behavioural": [b.to_json() for b in self.behavioural],
            "drift": self.drift.to_json() if self.drift else None,
            "seconds": self.seconds,
            "notes": self.notes,
            "reports": {title: str(path) for title, path in self.reports()},
        })
