"""The predictor: tokenizer + model + label map as one object that saves and loads itself.

Training writes a model directory with ``Predictor.save``; evaluation, the gate, packaging and
serving all load the same directory with ``Predictor.from_dir``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneops.components.device import autocast, inference_precision, resolve_device

MANIFEST = "tuneops.json"


@dataclass
class Prediction:
    label: str
    score: float
    probabilities: dict[str, float]


class Predictor:
    """Text classifier ready for inference: batches by length, returns probabilities and embeddings."""

    def __init__(self, model, tokenizer, labels: list[str], max_length: int = 128, device: str = "cpu",
                 manifest: dict[str, Any] | None = None) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = max_length
        self.device = device
        self.manifest = dict(manifest or {})

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "auto") -> "Predictor":
        """Load a directory written by ``save`` (safetensors weights, tokenizer, ``tuneops.json``)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        manifest = cls.read_manifest(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
        return cls(model, tokenizer, manifest["labels"], manifest.get("max_length", 128), resolve_device(device), manifest)

    @staticmethod
    def read_manifest(path: str | Path) -> dict[str, Any]:
        """The ``tuneops.json`` of a model directory: labels, max length, base checkpoint."""
        return json.loads((Path(path) / MANIFEST).read_text())

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write weights (safetensors), tokenizer and the manifest (labels, max length, extra)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        self.manifest.update(extra or {})
        self.manifest.update({"labels": self.labels, "max_length": self.max_length})
        (path / MANIFEST).write_text(json.dumps(self.manifest, indent=2))
        return path

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)), in the order of ``labels``."""
        probabilities, _ = self._run(texts, batch_size, want_embeddings=False)
        return probabilities

    def predict(self, texts: list[str], batch_size: int = 64) -> list[Prediction]:
        probabilities = self.predict_proba(texts, batch_size)
        return [self._prediction(row) for row in probabilities]

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Mean-pooled last hidden states of the model's own encoder (for embedding drift)."""
        _, embeddings = self._run(texts, batch_size, want_embeddings=True)
        return embeddings

    def predict_and_embed(self, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        return self._run(texts, batch_size, want_embeddings=True)

    def _prediction(self, row: np.ndarray) -> Prediction:
        best = int(row.argmax())
        return Prediction(
            label=self.labels[best],
            score=float(row[best]),
            probabilities={label: float(p) for label, p in zip(self.labels, row)},
        )

    def _run(self, texts: list[str], batch_size: int, want_embeddings: bool) -> tuple[np.ndarray, np.ndarray]:
        import torch

        texts = [str(text) for text in texts]
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        hidden = self.model.config.hidden_size
        embeddings = np.zeros((len(texts), hidden), dtype=np.float32) if want_embeddings else np.zeros((0, hidden))
        # Sorting by length keeps padding per batch small: most of the speed of batched inference.
        order = np.argsort([len(text) for text in texts], kind="stable")
        with torch.inference_mode(), autocast(self.device, inference_precision(self.device)):
            for start in range(0, len(texts), batch_size):
                index = order[start:start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in index], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                ).to(self.device)
                output = self.model(**batch, output_hidden_states=want_embeddings)
                probabilities[index] = torch.softmax(output.logits.float(), dim=-1).cpu().numpy()
                if want_embeddings:
                    last = output.hidden_states[-1].float()
                    mask = batch["attention_mask"].unsqueeze(-1).float()
                    pooled = (last * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                    embeddings[index] = pooled.cpu().numpy()
        return probabilities, embeddings

