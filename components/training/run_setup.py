"""Setting up one fine-tuning run: what was asked (``RunRequest``) becomes everything the loop
works with (``RunSetup``): device and precision, the loaded and prepared model, the encoded
splits, the step plan, optimizer, schedule and loss scaler, and the data-parallel wrapper.

The order of the steps here is part of the run's numbers: seeding, loading the new head, adding an
adapter and building the optimizer all draw from (or depend on) the same random streams, so a
change of order changes the weights a seed gives.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuneops.components.checkpoints import load_for_classification, parse_spec
from tuneops.components.config import TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.device import configure_backends, precision_for, resolve_device
from tuneops.components.errors import DataError
from tuneops.components.tasks.base import EncodedInputs, Task
from tuneops.components.training.recipe import unresolved_settings
from tuneops.components.training.batching import balanced_class_weights, encode_labels, steps_per_epoch
from tuneops.components.training.runtime import (
    DistributedContext,
    FlopsShape,
    build_adamw,
    flops_shape,
    loader_workers,
    lr_multiplier,
)
from tuneops.components.training.transfer import (
    count_parameters,
    parameter_groups,
    prepare_model,
    trainable_parameters,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """What a fine-tune was asked to do: the splits, label set, base checkpoint and settings."""

    train: pd.DataFrame
    validation: pd.DataFrame
    labels: list[str]
    checkpoint: str
    config: TrainingConfig
    output_dir: Path
    task: Task
    champion_dir: Path | None = None
    #: the recipe's decisions behind ``config`` (``Recipe.to_json()``), for the report
    recipe: list[dict] = field(default_factory=list)


def check_request(train: pd.DataFrame, labels: list[str]) -> None:
    """The checks that need no model: raise DataError for fewer than 2 labels or an empty train split."""
    if len(labels) < 2:
        raise DataError(f"data: fine-tuning needs at least 2 labels, got {labels}")
    if len(train) == 0:
        raise DataError("data: the train split is empty")


@dataclass
class EncodedSplit:
    """One split encoded once by the task, with its labels as class indices (kept apart: the task
    encodes inputs, never labels)."""

    inputs: EncodedInputs
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps, and when to warm up, evaluate and report."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int
    # Reading a loss value makes the CPU wait for the GPU; reporting every 10th step keeps the
    # GPU's queue full. On CPU there is no queue to drain, so every step is reported.
    progress_every: int


@dataclass(frozen=True)
class Placement:
    """Where and how the run computes: device, precision, CPU threads, loader workers, padding."""

    device: str
    precision: str
    threads: int
    workers: int
    pad_multiple: int  # 8 on GPUs: tensor-core friendly shapes
    precision_reason: str = ""  # what the hardware offered and why this precision (run record)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class ModelParts:
    """The processor and the model in the forms the loop needs."""

    processor: Any
    model: Any  # the prepared model (adapter-wrapped when one is configured)
    train_module: Any  # what the step calls: the model, or its DDP / compiled wrapper
    ddp: Any | None
    trainable: dict  # name -> parameter of everything that trains
    parameter_counts: dict[str, int]
    flops_shape: FlopsShape


@dataclass
class Optimisation:
    """AdamW (and which implementation of it), the learning-rate schedule, the fp16 loss scaler."""

    optimizer: Any
    kind: str
    scheduler: Any
    scaler: Any | None


@dataclass
class RunSetup:
    """Everything the loop works with, built once by ``set_up``."""

    request: RunRequest
    context: DistributedContext
    placement: Placement
    parts: ModelParts
    train: EncodedSplit
    validation: EncodedSplit
    plan: StepPlan
    class_weights: np.ndarray | None
    optimisation: Optimisation

    @property
    def config(self) -> TrainingConfig:
        return self.request.config


def set_up(request: RunRequest, context: DistributedContext, threads: int) -> RunSetup:
    """Pick device and precision, load and prepare the model, encode both splits, plan the steps
    and build optimizer, schedule and (in a distributed run) the DDP wrapper.

    Raises DataError for labels outside the label set, ConfigError for settings the model or
    hardware cannot honour.
    """
    import torch

    config, task = request.config, request.task
    unset = unresolved_settings(config)
    if unset:
        # finetune() and prepare decide the recipe first; reaching here without it is a bug.
        raise ValueError(f"training settings {unset} are undecided: run decide_recipe before set_up")
    device = resolve_device(config.device, context.local_rank, torch.cuda.is_available())
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    choice = precision_for(device, config.precision)
    precision = choice.precision
    configure_backends(device)
    # The same seed on every process: the new classification head starts identical everywhere.
    seed_everything(config.seed)
    processor, model = load_for_classification(parse_spec(request.checkpoint), request.labels, task,
                                               request.champion_dir)
    # Encoded with, and saved beside the model: serving prepares inputs as training did.
    processor = task.configure_processor(processor, config)
    shape = flops_shape(model)
    model = prepare_model(model, config).to(device)
    train = encode_split(task, processor, request.train, request.labels, config.max_length, "train")
    validation = encode_split(task, processor, request.validation, request.labels, config.max_length, "validation")
    plan = plan_steps(config, len(train), device)
    class_weights = (
        balanced_class_weights(train.labels, len(request.labels)) if config.class_weights == "balanced" else None
    )
    optimizer, optimizer_kind = build_adamw(parameter_groups(model, config.weight_decay), config.learning_rate, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, plan.total_steps, plan.warmup_steps, config.lr_schedule),
    )
    ddp, train_module = _parallel_module(model, context, device, config.compile)
    setup = RunSetup(
        request=request,
        context=context,
        placement=Placement(
            device=device, precision=precision, precision_reason=choice.reason, threads=threads,
            workers=loader_workers(config.num_workers, device, context.local_world_size),
            pad_multiple=8 if device.startswith("cuda") else 1,
        ),
        parts=ModelParts(
            processor=processor, model=model, train_module=train_module, ddp=ddp,
            trainable=trainable_parameters(model), parameter_counts=count_parameters(model), flops_shape=shape,
        ),
        train=train,
        validation=validation,
        plan=plan,
        class_weights=class_weights,
        optimisation=Optimisation(
            optimizer=optimizer, kind=optimizer_kind, scheduler=scheduler,
            scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None,
        ),
    )
    if context.is_main:
        logger.info(
            "fine-tuning %s on %d rows (%d validation): %d steps of %d examples, %s %s, %d process(es), "
            "%d/%d parameters trainable",
            request.checkpoint, len(train), len(validation), plan.total_steps, config.batch_size,
            device, precision, context.world_size,
            setup.parts.parameter_counts["trainable"], setup.parts.parameter_counts["total"],
        )
    return setup


def encode_split(task: Task, processor, frame: pd.DataFrame, labels: list[str], max_length: int,
                 split: str) -> EncodedSplit:
    """``frame[task.input_column]`` encoded by the task, ``frame[label]`` as class indices."""
    label_ids = {label: index for index, label in enumerate(labels)}
    targets = encode_labels(frame[LABEL], label_ids, split)
    inputs = task.encode(processor, frame[task.input_column].tolist(), max_length)
    return EncodedSplit(inputs=inputs, labels=targets)


def plan_steps(config: TrainingConfig, train_rows: int, device: str) -> StepPlan:
    """The step plan of a run over ``train_rows`` rows."""
    per_epoch = steps_per_epoch(train_rows, config.batch_size)
    total = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
    return StepPlan(
        steps_per_epoch=per_epoch,
        total_steps=total,
        warmup_steps=int(total * config.warmup_ratio),
        eval_every=config.eval_every_steps or per_epoch,
        progress_every=10 if device.startswith("cuda") else 1,
    )


def _parallel_module(model, context: DistributedContext, device: str, compile_model: bool):
    """(DDP wrapper or None, the module the training step calls)."""
    import torch

    ddp = None
    module = model
    if context.enabled:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.device(device).index] if device.startswith("cuda") else None
        ddp = DistributedDataParallel(model, device_ids=device_ids)
        module = ddp
    if compile_model:
        # dynamic=True: padded lengths vary per batch; without it every new length recompiles.
        module = torch.compile(module, dynamic=True)
    return ddp, module


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random streams."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
