"""The evidence on the gate page: the challenger, the champion and the floor on the same test rows.

``compare_models`` is the paired-bootstrap table (``comparison`` in gate.json): every model is
scored on the same resamples of the same test rows (``metrics.paired_comparison``), so the interval
of a difference is that of the difference itself, not of two numbers each with its own noise.
``floor_summary`` is what the classical floor is and its figures next to the challenger's.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from tuneops.components.errors import StageError
from tuneops.components.evaluation.report import EvaluationReport
from tuneops.components.metrics import paired_comparison
from tuneops.components.pages import html_table


# Compared on the gate page next to ``gate.metric`` (which comes first): the label metrics a
# reviewer signs off on. Probability metrics (ROC-AUC, ECE) need the floor's probabilities too.
_COMPARED = ("accuracy", "macro_f1", "weighted_f1")


def compare_models(challenger: EvaluationReport, champion: EvaluationReport | None, baseline: dict | None,
                   metric: str) -> dict[str, Any] | None:
    """The paired comparison of the challenger with the champion and the floor on the same test rows.

    Uses the reports' per-row predictions and the floor's ``predictions`` (``score_floor``), and the
    challenger's bootstrap settings (``evaluation.bootstrap_samples`` and ``seed``). None when the
    challenger's report kept no per-row predictions. Raises StageError when the champion's or the
    floor's rows are not the challenger's.
    """
    if not challenger.y_pred:
        return None
    truth_labels = [str(label) for label in challenger.y_true]
    models: dict[str, list[str]] = {"challenger": challenger.y_pred}
    if champion is not None and champion.y_pred:
        if [str(label) for label in champion.y_true] != truth_labels:
            raise StageError("gate: the champion's test rows carry other labels than the challenger's (another "
                             "split or row order); re-score it on this run's splits")
        models["champion"] = champion.y_pred
    floor = (baseline or {}).get("predictions")
    if floor is not None:
        if len(floor) != len(truth_labels):
            raise StageError(f"gate: the floor predicted {len(floor)} test rows, the challenger "
                             f"{len(truth_labels)}; score both on this run's test split")
        models["floor"] = floor
    labels = sorted(set(truth_labels).union(*(map(str, predicted) for predicted in models.values())))
    index = {label: position for position, label in enumerate(labels)}
    truth = np.array([index[label] for label in truth_labels])
    predictions = {name: np.array([index[str(label)] for label in predicted]) for name, predicted in models.items()}
    pairs = [("challenger", other) for other in ("champion", "floor") if other in models]
    names = [metric, *(name for name in _COMPARED if name != metric)]
    table = paired_comparison(truth, predictions, len(labels), names, pairs, challenger.bootstrap_samples,
                              challenger.seed)
    return {"rows": len(truth), "bootstrap_samples": challenger.bootstrap_samples, "seed": challenger.seed,
            "models": list(models), "differences": [f"{a} - {b}" for a, b in pairs], "metrics": table}


def comparison_html(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return ""
    columns = comparison["models"] + comparison["differences"]
    rows, classes = [], []
    for name, entry in comparison["metrics"].items():
        row = [name]
        for column in columns:
            value, interval = entry[column]["value"], entry[column]["interval"]
            signed = column in comparison["differences"]
            row += [_number(value, signed), _interval_cell(interval, signed)]
        rows.append(row)
        # Green when every difference's interval lies above zero, red when one lies below it.
        ends = [entry[d]["interval"] for d in comparison["differences"] if entry[d]["interval"]]
        classes.append("bad" if any(high < 0 for _, high in ends) else
                       "ok" if ends and all(low > 0 for low, _ in ends) else None)
    headers = ["metric"] + [title for column in columns for title in (column, f"{column} 95% interval")]
    table = html_table(headers, rows, classes, numeric=set(range(1, len(headers))))
    samples = comparison["bootstrap_samples"]
    how = (f"{samples} paired bootstrap resamples of the same {comparison['rows']} test rows for every model "
           f"(seed {comparison['seed']}): a difference whose interval excludes 0 is more than resampling noise"
           if samples else "no bootstrap resamples (evaluation.bootstrap_samples = 0): no intervals")
    return f"<h2>Challenger, champion and floor on the same test rows</h2><p>{html.escape(how)}.</p>{table}"


def _number(value: float | None, signed: bool) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _interval_cell(interval: list[float] | None, signed: bool) -> str:
    if not interval:
        return "-"
    return f"[{_number(interval[0], signed)}, {_number(interval[1], signed)}]"


def floor_rows(challenger: EvaluationReport, baseline: dict) -> int | None:
    """The test rows the floor was scored on (``support``), refused when they are not the challenger's."""
    rows = baseline.get("support")
    if rows is None:
        return None
    if int(rows) != challenger.rows:
        raise StageError(f"gate: the floor was scored on {rows} test rows, the challenger on {challenger.rows}; "
                         "score both on this run's test split")
    return int(rows)


# The floor's figures the gate page shows next to the challenger's (``gate.metric`` is added first).
_FLOOR_FIGURES = ("accuracy", "macro_f1", "weighted_f1")


def floor_summary(challenger: EvaluationReport, baseline: dict | None, metric: str) -> dict[str, Any] | None:
    """What the floor is and its figures next to the challenger's, or None without floor metrics."""
    if not baseline or baseline.get(metric) is None:
        return None
    names = [metric, *(name for name in _FLOOR_FIGURES if name != metric)]
    figures = {}
    for name in names:
        if baseline.get(name) is None or challenger.metrics.get(name) is None:
            continue
        ours, theirs = float(challenger.metrics[name]), float(baseline[name])
        figures[name] = {"challenger": ours, "interval": challenger.intervals.get(name), "floor": theirs,
                         "gap": ours - theirs}
    settings = {key.removeprefix("floor_"): value for key, value in baseline.items() if key.startswith("floor_")}
    return {"description": baseline.get("floor"), "rows": floor_rows(challenger, baseline), "settings": settings,
            "figures": figures}


def floor_html(floor: dict[str, Any] | None) -> str:
    if not floor:
        return ""
    rows = [[name, f"{f['challenger']:.3f}",
             f"[{f['interval'][0]:.3f}, {f['interval'][1]:.3f}]" if f["interval"] else "-",
             f"{f['floor']:.3f}", f"{f['gap']:+.3f}"] for name, f in floor["figures"].items()]
    table = html_table(["metric", "model", "model 95% interval", "floor", "model - floor"], rows,
                       ["ok" if f["gap"] > 0 else "bad" for f in floor["figures"].values()], numeric={1, 2, 3, 4})
    what = html.escape(floor["description"] or "the task's classical baseline")
    on_rows = f", fitted on the training split and scored on the same {floor['rows']} test rows" if floor["rows"] else ""
    return f"<h2>The classical floor</h2><p>{what}{on_rows}.</p>{table}"
