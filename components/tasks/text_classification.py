"""Text classification: the first task. Inputs are strings; checkpoints load with
``AutoTokenizer`` + ``AutoModelForSequenceClassification``; batches are token ids padded to the
longest row; the floor is TF-IDF + logistic regression; drift looks at length, vocabulary and
non-letter share; behaviour perturbs typos, casing and names.

The pieces live in ``tuneops.components.tasks.text``; this class is where the spine finds them.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tuneops.components.tasks.base import Augmentation, Baseline, EncodedInputs, Task, new_head_arguments
from tuneops.components.tasks.text import TEXT
from tuneops.components.tasks.text.inspection import TOKENIZER_FILES, inspect_tokenizer

if TYPE_CHECKING:
    from pathlib import Path

    from tuneops.components.config import (BehaviouralCase, DataConfig, EvaluationConfig, ServingConfig,
                                           ValidationConfig)
    from tuneops.components.validation.checks import InputChecks


class TextClassification(Task):
    """Sequence classification of strings (reviews, tickets, messages, questions)."""

    name = "text-classification"
    input_column = TEXT
    input_noun = "text"

    # --- data --------------------------------------------------------------------------------

    def source_column(self, data: "DataConfig") -> str:
        return data.text_column

    def write_demo(self, directory: "Path", rows: int) -> "Path":
        from tuneops.components.data.demo import write_demo_dataset

        return write_demo_dataset(directory, rows=rows)

    def input_problem(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"not a string ({type(value).__name__})"
        from tuneops.components.tasks.text.blank import is_blank

        return "blank" if is_blank(value) else None

    def input_checks(self, config: "ValidationConfig") -> "InputChecks":
        from tuneops.components.tasks.text.checks import text_checks

        return text_checks(config, self.input_column)

    # --- model -------------------------------------------------------------------------------

    processor_files = TOKENIZER_FILES

    def architecture_for(self, model_type: str) -> str | None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model_type)

    def inspect_processor(self, directory, config, names: list[str]) -> int | None:
        return inspect_tokenizer(directory, config, names)

    def load_processor(self, source: str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)

    def load_model(self, source: str, labels: list[str], allow_pickle: bool = False):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(source, **new_head_arguments(labels, allow_pickle))

    def load_trained(self, path):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
        return tokenizer, model

    def encode(self, processor, inputs: list[Any], max_length: int) -> EncodedInputs:
        texts = [str(text) for text in inputs]
        ids = list(processor(texts, truncation=True, max_length=max_length)["input_ids"]) if texts else []
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        return EncodedInputs(features=ids, lengths=lengths, pad_id=processor.pad_token_id or 0)

    def input_lengths(self, source: str, inputs: list[Any], limit: int) -> np.ndarray:
        """Token counts of the texts, special tokens included."""
        return self.encode(self.load_processor(source), inputs, limit).lengths

    def collate(self, encoded: EncodedInputs, indices: np.ndarray, pad_multiple: int = 1,
                augment: "Augmentation | None" = None) -> dict[str, Any]:
        """Dynamic padding: pad to the longest of these rows only (rounded up to ``pad_multiple``).
        Texts are not augmented: ``augment`` is ignored."""
        import torch

        lengths = encoded.lengths[indices]
        longest = int(lengths.max()) if len(lengths) else 0
        width = -(-longest // pad_multiple) * pad_multiple if pad_multiple > 1 else longest
        ids = np.full((len(indices), width), encoded.pad_id, dtype=np.int64)
        mask = np.zeros((len(indices), width), dtype=np.int64)
        for row, (index, length) in enumerate(zip(indices, lengths)):
            ids[row, :length] = encoded.features[index]
            mask[row, :length] = 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def model_inputs(self, processor, inputs: list[Any], max_length: int) -> dict[str, Any]:
        return dict(processor([str(text) for text in inputs], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt"))

    def inference_order(self, inputs: list[Any]) -> np.ndarray:
        # Sorting by length keeps padding per batch small: most of the speed of batched inference.
        return np.argsort([len(str(text)) for text in inputs], kind="stable")

    # --- evaluation and monitoring -----------------------------------------------------------

    def baseline(self, train: pd.DataFrame) -> Baseline:
        from tuneops.components.tasks.text.baseline import train_baseline

        return train_baseline(train)

    def descriptors(self, inputs: pd.Series, reference: pd.Series | None) -> pd.DataFrame:
        from tuneops.components.tasks.text.descriptors import text_descriptors

        return text_descriptors(inputs, reference)

    def slice_values(self, inputs: pd.Series, config: "EvaluationConfig") -> dict[str, np.ndarray]:
        from tuneops.components.tasks.text.slices import length_slices

        # An ordered categorical: the report lists the length buckets from short to long.
        return length_slices(inputs, config.length_buckets)

    def perturb(self, value: Any, perturbation: str, rng: random.Random) -> Any | None:
        from tuneops.components.tasks.text.perturbations import perturb

        return perturb(str(value), perturbation, rng)

    def builtin_behaviour(self, labels: list[str], inputs: list[Any], predicted: list[str], truth: list[str] | None,
                          config: "EvaluationConfig", rng: random.Random) -> list["BehaviouralCase"]:
        from tuneops.components.tasks.text.perturbations import builtin_cases

        return builtin_cases(labels, [str(text) for text in inputs], predicted, config, rng)

    # --- serving -----------------------------------------------------------------------------

    def request_model(self, config: "ServingConfig") -> type:
        from tuneops.components.tasks.text.schema import request_model

        return request_model(config)

    def request_body(self, inputs: list[Any]) -> dict[str, Any]:
        return {"texts": [str(value) for value in inputs]}

    def log_value(self, value: Any, mode: str) -> str:
        from tuneops.components.monitoring.prediction_log import hash_input

        return hash_input(str(value)) if mode == "hash" else str(value)
