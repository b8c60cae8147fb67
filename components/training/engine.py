"""The fine-tuning engine: one process's run of the lean torch loop (steps, checkpoints, resume).

Why a loop of our own rather than ``transformers.Trainer``: the speed on small models comes from
dynamic padding with length-grouped batches and a fused AdamW, which a Trainer can also be set up
to do, but the loop also needs exactly-resumable checkpoints (data position and random streams
included), a loss normalised over the global batch so 1 and N processes compute the same step,
and early stopping that keeps the best weights in memory. Those are a few dozen lines here and
several callbacks and overrides there; ``benchmarks/bench_training.py`` measures this loop against
a plain Trainer script (fixed-length padding, its defaults) and against a Trainer given dynamic
padding, in the same run (docs/training.md has the figures).

The same code runs as one process or as one of N data-parallel processes (started by torchrun, or
by ``tuneops.components.training.launcher.launch_local``); it reads its place from
``torch.distributed``. The loop never looks inside a batch: the task collates it, the step calls
``model(**inputs)``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable


from tuneops.components.device import autocast
from tuneops.components.errors import ConfigError
from tuneops.components.training.batching import StepDataset, epoch_batches
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
from tuneops.components.training.outputs import TrainedModel, finished_model, save_model_directory, trained_model
from tuneops.components.training.run_setup import RunRequest, RunSetup, check_request, set_up
from tuneops.components.training.runtime import cpu_threads, distributed_context, training_flops
from tuneops.components.training.tracker import ValidationTracker

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, float], None]
# (step, validation metrics: loss, macro_f1, accuracy) after each validation evaluation.
EvaluationCallback = Callable[[int, dict[str, float]], None]


def train_in_process(request: RunRequest, *, progress: ProgressCallback | None = None,
                     resume: bool = False, on_evaluation: EvaluationCallback | None = None) -> TrainedModel:
    """Run the fine-tune in this process (alone, or as one rank of an initialised process group).

    As ``tuneops.components.training.finetune.finetune``; ``config.processes`` is not looked at
    here (the launcher reads it). ``on_evaluation(step, metrics)`` is called after every validation
    evaluation (single-process runs only); an exception it raises (a search's ``TrialPruned``)
    ends the run at once and propagates: the model directory is never written, so nothing counts
    as a finished model (checkpoints already written stay, as after a kill).
    """
    import torch

    started = time.perf_counter()
    config = request.config
    check_request(request.train, request.labels)
    context = distributed_context()
    if on_evaluation is not None and context.enabled:
        # An exception on one process would leave the others waiting at their next collective.
        raise ValueError("on_evaluation is for single-process runs")
    fingerprint = run_fingerprint(config, request.checkpoint, request.labels, request.train, request.validation,
                                  request.task.input_column)
    checkpoints = checkpoint_root(request.output_dir)
    if resume:
        finished = finished_model(request.output_dir, fingerprint)
        if finished is not None:
            if context.is_main:
                logger.info("training already finished in %s (step %d); reusing that model",
                            request.output_dir, finished.steps)
                clear_checkpoints(checkpoints)
            return finished
    previous_threads = torch.get_num_threads()
    threads = cpu_threads(config.threads, context.local_world_size)
    torch.set_num_threads(threads)
    try:
        setup = set_up(request, context, threads)
        # Progress is the caller's, in one process; other processes would wait for it at each
        # loss all-reduce, so a distributed run reports through its logs instead.
        run = _Run(setup, fingerprint, checkpoints, None if context.enabled else progress, on_evaluation)
        resumed_from = run.restore() if resume else run.start_fresh()
        run.loop()
        return run.finish(started, resumed_from)
    finally:
        torch.set_num_threads(previous_threads)


class _Run:
    """The loop of one set-up run: its state between steps, checkpoints and the finish."""

    def __init__(self, setup: RunSetup, fingerprint: str, checkpoints: Path, progress: ProgressCallback | None,
                 on_evaluation: EvaluationCallback | None = None) -> None:
        import torch

        self.setup = setup
        self.fingerprint = fingerprint
        self.checkpoints = checkpoints
        self.progress = progress
        self.on_evaluation = on_evaluation
        self.state = TrainingState()
        self.tracker = ValidationTracker(setup)
        # (step, learning rate, loss tensor) of steps whose loss has not been read yet.
        self.pending_losses: list = []
        weights = setup.class_weights
        self.class_weight_tensor = (
            None if weights is None else torch.tensor(weights, dtype=torch.float32, device=setup.placement.device)
        )

    # ------------------------------------------------------------------------------- start
    def start_fresh(self) -> None:
        """A new run: no old checkpoints, a dropout stream per process."""
        import torch

        setup = self.setup
        if setup.context.is_main:
            clear_checkpoints(self.checkpoints)
        self._barrier()
        # Different dropout masks per process, reproducible per seed.
        torch.manual_seed(setup.config.seed + setup.context.rank)
        return None

    def restore(self) -> int | None:
        """Load the last checkpoint into model, optimizer, schedule and loop state; None if none."""
        import torch

        setup = self.setup
        context = setup.context
        if context.is_main:
            remove_partial_checkpoints(self.checkpoints)
        self._barrier()
        latest = latest_checkpoint(self.checkpoints)
        if latest is None:
            if context.is_main:
                logger.info("resume: no checkpoint under %s, starting from step 0", self.checkpoints)
            torch.manual_seed(setup.config.seed + context.rank)
            return None
        loaded = load_checkpoint(latest, self.fingerprint, context.rank)
        if set(loaded.trainable) != set(setup.parts.trainable):
            raise ConfigError(f"config: cannot resume from {latest}: its trainable weights do not match the model")
        with torch.no_grad():
            for name, parameter in setup.parts.trainable.items():
                parameter.copy_(loaded.trainable[name])
        optimisation = setup.optimisation
        optimisation.optimizer.load_state_dict(loaded.optimizer)
        optimisation.scheduler.load_state_dict(loaded.scheduler)
        if optimisation.scaler is not None and loaded.scaler is not None:
            optimisation.scaler.load_state_dict(loaded.scaler)
        self.state = loaded.state
        self.tracker.best_weights = loaded.best
        if loaded.rng is not None:
            restore_rng(loaded.rng, setup.placement.device)
        else:
            # A process that did not exist when the checkpoint was written (more processes now).
            torch.manual_seed(setup.config.seed + context.rank + self.state.step)
        if context.is_main:
            logger.info("resuming from checkpoint %s at step %d of %d", latest, self.state.step,
                        setup.plan.total_steps)
        return self.state.step

    # -------------------------------------------------------------------------------- loop
    def loop(self) -> None:
        """Optimizer steps until the plan's last step or an early stop; evaluates, checkpoints and
        reports progress on the steps that call for it."""
        import torch

        setup, state = self.setup, self.state
        config, plan, context, placement = setup.config, setup.plan, setup.context, setup.placement
        clock = _clock()
        while state.step < plan.total_steps and not state.stopped_early:
            batches = epoch_batches(setup.train.inputs.lengths, config.batch_size, config.seed, state.epoch)
            dataset = StepDataset(
                setup.request.task, setup.train.inputs, setup.train.labels, batches[state.batch_in_epoch:],
                config.grad_accum_steps, context.world_size, context.rank, placement.pad_multiple, setup.class_weights,
                augment_seed=config.seed if config.augment else None, first_step=state.step,
                augment_operations=tuple(config.augment),
            )
            # Its own generator: a loader draws a worker seed when it starts, and from the global
            # stream that would shift the dropout masks of a resumed run (it starts mid-epoch).
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, shuffle=False, num_workers=placement.workers,
                pin_memory=placement.on_cuda, prefetch_factor=4 if placement.workers else None,
                generator=torch.Generator().manual_seed(config.seed + state.epoch),
            )
            for item in loader:
                learning_rate = setup.optimisation.scheduler.get_last_lr()[0]
                loss = self._train_step(item["micro"])
                self._count_step(item["stats"], len(batches))
                self.pending_losses.append((state.step, learning_rate, loss))
                evaluate = state.step % plan.eval_every == 0 or state.step == plan.total_steps
                save = state.step % config.checkpoint_every_steps == 0 and state.step < plan.total_steps
                report = self.progress is not None and (
                    state.step % plan.progress_every == 0 or state.step == plan.total_steps)
                if evaluate or save or report:
                    clock = self._stop_clock(clock)
                    self._flush_losses()
                    if evaluate:
                        metrics = self.tracker.evaluate(state)
                        if metrics is not None and self.on_evaluation is not None:
                            self.on_evaluation(state.step, metrics)
                    if save and not state.stopped_early:
                        self._save_checkpoint()
                    if report:
                        self.progress(state.step, plan.total_steps, state.history[-1]["train_loss"])
                    clock = _clock()
                if state.step >= plan.total_steps or state.stopped_early:
                    break
        self._stop_clock(clock)
        self._flush_losses()

    def _count_step(self, stats, batches_in_epoch: int) -> None:
        """Advance the loop position and add the step's rows, tokens and FLOPs to the totals."""
        state = self.state
        state.step += 1
        state.batch_in_epoch += 1
        if state.batch_in_epoch == batches_in_epoch:
            state.epoch += 1
            state.batch_in_epoch = 0
        state.rows_seen += stats.rows
        state.real_tokens += stats.real_tokens
        state.padded_tokens += stats.padded_tokens
        state.model_flops += training_flops(self.setup.parts.flops_shape, stats.sequence_lengths)

    def _train_step(self, micro_batches: list[dict]):
        """Forward/backward over this process's micro-batches, then one optimizer step.

        Returns this process's share of the step's mean loss (a device tensor: reading it would
        wait for the GPU, so losses are read in bulk at evaluation and checkpoint time).
        """
        import torch

        setup = self.setup
        parts, optimisation = setup.parts, setup.optimisation
        device, world, scaler = setup.placement.device, setup.context.world_size, optimisation.scaler
        total = torch.zeros((), device=device)
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            # Gradients are averaged across processes once per optimizer step, not per micro-batch.
            sync = parts.ddp.no_sync() if parts.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                inputs = {key: value.to(device, non_blocking=True) for key, value in micro["inputs"].items()}
                targets = micro["labels"].to(device, non_blocking=True)
                with autocast(device, setup.placement.precision):
                    logits = parts.train_module(**inputs).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.float(), targets, weight=self.class_weight_tensor,
                    label_smoothing=setup.config.label_smoothing, reduction="sum",
                ) * micro["loss_weight"]
                # DDP divides the summed gradients by the process count; the loss is already a share
                # of the global mean, so multiply back to get exactly the global-mean gradient.
                scaled = loss * world
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total += loss.detach()
        if scaler is not None:
            scaler.unscale_(optimisation.optimizer)
        if setup.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(parts.trainable.values()), setup.config.max_grad_norm)
        if scaler is not None:
            scaler.step(optimisation.optimizer)
            scaler.update()
        else:
            optimisation.optimizer.step()
        optimisation.scheduler.step()
        optimisation.optimizer.zero_grad(set_to_none=True)
        return total

    def _stop_clock(self, clock: tuple[float, float]) -> tuple[float, float]:
        """Add the wall and CPU time since ``clock`` to training time (after the GPU caught up)."""
        import torch

        if self.setup.placement.on_cuda:
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
        if self.setup.context.enabled:
            import torch.distributed as dist

            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        for (step, learning_rate, _), value in zip(self.pending_losses, values.tolist()):
            self.state.history.append({
                "step": step,
                "epoch": round(step / self.setup.plan.steps_per_epoch, 4),
                "learning_rate": learning_rate,
                "train_loss": value,
            })
        self.pending_losses = []

    # ------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> None:
        setup = self.setup
        optimisation = setup.optimisation
        path = save_checkpoint(
            self.checkpoints, self.fingerprint, self.state, setup.parts.trainable, self.tracker.best_weights,
            optimisation.optimizer, optimisation.scheduler, optimisation.scaler, setup.context,
        )
        if setup.context.is_main:
            logger.debug("checkpoint written: %s", path)

    def _barrier(self) -> None:
        if self.setup.context.enabled:
            import torch.distributed as dist

            dist.barrier()

    # ------------------------------------------------------------------------------ finish
    def finish(self, started: float, resumed_from: int | None) -> TrainedModel:
        """Put the best weights back, write the model directory (main process), drop the checkpoints."""
        state, context = self.state, self.setup.context
        self.tracker.restore_best()
        if state.stopped_early and context.is_main:
            logger.info("stopped early at step %d; kept the weights of step %d", state.step, state.best_row.get("step"))
        result = trained_model(self.setup, state, self.fingerprint, time.perf_counter() - started, resumed_from)
        if context.is_main:
            save_model_directory(self.setup, result)
            clear_checkpoints(self.checkpoints)
        self._barrier()
        return result


def _clock() -> tuple[float, float]:
    """(wall, CPU) time now."""
    return time.perf_counter(), time.process_time()
