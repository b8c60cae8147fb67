"""The default recipe: the training settings a config leaves unset, decided from the data and the
model before training, each with the reason it was chosen.

Fixed defaults fail on real data in known ways (measured on real datasets, docs/quality.md): three
epochs of ~17 steps on a few hundred rows stop a model at the majority class; an unweighted loss
on a 64/27/9 split learns the big class only; 128 tokens cut most of a long review away, while
tweets need a quarter of that. So a setting left unset (``None``, or ``"auto"`` for
``class_weights``) is decided here:

- ``batch_size``: 16 under ``LARGE_DATA_ROWS`` training rows (twice the updates per epoch, which
  small data needs), 32 from there on (on a CPU a batch of 32 costs less per example);
- ``epochs``: enough epochs for ``TARGET_STEPS`` optimizer steps, between ``MIN_EPOCHS`` (the
  usual 3: on the demo's 2,700 rows two epochs were still climbing, 0.948 -> 0.979 validation
  macro-F1) and ``MAX_EPOCHS``; early stopping ends the run sooner when validation stops improving;
- ``learning_rate``: by model size for full fine-tuning: 1e-4 under 50M parameters (compact
  encoders such as MiniLM take larger steps; at 5e-5 the demo's 3-layer MiniLM ended 0.986 where
  1e-4 reached 0.989), 5e-5 up to 200M (the top of BERT-base's usual 2e-5..5e-5), 2e-5 above;
  10x the full rate for adapters (LoRA / IA3 train few new weights from zero);
- ``class_weights``: balanced when the largest class has ``IMBALANCE_RATIO`` times the rows of
  the smallest, else none;
- ``max_length``: the 95th percentile of the training inputs' encoded lengths, rounded up to a
  multiple of 16, at least 32, capped by the model's limit (tasks without lengths skip it);
- ``image_size`` (tasks whose inputs have a size): the median shorter side of up to
  ``SIZE_SAMPLE`` training images (read from their headers), rounded up to a multiple of 32, at
  least 64, at most the checkpoint's own input size: upsampling a 28-px digit to 224 px costs 12x
  the compute of 64 px and adds no detail, while a photo is not enlarged past what the model saw;
- ``freeze_stages`` (the same tasks): the stem and the first 2 stages of the backbone on small
  data (under ``LARGE_DATA_ROWS`` rows), 1 from there on, at most all stages but one.

A value set in the config always wins and is recorded as such. The decision is a pure function
of the config, the training labels, the input lengths and the image facts (a seeded sample of
the training rows), so a resumed run decides the same.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tuneops.components.checkpoint_inspection import inspect_checkpoint
from tuneops.components.checkpoints import parse_spec, resolve_source
from tuneops.components.config import TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.sampling import stratified_sample
from tuneops.components.tasks.base import Task
from tuneops.components.training.batching import steps_per_epoch
from tuneops.components.training.transfer import stage_count

SMALL_BATCH = 16
LARGE_BATCH = 32
LARGE_DATA_ROWS = 2_000
TARGET_STEPS = 250
MIN_EPOCHS = 3
MAX_EPOCHS = 12
# (parameters below, learning rate) for full fine-tuning; larger models take smaller steps.
LEARNING_RATES = ((50_000_000, 1e-4), (200_000_000, 5e-5))
LARGEST_MODEL_LEARNING_RATE = 2e-5
ADAPTER_FACTOR = 10
IMBALANCE_RATIO = 1.5
LENGTH_QUANTILE = 95
LENGTH_MULTIPLE = 16
MIN_LENGTH = 32
# When neither the model nor its processor states a limit, 512 positions is what BERT-style
# encoders have; longer inputs are cut there.
FALLBACK_MODEL_LIMIT = 512
# Images: the side is read from at most this many training files' headers (a seeded, stratified
# sample: 200 medians are within a few pixels of the whole set's for any real collection).
SIZE_SAMPLE = 200
SIZE_MULTIPLE = 32  # the stride of a 5-stage backbone: smaller steps only crop feature maps
MIN_IMAGE_SIZE = 64
# When the checkpoint's processor states no size: the side nearly every ImageNet model was trained at.
FALLBACK_IMAGE_SIZE = 224
FROZEN_STAGES_SMALL_DATA = 2
FROZEN_STAGES_LARGE_DATA = 1
# The settings the recipe decides, in the order they are decided and reported. The image settings
# are decided only for tasks whose inputs have a size; for the others they stay unset.
AUTO_SETTINGS = ("batch_size", "epochs", "learning_rate", "class_weights", "max_length")


@dataclass(frozen=True)
class ImageFacts:
    """What the image settings are decided from: the shorter side of sampled training images,
    the side the checkpoint takes, and the number of stages of its backbone (None: unknown)."""

    sides: np.ndarray
    model_side: int | None
    stages: int | None


@dataclass(frozen=True)
class RecipeChoice:
    """One decided setting: its value, whether the config or the recipe set it, and why."""

    setting: str
    value: Any
    source: str  # "config" or "auto"
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"setting": f"training.{self.setting}", "value": self.value, "source": self.source,
                "reason": self.reason}


@dataclass(frozen=True)
class Recipe:
    """The training settings with every unset one decided, and the record of each decision."""

    config: TrainingConfig
    choices: list[RecipeChoice]

    def to_json(self) -> list[dict[str, Any]]:
        return [choice.to_json() for choice in self.choices]

    def summary(self) -> str:
        """One line for logs: the decided values."""
        return ", ".join(f"{choice.setting}={choice.value}" for choice in self.choices)


def unresolved_settings(config: TrainingConfig) -> list[str]:
    """The recipe's settings still unset in ``config`` (empty once ``decide_recipe`` has run)."""
    return [name for name in AUTO_SETTINGS if getattr(config, name) in (None, "auto")]


