"""The fine-tuning engine: real fine-tunes of a 2-layer MiniLM on a few hundred short reviews.

One reference run (module fixture) is compared against a repeat run (reproducibility), a run
killed with SIGKILL and resumed (exact resume), and read back from disk (what a model directory
holds). Decisions that depend on hardware this machine lacks (CUDA precision, MFU peaks) are
tested as the pure functions the loop calls.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tuneops.components.checkpoints import load_for_classification, packaged_model_dir, parse_spec, transformer_layers
from tuneops.components.config import TrainingConfig, load_config
from tuneops.components.data.loading import LABEL
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.device import cpu_bf16_flags, resolve_device, select_precision
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.base import EncodedInputs
from tuneops.components.tasks.registry import get_task
from tuneops.components.training.batching import (
    StepDataset,
    balanced_class_weights,
    epoch_batches,
    micro_batches,
)
from tuneops.components.training.finetune import TrainedModel, finetune
from tuneops.components.training.runtime import (
    DistributedContext,
    FlopsShape,
    build_adamw,
    cpu_threads,
    loader_workers,
    lr_multiplier,
    peak_flops,
    training_flops,
)
from tuneops.components.training.transfer import freeze

REPO = Path(__file__).resolve().parents[2]
TASK = get_task("text-classification")
CHECKPOINT = "packaged:all-MiniLM-L6-v2@layers=2"
# Small enough for a shared 2-core machine; one thread per process because oversubscribed cores
# make every step several times slower (measured), not because the result depends on it.
# fp32 pinned: these tests compare losses and weights to 1e-4, which bf16 autocast (what "auto"
# picks on CPUs with AMX) does not hold to; the bf16 path has its own test below.
TINY = dict(
    max_steps=24, batch_size=16, eval_every_steps=3, checkpoint_every_steps=6, learning_rate=1e-3,
    freeze_embeddings=True, threads=1, early_stopping_patience=None, precision="fp32",
)
# A deliberately easy task (one sentiment word decides the label), so that 24 steps of a 2-layer
# model show real learning whatever the demo generator's current difficulty is.
WORDS = {
    "negative": ["awful", "terrible", "broken", "useless", "horrible", "dreadful"],
    "neutral": ["okay", "average", "fine", "acceptable", "ordinary", "adequate"],
    "positive": ["great", "excellent", "wonderful", "superb", "lovely", "fantastic"],
}
THINGS = ["kettle", "jacket", "novel", "speaker", "puzzle", "blender", "scarf", "router", "kite", "toaster"]


def easy_reviews(rows: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    records = []
    for _ in range(rows):
        label = rng.choice(sorted(WORDS))
        text = f"The {rng.choice(THINGS)} is {rng.choice(WORDS[label])}."
        if rng.random() < 0.5:  # varied lengths, so batches need padding
            text += f" I bought it for my {rng.choice(['son', 'mother', 'office'])} last {rng.choice(['week', 'year'])}."
        records.append({"text": text, LABEL: label})
    return pd.DataFrame.from_records(records)


def tiny_splits():
    return easy_reviews(240, seed=1), easy_reviews(60, seed=2), sorted(WORDS)


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


@pytest.fixture(scope="module")
def reference(splits, tmp_path_factory) -> TrainedModel:
    train, validation, labels = splits
    output = tmp_path_factory.mktemp("reference") / "model"
    return finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**TINY), output, task=TASK)


# ------------------------------------------------------------------------------ whole runs
def test_finetune_learns_and_writes_a_complete_model_directory(reference, splits):
    assert len(reference.history) == TINY["max_steps"]
    losses = [row["train_loss"] for row in reference.history]
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.3, losses
    directory = reference.path
    for name in ("model.safetensors", "tokenizer.json", "tuneops.json", "config.json", "training_args.json",
                 "learning_curve.csv", "learning_curve.png", "throughput.json", "training_report.html",
                 "training_summary.json"):
        assert (directory / name).is_file(), name
    assert (directory / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = (directory / "learning_curve.csv").read_text().splitlines()
    assert curve[0].split(",")[:4] == ["step", "epoch", "learning_rate", "train_loss"]
    assert len(curve) == 1 + TINY["max_steps"]
    assert json.loads((directory / "tuneops.json").read_text())["labels"] == splits[2]
    args = json.loads((directory / "training_args.json").read_text())
    assert args["config"]["learning_rate"] == TINY["learning_rate"] and args["optimizer"].startswith("AdamW")
    assert (args["precision"], args["precision_reason"]) == ("fp32", "training.precision is fp32")
    # Dynamic padding with length-grouped batches: these rows are 8-20 tokens long, so padding
    # every row to max_length=128 would leave ~10% real tokens.
    assert reference.throughput["padding_efficiency"] > 0.8
    assert reference.throughput["real_tokens_per_second"] > 0 and reference.throughput["peak_rss_mib"] > 0
    assert TrainedModel.from_dir(directory).history == reference.history
    # No checkpoints are left once the model is saved.
    assert not (directory.parent / "checkpoints").exists()


def test_the_kept_weights_are_the_best_on_validation(reference, splits):
    _, validation, labels = splits
    evaluated = [row for row in reference.history if "validation_macro_f1" in row]
    assert len(evaluated) == TINY["max_steps"] // TINY["eval_every_steps"]
    best = max(evaluated, key=lambda row: row["validation_macro_f1"])  # the first of equals wins
    assert reference.best_validation["step"] == best["step"] != evaluated[-1]["step"]
    # The saved weights score the best step's validation loss, not the last step's.
    predictor = Predictor.from_dir(reference.path, device="cpu")
    probabilities = predictor.predict_proba(validation["text"].tolist())
    truth = validation[LABEL].map({label: i for i, label in enumerate(labels)}).to_numpy()
    saved_loss = float(-np.log(probabilities[np.arange(len(truth)), truth]).mean())
    assert saved_loss == pytest.approx(best["validation_loss"], abs=1e-4)
    assert abs(saved_loss - evaluated[-1]["validation_loss"]) > 1e-3


def test_frozen_embeddings_stay_as_pretrained(reference):
    saved = load_file(str(reference.path / "model.safetensors"))
    original = load_file(str(packaged_model_dir("all-MiniLM-L6-v2") / "model.safetensors"))
    name = next(key for key in saved if key.endswith("embeddings.word_embeddings.weight"))
    original_name = next(key for key in original if key.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(saved[name], original[original_name])
    layer = next(key for key in saved if key.endswith("encoder.layer.1.attention.self.query.weight"))
    original_layer = next(key for key in original if key.endswith("encoder.layer.1.attention.self.query.weight"))
    assert not torch.equal(saved[layer], original[original_layer])


def test_same_data_config_and_seed_give_identical_results(reference, splits, tmp_path):
    train, validation, labels = splits
    again = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**TINY), tmp_path / "model", task=TASK)
    assert [row["train_loss"] for row in again.history] == [row["train_loss"] for row in reference.history]
    assert again.best_validation == reference.best_validation
    first = load_file(str(reference.path / "model.safetensors"))
    second = load_file(str(again.path / "model.safetensors"))
    assert all(torch.equal(first[key], second[key]) for key in first)


KILLABLE_RUN = """
import json, sys, time
from pathlib import Path
from tuneops.components.config import TrainingConfig
from tests.code.test_training import CHECKPOINT, TASK, tiny_splits
from tuneops.components.training.finetune import finetune
train, validation, labels = tiny_splits()
# Slow each step down so the test can kill the process between two checkpoints.
finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**json.loads(sys.argv[1])), Path(sys.argv[2]),
         task=TASK, progress=lambda step, total, loss: time.sleep(0.5))
