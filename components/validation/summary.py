"""Writing the report: ``validation.json`` (the whole report, machine-readable) and
``summary.html`` (one table of every check, linking the GX data docs when they were built) in the
shared page shell."""

from __future__ import annotations

import html

from tuneops.components.files import atomic_write_text
from tuneops.components.pages import write_page
from tuneops.components.validation.report import ValidationReport

# The shared page classes for each result: green pass, red blocking failure, amber warning.
_STATUS_CLASS = {"pass": "ok", "BLOCK": "bad", "warn": "warn"}


def write_report(report: ValidationReport, preview: str = "") -> None:
    """Write the report's JSON and its summary page where the report says they are; ``preview``
    is the task's HTML section about its inputs (``InputChecks.preview``), shown after the checks."""
    if report.summary_html_path is not None:
        write_page(report.summary_html_path, f"Data validation: {'passed' if report.passed else 'failed'}",
                   summary_body(report) + preview)
    atomic_write_text(report.json_path, report.to_json())


def summary_body(report: ValidationReport) -> str:
    """The page body: the verdict lines, links to the JSON (and the data docs, when built), and every check."""
    rows = []
    for r in report.results:
        status = "pass" if r.success else ("BLOCK" if r.severity == "block" else "warn")
        rows.append(
            f"<tr><td class='{_STATUS_CLASS[status]}'>{html.escape(status)}</td><td>{html.escape(r.name)}</td>"
            f"<td>{html.escape(r.split)}</td><td>{html.escape(r.column or '')}</td><td>{html.escape(r.severity)}</td>"
            f"<td class='num'>{r.failing_rows:,}</td><td>{html.escape(r.message)}</td>"
            f"<td>{html.escape(', '.join(r.examples))}</td><td><code>{html.escape(r.expectation_type)}</code></td></tr>"
        )
    docs = ""
    if report.html_path is not None:
        link = report.html_path.relative_to(report.output_dir).as_posix()
        docs = f"<p><a href='{html.escape(link)}'>Great Expectations data docs</a></p>"
    head = "".join(f"<li>{html.escape(line)}</li>" for line in report.summary_lines()[:2])
    return (
        f"<ul>{head}</ul>{docs}"
        "<p><a href='validation.json'>validation.json</a> (machine-readable)</p>"
        "<table><tr><th>result</th><th>check</th><th>split</th><th>column</th><th>severity</th>"
        "<th class='num'>failing</th><th>message</th><th>examples</th><th>GX expectation</th></tr>"
        + "".join(rows)
        + "</table>"
    )