def recipe_for_run(train: pd.DataFrame, checkpoint: str, config: TrainingConfig, task: Task,
                   champion_dir: Path | None = None) -> Recipe:
    """``decide_recipe`` for fine-tuning ``checkpoint`` on ``train``. The checkpoint's size and
    input limit come from its files (``inspect_checkpoint``: headers only, no weights loaded, any
    ``@layers=K`` applied), the input lengths from its own processor; each is only looked up when
    a setting that needs it is unset."""
    lengths = limit = parameters = None
    source = resolve_source(parse_spec(checkpoint), champion_dir)
    if config.max_length is None or config.learning_rate is None:
        labels = sorted(set(train[LABEL].astype(str)))
        inspection = inspect_checkpoint(checkpoint, len(labels), task, champion_dir)
        parameters, limit = inspection.parameters, inspection.max_sequence_length
    if config.max_length is None:
        lengths = task.input_lengths(source, train[task.input_column].tolist(), limit or FALLBACK_MODEL_LIMIT)
    images = None
    if config.image_size is None or config.freeze_stages is None:
        images = _image_facts(train, source, config, task)
    return decide_recipe(config, train[LABEL].tolist(), lengths, limit, parameters, images)


def image_size_for(train: pd.DataFrame, source: str, config: TrainingConfig, task: Task) -> int | None:
    """The ``image_size`` a run fine-tuning the checkpoint at ``source`` on ``train`` takes: the
    config's, else the recipe's choice; None for a task whose inputs have no size. Selection probes
    each candidate at it, so a candidate is judged at the resolution it would be trained at."""
    if config.image_size is not None:
        return config.image_size
    images = _image_facts(train, source, config, task)
    return None if images is None else _image_size(config, images).value


def _image_facts(train: pd.DataFrame, source: str, config: TrainingConfig, task: Task) -> ImageFacts | None:
    """The image sizes of a sample of ``train`` and the input side and stages of the checkpoint at
    ``source``; None for a task whose inputs have no size."""
    sample = stratified_sample(train, SIZE_SAMPLE, seed=config.seed) if len(train) else train
    measured = task.input_sides(source, sample[task.input_column].tolist())
    if measured is None:
        return None
    from transformers import AutoConfig

    sides, model_side = measured
    try:
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception:  # an unloadable config fails later with its own message; here it only hides facts
        model_config = None
    if model_side is None and model_config is not None:
        configured = getattr(model_config, "image_size", None)
        model_side = configured if isinstance(configured, int) else None
    stages = stage_count(model_config) if model_config is not None else None
    return ImageFacts(sides=np.asarray(sides), model_side=model_side, stages=stages)


