"""Choosing the pretrained checkpoint: probe every candidate on the user's data, under budgets.

For each candidate in ``selection.candidates`` (plus the champion, when there is one):
  1. inspect its files before any compute (``tuneops.components.checkpoints.inspect_checkpoint``):
     config, processor, an architecture with a classification head, safetensors weights, no
     remote code, parameter count, maximum sequence length;
  2. drop it if it is larger than ``selection.max_params``;
  3. probe it on a stratified sample of the training rows: a logistic regression on its frozen
     mean-pooled embeddings (the cheap probe), and optionally a short fine-tune;
  4. measure per-item latency at batch 1 and batch 32 on the current device, and peak memory.
The task's classical baseline, trained on the same sample, is the floor every candidate is
compared with. Constraints filter; then the winner is chosen under the probes' uncertainty
(``ranking``): every candidate's validation predictions are scored on the same bootstrap
resamples (``selection.bootstrap_samples``), the best wins when the paired interval of its lead
over every other clears ``selection.tie_tolerance``; candidates it does not clearly beat are a
tie, which goes to the largest (a probe's tie says little about what fine-tuning reaches). The
ranked table, with each score's interval, each candidate's difference from the winner and one
sentence on why the winner won, is written as HTML and JSON into the run record.

The pieces: ``report`` (the table's rows), ``probe`` (one candidate), ``floor`` (the baseline),
``measure`` (latency and memory), ``ranking`` (constraints and the winner), ``page`` (HTML).
"""

from __future__ import annotations

import time
from pathlib import Path

from tuneops.components.config import SelectionConfig, TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.data.loading import DatasetSplits
from tuneops.components.device import resolve_device
from tuneops.components.errors import StageError
from tuneops.components.files import atomic_write_json
from tuneops.components.sampling import stratified_sample
from tuneops.components.selection.floor import probe_baseline
from tuneops.components.selection.page import write_selection_page
from tuneops.components.selection.probe import SEED, ProbeData, assess_candidate, truth_indices
from tuneops.components.selection.ranking import (
    Choice,
    candidate_specs,
    compare_with_baseline,
    rank_candidates,
    table_order,
)
from tuneops.components.selection.report import (
    BASELINE,
    CHOSEN,
    EXCLUDED,
    FAILED,
    RANKED,
    SKIPPED,
    CandidateResult,
    SelectionReport,
)
from tuneops.components.tasks.base import Task

__all__ = [
    "BASELINE", "CHOSEN", "EXCLUDED", "FAILED", "RANKED", "SKIPPED",
    "CandidateResult", "Choice", "SelectionReport", "candidate_specs", "rank_candidates", "select_model",
]


def select_model(
    splits: DatasetSplits,
    config: SelectionConfig,
    output_dir: Path,
    champion_dir: Path | None,
    task: Task,
    training: TrainingConfig | None = None,
) -> SelectionReport:
    """Probe the configured candidates on ``splits`` and choose one; write the table to ``output_dir``.

    Candidates load and read their inputs (``splits.<split>[task.input_column]``) through ``task``;
    the floor is ``task.baseline``; ``training`` (the run's settings, default ones when None) gives
    the image size each candidate is probed at. Raises StageError("selection: no usable candidate: ...") with
    every candidate's reason when none passes the checks and constraints (the report is written first).
    """
    started = time.perf_counter()
    deadline = started + config.budget_seconds
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    labels = splits.labels
    train_sample = stratified_sample(splits.train, config.probe_rows, SEED)
    validation = stratified_sample(splits.validation, config.probe_rows, SEED)
    probe = ProbeData(labels=labels, train_sample=train_sample, validation=validation, config=config,
                      device=resolve_device("auto"), deadline=deadline, task=task,
                      training=training or TrainingConfig())

    baseline_row, baseline_metrics = probe_baseline(task, train_sample, validation, config.objective)
    rows = [
        assess_candidate(spec, probe, champion_dir)
        for spec in candidate_specs(config, champion_dir)
    ]
    truth, _ = truth_indices(validation[LABEL].astype(str).tolist(), labels)
    choice = rank_candidates(rows, config, baseline_row.score, truth)
    chosen = choice.candidate
    compare_with_baseline(rows, baseline_row)

    report = SelectionReport(
        chosen=chosen,
        rows=table_order(rows, baseline_row),
        baseline=baseline_metrics,
        objective=config.objective,
        constraints={
            "max_params": config.max_params,
            "max_latency_ms": config.max_latency_ms,
            "budget_seconds": config.budget_seconds,
            "allow_pickle": config.allow_pickle,
            "tie_tolerance": config.tie_tolerance,
            "bootstrap_samples": config.bootstrap_samples,
        },
        device=probe.device,
        probe_rows=len(train_sample),
        validation_rows=len(validation),
        seconds=time.perf_counter() - started,
        html_path=output_dir / "selection.html",
        json_path=output_dir / "selection.json",
        why=choice.why,
    )
    atomic_write_json(report.json_path, report.to_json())
    write_selection_page(report)
    if chosen is None:
        reasons = "; ".join(f"{row.candidate}: {row.reason}" for row in rows) or "no candidates configured"
        raise StageError(f"selection: no usable candidate: {reasons}")
    return report
