"""Hub-style vision checkpoints (ViT, ResNet, ConvNeXt) as candidates, offline.

A hub id is fetched into a local folder and then handled as that folder is; what differs between
architectures is everything after the download: inspection (processor, head, parameter count),
stage freezing, the embeddings the selection probe reads, fine-tuning and the saved model. Each
architecture is built here small and randomly initialised with its own transformers classes and
image processor, saved as a hub folder would be, and taken through those steps on real digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tuneops.components.checkpoint_inspection import inspect_checkpoint
from tuneops.components.config import SelectionConfig, TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.data.demo_images import write_image_demo
from tuneops.components.data.loading import DatasetSplits
from tuneops.components.predictor import Predictor
from tuneops.components.sampling import stratified_split
from tuneops.components.selection.select import select_model
from tuneops.components.tasks.registry import get_task
from tuneops.components.training.finetune import finetune
from tuneops.components.training.transfer import backbone_stages

TASK = get_task("image-classification")
LABELS = [str(digit) for digit in range(10)]


def tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                       intermediate_size=64, num_labels=5)
    return ViTForImageClassification(config), ViTImageProcessor(size={"height": 32, "width": 32}), 32, 3


def tiny_resnet():
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 24, 32], depths=[1, 1, 1], layer_type="basic",
                          num_labels=5)
    # microsoft/resnet-* ship a ConvNeXt image processor: the hub's own pairing.
    return ResNetForImageClassification(config), ConvNextImageProcessor(size={"shortest_edge": 32}), 32, 3


def tiny_convnext():
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    config = ConvNextConfig(hidden_sizes=[16, 24, 40], depths=[1, 1, 1], num_stages=3, num_labels=5)
    return ConvNextForImageClassification(config), ConvNextImageProcessor(size={"shortest_edge": 32}), 40, 3


BUILDERS = {"vit": tiny_vit, "resnet": tiny_resnet, "convnext": tiny_convnext}


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory) -> dict[str, tuple[Path, int, int]]:
    """name -> (a saved folder with a 5-class ImageNet-style head, its feature width, its stages)."""
    folders = {}
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        model, processor, width, stages = build()
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder, safe_serialization=True)
        processor.save_pretrained(folder)
        folders[name] = (folder, width, stages)
    return folders


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = write_image_demo(tmp_path_factory.mktemp("digits"), 200, seed=4)
    frame = pd.DataFrame([{TASK.input_column: str(path), LABEL: path.parent.name}
                          for path in sorted(folder.glob("*/*.png"))])
    train, validation = stratified_split(frame, 0.3, seed=0)
    return train.reset_index(drop=True), validation.reset_index(drop=True)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_inspection_counts_the_model_with_a_head_for_the_users_labels(hub_folders, name):
    folder, width, _ = hub_folders[name]
    inspection = inspect_checkpoint(str(folder), len(LABELS), TASK)
    assert inspection.usable, inspection.reason
    model = TASK.load_model(str(folder), LABELS)
    # The 5-class head of the checkpoint is replaced by one for 10 labels: counted as loaded.
    assert inspection.parameters == sum(parameter.numel() for parameter in model.parameters())
    assert model.config.num_labels == len(LABELS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_few_steps_with_frozen_stages_train_and_the_saved_model_embeds(hub_folders, digits, name, tmp_path):
    folder, width, stages = hub_folders[name]
    model = TASK.load_model(str(folder), LABELS)
    stem, blocks = backbone_stages(model)
    assert len(blocks) == stages
    train, validation = digits
    config = TrainingConfig(max_steps=30, batch_size=16, eval_every_steps=10, early_stopping_patience=None,
                            learning_rate=1e-3, threads=1, freeze_stages=1, image_size=32)
    trained = finetune(train, validation, LABELS, str(folder), config, tmp_path / "model", task=TASK)
    losses = [row["train_loss"] for row in trained.history]
    assert np.isfinite(losses).all()
    if name != "vit":
        # From random weights the convolutional nets learn digits within 30 steps; a random ViT's
        # class token hardly depends on the image yet (its loss stays near ln 10), so for it the
        # weights below are what shows the training ran.
        assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses

    # The stem and the first stage are the checkpoint's, bit for bit; the last stage trained.
    _, saved = TASK.load_trained(trained.path)
    after = dict(saved.named_parameters())
    before = dict(model.named_parameters())
    frozen = [f"{_path(model, module)}.{key}" for module in (stem[0], blocks[0][0])
              for key, _ in module.named_parameters()]
    last = [f"{_path(model, blocks[-1][0])}.{key}" for key, _ in blocks[-1][0].named_parameters()]
    assert frozen and last
    assert all(torch.equal(before[key], after[key]) for key in frozen)
    assert any(not torch.equal(before[key], after[key]) for key in last)

    predictor = Predictor.from_dir(trained.path, device="cpu")
    inputs = validation[TASK.input_column].tolist()[:5]
    embeddings = predictor.embed(inputs)
    assert embeddings.shape == (5, width) and np.isfinite(embeddings).all() and embeddings.std() > 0
    probabilities = predictor.predict_proba(inputs)
    assert probabilities.shape == (5, len(LABELS)) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_selection_probes_every_backbone_at_the_size_its_run_trains_at(hub_folders, digits, tmp_path):
    train, validation = digits
    splits = DatasetSplits(train=train, validation=validation, test=validation, group_columns=[], source="digits",
                           fingerprint="digits", input_column=TASK.input_column)
    candidates = [str(hub_folders[name][0]) for name in sorted(BUILDERS)]
    config = SelectionConfig(candidates=candidates, probe_rows=100, budget_seconds=600)
    report = select_model(splits, config, tmp_path, None, TASK, TrainingConfig(image_size=32))
    rows = {row.candidate: row for row in report.rows}
    for candidate in candidates:
        row = rows[candidate]
        assert row.status in {"ranked", "chosen"}, (row.candidate, row.reason)
        assert row.probe_macro_f1 is not None and row.latency_ms_batch1 > 0
        assert "probed at 32 px" in " ".join(row.notes)
    assert report.chosen in candidates


def _path(model, module) -> str:
    """The name of ``module`` inside ``model``."""
    return next(name for name, candidate in model.named_modules() if candidate is module)
