"""The evaluation summary page (``evaluation.html``): metrics with intervals, per-class scores,
the plots (the reliability diagram with its bins' row counts), slices and fairness as bar charts
beside their tables, behaviour and drift, with links to the Evidently pages. It is framed by the
shared page shell (``tuneops.components.pages``); the charts are inline PNGs, so the page needs
nothing from outside the run folder."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from tuneops.components.evaluation.plots import fairness_chart, slice_chart
from tuneops.components.evaluation.report import EvaluationReport
from tuneops.components.metrics import HEADLINE
from tuneops.components.pages import html_table, write_page

TITLE = "Evaluation on the test split"
# The slice chart shows the gate's default metric; the table beside it has every slice score.
SLICE_CHART_METRIC = "macro_f1"


def write_evaluation_page(report: EvaluationReport, path: Path) -> Path:
    """Write the summary page of ``report`` to ``path`` (atomically)."""
    return write_page(path, TITLE, render_body(report), width="75rem")


def render_body(report: EvaluationReport) -> str:
    """The page's body: every table of the report, escaped."""
    e = html.escape
    rows = []
    for name in HEADLINE + ("log_loss",):
        value = report.metrics.get(name)
        interval = report.intervals.get(name)
        rows.append([name, _f(value), f"[{_f(interval[0])}, {_f(interval[1])}]" if interval else "-"])
    per_class = [[label, _f(v["precision"]), _f(v["recall"]), _f(v["f1"]), _f(v.get("roc_auc")), v["support"]]
                 for label, v in report.metrics["per_class"].items()]
    slices = [[s.column, s.value, s.support, "small (not judged)" if s.small else "",
               _f(s.accuracy), _f(s.macro_f1), _interval(s.intervals.get("macro_f1")), _f(s.weighted_f1)]
              for s in report.slices]
    reliability = [[f"{b['low']:.2f}-{b['high']:.2f}", b["rows"], _f(b["accuracy"]), _f(b["confidence"])]
                   for b in report.reliability]
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
    slice_figure = _figure(slice_chart(report.slices, SLICE_CHART_METRIC), "slice_chart",
                           f"{SLICE_CHART_METRIC} per slice with 95% bootstrap intervals")
    limit = report.max_fairness_gap
    fairness_figure = _figure(fairness_chart(report.fairness.gaps, limit), "fairness_chart",
                              "fairness gaps per group column" + (f" against gate.max_fairness_gap {limit:.2f}"
                                                                  if limit is not None else ""))
    return f"""<p>Model: {e(report.model or '-')} &middot; rows: {report.rows} &middot; labels: {e(', '.join(labels))} &middot;
data fingerprint: {e(report.data_fingerprint or '-')} &middot; {report.seconds:.1f} s</p>
<ul>{links}</ul>
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
<h2>Metrics (95% bootstrap intervals)</h2>{html_table(['metric', 'value', '95% interval'], rows)}
<h2>Per class</h2>{html_table(['class', 'precision', 'recall', 'F1', 'ROC-AUC (one-vs-rest)', 'support'], per_class)}
{images}
<h2>Calibration bins</h2><p>The reliability diagram's bins: a bin's accuracy rests on its rows, so few rows mean a
noisy bar.</p>
{html_table(['confidence', 'rows', 'accuracy', 'mean confidence'], reliability, numeric={1, 2, 3})}
<h2>Slices</h2><p>Slices with fewer than {report.min_slice_support} rows are flagged and not judged by the gate.
Intervals: 95% bootstrap over each slice's own rows ({report.bootstrap_samples} resamples).</p>
<div class="side">{html_table(['column', 'value', 'support', 'flag', 'accuracy', 'macro F1', 'macro F1 95% interval',
                                'weighted F1'], slices)}{slice_figure}</div>
<h2>Fairness</h2><p>One-vs-rest per class, maximum over classes; see docs/evaluation.md.</p>
<div class="side">{html_table(['column', 'metric', 'gap', 'class', 'rate', 'lowest group', 'highest group'], gaps)}
{fairness_figure}</div>
{html_table(['column', 'group', 'support', 'flag', 'accuracy', *[f'selection rate {x}' for x in labels],
             *[f'TPR {x}' for x in labels]], groups)}
<h2>Behavioural checks</h2>
{html_table(['case', 'kind', 'perturbation', 'tested', 'passed', 'pass rate', 'examples of failures'], behaviour)}
<h2>Drift</h2><p>{drift_line}</p>
{html_table(['signal', 'kind', 'method', 'score', 'threshold', 'verdict'], drift)}
"""


def _figure(uri: str | None, name: str, caption: str) -> str:
    """An inline chart with its caption, or nothing when there is nothing to draw."""
    if uri is None:
        return ""
    e = html.escape
    return (f'<figure class="chart" id="{e(name)}"><img src="{e(uri)}" alt="{e(caption)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


def _interval(interval: list[float] | None) -> str:
    return f"[{_f(interval[0])}, {_f(interval[1])}]" if interval else "-"


def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)
