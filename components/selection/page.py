"""The selection page (``selection.html``): the ranked table and how each number was measured,
inside the shared page shell (``tuneops.components.pages``)."""

from __future__ import annotations

import html
from pathlib import Path

from tuneops.components.pages import html_table, write_page
from tuneops.components.selection.report import CHOSEN, EXCLUDED, FAILED, SKIPPED, SelectionReport

TITLE = "Model selection"
_COLUMNS = [
    ("rank", "rank"), ("candidate", "candidate"), ("status", "status"), ("score", "score"),
    ("score_interval", "score 95% interval"), ("versus_chosen", "vs chosen [95% interval]"),
    ("probe_macro_f1", "probe macro-F1"), ("finetune_macro_f1", "fine-tune macro-F1"),
    ("latency_ms_b1", "ms/item @1"), ("latency_ms_b32", "ms/item @32"), ("parameters", "parameters"),
    ("layers", "layers"), ("peak_memory_mb", "peak MB"), ("seconds", "seconds"), ("reason", "reason / notes"),
]
_WORD_COLUMNS = {"candidate", "status", "reason"}
# The page shell's status classes: chosen in green, excluded in amber, failed in red, skipped greyed.
_STATUS_CLASSES = {CHOSEN: "ok", EXCLUDED: "warn", FAILED: "bad", SKIPPED: "muted"}

_MEASURES = """<h2>How the numbers are measured</h2>
<ul>
<li><b>score 95% interval</b>: the 2.5th to 97.5th percentile of the score over
selection.bootstrap_samples bootstrap resamples of the validation rows; <b>vs chosen</b>: the
candidate's score minus the chosen one's, its interval from the same resamples (paired: rows both
get right or both get wrong cancel out). A candidate is clearly beaten only when the paired
interval of the best's lead over it lies entirely above selection.tie_tolerance.</li>
<li><b>probe macro-F1</b>: a logistic regression trained on the candidate's frozen, mean-pooled
last-layer embeddings of the sample, scored on the validation rows.</li>
<li><b>fine-tune macro-F1</b>: after a short fine-tune by the training engine
(selection.probe_finetune_steps), when enabled; it is then the score.</li>
<li><b>ms/item</b>: wall time per input, the processor's encoding included, at batch 1
and batch 32: the fastest of repeated calls, so that other processes on the machine do not decide
the ranking.</li>
<li><b>parameters</b>: with the classification head; <b>peak MB</b>: memory added while loading and
probing (CUDA allocator peak on a GPU, process RSS above its starting level on CPU).</li>
<li>Candidate specs ending in <code>@layers=K</code> keep only the first K transformer layers
(layer dropping), a smaller and faster model derived from the same checkpoint.</li>
</ul>"""


def write_selection_page(report: SelectionReport) -> Path:
    """Write ``report.html_path`` (atomically, linked back to the run's index)."""
    return write_page(report.html_path, TITLE, render_body(report))


def render_body(report: SelectionReport) -> str:
    """The page's body: the choice, the setting, the ranked table and how it was measured."""
    escape = html.escape
    rows, classes = [], []
    for source, shown in zip(report.rows, report.table_rows()):
        shown = {**shown, "score": shown[report.objective]}
        if isinstance(shown["parameters"], int):
            shown["parameters"] = f"{shown['parameters']:,}"
        rows.append([shown[key] for key, _ in _COLUMNS])
        classes.append(_STATUS_CLASSES.get(source.status))
    numeric = {index for index, (key, _) in enumerate(_COLUMNS) if key not in _WORD_COLUMNS}
    table = html_table([title for _, title in _COLUMNS], rows, classes, numeric)
    constraints = ", ".join(f"{key} = {value}" for key, value in report.constraints.items())
    chosen = escape(str(report.chosen)) if report.chosen else '<span class="error">none: no usable candidate</span>'
    baseline = ", ".join(f"{key} {value:.3f}" for key, value in report.baseline.items() if isinstance(value, float))
    return f"""<p>Chosen: <b>{chosen}</b> &mdash; objective: {escape(report.objective)};
constraints: {escape(constraints)}.</p>
<p><b>Why:</b> {escape(report.why)}.</p>
<p>Probed on a stratified sample of {report.probe_rows} training rows, scored on {report.validation_rows}
validation rows, device {escape(report.device)}, {report.seconds:.1f} s in all.
Baseline on the same rows: {escape(baseline)}.</p>
{table}
{_MEASURES}
"""
