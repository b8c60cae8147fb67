"""The run record: ``runs/<run-id>/`` with summary.json, lineage.json and an index.html that links
every report a stage wrote. It is rewritten after every stage, so a run that fails half-way still
leaves a record that says where and why."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from tuneops.components.config import PipelineConfig
from tuneops.components.errors import ConfigError
from tuneops.components.files import atomic_write_json, atomic_write_text
from tuneops.components.pages import render_page
from tuneops.components.paths import SOURCE_ROOT, run_dir as run_directory
from tuneops.components.training.runtime import peak_rss_mib

STAGES = ("load_data", "validate", "select_model", "finetune", "evaluate", "gate", "package")
TRACKED_PACKAGES = (
    "torch", "transformers", "datasets", "accelerate", "peft", "prefect", "great_expectations",
    "evidently", "bentoml", "fairlearn", "scikit-learn", "pandas", "numpy",
)


def new_run_id() -> str:
    """Sortable and unique: UTC timestamp plus a random suffix."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass
class Report:
    title: str
    path: str  # relative to the run directory
    stage: str


@dataclass
class RunRecord:
    """Collects what a run did and writes it out as it goes."""

    run_dir: Path
    run_id: str
    config: PipelineConfig
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None

    @classmethod
    def start(cls, run_dir: Path, run_id: str, config: PipelineConfig) -> "RunRecord":
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config.to_yaml())
        record = cls(run_dir=run_dir, run_id=run_id, config=config)
        record.fields["started_at"] = _now()
        record.lineage.update(
            {
                "run_id": run_id,
                "config_hash": config.config_hash(),
                "code_version": code_version(),
                "packages": package_versions(),
            }
        )
        record.write()
        return record

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage and record its status; the record is written whether it passes or fails."""
        entry: dict[str, Any] = {"status": "running"}
        self.stages[name] = entry
        started = time.perf_counter()
        try:
            yield entry
        except BaseException as error:
            entry["status"] = "failed"
            entry["error"] = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise
        else:
            entry["status"] = "completed"
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 2)
            self.write()

    def skip(self, name: str, reason: str) -> None:
        self.stages[name] = {"status": "skipped", "reason": reason, "seconds": 0.0}

    def add_report(self, title: str, path: str | Path | None, stage: str) -> None:
        """Link a report file written inside the run directory from index.html."""
        if path is None:
            return
        absolute = Path(path) if Path(path).is_absolute() else self.run_dir / path
        if absolute.exists():
            self.reports.append(Report(title, os.path.relpath(absolute, self.run_dir), stage))

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.fields["finished_at"] = _now()
        # The run's memory high-water mark (training processes of a distributed run included).
        self.fields["peak_rss_mib"] = round(peak_rss_mib(include_children=True), 1)
        self.write()

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "task": self.config.task,
            "status": self.status,
            "error": self.error,
            "stages": self.stages,
            "warnings": self.warnings,
            "reports": [report.__dict__ for report in self.reports],
            **self.fields,
        }

    def release_metadata(self, metrics: dict[str, Any], labels: list[str], promote: bool) -> dict[str, Any]:
        """The lineage a packaged model carries: which run, data, config, code and base checkpoint
        made it, its test metrics and the gate's verdict (``registry.package_model`` stores it)."""
        return {
            "run_id": self.run_id,
            "metrics": metrics,
            "data_fingerprint": self.lineage.get("data_fingerprint"),
            "config_hash": self.lineage["config_hash"],
            "base_checkpoint": self.lineage.get("base_checkpoint"),
            "labels": list(labels),
            "code_version": self.lineage["code_version"],
            "gate": "promote" if promote else "reject",
        }

    def write(self) -> None:
        """Write summary.json, lineage.json and index.html atomically."""
        summary = self.summary()
        atomic_write_json(self.run_dir / "summary.json", summary)
        atomic_write_json(self.run_dir / "lineage.json", self.lineage)
        atomic_write_text(self.run_dir / "index.html", render_index(summary, self.lineage))


def previous_summary(run_id: str) -> dict[str, Any]:
    """The summary of the run ``run_id`` (the one ``--resume`` continues); ConfigError if there is none."""
    summary_path = run_directory(run_id) / "summary.json"
    if not summary_path.exists():
        raise ConfigError(f"resume: no run {run_id!r} under {summary_path.parent.parent}")
    return json.loads(summary_path.read_text())


def code_version() -> str:
    """The git commit of the tuneops source (with ``-dirty`` if modified), else the package version."""
    source = SOURCE_ROOT
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "tuneops-" + _version("tuneops")


def package_versions() -> dict[str, str]:
    return {name: _version(name) for name in TRACKED_PACKAGES}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# The shared page classes (components/page.html.j2) for each status a run or stage can have.
_STATUS_CLASSES = {"promoted": "ok", "completed": "ok", "rejected": "warn", "failed": "bad", "running": "muted",
                   "skipped": "muted"}


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
    return render_page(f"Run {summary['run_id']}: {status}", body, width="60rem")