"""


def test_a_run_killed_mid_training_resumes_from_its_last_checkpoint(reference, splits, tmp_path, caplog):
    train, validation, labels = splits
    output = tmp_path / "run" / "model"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, json.dumps(TINY), str(output)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = output.parent / "checkpoints"
    deadline = time.monotonic() + 180
    try:
        while not list(checkpoints.glob("step-*")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert list(checkpoints.glob("step-*")) and not (output / "training_summary.json").exists()

    changed = TrainingConfig(**(TINY | {"learning_rate": TINY["learning_rate"] / 2}))
    with pytest.raises(ConfigError, match="cannot resume"):
        finetune(train, validation, labels, CHECKPOINT, changed, output, task=TASK, resume=True)

    caplog.set_level(logging.INFO, logger="tuneops.components.training")
    resumed = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**TINY), output, task=TASK, resume=True)
    assert resumed.resumed_from_step is not None and resumed.resumed_from_step >= TINY["checkpoint_every_steps"]
    assert "resuming from checkpoint" in caplog.text
    # Exact continuation: weights, optimizer, schedule, data position and dropout streams restored.
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in reference.history]
    assert resumed.best_validation == reference.best_validation

    finished = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**TINY), output, task=TASK, resume=True)
    assert finished.resumed_from_step == finished.steps == TINY["max_steps"]
    assert "already finished" in caplog.text


def test_lora_adapter_trains_few_parameters_and_saves_a_plain_model(splits, tmp_path):
    train, validation, labels = splits
    config = TrainingConfig(**(TINY | {"adapter": "lora", "max_steps": 3, "freeze_embeddings": False}))
    result = finetune(train, validation, labels, CHECKPOINT, config, tmp_path / "model", task=TASK)
    assert result.parameters["trainable"] < 0.05 * result.parameters["total"]
    saved = load_file(str(result.path / "model.safetensors"))
    assert not any("lora" in key for key in saved)
    original = load_file(str(packaged_model_dir("all-MiniLM-L6-v2") / "model.safetensors"))
    query = next(key for key in saved if key.endswith("encoder.layer.0.attention.self.query.weight"))
    original_query = next(key for key in original if key.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not torch.equal(saved[query], original[original_query]), "the adapter was not merged into the weights"
    assert Predictor.from_dir(result.path, device="cpu").predict(["The kettle is great."])[0].label in labels


def test_labels_outside_the_label_set_are_a_one_line_data_error(splits, tmp_path):
    train, validation, labels = splits
    broken = train.copy()
    broken.loc[0, LABEL] = "furious"
    with pytest.raises(DataError, match="'furious'"):
        finetune(broken, validation, labels, CHECKPOINT, TrainingConfig(**TINY), tmp_path / "model", task=TASK)


# --------------------------------------------------------------------- decisions, unit-tested
def test_precision_follows_the_device_and_the_cpus_bf16_instructions():
    assert select_precision("cuda:0", "auto", bf16_supported=True).precision == "bf16"
    assert select_precision("cuda:0", "auto", bf16_supported=False).precision == "fp16"
    # A CPU without native bf16 emulates it (~20x slower than fp32 here): auto keeps fp32.
    plain_cpu = select_precision("cpu", "auto", bf16_supported=False, cpu_flags=[])
    assert plain_cpu.precision == "fp32" and "no native bf16" in plain_cpu.reason
    amx = select_precision("cpu", "auto", bf16_supported=False, cpu_flags=["amx_bf16", "avx512_bf16"])
    assert amx.precision == "bf16" and "amx_bf16" in amx.reason
    forced = select_precision("cpu", "bf16", bf16_supported=False, cpu_flags=[])
    assert forced.precision == "bf16" and "emulated" in forced.reason
    assert select_precision("cpu", "fp32", bf16_supported=False, cpu_flags=["amx_bf16"]).precision == "fp32"
    with pytest.raises(ConfigError):
        select_precision("cpu", "fp16", bf16_supported=False)
    with pytest.raises(ConfigError):
        select_precision("cuda:0", "bf16", bf16_supported=False)


def test_bf16_autocast_trains_on_cpu_and_the_run_says_why(splits, tmp_path):
    """The CPU bf16 path end to end on any CPU: native where the CPU has AMX / AVX512-BF16, else
    emulated (slow, so only a few steps here)."""
    train, validation, labels = splits
    config = TrainingConfig(**TINY | {"precision": "bf16", "max_steps": 4, "eval_every_steps": 2})
    trained = finetune(train.head(64), validation, labels, CHECKPOINT, config, tmp_path / "model", task=TASK)
    args = json.loads((trained.path / "training_args.json").read_text())
    native = bool(cpu_bf16_flags())
    assert args["precision"] == "bf16" and ("emulated" in args["precision_reason"]) != native
    assert trained.throughput["precision"] == "bf16" and np.isfinite(trained.last_loss)
    probabilities = Predictor.from_dir(trained.path, device="cpu").predict_proba(validation["text"].head(8).tolist())
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # What "auto" would have picked here, and why, as the run record says it.
    auto = select_precision("cpu", "auto", False, cpu_bf16_flags())
    assert auto.precision == ("bf16" if native else "fp32")


def test_the_cpus_bf16_instructions_are_read_from_cpuinfo():
    sapphire_rapids = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    assert cpu_bf16_flags(sapphire_rapids) == ["amx_bf16", "avx512_bf16"]
    assert cpu_bf16_flags("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n") == []
    assert cpu_bf16_flags("no flags line at all") == []
    assert isinstance(cpu_bf16_flags(), list)  # this machine's, whatever it has


def test_device_is_detected_and_can_be_forced():
    context = DistributedContext(rank=3, world_size=4, local_rank=1, local_world_size=2)
    assert resolve_device("auto", context.local_rank, cuda_available=True) == "cuda:1"
    assert resolve_device("cpu", context.local_rank, cuda_available=True) == "cpu"
    assert resolve_device("auto", context.local_rank, cuda_available=False) == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda", context.local_rank, cuda_available=False)


def test_threads_workers_and_optimizer_suit_the_device():
    assert cpu_threads(3, local_world_size=2) == 3
    assert cpu_threads(None, local_world_size=64) == 1
    assert loader_workers(None, "cpu", 1) == 0  # workers would take cores from the matmuls
    assert loader_workers(None, "cuda:0", 1) <= 2 and loader_workers(4, "cuda:0", 1) == 4
    layer = torch.nn.Linear(4, 2)
    optimizer, kind = build_adamw([{"params": list(layer.parameters()), "weight_decay": 0.0}], 1e-3, "cpu")
    assert kind == "fused" and optimizer.defaults["fused"]


def test_learning_rate_warms_up_then_follows_the_schedule():
    assert [lr_multiplier(step, 10, 4, "linear") for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, 10, 4, "linear") == 1.0 and lr_multiplier(10, 10, 4, "linear") == 0.0
    assert lr_multiplier(7, 10, 4, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(9, 10, 4, "constant") == 1.0


def test_batches_cover_every_row_once_grouped_by_length_and_reproducibly():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    batches = epoch_batches(lengths, 32, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(lengths, 32, seed=1, epoch=0)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(lengths, 32, seed=1, epoch=1)))
    grouped = sum(len(b) * lengths[b].max() for b in batches)
    shuffled = rng.permutation(1000)
    random_batches = sum(lengths[shuffled[i:i + 32]].max() * len(shuffled[i:i + 32]) for i in range(0, 1000, 32))
    assert grouped < 0.7 * random_batches


def test_micro_batches_split_a_step_across_accumulation_and_processes():
    batch = np.arange(10)
    shares = [micro_batches(batch, accumulation=2, world_size=3, rank=rank) for rank in range(3)]
    rows = sorted(int(i) for per_rank in shares for share, placeholder in per_rank if not placeholder for i in share)
    assert rows == list(range(10))
    # A process with nothing left in a micro-batch still joins the all-reduce, with zero weight.
    tiny = [micro_batches(np.arange(2), accumulation=1, world_size=3, rank=rank)[0] for rank in range(3)]
    assert [placeholder for _, placeholder in tiny] == [False, False, True]


@pytest.mark.parametrize("world_size,accumulation", [(1, 1), (2, 1), (3, 2)])
def test_the_loss_of_a_split_step_is_the_global_weighted_mean(world_size, accumulation):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 20, 11)
    encoded = EncodedInputs(features=[[1] * int(n) for n in lengths], lengths=lengths)
    targets = rng.integers(0, 3, 11)
    logits = torch.randn(11, 3)
    weights = balanced_class_weights(targets, 3)
    expected = torch.nn.functional.cross_entropy(
        logits, torch.from_numpy(targets), weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=0.1)
    batch = np.arange(11)
    total = 0.0
    for rank in range(world_size):
        item = StepDataset(TASK, encoded, targets, [batch], accumulation, world_size, rank, 1, weights)[0]
        for micro, (indices, _) in zip(item["micro"], micro_batches(batch, accumulation, world_size, rank)):
            loss = torch.nn.functional.cross_entropy(
                logits[indices], micro["labels"], weight=torch.tensor(weights, dtype=torch.float32),
                label_smoothing=0.1, reduction="sum")
            total += float(loss) * micro["loss_weight"]
    assert total == pytest.approx(float(expected), rel=1e-5)


def test_balanced_class_weights_upweight_rare_classes():
    weights = balanced_class_weights(np.array([0] * 8 + [1] * 2), 3)
    assert weights.tolist() == pytest.approx([10 / 24, 10 / 6, 1.0])


def test_freezing_stops_gradients_to_embeddings_and_lower_layers():
    _, model = load_for_classification(parse_spec(CHECKPOINT), ["a", "b"], TASK)
    freeze(model, embeddings=True, layers=1)
    layers = transformer_layers(model)
    assert not any(p.requires_grad for p in model.base_model.embeddings.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    with pytest.raises(ConfigError, match="freeze_layers"):
        freeze(model, embeddings=False, layers=3)


def test_model_flops_and_utilisation_inputs():
    shape = FlopsShape(parameters=1000, layers=2, hidden=8)
    # 6·N per token plus 12·L·d·S per token, S the token's own sequence length.
    assert training_flops(shape, [4, 2]) == 4 * (6000 + 12 * 2 * 8 * 4) + 2 * (6000 + 12 * 2 * 8 * 2)
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756e12)
    assert peak_flops("NVIDIA A100-SXM4-40GB", "fp32") == pytest.approx(156e12)
    assert peak_flops("Some Future GPU", "bf16") is None
    assert peak_flops("Some Future GPU", "bf16", override_tflops=100) == pytest.approx(1e14)


def test_training_settings_are_checked_when_loaded():
    assert load_config(overrides=["training.adapter=lora", "training.freeze_layers=2"]).training.adapter == "lora"
    with pytest.raises(ConfigError, match="training.precision"):
        load_config(overrides=["training.precision=fp8"])
    with pytest.raises(ConfigError, match="early_stopping_metrc"):
        load_config(overrides=["training.early_stopping_metrc=loss"])


def test_a_resume_without_checkpoint_starts_from_step_zero_and_says_so(splits, tmp_path, caplog):
    train, validation, labels = splits
    caplog.set_level(logging.INFO, logger="tuneops.components.training")
    config = TrainingConfig(**(TINY | {"max_steps": 2}))
    result = finetune(train, validation, labels, CHECKPOINT, config, tmp_path / "model", task=TASK, resume=True)
    assert result.resumed_from_step is None and result.steps == 2
    assert "no checkpoint" in caplog.text
    assert math.isfinite(result.first_loss) and math.isfinite(result.last_loss)

