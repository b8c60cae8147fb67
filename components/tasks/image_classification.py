"""Image classification: the second task. Inputs are image files (absolute paths in the split
frames) or raw bytes (serving); checkpoints load with ``AutoImageProcessor`` +
``AutoModelForImageClassification``; batches are fixed-size pixel tensors made by the one
preprocessing of ``tasks.image.processing``.

The pieces live in ``tuneops.components.tasks.image``; this class is where the spine finds them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tuneops.components.errors import DataError
from tuneops.components.tasks.base import Augmentation, Baseline, EncodedInputs, Task, new_head_arguments
from tuneops.components.tasks.image import IMAGE
from tuneops.components.tasks.image.decode import SUFFIXES, default_limits
from tuneops.components.tasks.image.inspection import PROCESSOR_FILES, inspect_image_processor, load_image_processor

if TYPE_CHECKING:
    from tuneops.components.config import (BehaviouralCase, DataConfig, EvaluationConfig, ServingConfig,
                                           TrainingConfig, ValidationConfig)
    from tuneops.components.tasks.image.processing import Preprocessing
    from tuneops.components.validation.checks import InputChecks



@dataclass
class EncodedImages(EncodedInputs):
    """A split decoded and resized once: ``features`` are ``uint8`` (height, width, 3) arrays,
    ``lengths`` all 1 (no padding), ``preprocessing`` how ``collate`` normalises them."""

    preprocessing: "Preprocessing | None" = None


class ImageClassification(Task):
    """Classification of pictures (photos, scans, digits) into one label each."""

    name = "image-classification"
    input_column = IMAGE
    input_noun = "image"
    input_suffixes = SUFFIXES
    # The log keeps a content hash and descriptors, not pixels (log_value): monitoring compares descriptors.
    logs_inputs = False

    # --- data --------------------------------------------------------------------------------

    def source_column(self, data: "DataConfig") -> str:
        return data.image_column

    def write_demo(self, directory: "Path", rows: int) -> "Path":
        from tuneops.components.data.demo_images import write_image_demo

        return write_image_demo(directory, rows)

    def input_problem(self, value: Any) -> str | None:
        from tuneops.components.tasks.image.decode import ImageProblem, decode_image

        try:
            decode_image(value, default_limits())
        except ImageProblem as problem:
            return str(problem)
        return None

    def input_checks(self, config: "ValidationConfig") -> "InputChecks":
        from tuneops.components.tasks.image.checks import image_checks

        return image_checks(config, self.input_column)

    # --- model -------------------------------------------------------------------------------

    processor_files = PROCESSOR_FILES

    def architecture_for(self, model_type: str) -> str | None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

        found = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
        # A few model types map to several classes (with and without a distillation head).
        return found[0] if isinstance(found, (tuple, list)) else found

    def inspect_processor(self, directory, config, names: list[str]) -> int | None:
        return inspect_image_processor(directory, config, names)

    def load_processor(self, source: str):
        return load_image_processor(source)

    def load_model(self, source: str, labels: list[str], allow_pickle: bool = False):
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(source, **new_head_arguments(labels, allow_pickle))

    def load_trained(self, path):
        from transformers import AutoModelForImageClassification

        return load_image_processor(path), AutoModelForImageClassification.from_pretrained(path, use_safetensors=True)

    def configure_processor(self, processor, config: "TrainingConfig"):
        """The processor set to ``training.image_size`` (unset: the checkpoint's own size)."""
        from tuneops.components.tasks.image.processing import with_side

        return processor if config.image_size is None else with_side(processor, config.image_size)

    def input_sides(self, source: str, inputs: list[Any]) -> tuple[np.ndarray, int | None]:
        """Shorter sides of the readable inputs (headers only, no pixel decoded) and the side
        checkpoint ``source``'s processor resizes to."""
        from tuneops.components.tasks.image.decode import ImageProblem, image_header, read_image_bytes
        from tuneops.components.tasks.image.processing import preprocessing_of

        sides = []
        for value in inputs:
            try:
                header = image_header(read_image_bytes(value, default_limits()), default_limits())
            except ImageProblem:
                continue  # validation reports unreadable files; the size is judged on the others
            sides.append(min(header.width, header.height))
        try:
            model_side = max(preprocessing_of(self.load_processor(source)).output_size)
        except ValueError:
            model_side = None
        return np.asarray(sides, dtype=np.int64), model_side

    def encode(self, processor, inputs: list[Any], max_length: int) -> EncodedImages:
        """Decode and resize every image once (``max_length`` does not apply to images).

        Raises DataError naming the first input that is not a usable image."""
        from tuneops.components.tasks.image.decode import ImageProblem
        from tuneops.components.tasks.image.processing import preprocessing_of

        preprocessing = preprocessing_of(processor)
        features = []
        for position, value in enumerate(inputs):
            try:
                features.append(_pixels(value, preprocessing))
            except ImageProblem as problem:
                raise DataError(f"data: image {position} is not usable: {problem}") from None
        return EncodedImages(features=features, lengths=np.ones(len(features), dtype=np.int64),
                             preprocessing=preprocessing)

    def collate(self, encoded: EncodedInputs, indices: np.ndarray, pad_multiple: int = 1,
                augment: Augmentation | None = None) -> dict[str, Any]:
        """``pixel_values`` of these rows; with ``augment``, each row lightly augmented first."""
        from tuneops.components.tasks.image.processing import augment as augmented
        from tuneops.components.tasks.image.processing import normalise

        if not isinstance(encoded, EncodedImages) or encoded.preprocessing is None:
            raise TypeError("image collate needs the EncodedImages of ImageClassification.encode")
        rows = [encoded.features[index] for index in indices]
        if augment is not None:
            rows = [augmented(row, augment.rng, augment.operations) for row in rows]
        return {"pixel_values": normalise(np.stack(rows), encoded.preprocessing)}

    def model_inputs(self, processor, inputs: list[Any], max_length: int) -> dict[str, Any]:
        """``pixel_values`` of raw inputs (paths or bytes) by the same preprocessing as training.

        Raises ImageProblem for an input that is not a usable image."""
        from tuneops.components.tasks.image.processing import normalise, preprocessing_of

        preprocessing = preprocessing_of(processor)
        return {"pixel_values": normalise(np.stack([_pixels(value, preprocessing) for value in inputs]),
                                          preprocessing)}

    # --- evaluation and monitoring -----------------------------------------------------------

    def baseline(self, train: pd.DataFrame) -> Baseline:
        from tuneops.components.tasks.image.baseline import train_baseline

        return train_baseline(train)

    def descriptors(self, inputs: pd.Series, reference: pd.Series | None) -> pd.DataFrame:
        from tuneops.components.tasks.image.descriptors import image_descriptors

        return image_descriptors(inputs, reference)

    def slice_values(self, inputs: pd.Series, config: "EvaluationConfig") -> dict[str, np.ndarray]:
        from tuneops.components.tasks.image.slices import size_slices

        return size_slices(inputs, config)

    def perturb(self, value: Any, perturbation: str, rng: random.Random) -> Any | None:
        from tuneops.components.tasks.image.perturbations import perturb

        return perturb(value, perturbation, rng)

    def builtin_behaviour(self, labels: list[str], inputs: list[Any], predicted: list[str], truth: list[str] | None,
                          config: "EvaluationConfig", rng: random.Random) -> list["BehaviouralCase"]:
        from tuneops.components.tasks.image.perturbations import builtin_cases, class_minimum_cases

        return builtin_cases(list(inputs), config, rng) + class_minimum_cases(labels, list(inputs), truth, config, rng)

    # --- serving -----------------------------------------------------------------------------

    def request_model(self, config: "ServingConfig") -> type:
        from tuneops.components.tasks.image.schema import request_model

        return request_model(config)

    def request_body(self, inputs: list[Any]) -> dict[str, Any]:
        """``{"images": [base64 of each file's bytes]}``: split rows name image files."""
        import base64

        from tuneops.components.tasks.image.decode import read_image_bytes

        limits = default_limits()
        return {"images": [base64.b64encode(read_image_bytes(value, limits)).decode("ascii") for value in inputs]}

    def warmup_input(self) -> bytes:
        """A mid-grey 32x32 PNG, made here: serving warms up on it when the reference files are gone."""
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
        return buffer.getvalue()

    def keep_input(self, value: Any, directory: Path) -> Path | None:
        """The served image's bytes as ``<sha256 hex>.<format>`` under ``directory``, written once
        (atomically) per content: a feedback table can name the file with its true label. None
        for a value that is not a readable image (it was refused before classification)."""
        from tuneops.components.files import atomic_write_bytes
        from tuneops.components.tasks.image.decode import ImageProblem, content_hash, image_header, read_image_bytes

        limits = default_limits()
        try:
            data = read_image_bytes(value, limits)
            suffix = image_header(data, limits).format.lower()
        except ImageProblem:
            return None
        path = Path(directory) / f"{content_hash(data).split(':', 1)[1]}.{suffix}"
        if not path.exists():
            atomic_write_bytes(path, data)
        return path

    def log_value(self, value: Any, mode: str) -> str:
        """Never the pixels: an image (served bytes, or a path) is logged as its content hash plus its
        drift descriptors (``descriptors.log_record``, what the monitor compares with the reference),
        or with ``mode == "hash"`` as the hash alone. An unreadable path: the hash of the path."""
        from tuneops.components.tasks.image.decode import ImageProblem, content_hash, read_image_bytes
        from tuneops.components.tasks.image.descriptors import log_record

        try:
            data = read_image_bytes(value, default_limits())
        except ImageProblem:
            # The input's own hash (for a path, what the log's hash_input gives a string): still no name.
            raw = value if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode("utf-8")
            return content_hash(bytes(raw))
        if mode == "hash":
            return content_hash(data)
        return log_record(data, getattr(value, "descriptors", None))


def _pixels(value: Any, preprocessing: "Preprocessing") -> np.ndarray:
    """One input decoded (``decode.py``) and resized: ``uint8`` (height, width, 3)."""
    from tuneops.components.tasks.image.decode import decode_image
    from tuneops.components.tasks.image.processing import to_array

    return to_array(decode_image(value, default_limits()), preprocessing)
