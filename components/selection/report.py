"""What selection reports: one row per candidate (``CandidateResult``) and the whole outcome
(``SelectionReport``), with the statuses a row can have and its plain forms (JSON, table rows)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHOSEN, RANKED, BASELINE, EXCLUDED, SKIPPED, FAILED = "chosen", "ranked", "baseline", "excluded", "skipped", "failed"


@dataclass
class CandidateResult:
    """One row of the selection table: what was checked and measured for one candidate."""

    candidate: str
    status: str = SKIPPED  # chosen / ranked / baseline / excluded / skipped / failed
    rank: int | None = None
    reason: str | None = None  # why it was excluded, skipped or failed
    architecture: str | None = None
    parameters: int | None = None
    layers: int | None = None
    max_sequence_length: int | None = None
    weights: str | None = None
    score: float | None = None  # the objective's metric from the most thorough probe that ran
    score_interval: list[float] | None = None  # its 95% bootstrap interval on the validation rows
    versus_chosen: float | None = None  # score minus the chosen candidate's (negative: behind it)
    versus_chosen_interval: list[float] | None = None  # its paired 95% interval (same resamples)
    probe_macro_f1: float | None = None
    probe_accuracy: float | None = None
    finetune_steps: int = 0
    finetune_macro_f1: float | None = None
    finetune_accuracy: float | None = None
    latency_ms_batch1: float | None = None
    latency_ms_batch32: float | None = None
    peak_memory_mb: float | None = None
    seconds: float = 0.0
    beats_baseline: bool | None = None
    notes: list[str] = field(default_factory=list)
    # The class indices behind ``score``, one per validation row, so that ranking can compare
    # candidates row by row; kept out of the JSON report (``to_json``).
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready values, without the per-row predictions."""
        return {name: value for name, value in asdict(self).items() if name != "predictions"}


@dataclass
class SelectionReport:
    """The outcome of selection: the chosen candidate spec and the ranked table behind it."""

    chosen: str | None
    rows: list[CandidateResult]
    baseline: dict[str, Any]  # the task's floor's validation metrics (accuracy, macro_f1, weighted_f1)
    objective: str
    constraints: dict[str, Any]
    device: str
    probe_rows: int
    validation_rows: int
    seconds: float
    html_path: Path
    json_path: Path
    why: str = ""  # one sentence: why the chosen candidate won (ranking.rank_candidates)

    @property
    def chosen_result(self) -> CandidateResult | None:
        """The row of the chosen candidate, or None when none was chosen."""
        return next((row for row in self.rows if row.status == CHOSEN), None)

    def table_rows(self) -> list[dict[str, Any]]:
        """The ranked table as flat rows of plain values (for a Prefect table artifact)."""
        table = []
        for row in self.rows:
            table.append({
                "rank": row.rank if row.rank is not None else "-",
                "candidate": row.candidate,
                "status": row.status,
                self.objective: shown(row.score),
                "score_interval": shown_interval(row.score_interval),
                "versus_chosen": shown_difference(row.versus_chosen, row.versus_chosen_interval),
                "probe_macro_f1": shown(row.probe_macro_f1),
                "finetune_macro_f1": shown(row.finetune_macro_f1),
                "latency_ms_b1": shown(row.latency_ms_batch1, 2),
                "latency_ms_b32": shown(row.latency_ms_batch32, 2),
                "parameters": row.parameters if row.parameters is not None else "-",
                "layers": row.layers if row.layers is not None else "-",
                "peak_memory_mb": shown(row.peak_memory_mb, 1),
                "seconds": round(row.seconds, 1),
                "reason": "; ".join(filter(None, [row.reason, *row.notes])) or "-",
            })
        return table

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (``selection.json``)."""
        return {
            "chosen": self.chosen,
            "why": self.why,
            "objective": self.objective,
            "constraints": self.constraints,
            "device": self.device,
            "probe_rows": self.probe_rows,
            "validation_rows": self.validation_rows,
            "seconds": round(self.seconds, 2),
            "baseline": self.baseline,
            "rows": [row.to_json() for row in self.rows],
            "html_path": str(self.html_path),
            "json_path": str(self.json_path),
        }

    def summary(self) -> str:
        """One line for logs."""
        probed = sum(row.status in (CHOSEN, RANKED) for row in self.rows)
        return (f"selection: chose {self.chosen} out of {probed} ranked of {len(self.rows) - 1} candidates "
                f"in {self.seconds:.0f} s on {self.device}: {self.why}")


def shown(value: float | None, digits: int = 3) -> float | str:
    """A number rounded for the table, ``-`` when missing or NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


def shown_interval(interval: list[float] | None) -> str:
    """``[lo, hi]`` to 3 decimals, ``-`` when there is none."""
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def shown_difference(value: float | None, interval: list[float] | None) -> str:
    """A signed difference with its interval when there is one (``+0.012 [-0.010, 0.034]``), ``-``
    when there is no difference to show."""
    if value is None:
        return "-"
    return f"{value:+.3f}" if interval is None else f"{value:+.3f} {shown_interval(interval)}"
