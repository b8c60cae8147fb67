"""Fine-tuning a pretrained checkpoint for sequence classification: a lean torch loop.

Why a loop of our own rather than ``transformers.Trainer``: the speed on small models comes from
dynamic padding with length-grouped batches and a fused AdamW, which a Trainer can also be set up
to do, but the loop also needs exactly-resumable checkpoints (data position and random streams
included), a loss normalised over the global batch so 1 and N processes compute the same step,
and early stopping that keeps the best weights in memory. Those are a few dozen lines here and
several callbacks and overrides there; ``benchmarks/bench_training.py`` measures this loop against
a plain Trainer script (fixed-length padding, its defaults) and against a Trainer given dynamic
padding, in the same run (docs/training.md has the figures).

The same code runs as one process or as one of N data-parallel processes (started by torchrun,
or by ``tuneops.components.training.distributed.launch_local``); it reads its place from ``torch.distributed``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from tuneops.components.checkpoints import load_for_classification, parse_spec
from tuneops.components.config import TrainingConfig
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.registry import get_task
from tuneops.components.training.checkpoint import (
    TrainingState,
    checkpoint_root,
    clear_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_rng,
    run_fingerprint,
    save_checkpoint,
)
from tuneops.components.training.batching import (
    EncodedRows,
    StepDataset,
    balanced_class_weights,
    encode_rows,
    epoch_batches,
    steps_per_epoch,
)
from tuneops.components.device import autocast, configure_backends, resolve_device, select_precision
from tuneops.components.training.report import write_html_report, write_json, write_learning_curves
from tuneops.components.training.runtime import (
    DistributedContext,
    build_adamw,
    cpu_threads,
    distributed_context,
    flops_shape,
    loader_workers,
    lr_multiplier,
    peak_flops,
    peak_rss_mib,
    training_flops,
)
from tuneops.components.training.transfer import (
    count_parameters,
    merge_adapter,
    parameter_groups,
    prepare_model,
    trainable_parameters,
)

logger = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"
ProgressCallback = Callable[[int, int, float], None]


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


def finetune(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    labels: list[str],
    checkpoint: str,
    config: TrainingConfig,
    output_dir: Path,
    progress: ProgressCallback | None = None,
    champion_dir: Path | None = None,
    resume: bool = False,
) -> TrainedModel:
    """Fine-tune ``checkpoint`` on ``train``; keep the weights that score best on ``validation``.

    Writes the model (safetensors, tokenizer, label map), training args, learning curves, throughput
    and a report into ``output_dir``; checkpoints go to ``output_dir.parent / "checkpoints"`` every
    ``config.checkpoint_every_steps`` steps. With ``resume`` a run continues from its last checkpoint
    (``TrainedModel.resumed_from_step`` says from where) or returns the already finished model.
    ``progress(step, total_steps, loss)`` is called after every optimizer step (every 10th on a
    GPU, where reading the loss stalls the device), in a single-process run. With
    ``config.processes > 1`` the work is spread over that many local processes (data parallel).

    Raises DataError for labels outside ``labels``, ConfigError for settings the model or
    hardware cannot honour, StageError when a distributed run fails.
    """
    output_dir = Path(output_dir)
    if len(labels) < 2:
        raise DataError(f"data: fine-tuning needs at least 2 labels, got {labels}")
    if len(train) == 0:
        raise DataError("data: the train split is empty")
    if config.processes > 1 and not distributed_context().enabled:
        from tuneops.components.training.distributed import launch_local

        return launch_local(train, validation, labels, checkpoint, config, output_dir, champion_dir, resume)
    return _FineTune(train, validation, labels, checkpoint, config, output_dir, progress, champion_dir).run(resume)


class _FineTune:
    """One fine-tuning run; holds the model, optimizer and loop state between its steps."""

    def __init__(self, train, validation, labels, checkpoint, config, output_dir, progress, champion_dir) -> None:
        self.train_frame = train
        self.validation_frame = validation
        self.labels = list(labels)
        self.checkpoint = checkpoint
        self.config: TrainingConfig = config
        self.output_dir = output_dir
        self.progress = progress
        self.champion_dir = champion_dir
        self.context: DistributedContext = distributed_context()
        # Progress is the caller's, in one process; other processes would wait for it at each
        # loss all-reduce, so a distributed run reports through its logs instead.
        if self.context.enabled:
            self.progress = None
        self.checkpoints = checkpoint_root(output_dir)
        self.state = TrainingState()
        self.best_weights: dict | None = None
        self.pending_losses: list = []

    # ----------------------------------------------------------------------------------- run
    def run(self, resume: bool) -> TrainedModel:
        import torch

        started = time.perf_counter()
        config = self.config
        self.fingerprint = run_fingerprint(config, self.checkpoint, self.labels, self.train_frame, self.validation_frame)
        if resume:
            finished = self._finished_model()
            if finished is not None:
                return finished
        previous_threads = torch.get_num_threads()
        self.threads = cpu_threads(config.threads, self.context.local_world_size)
        torch.set_num_threads(self.threads)
        try:
            self._set_up()
            resumed_from = self._restore() if resume else self._start_fresh()
            self._loop()
            return self._finish(started, resumed_from)
        finally:
            torch.set_num_threads(previous_threads)

    def _finished_model(self) -> TrainedModel | None:
        """On resume: the model a previous attempt already finished, if it matches this run."""
        summary = self.output_dir / SUMMARY_FILE
        if not summary.exists():
            return None
        finished = TrainedModel.from_dir(self.output_dir)
        if finished.fingerprint != self.fingerprint:
            return None
        if self.context.is_main:
            logger.info("training already finished in %s (step %d); reusing that model", self.output_dir, finished.steps)
            clear_checkpoints(self.checkpoints)
        finished.resumed_from_step = finished.steps
        return finished

    # ------------------------------------------------------------------------------- set-up
    def _set_up(self) -> None:
        import torch

        config, context = self.config, self.context
        self.device = resolve_device(config.device, context.local_rank, torch.cuda.is_available())
        if self.device.startswith("cuda"):
            torch.cuda.set_device(self.device)
        bf16 = self.device.startswith("cuda") and torch.cuda.is_bf16_supported()
        self.precision = select_precision(self.device, config.precision, bf16)
        configure_backends(self.device)
        # The same seed on every process: the new classification head starts identical everywhere.
        _seed_everything(config.seed)
        tokenizer, model = load_for_classification(parse_spec(self.checkpoint), self.labels, self.champion_dir)
        self.tokenizer = tokenizer
        self.flops_shape = flops_shape(model)
        self.model = prepare_model(model, config).to(self.device)
        self.parameter_counts = count_parameters(self.model)
        label_ids = {label: index for index, label in enumerate(self.labels)}
        self.train_rows = encode_rows(tokenizer, self.train_frame, label_ids, config.max_length, "train")
        self.validation_rows = encode_rows(tokenizer, self.validation_frame, label_ids, config.max_length, "validation")
        self.steps_per_epoch = steps_per_epoch(len(self.train_rows), config.batch_size)
        self.total_steps = config.max_steps or max(1, math.ceil(self.steps_per_epoch * config.epochs))
        self.warmup_steps = int(self.total_steps * config.warmup_ratio)
        self.eval_every = config.eval_every_steps or self.steps_per_epoch
        self.pad_multiple = 8 if self.device.startswith("cuda") else 1
        # Reading a loss value makes the CPU wait for the GPU; reporting every 10th step keeps the
        # GPU's queue full. On CPU there is no queue to drain, so every step is reported.
        self.progress_every = 10 if self.device.startswith("cuda") else 1
        self.workers = loader_workers(config.num_workers, self.device, context.local_world_size)
        weights = balanced_class_weights(self.train_rows.labels, len(self.labels)) if config.class_weights == "balanced" else None
        self.class_weights = weights
        self.class_weight_tensor = (
            torch.tensor(weights, dtype=torch.float32, device=self.device) if weights is not None else None
        )
        self.optimizer, self.optimizer_kind = build_adamw(
            parameter_groups(self.model, config.weight_decay), config.learning_rate, self.device
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_multiplier(step, self.total_steps, self.warmup_steps, config.lr_schedule),
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.trainable = trainable_parameters(self.model)
        self.ddp = None
        self.train_module = self.model
        if context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
            self.train_module = self.ddp
        if config.compile:
            # dynamic=True: padded lengths vary per batch; without it every new length recompiles.
            self.train_module = torch.compile(self.train_module, dynamic=True)
        if context.is_main:
            logger.info(
                "fine-tuning %s on %d rows (%d validation): %d steps of %d examples, %s %s, %d process(es), "
                "%d/%d parameters trainable",
                self.checkpoint, len(self.train_rows), len(self.validation_rows), self.total_steps, config.batch_size,
                self.device, self.precision, context.world_size,
                self.parameter_counts["trainable"], self.parameter_counts["total"],
            )

    def _start_fresh(self) -> None:
        import torch

        if self.context.is_main:
            clear_checkpoints(self.checkpoints)
        self._barrier()
        # Different dropout masks per process, reproducible per seed.
        torch.manual_seed(self.config.seed + self.context.rank)
        return None

    def _restore(self) -> int | None:
        """Load the last checkpoint into model, optimizer, schedule and loop state; None if none."""
        import torch

        if self.context.is_main:
            remove_partial_checkpoints(self.checkpoints)
        self._barrier()
        latest = latest_checkpoint(self.checkpoints)
        if latest is None:
            if self.context.is_main:
                logger.info("resume: no checkpoint under %s, starting from step 0", self.checkpoints)
            torch.manual_seed(self.config.seed + self.context.rank)
            return None
        loaded = load_checkpoint(latest, self.fingerprint, self.context.rank)
        if set(loaded.trainable) != set(self.trainable):
            raise ConfigError(f"config: cannot resume from {latest}: its trainable weights do not match the model")
        with torch.no_grad():
            for name, parameter in self.trainable.items():
                parameter.copy_(loaded.trainable[name])
        self.optimizer.load_state_dict(loaded.optimizer)
        self.scheduler.load_state_dict(loaded.scheduler)
        if self.scaler is not None and loaded.scaler is not None:
            self.scaler.load_state_dict(loaded.scaler)
        self.state = loaded.state
        self.best_weights = loaded.best
        if loaded.rng is not None:
            restore_rng(loaded.rng, self.device)
        else:
            # A process that did not exist when the checkpoint was written (more processes now).
            torch.manual_seed(self.config.seed + self.context.rank + self.state.step)
        if self.context.is_main:
            logger.info("resuming from checkpoint %s at step %d of %d", latest, self.state.step, self.total_steps)
        return self.state.step

    # --------------------------------------------------------------------------------- loop
    def _loop(self) -> None:
        import torch

        config, state = self.config, self.state
        lengths = self.train_rows.lengths
        clock = _clock()
        while state.step < self.total_steps and not state.stopped_early:
            batches = epoch_batches(lengths, config.batch_size, config.seed, state.epoch)
            dataset = StepDataset(
                self.train_rows, batches[state.batch_in_epoch:], config.grad_accum_steps, self.context.world_size,
                self.context.rank, self.tokenizer.pad_token_id or 0, self.pad_multiple, self.class_weights,
            )
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=self.workers,
                pin_memory=self.device.startswith("cuda"),
                prefetch_factor=4 if self.workers else None,
            )
            for item in loader:
                learning_rate = self.scheduler.get_last_lr()[0]
                loss = self._train_step(item["micro"])
                stats = item["stats"]
                state.step += 1
                state.batch_in_epoch += 1
                if state.batch_in_epoch == len(batches):
                    state.epoch += 1
                    state.batch_in_epoch = 0
                state.rows_seen += stats.rows
                state.real_tokens += stats.real_tokens
                state.padded_tokens += stats.padded_tokens
                state.model_flops += training_flops(self.flops_shape, stats.sequence_lengths)
                self.pending_losses.append((state.step, learning_rate, loss))
                evaluate = state.step % self.eval_every == 0 or state.step == self.total_steps
                save = state.step % config.checkpoint_every_steps == 0 and state.step < self.total_steps
                report = self.progress is not None and (
                    state.step % self.progress_every == 0 or state.step == self.total_steps)
                if evaluate or save or report:
                    clock = self._stop_clock(clock)
                    self._flush_losses()
                    if evaluate:
                        self._evaluate_and_track()
                    if save and not state.stopped_early:
                        self._save_checkpoint()
                    if report:
                        self.progress(state.step, self.total_steps, state.history[-1]["train_loss"])
                    clock = _clock()
                if state.step >= self.total_steps or state.stopped_early:
                    break
        self._stop_clock(clock)
        self._flush_losses()

    def _train_step(self, micro_batches: list[dict]):
        """Forward/backward over this process's micro-batches, then one optimizer step.

        Returns this process's share of the step's mean loss (a device tensor: reading it would
        wait for the GPU, so losses are read in bulk at evaluation and checkpoint time).
        """
        import torch

        device, world = self.device, self.context.world_size
        total = torch.zeros((), device=device)
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            # Gradients are averaged across processes once per optimizer step, not per micro-batch.
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                input_ids = micro["input_ids"].to(device, non_blocking=True)
                attention_mask = micro["attention_mask"].to(device, non_blocking=True)
                targets = micro["labels"].to(device, non_blocking=True)
                with autocast(device, self.precision):
                    logits = self.train_module(input_ids=input_ids, attention_mask=attention_mask).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.float(), targets, weight=self.class_weight_tensor,
                    label_smoothing=self.config.label_smoothing, reduction="sum",
                ) * micro["loss_weight"]
                # DDP divides the summed gradients by the process count; the loss is already a share
                # of the global mean, so multiply back to get exactly the global-mean gradient.
                scaled = loss * world
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), self.config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def _stop_clock(self, clock: tuple[float, float]) -> tuple[float, float]:
        """Add the wall and CPU time since ``clock`` to training time (after the GPU caught up)."""
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        now = _clock()
        self.state.train_seconds += now[0] - clock[0]
        self.state.train_cpu_seconds += now[1] - clock[1]
        return now

    def _flush_losses(self) -> None:
        """Turn the pending per-step loss tensors into history rows (summed over processes)."""
        import torch

        if not self.pending_losses:
            return
        values = torch.stack([loss for _, _, loss in self.pending_losses])
        if self.context.enabled:
            import torch.distributed as dist

            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        for (step, learning_rate, _), value in zip(self.pending_losses, values.tolist()):
            self.state.history.append({
                "step": step,
                "epoch": round(step / self.steps_per_epoch, 4),
                "learning_rate": learning_rate,
                "train_loss": value,
            })
        self.pending_losses = []

    # --------------------------------------------------------------------------- validation
    def _evaluate_and_track(self) -> None:
        """Score the validation split; keep the weights if they are the best so far; early stop."""
        if len(self.validation_rows) == 0:
            return
        config, state = self.config, self.state
        metrics = self._validation_metrics()
        state.history[-1].update({f"validation_{key}": value for key, value in metrics.items()})
        value = metrics[config.early_stopping_metric]
        lower_is_better = config.early_stopping_metric == "loss"
        if state.best_metric is None:
            improved = True
        elif lower_is_better:
            improved = value < state.best_metric - config.early_stopping_min_delta
        else:
            improved = value > state.best_metric + config.early_stopping_min_delta
        if improved:
            state.best_metric = value
            state.best_row = {"step": state.step, **metrics}
            state.evals_since_best = 0
            self.best_weights = {name: p.detach().to("cpu", copy=True) for name, p in self.trainable.items()}
        else:
            state.evals_since_best += 1
            patience = config.early_stopping_patience
            if patience is not None and state.evals_since_best >= patience:
                state.stopped_early = True
        if self.context.is_main:
            logger.info(
                "step %d/%d: validation %s %.4f%s", state.step, self.total_steps, config.early_stopping_metric, value,
                " (best so far)" if improved else
                (f"; stopping early, best was step {state.best_row['step']}" if state.stopped_early else ""),
            )

    def _validation_metrics(self) -> dict:
        """Loss, macro F1 and accuracy on the validation split; each process scores a share."""
        import torch
        from sklearn.metrics import accuracy_score, f1_score

        logits = predict_logits(
            self.model, self.validation_rows, self.device, self.precision, self.tokenizer.pad_token_id or 0,
            batch_size=max(64, self.config.batch_size), pad_multiple=self.pad_multiple,
            rank=self.context.rank, world_size=self.context.world_size,
        )
        truth = self.validation_rows.labels
        loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(truth)))
        predicted = logits.argmax(1)
        return {
            "loss": loss,
            "macro_f1": float(f1_score(truth, predicted, average="macro", labels=range(len(self.labels)), zero_division=0)),
            "accuracy": float(accuracy_score(truth, predicted)),
        }

    # -------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> None:
        path = save_checkpoint(
            self.checkpoints, self.fingerprint, self.state, self.trainable, self.best_weights,
            self.optimizer, self.scheduler, self.scaler, self.context,
        )
        if self.context.is_main:
            logger.debug("checkpoint written: %s", path)

    def _barrier(self) -> None:
        if self.context.enabled:
            import torch.distributed as dist

            dist.barrier()

    # ------------------------------------------------------------------------------- finish
    def _finish(self, started: float, resumed_from: int | None) -> TrainedModel:
        import torch

        state = self.state
        if self.best_weights is not None:
            with torch.no_grad():
                for name, parameter in self.trainable.items():
                    parameter.copy_(self.best_weights[name])
        if state.stopped_early and self.context.is_main:
            logger.info("stopped early at step %d; kept the weights of step %d", state.step, state.best_row.get("step"))
        throughput = self._throughput()
        result = TrainedModel(
            path=self.output_dir,
            base_checkpoint=self.checkpoint,
            labels=self.labels,
            history=state.history,
            best_validation=dict(state.best_row),
            throughput=throughput,
            seconds=time.perf_counter() - started,
            resumed_from_step=resumed_from,
            stopped_early=state.stopped_early,
            steps=state.step,
            total_steps=self.total_steps,
            device=self.device,
            precision=self.precision,
            world_size=self.context.world_size,
            fingerprint=self.fingerprint,
            parameters=self.parameter_counts,
            html_path=self.output_dir / "training_report.html",
            json_path=self.output_dir / SUMMARY_FILE,
        )
        if self.context.is_main:
            self._save_outputs(result)
            clear_checkpoints(self.checkpoints)
        self._barrier()
        return result

    def _save_outputs(self, result: TrainedModel) -> None:
        model = merge_adapter(self.model)
        predictor = Predictor(model, self.tokenizer, self.labels, task=get_task("text-classification"), max_length=self.config.max_length,
                              device=self.device)
        predictor.save(self.output_dir, extra={
            "base_checkpoint": self.checkpoint,
            "training_fingerprint": self.fingerprint,
            "best_validation": result.best_validation,
        })
        training_args = self._training_args()
        write_json(self.output_dir / "training_args.json", training_args)
        write_json(self.output_dir / "throughput.json", result.throughput)
        write_json(self.output_dir / "training_history.json", {"history": result.history})
        write_learning_curves(result.history, self.output_dir)
        summary = result.to_json() | {"training_args": training_args}
        write_html_report(self.output_dir, summary)
        # Written last: its presence marks a finished, complete model directory (see resume).
        write_json(self.output_dir / SUMMARY_FILE, summary)

    def _training_args(self) -> dict:
        import torch
        import transformers

        return {
            "config": self.config.model_dump(mode="json"),
            "base_checkpoint": self.checkpoint,
            "labels": self.labels,
            "device": self.device,
            "precision": self.precision,
            "world_size": self.context.world_size,
            "threads_per_process": self.threads,
            "loader_workers": self.workers,
            "optimizer": f"AdamW ({self.optimizer_kind})",
            "train_rows": len(self.train_rows),
            "validation_rows": len(self.validation_rows),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "eval_every_steps": self.eval_every,
            "class_weights": None if self.class_weights is None else dict(zip(self.labels, self.class_weights.tolist())),
            "parameters": self.parameter_counts,
            "fingerprint": self.fingerprint,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }

    def _throughput(self) -> dict:
        import torch

        state = self.state
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
            "device": self.device,
            "precision": self.precision,
            "processes": self.context.world_size,
            "peak_rss_mib": peak_rss_mib(),
        }
        if self.device.startswith("cuda"):
            name = torch.cuda.get_device_name(self.device)
            peak = peak_flops(name, self.precision, self.config.peak_tflops)
            figures["gpu"] = name
            figures["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            # Per GPU: the FLOPs are the whole job's, the peak is one GPU's.
            figures["mfu"] = state.model_flops / seconds / (peak * self.context.world_size) if peak else None
        return figures


def predict_logits(model, rows: EncodedRows, device: str, precision: str, pad_id: int, batch_size: int = 64,
                   pad_multiple: int = 1, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Logits for every row, in row order. In a distributed run each process scores every
    ``world_size``-th row and the shares are gathered, so all processes return the same array."""
    import torch

    from tuneops.components.training.batching import padded_width

    indices = np.arange(len(rows))[rank::world_size]
    lengths = rows.lengths
    indices = indices[np.argsort(lengths[indices], kind="stable")]
    n_labels = model.config.num_labels
    logits = np.zeros((len(indices), n_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            width = padded_width(lengths[chunk], pad_multiple)
            ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, index in enumerate(chunk):
                ids[row, :lengths[index]] = rows.input_ids[index]
                mask[row, :lengths[index]] = 1
            output = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device))
            logits[start:start + len(chunk)] = output.logits.float().cpu().numpy()
    model.train(was_training)
    if world_size > 1:
        import torch.distributed as dist

        shares: list = [None] * world_size
        dist.all_gather_object(shares, (indices, logits))
        full = np.zeros((len(rows), n_labels), dtype=np.float32)
        for share_indices, share_logits in shares:
            full[share_indices] = share_logits
        return full
    full = np.zeros((len(rows), n_labels), dtype=np.float32)
    full[indices] = logits
    return full


def _clock() -> tuple[float, float]:
    """(wall, CPU) time now."""
    return time.perf_counter(), time.process_time()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
