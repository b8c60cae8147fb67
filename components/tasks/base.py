"""The task seam: what a task (text classification, image classification, ...) must provide.

The spine (load, validate, select, train, evaluate, gate, package, serve, monitor) holds a ``Task``
and calls it for everything that depends on the modality; it never names one. A new task is a
subclass in one new module, registered in ``tuneops.components.tasks.registry``. Hugging Face's
``run_glue.py`` and ``run_image_classification.py`` show why this is small: the model class and
the collate function differ, the training loop is the same.

Inputs travel as the values of the task's ``input_column`` (strings for text; for images, paths or
decoded pictures), always as a plain ``list``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pathlib import Path

    from tuneops.components.config import BehaviouralCase, DataConfig, EvaluationConfig, ServingConfig
    from tuneops.components.config import TrainingConfig, ValidationConfig
    from tuneops.components.validation.checks import InputChecks

@dataclass
class EncodedInputs:
    """One split encoded once for training: per-row features and a per-row cost.

    ``features`` is whatever the task's ``collate`` understands (token id lists for text, pixel
    arrays for images); ``lengths`` is each row's size in the unit that padding costs (tokens;
    1 for fixed-size inputs), which the length-grouped batching of training uses.
    """

    features: list[Any]
    lengths: np.ndarray
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class Augmentation:
    """The augmentation of one training micro-batch: which operations (``training.augment``) and
    the random stream they draw from (a function of the run's position: resume repeats it)."""

    rng: np.random.Generator
    operations: tuple[str, ...]


class Baseline(Protocol):
    """The task's classical floor: a cheap model every fine-tuned one must beat."""

    labels: list[str]
    #: what the floor is, for report rows ("tf-idf + logistic regression")
    name: str
    #: its model classes, for the architecture column ("TfidfVectorizer + LogisticRegression")
    architecture: str
    #: what the floor is and how it was set, for gate reasons and reports
    description: str
    #: the settings it chose (e.g. a regularisation strength), JSON-able
    settings: dict[str, Any]

    def predict_proba(self, inputs: list[Any]) -> np.ndarray: ...

    @property
    def parameter_count(self) -> int: ...


def new_head_arguments(labels: list[str], allow_pickle: bool) -> dict[str, Any]:
    """The ``from_pretrained`` arguments every task loads a checkpoint with: a fresh head for
    ``labels`` (a champion's or an ImageNet head has its own classes, so mismatched sizes are
    replaced), safetensors unless pickle is allowed, and never remote code."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
        "ignore_mismatched_sizes": True,
        "use_safetensors": None if allow_pickle else True,
        "trust_remote_code": False,
    }


class Task(ABC):
    """Everything modality-specific, behind one object chosen by ``PipelineConfig.task``."""

    #: the value of ``PipelineConfig.task`` that selects this task
    name: str
    #: the canonical column of the split frames that holds the model's input
    input_column: str
    #: what one input is called in messages and the API ("text", "image")
    input_noun: str
    #: suffixes of inputs stored as files (images); empty for inputs held in the table (text).
    #: A task with suffixes loads the class-folder layout, and paths in its tables are made absolute.
    input_suffixes: tuple[str, ...] = ()
    #: whether the prediction log keeps the input itself (``log_value`` in "text" mode), so monitoring
    #: can re-score and embed logged traffic; False when it keeps a record of it (images: content hash
    #: + descriptors), which is compared by descriptors alone and stored per reference input at packaging
    logs_inputs: bool = True

    # --- data --------------------------------------------------------------------------------

    @abstractmethod
    def source_column(self, data: "DataConfig") -> str:
        """The user's column that holds the inputs (renamed to ``input_column`` on load)."""

    @abstractmethod
    def write_demo(self, directory: "Path", rows: int) -> "Path":
        """Write the embedded demo data of this task under ``directory`` (idempotent) and return
        the path ``data.path`` would name: a table for text, a folder of class folders for images."""

    @abstractmethod
    def input_problem(self, value: Any) -> str | None:
        """Why one raw input cannot be used (a one-line reason), or None when it can."""

    @abstractmethod
    def input_checks(self, config: "ValidationConfig") -> "InputChecks":
        """What validation checks about the input column: how it is prepared for Great
        Expectations and the checks of its values (types, nulls, lengths, encodings...)."""

    # --- model -------------------------------------------------------------------------------

    #: files of the processor fetched with a hub checkpoint (tokenizer files, preprocessor_config.json)
    processor_files: tuple[str, ...] = ()

    @abstractmethod
    def architecture_for(self, model_type: str) -> str | None:
        """The transformers class this task loads for a checkpoint's ``model_type``; None when
        transformers has no such model for the task (selection then excludes the candidate)."""

    @abstractmethod
    def inspect_processor(self, directory, config, names: list[str]) -> int | None:
        """Check a candidate's processor files before any compute (raise
        ``checkpoint_inspection.CandidateUnusable`` with the reason); return its longest input, if known."""

    @abstractmethod
    def load_processor(self, source: str):
        """The tokenizer / image processor of a checkpoint folder or hub id."""

    @abstractmethod
    def load_model(self, source: str, labels: list[str], allow_pickle: bool = False):
        """An ``AutoModelFor...Classification`` with a fresh head for ``labels``; no remote code."""

    @abstractmethod
    def load_trained(self, path):
        """``(processor, model)`` of a model directory that training wrote."""

    @abstractmethod
    def encode(self, processor, inputs: list[Any], max_length: int) -> EncodedInputs:
        """Encode a split once, up front (tokenise; decode and resize), for training."""

    @abstractmethod
    def collate(self, encoded: EncodedInputs, indices: np.ndarray, pad_multiple: int = 1,
                augment: "Augmentation | None" = None) -> dict[str, Any]:
        """The ``model(**inputs)`` tensors of these rows (labels excluded), padded as little as possible.

        ``augment`` (training batches only, when ``training.augment`` names any) says which light
        random changes to apply and gives their random stream; a task without augmentation ignores it."""

    @abstractmethod
    def model_inputs(self, processor, inputs: list[Any], max_length: int) -> dict[str, Any]:
        """The ``model(**inputs)`` tensors of raw inputs, for inference."""

    def input_lengths(self, source: str, inputs: list[Any], limit: int) -> np.ndarray | None:
        """The encoded length of each input (counted up to ``limit``) with the processor of
        checkpoint ``source``, for the recipe's ``training.max_length``; None for a task whose
        inputs have no length (the default), which leaves that setting alone."""
        return None

    def warmup_input(self) -> Any | None:
        """An input that always exists, for the warm-up prediction of a served model whose
        reference inputs are gone (image files deleted after training); None when a task's
        reference sample holds its inputs themselves (text)."""
        return None

    def inference_order(self, inputs: list[Any]) -> np.ndarray:
        """The order in which inference batches inputs (cheap ones together); default: as given."""
        return np.arange(len(inputs))

    def input_sides(self, source: str, inputs: list[Any]) -> tuple[np.ndarray, int | None] | None:
        """For inputs with a spatial size (images): the shorter side of each input (read cheaply,
        from file headers) and the side the checkpoint ``source`` takes (None: unknown), for the
        recipe's ``training.image_size``; None for a task whose inputs have no size (the default)."""
        return None

    def configure_processor(self, processor, config: "TrainingConfig"):
        """The processor a fine-tune encodes with and saves beside the model, given the decided
        training settings (an image task sets its input size from ``training.image_size``);
        default: the processor as loaded."""
        return processor

    # --- evaluation and monitoring -----------------------------------------------------------

    @abstractmethod
    def baseline(self, train: pd.DataFrame) -> Baseline:
        """The classical floor fitted on the training rows."""

    @abstractmethod
    def descriptors(self, inputs: pd.Series, reference: pd.Series | None) -> pd.DataFrame:
        """Numeric per-input descriptors for drift (length, out-of-vocabulary share, brightness...)."""

    @abstractmethod
    def slice_values(self, inputs: pd.Series, config: "EvaluationConfig") -> dict[str, np.ndarray]:
        """Extra slices of the test set by input properties: ``{column: bucket name per row}``."""

    @abstractmethod
    def perturb(self, value: Any, perturbation: str, rng: random.Random) -> Any | None:
        """One behavioural perturbation of an input; None when it does not apply to it."""

    @abstractmethod
    def builtin_behaviour(self, labels: list[str], inputs: list[Any], predicted: list[str], truth: list[str] | None,
                          config: "EvaluationConfig", rng: random.Random) -> list["BehaviouralCase"]:
        """Built-in behavioural cases drawn from the user's own test inputs (``truth``: their true
        labels, when known)."""

    # --- serving -----------------------------------------------------------------------------

    @abstractmethod
    def request_model(self, config: "ServingConfig") -> type:
        """The pydantic request body of the classify endpoint, with the config's limits."""

    @abstractmethod
    def request_body(self, inputs: list[Any]) -> dict[str, Any]:
        """The JSON body a client sends to classify ``inputs`` (split rows: texts, image paths):
        what infrastructure validation posts to a real serving process."""

    def keep_input(self, value: Any, directory: "Path") -> "Path | None":
        """Keep a served input as a file under ``directory`` (``serving.keep_images``); None when
        the task's log already holds its inputs (text) or the value is not one it keeps."""
        return None

    @abstractmethod
    def log_value(self, value: Any, mode: str) -> str:
        """What the prediction log keeps of one input (``mode`` is ``serving.log_text``)."""
