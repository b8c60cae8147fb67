"""The predictor: processor + model + label map + task as one object that saves and loads itself,
and the one inference path of tuneops.

Training writes a model directory with ``Predictor.save``; evaluation, the gate, selection's probes,
packaging, serving and monitoring all load it with ``Predictor.from_dir`` and score through it. The
task (recorded in the manifest) says how raw inputs become ``model(**inputs)`` tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneops.components.checkpoints import feature_width
from tuneops.components.device import autocast, inference_precision, resolve_device
from tuneops.components.files import atomic_write_text
from tuneops.components.int8_serving import OnnxClassifier, packaged_runner
from tuneops.components.tasks.base import EncodedInputs, Task
from tuneops.components.tasks.registry import get_task

MANIFEST = "tuneops.json"


@dataclass
class Prediction:
    label: str
    score: float
    probabilities: dict[str, float]


class Predictor:
    """A classifier ready for inference: batches cheap inputs together, returns probabilities and embeddings."""

    def __init__(self, model, processor, labels: list[str], *, task: Task, max_length: int = 128,
                 device: str = "cpu", manifest: dict[str, Any] | None = None,
                 runner: OnnxClassifier | None = None) -> None:
        self.model = model.to(device).eval()
        # The int8 graph that computes probabilities in place of the model, when serving uses it;
        # embeddings always come from the model itself.
        self.runner = runner
        self.processor = processor
        self.labels = list(labels)
        self.task = task
        self.max_length = max_length
        self.device = device
        self.manifest = dict(manifest or {})
        # Where the embeddings come from and how wide they are: fixed by the model, found once.
        self._head = _head_input(self.model)
        self._embedding_width = _embedding_width(self.model, self._head)

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "auto", runtime: str = "torch") -> "Predictor":
        """Load a directory written by ``save`` (safetensors weights, processor, ``tuneops.json``).

        ``runtime="packaged"`` (serving) also loads the int8 graph where packaging found it as good
        as the fp32 model (``int8_serving``); ``"torch"`` (evaluation, the gate) never does.
        """
        import torch

        path = Path(path)
        manifest = cls.read_manifest(path)
        task = get_task(manifest.get("task", "text-classification"))  # models saved before the task seam
        processor, model = task.load_trained(path)
        device = resolve_device(device)
        runner = packaged_runner(path, manifest, device, torch.get_num_threads()) if runtime == "packaged" else None
        return cls(model, processor, manifest["labels"], task=task, max_length=manifest.get("max_length", 128),
                   device=device, manifest=manifest, runner=runner)

    @staticmethod
    def read_manifest(path: str | Path) -> dict[str, Any]:
        """The ``tuneops.json`` of a model directory: task, labels, max length, base checkpoint."""
        return json.loads((Path(path) / MANIFEST).read_text())

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write weights (safetensors), processor and the manifest (task, labels, max length, extra)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.processor.save_pretrained(path)
        self.manifest.update(extra or {})
        self.manifest.update({"task": self.task.name, "labels": self.labels, "max_length": self.max_length})
        (path / MANIFEST).write_text(json.dumps(self.manifest, indent=2))
        return path

    def update_manifest(self, path: str | Path, extra: dict[str, Any]) -> None:
        """Add ``extra`` to the manifest of the model directory ``path`` (atomically) and to this
        predictor's own: a decision taken after training, such as the serving runtime."""
        path = Path(path)
        manifest = self.read_manifest(path)
        manifest.update(extra)
        atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2))
        self.manifest.update(extra)

    def predict_proba(self, inputs: list[Any], batch_size: int = 64,
                      runner: OnnxClassifier | None = None) -> np.ndarray:
        """Class probabilities, shape (len(inputs), len(labels)), in the order of ``labels``;
        computed by ``runner`` (an int8 graph) when given, else by the predictor's own path."""
        probabilities, _ = self._run(inputs, batch_size, want_embeddings=False, runner=runner or self.runner)
        return probabilities

    def predict(self, inputs: list[Any], batch_size: int = 64) -> list[Prediction]:
        probabilities = self.predict_proba(inputs, batch_size)
        return [self._prediction(row) for row in probabilities]

    def embed(self, inputs: list[Any], batch_size: int = 64) -> np.ndarray:
        """The model's own features of each input (for probes and embedding drift): mean-pooled last
        hidden states of a text encoder; of an image model, the pooled features its classifier
        head reads (EfficientNet's 1,280, ResNet's pooler output, ViT's class token)."""
        _, embeddings = self._run(inputs, batch_size, want_embeddings=True)
        return embeddings

    def predict_and_embed(self, inputs: list[Any], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        return self._run(inputs, batch_size, want_embeddings=True)

    def encoded_probabilities(self, encoded: EncodedInputs, batch_size: int = 64,
                              precision: str | None = None) -> np.ndarray:
        """Probabilities of inputs already encoded by ``task.encode`` (training's validation rows)."""
        import torch

        order = np.argsort(encoded.lengths, kind="stable")
        probabilities = np.zeros((len(encoded), len(self.labels)), dtype=np.float32)
        precision = precision or inference_precision(self.device)
        with torch.inference_mode(), autocast(self.device, precision):
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch = {key: value.to(self.device) for key, value in self.task.collate(encoded, index).items()}
                probabilities[index] = torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu().numpy()
        return probabilities

    def _prediction(self, row: np.ndarray) -> Prediction:
        best = int(row.argmax())
        return Prediction(
            label=self.labels[best],
            score=float(row[best]),
            probabilities={label: float(p) for label, p in zip(self.labels, row)},
        )

    def _run(self, inputs: list[Any], batch_size: int, want_embeddings: bool,
             runner: OnnxClassifier | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        inputs = list(inputs)
        probabilities = np.zeros((len(inputs), len(self.labels)), dtype=np.float32)
        head, width = self._head, self._embedding_width
        embeddings = np.zeros((len(inputs), width), dtype=np.float32) if want_embeddings else np.zeros((0, width))
        order = self.task.inference_order(inputs)
        captured: list = []
        # The head's input is the pooled feature vector itself: caught on the way in, for free.
        hook = head.register_forward_pre_hook(lambda _, args: captured.append(args[0])) \
            if want_embeddings and head is not None else None
        try:
            with torch.inference_mode(), autocast(self.device, inference_precision(self.device)):
                for start in range(0, len(inputs), batch_size):
                    index = order[start:start + batch_size]
                    batch = self.task.model_inputs(self.processor, [inputs[i] for i in index], self.max_length)
                    if runner is not None:
                        probabilities[index] = _softmax(runner.logits(batch))
                        continue
                    batch = {key: value.to(self.device) for key, value in batch.items()}
                    captured.clear()
                    output = self.model(**batch, output_hidden_states=want_embeddings and head is None)
                    probabilities[index] = torch.softmax(output.logits.float(), dim=-1).cpu().numpy()
                    if want_embeddings and head is not None:
                        embeddings[index] = captured[-1].float().flatten(1).cpu().numpy()
                    elif want_embeddings:
                        embeddings[index] = _mean_pool(output.hidden_states[-1].float(), batch.get("attention_mask"))
        finally:
            if hook is not None:
                hook.remove()
        return probabilities, embeddings


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _head_input(model):
    """The classifier head of an image model, whose input is the pooled features; None for text
    models, whose embeddings are the mean of the last hidden states."""
    if getattr(model, "main_input_name", None) != "pixel_values":
        return None
    head = getattr(model, "classifier", None)
    return head if head is not None and _first_linear(head) is not None else None


def _embedding_width(model, head) -> int:
    """Width of the embeddings: the head's input features for an image model, else the width its
    config states."""
    if head is not None:
        return int(_first_linear(head).in_features)
    return feature_width(model.config) or 0


def _first_linear(module):
    import torch

    if isinstance(module, torch.nn.Linear):
        return module
    return next((child for child in module.modules() if isinstance(child, torch.nn.Linear)), None)


def _mean_pool(last_hidden, mask) -> np.ndarray:
    """Mean over positions (tokens) that the mask keeps; over every position when there is no mask
    (an image model's feature map, flattened)."""
    if last_hidden.dim() > 3:  # [batch, channels, height, width] -> [batch, positions, channels]
        last_hidden = last_hidden.flatten(2).transpose(1, 2)
    if mask is None:
        return last_hidden.mean(1).cpu().numpy()
    weights = mask.unsqueeze(-1).float()
    return ((last_hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)).cpu().numpy()
