"""Fine-tuning a pretrained checkpoint for sequence classification: a lean torch loop."""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from components.checkpoints import load_for_classification, parse_spec
from components.config import TrainingConfig
from components.data import LABEL, TEXT
from components.predictor import Predictor, pick_device


@dataclass
class TrainedModel:
    """A fine-tuned model directory and what happened while training it."""

    path: Path
    base_checkpoint: str
    labels: list[str]
    history: list[dict] = field(default_factory=list)  # one row per logged step
    best_validation: dict = field(default_factory=dict)
    throughput: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def first_loss(self) -> float:
        return self.history[0]["train_loss"] if self.history else math.nan

    @property
    def last_loss(self) -> float:
        return self.history[-1]["train_loss"] if self.history else math.nan

    def to_json(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


ProgressCallback = Callable[[int, int, float], None]


def finetune(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    labels: list[str],
    checkpoint: str,
    config: TrainingConfig,
    output_dir: Path,
    progress: ProgressCallback | None = None,
    champion_dir: Path | None = None,
) -> TrainedModel:
    """Fine-tune ``checkpoint`` on ``train``; keep the weights that score best on ``validation``.

    ``progress(step, total_steps, loss)`` is called after every optimizer step.
    """
    import torch
    from sklearn.metrics import f1_score

    started = time.perf_counter()
    _seed_everything(config.seed)
    device = pick_device(config.device)
    tokenizer, model = load_for_classification(parse_spec(checkpoint), labels, champion_dir)
    model.to(device)
    label_ids = {label: index for index, label in enumerate(labels)}
    train_encoded = _encode(tokenizer, train, label_ids, config.max_length)
    steps_per_epoch = math.ceil(len(train_encoded) / config.batch_size)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate, weight_decay=config.weight_decay,
    )
    warmup = int(total_steps * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup)) * max(0.0, 1 - step / total_steps)
    )
    eval_every = config.eval_every_steps or steps_per_epoch
    history: list[dict] = []
    best = {"macro_f1": -1.0}
    best_state = None
    patience_left = config.early_stopping_patience
    rng = np.random.default_rng(config.seed)
    step, real_tokens, padded_tokens = 0, 0, 0
    model.train()
    while step < total_steps:
        for batch_rows in _length_grouped_batches(train_encoded, config.batch_size, rng):
            batch = _collate(batch_rows, tokenizer.pad_token_id, device)
            real_tokens += int(batch["attention_mask"].sum())
            padded_tokens += batch["attention_mask"].numel()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            row = {"step": step, "train_loss": float(loss.detach())}
            if step % eval_every == 0 or step == total_steps:
                predictor = Predictor(model, tokenizer, labels, config.max_length, device)
                predicted = predictor.predict_proba(validation[TEXT].astype(str).tolist()).argmax(1)
                truth = validation[LABEL].astype(str).map(label_ids).to_numpy()
                score = float(f1_score(truth, predicted, average="macro"))
                row["validation_macro_f1"] = score
                model.train()
                if score > best["macro_f1"]:
                    best = {"macro_f1": score, "step": step}
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    patience_left = config.early_stopping_patience
                elif patience_left is not None:
                    patience_left -= 1
            history.append(row)
            if progress:
                progress(step, total_steps, row["train_loss"])
            if step >= total_steps or patience_left == 0:
                break
        if patience_left == 0:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - started
    throughput = {
        "samples_per_second": step * config.batch_size / seconds,
        "real_tokens_per_second": real_tokens / seconds,
        "padding_efficiency": real_tokens / max(1, padded_tokens),
        "device": device,
    }
    predictor = Predictor(model, tokenizer, labels, config.max_length, device)
    predictor.save(output_dir, extra={"base_checkpoint": checkpoint})
    _write_curves(history, output_dir)
    return TrainedModel(output_dir, checkpoint, labels, history, best, throughput, seconds)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _encode(tokenizer, frame: pd.DataFrame, label_ids: dict[str, int], max_length: int) -> list[dict]:
    encoded = tokenizer(frame[TEXT].astype(str).tolist(), truncation=True, max_length=max_length)
    targets = frame[LABEL].astype(str).map(label_ids).to_numpy()
    return [
        {"input_ids": ids, "label": int(target)}
        for ids, target in zip(encoded["input_ids"], targets)
    ]


def _length_grouped_batches(rows: list[dict], batch_size: int, rng: np.random.Generator):
    """Shuffle, then sort within windows of 50 batches by length: little padding, still random."""
    order = rng.permutation(len(rows))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(rows[i]["input_ids"]))
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    for index in rng.permutation(len(batches)):
        yield [rows[i] for i in batches[index]]


def _collate(rows: list[dict], pad_id: int, device: str) -> dict:
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
        mask[i, : len(row["input_ids"])] = 1
    labels = torch.tensor([row["label"] for row in rows])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _write_curves(history: list[dict], output_dir: Path) -> None:
    keys = ["step", "train_loss", "validation_macro_f1"]
    with open(output_dir / "learning_curve.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in history:
            writer.writerow({key: row.get(key, "") for key in keys})
    (output_dir / "training_history.json").write_text(json.dumps(history))