def decide_recipe(
    config: TrainingConfig,
    train_labels: Sequence[str],
    input_lengths: np.ndarray | None,
    model_limit: int | None,
    parameters: int | None = None,
    images: ImageFacts | None = None,
) -> Recipe:
    """Decide every recipe setting ``config`` leaves unset.

    ``train_labels`` are the training rows' labels, ``input_lengths`` the encoded length of each
    training input (None for a task whose inputs have no length), ``model_limit`` the longest input
    the model takes (None when unknown), ``parameters`` the model's size (None when unknown: the
    learning rate of a 50-200M model), ``images`` the facts of an image task (None: the image
    settings are not decided). Returns the completed config and the choices made.
    """
    labels = [str(label) for label in train_labels]
    rows = len(labels)
    batch = _batch_size(config, rows)
    choices = [batch, _epochs(config, rows, batch.value), _learning_rate(config, parameters),
               _class_weights(config, labels), _max_length(config, input_lengths, model_limit)]
    if images is not None:
        choices += [_image_size(config, images), _freeze_stages(config, rows, images.stages)]
    decided = {choice.setting: choice.value for choice in choices if choice.source == "auto"}
    return Recipe(config=config.model_copy(update=decided), choices=choices)


def _configured(config: TrainingConfig, name: str) -> RecipeChoice | None:
    value = getattr(config, name)
    if value in (None, "auto"):
        return None
    return RecipeChoice(name, value, "config", "set in the config")


def _batch_size(config: TrainingConfig, rows: int) -> RecipeChoice:
    if (given := _configured(config, "batch_size")) is not None:
        return given
    if rows < LARGE_DATA_ROWS:
        return RecipeChoice("batch_size", SMALL_BATCH, "auto",
                            f"{rows:,} training rows (under {LARGE_DATA_ROWS:,}): batches of {SMALL_BATCH} give twice "
                            f"the optimizer updates per epoch of {LARGE_BATCH}")
    return RecipeChoice("batch_size", LARGE_BATCH, "auto",
                        f"{rows:,} training rows: batches of {LARGE_BATCH} (enough updates per epoch)")


def _epochs(config: TrainingConfig, rows: int, batch_size: int) -> RecipeChoice:
    if (given := _configured(config, "epochs")) is not None:
        return given
    per_epoch = steps_per_epoch(rows, batch_size) if rows else 1
    if config.max_steps is not None:
        # max_steps decides the length; epochs only numbers the passes, one pass is enough.
        epochs = float(max(1, math.ceil(config.max_steps / per_epoch)))
        return RecipeChoice("epochs", epochs, "auto", f"training.max_steps={config.max_steps} sets the run's length")
    wanted = math.ceil(TARGET_STEPS / per_epoch)
    epochs = float(min(MAX_EPOCHS, max(MIN_EPOCHS, wanted)))
    steps = int(epochs * per_epoch)
    if wanted > MAX_EPOCHS:
        why = f"capped at {MAX_EPOCHS} epochs ({steps} steps): {TARGET_STEPS} steps would take {wanted} passes"
    elif wanted < MIN_EPOCHS:
        why = f"at least {MIN_EPOCHS} passes over the data ({steps} steps)"
    else:
        why = f"about {TARGET_STEPS} optimizer steps ({steps})"
    return RecipeChoice("epochs", epochs, "auto",
                        f"{per_epoch} steps per epoch of {batch_size}: {why}; early stopping may end it sooner")


def _learning_rate(config: TrainingConfig, parameters: int | None) -> RecipeChoice:
    if (given := _configured(config, "learning_rate")) is not None:
        return given
    rate = next((rate for below, rate in LEARNING_RATES if parameters is not None and parameters < below),
                LARGEST_MODEL_LEARNING_RATE if parameters is not None else LEARNING_RATES[1][1])
    if parameters is None:
        size = "model size unknown: the rate of a BERT-base-sized model"
    else:
        size = f"{parameters / 1e6:.1f}M parameters: {_rate(rate)} (1e-4 under 50M, 5e-5 to 200M, 2e-5 above)"
    schedule = f"; {config.warmup_ratio:.0%} warmup, then {config.lr_schedule} schedule"
    if config.adapter != "none":
        return RecipeChoice("learning_rate", rate * ADAPTER_FACTOR, "auto",
                            f"{config.adapter} adapter: its new weights start from zero, so {ADAPTER_FACTOR}x the "
                            f"full fine-tuning rate ({size})" + schedule)
    return RecipeChoice("learning_rate", rate, "auto", f"full fine-tuning, {size}" + schedule)


