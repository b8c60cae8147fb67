"""Data validation: a Great Expectations suite built from the config, the task and the data, run
on every split before any compute is spent on models.

Each named *check* (``label_in_set``, ``leakage``, ...) becomes one GX expectation per split it
applies to. GX evaluates everything; the few measures GX has no built-in for (label kind, rows
shared with train, per-class counts, imbalance) are computed with vectorised pandas as derived
columns or a derived table, and GX then validates those, so every check appears in the GX data
docs. Severities (block / warn / off) come from ``ValidationConfig.severity``.

The stage, one module per job: ``prepare`` (the frames GX sees), ``plan`` (the generic checks;
the input checks are the task's), ``run_gx`` (GX itself), ``outcomes`` and ``explain`` (results,
failing rows), ``report`` (the report and its messages), ``summary`` (its JSON and page).

``validate_data`` never raises on bad content: it returns a report with ``passed=False``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from tuneops.components.config import ValidationConfig
from tuneops.components.data.columns import SPLITS
from tuneops.components.data.loading import DatasetSplits
from tuneops.components.validation.outcomes import outcome
from tuneops.components.validation.plan import plan_checks, report_order
from tuneops.components.validation.prepare import (
    INFERRED, MISSING_LABEL_TOKENS, class_table, expected_labels, prepare_splits,
)
from tuneops.components.validation.report import ExpectationOutcome, ValidationReport, blocking_message
from tuneops.components.validation.run_gx import run_great_expectations
from tuneops.components.validation.summary import write_report

if TYPE_CHECKING:
    from tuneops.components.tasks.base import Task

__all__ = ["ExpectationOutcome", "ValidationReport", "blocking_message", "validate_data"]


def validate_data(
    splits: DatasetSplits,
    config: ValidationConfig,
    output_dir: Path,
    previous_labels: list[str] | None,
    task: "Task",
) -> ValidationReport:
    """Validate every split with a Great Expectations suite built from ``config`` and the data.

    Writes the GX project (suites, results; data docs when ``config.data_docs``) under
    ``output_dir/gx``, a summary page ``output_dir/summary.html`` and the report as
    ``output_dir/validation.json``.
    ``previous_labels`` (the champion's label set, if any) is enforced when the config declares
    none. ``task`` checks its input column. Bad content gives ``passed=False``, never an exception.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    notes: list[str] = []

    # The task's checks import great_expectations (seconds, once per process): timed as planning.
    tick = time.perf_counter()
    inputs = task.input_checks(config)
    planning = time.perf_counter() - tick
    labels, label_source = expected_labels(splits, previous_labels, config.max_classes)
    missing_tokens = MISSING_LABEL_TOKENS - {label.strip().lower() for label in (labels or [])}
    frames = prepare_splits(splits, task.input_column, inputs, missing_tokens)
    classes = class_table(frames["train"], labels if label_source != INFERRED else None)
    if labels is None and label_source == "too many to infer":
        notes.append("label set not inferred: train holds more distinct labels than validation.max_classes")
    seconds["prepare"] = time.perf_counter() - started - planning

    tick = time.perf_counter()
    plan = plan_checks(frames, classes, splits.group_columns, config, labels, label_source, previous_labels,
                       task.input_column, task.input_noun, inputs)
    seconds["plan"] = planning + time.perf_counter() - tick
    gx_run = run_great_expectations(plan, frames, classes, output_dir, notes, seconds, config.data_docs)

    tick = time.perf_counter()
    results = [outcome(planned, gx_run.results.get(key), frames, classes) for key, planned in enumerate(plan)]
    order = report_order(inputs)
    results.sort(key=lambda r: (order.index(r.name), SPLITS.index(r.split) if r.split in SPLITS else 0))
    seconds["explain"] = time.perf_counter() - tick
    tick = time.perf_counter()
    preview = inputs.preview(frames["train"]) if inputs.preview is not None else ""
    seconds["preview"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started

    report = ValidationReport(
        passed=not any(not r.success and r.severity == "block" for r in results),
        results=results,
        on_failure=config.on_failure,
        rows={name: len(frames[name]) for name in SPLITS},
        labels=labels,
        label_source=label_source,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        notes=notes,
        output_dir=output_dir,
        html_path=gx_run.docs_index,
        summary_html_path=output_dir / "summary.html",
        json_path=output_dir / "validation.json",
        gx_results=gx_run.result_files,
        great_expectations_version=gx_run.version,
    )
    write_report(report, preview)
    return report
