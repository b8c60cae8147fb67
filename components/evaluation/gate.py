"""The champion/challenger gate: promote the new model or keep the current one, with reasons.

Checks, each a one-line reason naming the metric, slice or group and the numbers:
  - main metric (``gate.metric``): not worse than the champion by more than ``gate.tolerance``;
    with no champion (the first model), strictly better than the task's classical floor on the same
    test rows (``gate.require_beat_baseline``; text: balanced TF-IDF + logistic regression, see
    ``evaluation/floor.py``): a transformer that cannot beat it is not worth serving. The reason
    gives the model's value with its 95% bootstrap interval, the floor's value, the gap and what
    the floor is;
  - slices: no slice with at least ``evaluation.min_slice_support`` rows drops by more than
    ``gate.max_slice_drop`` against the champion on the same metric;
  - fairness: every judged gap in ``gate.fairness_metrics`` stays within ``gate.max_fairness_gap``
    (absolute, so it applies to the first model too);
  - behavioural: every case's pass rate meets its ``min_pass_rate`` or ``gate.min_behavioural_pass_rate``;
  - infra (added after packaging, ``add_check``): the packaged model, served by a real
    ``bentoml serve``, answers test inputs as in process and in time (serving/infra_validation.py).

Both evaluation reports must come from the same test data: the champion is re-scored, never
trusted from old numbers. A rejection is a normal outcome, not an error.

The evidence (``comparison`` in gate.json, a table on gate.html): the gate metric, accuracy and
macro / weighted F1 of the challenger, the champion and the floor, each with its 95% bootstrap
interval, and the paired-bootstrap differences challenger - champion and challenger - floor
(``gate_evidence.py``).
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneops.components.config import GateConfig
from tuneops.components.errors import StageError
from tuneops.components.evaluation.gate_evidence import (comparison_html, compare_models, floor_html, floor_rows,
                                                          floor_summary)
from tuneops.components.evaluation.report import EvaluationReport
from tuneops.components.files import atomic_write_json
from tuneops.components.pages import html_table, write_page


@dataclass
class GateCheck:
    """One check of the gate and its one-line reason."""

    name: str  # metric | baseline | slice | fairness | behavioural | infra
    passed: bool
    message: str
    subject: str | None = None  # the slice, group column or behavioural case concerned


@dataclass
class PromotionDecision:
    """Promote or reject, why, and the numbers behind it."""

    promote: bool
    reasons: list[str]  # rejected: every failed check; promoted: every check, all passed
    checks: list[GateCheck]
    metric: str
    challenger_value: float | None
    champion_value: float | None = None
    baseline_value: float | None = None
    # The floor on this run's test rows, whenever its metrics were given (see ``_floor_summary``).
    floor: dict[str, Any] | None = None
    # The paired-bootstrap table (see the module doc), or None when the reports kept no per-row predictions.
    comparison: dict[str, Any] | None = None
    html_path: Path | None = None
    json_path: Path | None = None

    @property
    def status(self) -> str:
        return "promoted" if self.promote else "rejected"

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "status": self.status,
            "metric": self.metric,
            "challenger": self.challenger_value,
            "champion": self.champion_value,
            "baseline": self.baseline_value,
            "floor": self.floor,
            "comparison": self.comparison,
            "reasons": list(self.reasons),
            "checks": [asdict(check) for check in self.checks],
        }

    def add_check(self, check: GateCheck) -> None:
        """Add a check made after the metrics were judged (infrastructure validation of the
        packaged model): a failed one turns the decision into a rejection."""
        self.checks.append(check)
        self.promote, self.reasons = _verdict(self.checks)

    def to_markdown(self) -> str:
        """The decision as Markdown (for a Prefect artifact)."""
        lines = [f"# Gate: **{'promote' if self.promote else 'reject'}**", ""]
        lines += [f"- {'PASS' if c.passed else 'FAIL'}: {c.message}" for c in self.checks]
        return "\n".join(lines) + "\n"

    def save(self, output_dir: Path) -> Path:
        """Write ``gate.json`` and ``gate.html`` into ``output_dir``; returns the HTML path."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.json_path = output_dir / "gate.json"
        self.html_path = output_dir / "gate.html"
        atomic_write_json(self.json_path, self.to_json())
        rows = [["PASS" if c.passed else "FAIL", c.name, c.message] for c in self.checks]
        table = html_table(["result", "check", "reason"], rows, ["ok" if c.passed else "bad" for c in self.checks])
        verdict = "promote" if self.promote else "reject"
        body = (f"<p>Metric: {html.escape(self.metric)}</p>{table}{comparison_html(self.comparison)}"
                f"{floor_html(self.floor)}")
        write_page(self.html_path, f"Gate: {verdict}", body)
        return self.html_path