def _rate(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")


def _class_weights(config: TrainingConfig, labels: list[str]) -> RecipeChoice:
    if (given := _configured(config, "class_weights")) is not None:
        return given
    counts = sorted(((count, label) for label, count in Counter(labels).items()), reverse=True)
    if len(counts) < 2:
        return RecipeChoice("class_weights", "none", "auto", "fewer than two classes in the training rows")
    (largest, big), (smallest, small) = counts[0], counts[-1]
    ratio = largest / smallest
    described = f"largest class {big!r} has {largest:,} rows, smallest {small!r} {smallest:,} ({ratio:.1f}x)"
    if ratio >= IMBALANCE_RATIO:
        return RecipeChoice("class_weights", "balanced", "auto",
                            f"{described}: every class weighs the same in the loss, so the small ones are learned")
    return RecipeChoice("class_weights", "none", "auto", f"{described}: balanced enough to train unweighted")


def _max_length(config: TrainingConfig, lengths: np.ndarray | None, model_limit: int | None) -> RecipeChoice:
    if (given := _configured(config, "max_length")) is not None:
        return given
    limit = model_limit or FALLBACK_MODEL_LIMIT
    if lengths is None or len(lengths) == 0:
        # A task without input lengths never reads max_length; a value keeps the config complete.
        return RecipeChoice("max_length", min(limit, 128), "auto", "the inputs have no length to fit")
    quantile = float(np.percentile(np.asarray(lengths, dtype=float), LENGTH_QUANTILE))
    rounded = max(MIN_LENGTH, int(math.ceil(quantile / LENGTH_MULTIPLE) * LENGTH_MULTIPLE))
    value = min(rounded, limit)
    cut = float(np.mean(np.asarray(lengths) > value))
    why = (f"{LENGTH_QUANTILE}% of the training inputs encode to at most {quantile:.0f} positions; "
           f"{cut:.1%} are cut at {value}")
    if rounded > limit:
        why += f" (the model takes at most {limit})"
    return RecipeChoice("max_length", value, "auto", why)


def _image_size(config: TrainingConfig, images: ImageFacts) -> RecipeChoice:
    if (given := _configured(config, "image_size")) is not None:
        return given
    model_side = images.model_side or FALLBACK_IMAGE_SIZE
    model = f"the model's {model_side} px" if images.model_side else f"{model_side} px (the model states no size)"
    if len(images.sides) == 0:
        return RecipeChoice("image_size", model_side, "auto", f"no readable training image to measure: {model}")
    median = float(np.median(images.sides))
    rounded = max(MIN_IMAGE_SIZE, int(math.ceil(median / SIZE_MULTIPLE) * SIZE_MULTIPLE))
    value = min(rounded, model_side)
    why = (f"the median shorter side of {len(images.sides)} sampled training images is {median:.0f} px: "
           f"{value} px (a multiple of {SIZE_MULTIPLE}, at least {MIN_IMAGE_SIZE}")
    why += f", capped at {model})" if rounded > model_side else f"; at most {model})"
    return RecipeChoice("image_size", value, "auto", why)


def _freeze_stages(config: TrainingConfig, rows: int, stages: int | None) -> RecipeChoice:
    if (given := _configured(config, "freeze_stages")) is not None:
        return given
    if not stages:
        return RecipeChoice("freeze_stages", 0, "auto", "the backbone's stages are unknown: nothing is frozen")
    small = rows < LARGE_DATA_ROWS
    wanted = FROZEN_STAGES_SMALL_DATA if small else FROZEN_STAGES_LARGE_DATA
    value = min(wanted, stages - 1)
    data = f"{rows:,} training rows" + (f" (under {LARGE_DATA_ROWS:,})" if small else "")
    return RecipeChoice("freeze_stages", value, "auto",
                        f"{data}: the stem and the first {value} of {stages} stages keep their pretrained "
                        "edge and texture filters (fewer weights to fit"
                        + (" on small data" if small else "")
                        + ", no backward pass through the highest-resolution layers)")
