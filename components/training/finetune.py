"""Fine-tuning a pretrained checkpoint for classification: the stage's one public call.

``finetune`` runs the engine in this process (``tuneops.components.training.engine``), or, with
``training.processes > 1``, as that many local data-parallel processes through the launcher
(``tuneops.components.training.launcher``), whose processes run the engine themselves
(``tuneops.components.training.distributed``). This module imports both; neither imports it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tuneops.components.config import TrainingConfig
from tuneops.components.tasks.base import Task
from tuneops.components.training.engine import ProgressCallback, train_in_process
from tuneops.components.training.launcher import launch_local
from tuneops.components.training.recipe import recipe_for_run
from tuneops.components.training.outputs import SUMMARY_FILE, TrainedModel
from tuneops.components.training.run_setup import RunRequest, check_request
from tuneops.components.training.search import search_recipe
from tuneops.components.training.runtime import distributed_context

__all__ = ["SUMMARY_FILE", "ProgressCallback", "TrainedModel", "finetune"]

logger = logging.getLogger(__name__)


def finetune(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    labels: list[str],
    checkpoint: str,
    config: TrainingConfig,
    output_dir: Path,
    *,
    task: Task,
    progress: ProgressCallback | None = None,
    champion_dir: Path | None = None,
    resume: bool = False,
) -> TrainedModel:
    """Fine-tune ``checkpoint`` on ``train``; keep the weights that score best on ``validation``.

    The inputs are ``frame[task.input_column]``, the targets ``frame["label"]``. Writes the model
    (safetensors, processor, label map, task), training args, learning curves, throughput and a
    report into ``output_dir``; checkpoints go to ``output_dir.parent / "checkpoints"`` every
    ``config.checkpoint_every_steps`` steps. With ``resume`` a run continues from its last checkpoint
    (``TrainedModel.resumed_from_step`` says from where) or returns the already finished model.
    ``progress(step, total_steps, loss)`` is called after every optimizer step (every 10th on a
    GPU, where reading the loss stalls the device), in a single-process run. With
    ``config.processes > 1`` the work is spread over that many local processes (data parallel).

    Settings ``config`` leaves unset are decided first from the data and the checkpoint
    (``tuneops.components.training.recipe``); ``TrainedModel.recipe`` records each decision. With
    ``config.search.trials`` a few fine-tunes then search learning rate, epochs and class weighting
    on validation (``tuneops.components.training.search``; its table: ``output_dir/search.html``).

    Raises DataError for labels outside ``labels``, ConfigError for settings the model or
    hardware cannot honour, StageError when a distributed run fails.
    """
    check_request(train, labels)
    recipe = recipe_for_run(train, checkpoint, config, task, champion_dir)
    if config.search.trials:
        # Trials in <run>/search (removed after each), the table beside the model: search.html / .json.
        recipe = search_recipe(train, validation, labels, checkpoint, task, recipe, Path(output_dir).parent / "search",
                               Path(output_dir), champion_dir=champion_dir, resume=resume)
    logger.info("recipe: %s", recipe.summary())
    request = RunRequest(train=train, validation=validation, labels=list(labels), checkpoint=checkpoint,
                         config=recipe.config, output_dir=Path(output_dir), task=task, champion_dir=champion_dir,
                         recipe=recipe.to_json())
    if config.processes > 1 and not distributed_context().enabled:
        return launch_local(request, resume=resume)
    return train_in_process(request, progress=progress, resume=resume)