def decide(
    challenger: EvaluationReport,
    champion: EvaluationReport | None,
    baseline_metrics: dict | None,
    config: GateConfig,
) -> PromotionDecision:
    """Judge ``challenger`` against ``champion`` (or, for the first model, the baseline).

    Raises StageError when the two reports were computed on different test data.
    """
    metric = config.metric
    value = _metric(challenger.metrics, metric, "challenger")
    checks: list[GateCheck] = []
    champion_value = baseline_value = None
    if champion is not None:
        _same_test_data(challenger, champion)
        champion_value = _metric(champion.metrics, metric, "champion")
        checks.append(_metric_check(value, champion_value, metric, config.tolerance))
        checks.extend(_slice_checks(challenger, champion, metric, config.max_slice_drop))
    else:
        check, baseline_value = _baseline_check(challenger, value, baseline_metrics, metric, config)
        checks.append(check)
    checks.extend(_fairness_checks(challenger, config))
    checks.extend(_behavioural_checks(challenger, config.min_behavioural_pass_rate))
    promote, reasons = _verdict(checks)
    return PromotionDecision(promote=promote, reasons=reasons, checks=checks, metric=metric,
                             challenger_value=value, champion_value=champion_value, baseline_value=baseline_value,
                             floor=floor_summary(challenger, baseline_metrics, metric),
                             comparison=compare_models(challenger, champion, baseline_metrics, metric))


def _verdict(checks: list[GateCheck]) -> tuple[bool, list[str]]:
    """Promote only when every check passed; the reasons are every check then, else the failed ones."""
    failed = [check for check in checks if not check.passed]
    return not failed, [check.message for check in (failed or checks)]


def _metric(metrics: dict, name: str, whose: str) -> float:
    value = metrics.get(name)
    if value is None:
        raise StageError(f"gate: the {whose} has no {name} metric")
    return float(value)


def _same_test_data(challenger: EvaluationReport, champion: EvaluationReport) -> None:
    different_data = (challenger.data_fingerprint and champion.data_fingerprint
                      and challenger.data_fingerprint != champion.data_fingerprint)
    if different_data or challenger.rows != champion.rows:
        raise StageError(
            f"gate: the champion was scored on other test data ({champion.rows} rows, fingerprint "
            f"{champion.data_fingerprint or '-'}) than the challenger ({challenger.rows} rows, "
            f"{challenger.data_fingerprint or '-'}); re-score it on this run's splits"
        )


def _metric_check(value: float, champion: float, metric: str, tolerance: float) -> GateCheck:
    drop = champion - value
    if drop > tolerance:
        return GateCheck("metric", False, f"{metric} {value:.3f} vs champion {champion:.3f} "
                                          f"(drop {drop:.3f} > tolerance {tolerance:.3f})")
    return GateCheck("metric", True, f"{metric} {value:.3f} vs champion {champion:.3f} "
                                     f"({'+' if drop <= 0 else '-'}{abs(drop):.3f}, tolerance {tolerance:.3f})")


def _baseline_check(challenger: EvaluationReport, value: float, baseline: dict | None, metric: str,
                    config: GateConfig) -> tuple[GateCheck, float | None]:
    if not config.require_beat_baseline:
        return GateCheck("baseline", True, f"first model: {metric} {value:.3f}; baseline comparison is off "
                                           "(gate.require_beat_baseline=false)"), None
    if not baseline or baseline.get(metric) is None:
        message = f"first model: {metric} {value:.3f}; no baseline score to compare with"
        return GateCheck("baseline", True, message), None
    floor = float(baseline[metric])
    rows = floor_rows(challenger, baseline)
    on_rows = f" on the same {rows} test rows" if rows is not None else ""
    what = f"; the floor is {baseline['floor']}" if baseline.get("floor") else ""
    interval = challenger.intervals.get(metric)
    model = f"{metric} {value:.3f}{_interval_text(interval)}"
    if value <= floor:
        verdict = ""
        if interval:
            verdict = ("; even the interval's upper end is below the floor" if interval[1] < floor
                       else "; the floor lies within the model's interval")
        return GateCheck("baseline", False, f"first model: {model} does not beat the classical floor's "
                                            f"{floor:.3f}{on_rows}: the floor is ahead by {floor - value:.3f}"
                                            f"{verdict}{what}"), floor
    return GateCheck("baseline", True, f"first model: {model} beats the classical floor's {floor:.3f}{on_rows} "
                                       f"by {value - floor:.3f}{what}"), floor


