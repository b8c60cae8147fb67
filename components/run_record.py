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
from tuneops.components.paths import SOURCE_ROOT
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
        (run_dir / "config.yaml").write_text(config.to_yaml())
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
            "status": self.status,
            "error": self.error,
            "stages": self.stages,
            "warnings": self.warnings,
            "reports": [report.__dict__ for report in self.reports],
            **self.fields,
        }

    def write(self) -> None:
        """Write summary.json, lineage.json and index.html atomically."""
        _atomic_write(self.run_dir / "summary.json", json.dumps(self.summary(), indent=2, default=str))
        _atomic_write(self.run_dir / "lineage.json", json.dumps(self.lineage, indent=2, default=str))
        _atomic_write(self.run_dir / "index.html", render_index(self.summary(), self.lineage))


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


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


_STATUS_COLOURS = {"promoted": "#1a7f37", "rejected": "#9a6700", "failed": "#cf222e", "running": "#0969da",
                   "completed": "#1a7f37", "skipped": "#57606a"}


def render_index(summary: dict[str, Any], lineage: dict[str, Any]) -> str:
    """A self-contained HTML page: status, stages, metrics, gate reasons, links to every report."""
    esc = html.escape
    status = summary["status"]
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td style='color:{_STATUS_COLOURS.get(info.get('status'), '#000')}'>"
        f"{esc(str(info.get('status')))}</td><td>{info.get('seconds', '')}</td>"
        f"<td>{esc(str(info.get('error') or info.get('reason') or ''))}</td></tr>"
        for name, info in summary["stages"].items()
    )
    metrics = summary.get("metrics") or {}
    metric_rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{v:.4f}</td></tr>" if isinstance(v, (int, float)) else ""
        for k, v in metrics.items()
    )
    gate = summary.get("gate") or {}
    reasons = "".join(f"<li>{esc(str(reason))}</li>" for reason in gate.get("reasons", []))
    links = "".join(
        f"<li><a href='{esc(report['path'])}'>{esc(report['title'])}</a> <small>({esc(report['stage'])})</small></li>"
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
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tuneops run {esc(summary['run_id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1f2328; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
td, th {{ border: 1px solid #d0d7de; padding: .3rem .7rem; text-align: left; }}
.status {{ color: {_STATUS_COLOURS.get(status, '#000')}; }} .error {{ color: #cf222e; font-weight: bold; }}
</style></head><body>
<h1>Run {esc(summary['run_id'])}: <span class="status">{esc(status)}</span></h1>
{error}
<table>{fact_rows}</table>
<h2>Stages</h2>
<table><tr><th>stage</th><th>status</th><th>seconds</th><th>note</th></tr>{rows}</table>
<h2>Test metrics</h2><table>{metric_rows}</table>
{decision}
<h2>Reports</h2><ul>{links}</ul>
{'<h2>Warnings</h2><ul>' + warnings + '</ul>' if warnings else ''}
<p><a href="summary.json">summary.json</a> · <a href="lineage.json">lineage.json</a> · <a href="config.yaml">config.yaml</a></p>
</body></html>
"""
