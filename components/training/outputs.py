"""What a fine-tune returns and leaves behind: ``TrainedModel``, and the model directory (the
predictor's files, training arguments, throughput figures, history, curves, report, summary).

The summary file is written last: its presence marks a finished, complete model directory, which
is what a resumed run looks for before doing any work.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneops.components.files import atomic_write_json
from tuneops.components.predictor import Predictor
from tuneops.components.training.checkpoint import TrainingState
from tuneops.components.training.report import write_html_report, write_learning_curves
from tuneops.components.training.run_setup import RunSetup
from tuneops.components.training.runtime import peak_flops, peak_rss_mib
from tuneops.components.training.transfer import merge_adapter

SUMMARY_FILE = "training_summary.json"


@dataclass
class TrainedModel:
    """A fine-tuned model directory (loadable by ``Predictor.from_dir``) and what happened while
    training it. ``history`` has one row per optimizer step (``train_loss``; validation columns on
    evaluation steps)."""

    path: Path
    base_checkpoint: str
    labels: list[str]
    history: list[dict] = field(default_factory=list)
    best_validation: dict = field(default_factory=dict)
    throughput: dict = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from_step: int | None = None
    stopped_early: bool = False
    steps: int = 0
    total_steps: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    world_size: int = 1
    fingerprint: str = ""
    parameters: dict = field(default_factory=dict)
    recipe: list[dict] = field(default_factory=list)  # the recipe's decisions (recipe.Recipe.to_json)
    html_path: Path | None = None
    json_path: Path | None = None

    @property
    def first_loss(self) -> float:
        """Mean training loss over the first few steps (one batch's loss alone is too noisy to compare)."""
        return self._mean_loss(self.history[:self._loss_window()])

    @property
    def last_loss(self) -> float:
        """Mean training loss over the last few steps, the counterpart of ``first_loss``."""
        return self._mean_loss(self.history[-self._loss_window():])

    def _loss_window(self) -> int:
        # A fifth of the run, 1 to 10 steps: short runs still compare their two ends.
        return max(1, min(10, len(self.history) // 5))

    @staticmethod
    def _mean_loss(rows: list[dict]) -> float:
        return sum(row["train_loss"] for row in rows) / len(rows) if rows else math.nan

    def to_json(self) -> dict:
        """The summary as JSON types (paths as strings)."""
        data = asdict(self)
        for key in ("path", "html_path", "json_path"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data

    @classmethod
    def from_dir(cls, path: str | Path) -> "TrainedModel":
        """Read back the summary a finished fine-tune wrote into its model directory."""
        path = Path(path)
        data = json.loads((path / SUMMARY_FILE).read_text())
        data.pop("training_args", None)
        data["path"] = path
        for key in ("html_path", "json_path"):
            data[key] = Path(data[key]) if data.get(key) else None
        return cls(**data)


def finished_model(output_dir: Path, fingerprint: str) -> TrainedModel | None:
    """The model a previous attempt already finished in ``output_dir``, if it is of this run
    (same fingerprint); None otherwise."""
    if not (Path(output_dir) / SUMMARY_FILE).exists():
        return None
    finished = TrainedModel.from_dir(output_dir)
    if finished.fingerprint != fingerprint:
        return None
    finished.resumed_from_step = finished.steps
    return finished


def trained_model(setup: RunSetup, state: TrainingState, fingerprint: str, seconds: float,
                  resumed_from: int | None) -> TrainedModel:
    """The result of a run that has just finished its loop."""
    request = setup.request
    return TrainedModel(
        path=request.output_dir,
        base_checkpoint=request.checkpoint,
        labels=request.labels,
        history=state.history,
        best_validation=dict(state.best_row),
        throughput=throughput_figures(setup, state),
        seconds=seconds,
        resumed_from_step=resumed_from,
        stopped_early=state.stopped_early,
        steps=state.step,
        total_steps=setup.plan.total_steps,
        device=setup.placement.device,
        precision=setup.placement.precision,
        world_size=setup.context.world_size,
        fingerprint=fingerprint,
        parameters=setup.parts.parameter_counts,
        recipe=list(request.recipe),
        html_path=request.output_dir / "training_report.html",
        json_path=request.output_dir / SUMMARY_FILE,
    )


def save_model_directory(setup: RunSetup, result: TrainedModel) -> None:
    """Write the model directory of a finished run (main process only): the predictor (adapters
    merged, task recorded), training args, throughput, history, curves, report, then the summary."""
    request = setup.request
    output_dir = request.output_dir
    predictor = Predictor(merge_adapter(setup.parts.model), setup.parts.processor, request.labels,
                          task=request.task, max_length=request.config.max_length, device=setup.placement.device)
    predictor.save(output_dir, extra={
        "base_checkpoint": request.checkpoint,
        "training_fingerprint": result.fingerprint,
        "best_validation": result.best_validation,
    })
    arguments = training_args(setup, result.fingerprint)
    atomic_write_json(output_dir / "training_args.json", arguments)
    atomic_write_json(output_dir / "throughput.json", result.throughput)
    atomic_write_json(output_dir / "training_history.json", {"history": result.history})
    write_learning_curves(result.history, output_dir)
    summary = result.to_json() | {"training_args": arguments}
    write_html_report(output_dir, summary)
    # Written last: its presence marks a finished, complete model directory (see resume).
    atomic_write_json(output_dir / SUMMARY_FILE, summary)


def training_args(setup: RunSetup, fingerprint: str) -> dict:
    """Every training setting plus what the run derived from it (device, steps, threads, versions)."""
    import torch
    import transformers

    request, plan = setup.request, setup.plan
    weights = setup.class_weights
    return {
        "config": request.config.model_dump(mode="json"),
        "task": request.task.name,
        "base_checkpoint": request.checkpoint,
        "labels": request.labels,
        "device": setup.placement.device,
        "precision": setup.placement.precision,
        "precision_reason": setup.placement.precision_reason,
        "world_size": setup.context.world_size,
        "threads_per_process": setup.placement.threads,
        "loader_workers": setup.placement.workers,
        "optimizer": f"AdamW ({setup.optimisation.kind})",
        "train_rows": len(setup.train),
        "validation_rows": len(setup.validation),
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "warmup_steps": plan.warmup_steps,
        "eval_every_steps": plan.eval_every,
        "class_weights": None if weights is None else dict(zip(request.labels, weights.tolist())),
        "parameters": setup.parts.parameter_counts,
        "fingerprint": fingerprint,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def throughput_figures(setup: RunSetup, state: TrainingState) -> dict:
    """Speed of the training time (evaluation and checkpoints excluded): samples, real and padded
    tokens per second, padding efficiency, model TFLOP/s, memory; MFU on a known GPU."""
    import torch

    seconds = max(state.train_seconds, 1e-9)
    figures = {
        "train_seconds": state.train_seconds,
        # CPU seconds of this process (all its threads): on a machine shared with other work,
        # tokens per CPU-second compares runs more fairly than tokens per wall-second.
        "train_cpu_seconds": state.train_cpu_seconds,
        "samples_per_second": state.rows_seen / seconds,
        "real_tokens_per_second": state.real_tokens / seconds,
        "padded_tokens_per_second": state.padded_tokens / seconds,
        "padding_efficiency": state.real_tokens / max(1, state.padded_tokens),
        "model_tflops_per_second": state.model_flops / seconds / 1e12,
        "device": setup.placement.device,
        "precision": setup.placement.precision,
        "precision_reason": setup.placement.precision_reason,
        "processes": setup.context.world_size,
        "peak_rss_mib": peak_rss_mib(),
    }
    if setup.placement.on_cuda:
        name = torch.cuda.get_device_name(setup.placement.device)
        peak = peak_flops(name, setup.placement.precision, setup.config.peak_tflops)
        figures["gpu"] = name
        figures["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(setup.placement.device) / 2**20
        # Per GPU: the FLOPs are the whole job's, the peak is one GPU's.
        figures["mfu"] = state.model_flops / seconds / (peak * setup.context.world_size) if peak else None
    return figures
