"""The run's index page (``runs/<run-id>/index.html``): status, stages, metrics, gate reasons and
links to every report, rendered from the run record's summary and lineage."""

from __future__ import annotations

import html
from typing import Any

from tuneops.components.pages import INDEX, nav_links, render_page


# The shared page classes (components/page.html.j2) for each status a run or stage can have.
_STATUS_CLASSES = {"promoted": "ok", "completed": "ok", "rejected": "warn", "failed": "bad", "running": "muted",
                   "skipped": "muted", "interrupted": "warn"}


def render_index(summary: dict[str, Any], lineage: dict[str, Any]) -> str:
    """The run's index page: status, stages, metrics, gate reasons, links to every report.

    It is the page every other report of the run links back to, so it has no back link itself.
    """
    esc = html.escape
    status = summary["status"]

    def status_cell(value: Any) -> str:
        return f"<td class='{_STATUS_CLASSES.get(str(value), '')}'>{esc(str(value))}</td>"

    rows = "".join(
        f"<tr><td>{esc(name)}</td>{status_cell(info.get('status'))}<td class='num'>{info.get('seconds', '')}</td>"
        f"<td>{esc(str(info.get('error') or info.get('reason') or ''))}</td></tr>"
        for name, info in summary["stages"].items()
    )
    metrics = summary.get("metrics") or {}
    metric_rows = "".join(
        f"<tr><td>{esc(k)}</td><td class='num'>{v:,}</td></tr>" if isinstance(v, int)
        else f"<tr><td>{esc(k)}</td><td class='num'>{v:.4f}</td></tr>" if isinstance(v, float) else ""
        for k, v in metrics.items()
    )
    gate = summary.get("gate") or {}
    reasons = "".join(f"<li>{esc(str(reason))}</li>" for reason in gate.get("reasons", []))
    links = "".join(
        f"<li><a href='{esc(report['path'])}'>{esc(report['title'])}</a> "
        f"<small class='muted'>({esc(report['stage'])})</small></li>"
        for report in summary["reports"]
    )
    warnings = "".join(f"<li>{esc(w)}</li>" for w in summary.get("warnings", []))
    facts = {
        "base checkpoint": summary.get("base_checkpoint"),
        "model tag": summary.get("model_tag"),
        "data fingerprint": lineage.get("data_fingerprint"),
        "config hash": lineage.get("config_hash"),
        "code version": lineage.get("code_version"),
        "started": summary.get("started_at"),
        "finished": summary.get("finished_at"),
    }
    fact_rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in facts.items() if v)
    error = f"<p class='error'>{esc(summary['error'])}</p>" if summary.get("error") else ""
    decision = (
        f"<h2>Gate: {'promote' if gate.get('promote') else 'reject'}</h2><ul>{reasons}</ul>" if gate else ""
    )
    body = f"""<p>Status: <strong class="{_STATUS_CLASSES.get(status, '')}">{esc(status)}</strong></p>
{error}
<table>{fact_rows}</table>
<h2>Stages</h2>
<table><tr><th>stage</th><th>status</th><th class="num">seconds</th><th>note</th></tr>{rows}</table>
<h2>Test metrics</h2><table>{metric_rows}</table>
{decision}
<h2>Reports</h2><ul>{links}</ul>
{'<h2>Warnings</h2><ul>' + warnings + '</ul>' if warnings else ''}
<p><a href="summary.json">summary.json</a> · <a href="lineage.json">lineage.json</a> · <a href="config.yaml">config.yaml</a></p>
"""
    # The hub's nav bar: the known pages the run record has registered so far.
    nav = nav_links(INDEX, [report["path"] for report in summary["reports"]])
    return render_page(f"Run {summary['run_id']}: {status}", body, width="60rem", nav=nav)