def _interval_text(interval: list[float] | None) -> str:
    return f" (95% interval [{interval[0]:.3f}, {interval[1]:.3f}])" if interval else ""


def _slice_checks(challenger: EvaluationReport, champion: EvaluationReport, metric: str,
                  max_drop: float) -> list[GateCheck]:
    checks, judged, worst = [], 0, None
    for piece in challenger.slices:
        theirs = champion.slice(piece.name)
        ours_value = piece.metric(metric)
        if piece.small or theirs is None or ours_value is None or theirs.metric(metric) is None:
            continue
        judged += 1
        drop = theirs.metric(metric) - ours_value
        if worst is None or drop > worst[1]:
            worst = (piece.name, drop)
        if drop > max_drop:
            checks.append(GateCheck("slice", False, f"slice {piece.name}: {metric} {ours_value:.2f} vs champion "
                                                    f"{theirs.metric(metric):.2f} (drop {drop:.2f} > max_slice_drop "
                                                    f"{max_drop:.2f}, {piece.support} rows)", piece.name))
    if not checks:
        detail = f"; largest drop {worst[1]:.2f} on {worst[0]}" if worst and worst[1] > 0 else ""
        checks.append(GateCheck("slice", True, f"slices: none of {judged} slices with enough support drops by more "
                                               f"than max_slice_drop {max_drop:.2f}{detail}"))
    return checks


def _fairness_checks(challenger: EvaluationReport, config: GateConfig) -> list[GateCheck]:
    checks, largest, unjudged = [], None, []
    for gap in challenger.fairness.gaps:
        if gap.metric not in config.fairness_metrics:
            continue
        if gap.value is None:
            unjudged.append(f"{gap.column} {gap.metric}")
            continue
        if largest is None or gap.value > largest.value:
            largest = gap
        if gap.value > config.max_fairness_gap:
            checks.append(GateCheck(
                "fairness", False,
                f"fairness {gap.column}: {gap.metric} {gap.value:.2f} > max_fairness_gap {config.max_fairness_gap:.2f} "
                f"(class {gap.label}: {gap.rate} {gap.low_group} {gap.low_value:.2f} vs "
                f"{gap.high_group} {gap.high_value:.2f})",
                gap.column,
            ))
    if not checks:
        detail = f"; largest {largest.column} {largest.metric} {largest.value:.2f}" if largest else ""
        skipped = f"; not judged (too little support): {', '.join(unjudged)}" if unjudged else ""
        checks.append(GateCheck("fairness", True, f"fairness: every gap within max_fairness_gap "
                                                  f"{config.max_fairness_gap:.2f}{detail}{skipped}"))
    return checks


def _behavioural_checks(challenger: EvaluationReport, default_minimum: float) -> list[GateCheck]:
    checks, passed, skipped, too_few = [], [], [], []
    for result in challenger.behavioural:
        if result.pass_rate is None:
            skipped.append(result.name)
            continue
        if result.min_tested is not None and result.tested < result.min_tested:
            too_few.append(f"{result.name} {result.passed}/{result.tested}")
            continue
        minimum = default_minimum if result.min_pass_rate is None else result.min_pass_rate
        if result.pass_rate < minimum:
            checks.append(GateCheck("behavioural", False, f"behavioural '{result.name}' ({result.kind}): pass rate "
                                                          f"{result.pass_rate:.2f} < minimum {minimum:.2f} "
                                                          f"({result.passed}/{result.tested})", result.name))
        else:
            passed.append(f"{result.name} {result.pass_rate:.2f}")
    if not checks:
        detail = "; ".join(passed) if passed else "no behavioural cases ran"
        note = f"; skipped (nothing to test): {', '.join(skipped)}" if skipped else ""
        if too_few:
            note += f"; reported, not judged (fewer inputs than its min_tested): {', '.join(too_few)}"
        checks.append(GateCheck("behavioural", True,
                                f"behavioural: every pass rate meets its minimum ({detail}){note}"))
    return checks
