"""The image task's training side on real handwritten digits (MNIST, from the image demo writer):
one preprocessing for training and inference, augmentation only where asked, stage freezing,
the recipe's image settings, and a real few-step fine-tune of the packaged EfficientNet-Lite0.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tuneops.components.checkpoint_inspection import inspect_checkpoint
from tuneops.components.checkpoints import packaged_model_dir
from tuneops.components.config import PACKAGED_EFFICIENTNET, TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.data.demo_images import write_image_demo
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.base import Augmentation
from tuneops.components.tasks.registry import get_task
from tuneops.components.training.batching import StepDataset, epoch_batches
from tuneops.components.training.finetune import finetune
from tuneops.components.training.recipe import ImageFacts, decide_recipe
from tuneops.components.training.transfer import (
    backbone_stages,
    freeze_identity_squeeze_excite,
    freeze_stages,
    prepare_model,
)

TASK = get_task("image-classification")
LABELS = [str(digit) for digit in range(10)]
SIDE = 64


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> pd.DataFrame:
    """300 real MNIST digits (30 per class) as PNG paths, in a shuffled frame."""
    folder = write_image_demo(tmp_path_factory.mktemp("digits"), 300, seed=11)
    rows = [{TASK.input_column: str(path), LABEL: path.parent.name} for path in sorted(folder.glob("*/*.png"))]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def mixed_images(digits, tmp_path_factory) -> list[str]:
    """Real digits plus the same digits saved the ways users' files come: a non-square RGB JPEG,
    an RGBA PNG, a palette GIF (so the shorter-side resize, the crop and the mode conversions run)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("mixed")
    paths = digits[TASK.input_column].tolist()[:6]
    for index, path in enumerate(paths[:3]):
        picture = Image.open(path).convert("L")
        wide = Image.new("RGB", (90, 40), (30, 60, 90))
        wide.paste(picture.convert("RGB").resize((40, 40)), (25, 0))
        wide.save(folder / f"wide-{index}.jpg", quality=90)
        rgba = picture.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(folder / f"alpha-{index}.png")
        picture.convert("P").save(folder / f"palette-{index}.gif")
    return paths + sorted(str(path) for path in folder.iterdir())


@pytest.fixture(scope="module")
def processor():
    """The packaged Lite0's processor (shorter side 256, centre 224) set to 64-px inputs."""
    loaded = TASK.load_processor(str(packaged_model_dir("efficientnet-lite0")))
    return TASK.configure_processor(loaded, TrainingConfig(image_size=SIDE))


# ------------------------------------------------------------------------- one preprocessing
def test_training_and_inference_make_the_same_tensors(processor, mixed_images) -> None:
    encoded = TASK.encode(processor, mixed_images, max_length=128)
    assert len(encoded) == len(mixed_images) and set(encoded.lengths) == {1}
    assert all(row.dtype == np.uint8 and row.shape == (SIDE, SIDE, 3) for row in encoded.features)
    trained = TASK.collate(encoded, np.arange(len(mixed_images)))["pixel_values"]
    served = TASK.model_inputs(processor, mixed_images, max_length=128)["pixel_values"]
    assert trained.shape == (len(mixed_images), 3, SIDE, SIDE) and trained.dtype == torch.float32
    assert float((trained - served).abs().max()) == 0.0
    # Serving receives bytes, not paths: the same tensor again.
    as_bytes = [Path(path).read_bytes() for path in mixed_images]
    assert torch.equal(TASK.model_inputs(processor, as_bytes, max_length=128)["pixel_values"], served)
    # Lite0's normalisation is (x - 127) / 128: a white MNIST stroke is (255 - 127) / 128 = 1.0.
    assert float(served.max()) == pytest.approx(1.0, abs=1e-6) and float(served.min()) < -0.98


def test_the_saved_processor_carries_the_training_size(processor, tmp_path) -> None:
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["crop_size"] == {"height": SIDE, "width": SIDE}
    # 256/224 of the crop, as the original processor resizes before cutting its centre.
    assert saved["size"] == {"shortest_edge": 73}
    reloaded = TASK.load_processor(str(tmp_path))
    assert TASK.model_inputs(reloaded, [_png(255)], 128)["pixel_values"].shape == (1, 3, SIDE, SIDE)


def test_bad_inputs_say_why_in_one_line(processor, digits, tmp_path) -> None:
    assert TASK.input_problem(_png(128)) is None
    assert "not an image" in TASK.input_problem(b"GIF89a but not really an image")
    assert "not a regular file" in TASK.input_problem(str(tmp_path))
    assert "not found" in TASK.input_problem(str(tmp_path / "missing.png"))
    whole = Path(digits[TASK.input_column].iloc[0]).read_bytes()
    truncated = whole[:len(whole) // 2]  # a download cut short: the header reads, the pixels do not
    assert TASK.input_problem(truncated) is not None and "\n" not in TASK.input_problem(truncated)
    with pytest.raises(DataError, match="image 1 is not usable"):
        TASK.encode(processor, [_png(10), str(tmp_path / "missing.png")], 128)


# ----------------------------------------------------------------------------- augmentation
def test_augmentation_changes_pixels_only_when_asked_and_repeats_for_a_seed(processor, digits) -> None:
    paths = digits[TASK.input_column].tolist()[:16]
    encoded = TASK.encode(processor, paths, 128)
    rows = np.arange(len(paths))
    plain = TASK.collate(encoded, rows)["pixel_values"]
    assert torch.equal(plain, TASK.collate(encoded, rows)["pixel_values"])
    every = ("flip", "crop", "jitter")

    def augmented(seed: int, operations: tuple[str, ...] = every) -> torch.Tensor:
        return TASK.collate(encoded, rows, augment=Augmentation(np.random.default_rng(seed), operations))["pixel_values"]

    first, again, other = augmented(5), augmented(5), augmented(6)
    assert torch.equal(first, again)
    assert not torch.equal(first, plain) and not torch.equal(first, other)
    assert first.shape == plain.shape
    # Each operation alone changes the pixels; none leaves them as they were.
    for operation in every:
        assert not torch.equal(augmented(5, (operation,)), plain), operation
    assert torch.equal(augmented(5, ()), plain)
    # Flip alone mirrors whole images (those it draws), nothing else.
    flipped = augmented(5, ("flip",))
    assert all(torch.equal(row, base) or torch.equal(row, base.flip(-1)) for row, base in zip(flipped, plain))
    # Light: the pictures stay what they were (a digit's ink moves by a few pixels at most).
    assert float((first - plain).abs().mean()) < 0.5
    # The stored arrays are never modified by augmentation.
    assert torch.equal(TASK.collate(encoded, rows)["pixel_values"], plain)


def test_training_batches_are_augmented_reproducibly_and_resume_sees_the_same(processor, digits) -> None:
    paths = digits[TASK.input_column].tolist()[:48]
    encoded = TASK.encode(processor, paths, 128)
    labels = np.zeros(len(paths), dtype=np.int64)
    batches = epoch_batches(encoded.lengths, 8, seed=3, epoch=0)

    def dataset(start: int, seed: int | None) -> StepDataset:
        return StepDataset(TASK, encoded, labels, batches[start:], 2, 1, 0, 1, None, augment_seed=seed,
                           first_step=start, augment_operations=("flip", "crop", "jitter"))

    def pixels(item: dict) -> torch.Tensor:
        return torch.cat([micro["inputs"]["pixel_values"] for micro in item["micro"]])

    whole, resumed, plain = dataset(0, 3), dataset(2, 3), dataset(0, None)
    assert torch.equal(pixels(whole[2]), pixels(resumed[0]))  # resumed at step 2: the same augmentation
    assert torch.equal(pixels(whole[1]), pixels(dataset(0, 3)[1]))
    assert not torch.equal(pixels(whole[1]), pixels(plain[1]))
    unaugmented = TASK.collate(encoded, np.concatenate([share for share in np.array_split(batches[1], 2)]))
    assert torch.equal(pixels(plain[1]), unaugmented["pixel_values"])


# -------------------------------------------------------------------------------- freezing
def test_freeze_stages_freezes_the_stem_and_the_first_stages_and_their_statistics() -> None:
    model = TASK.load_model(str(packaged_model_dir("efficientnet-lite0")), LABELS)
    stem, stages = backbone_stages(model)
    assert [len(stage) for stage in stages] == [1, 2, 2, 3, 3, 4, 1]  # Lite0 = B0's layout
    freeze_stages(model, 2)
    blocks = model.efficientnet.encoder.blocks
    frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
    assert all(name.startswith(("efficientnet.embeddings.", "efficientnet.encoder.blocks.0.",
                                "efficientnet.encoder.blocks.1.", "efficientnet.encoder.blocks.2."))
               for name in frozen)
    assert not any(p.requires_grad for module in (model.efficientnet.embeddings, *blocks[:3])
                   for p in module.parameters())
    assert all(p.requires_grad for module in (*blocks[3:], model.classifier) for p in module.parameters())
    # A frozen stage keeps its pretrained normalisation even when the model trains.
    model.train()
    assert not model.efficientnet.embeddings.batchnorm.training
    assert blocks[3].depthwise_conv.depthwise_norm.training
    with pytest.raises(ConfigError, match="freeze_stages is 8 but the EfficientNetForImageClassification has 7"):
        freeze_stages(TASK.load_model(str(packaged_model_dir("efficientnet-lite0")), LABELS), 8)


def test_the_prepared_model_trains_with_dropout_on_and_pretrained_norm_statistics() -> None:
    model = prepare_model(TASK.load_model(str(packaged_model_dir("efficientnet-lite0")), LABELS),
                          TrainingConfig(freeze_stages=0))
    assert model.training and model.classifier.training
    dropouts = [module for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert dropouts and all(module.training for module in dropouts)
    assert len(norms) > 40 and not any(module.training for module in norms)
    model.train()  # what the loop does again after every validation
    assert not any(module.training for module in norms)


def test_identity_squeeze_excite_blocks_are_frozen_and_real_ones_train() -> None:
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    lite = TASK.load_model(str(packaged_model_dir("efficientnet-lite0")), LABELS)
    assert freeze_identity_squeeze_excite(lite) == len(lite.efficientnet.encoder.blocks) == 16
    assert not any(p.requires_grad for name, p in lite.named_parameters() if ".squeeze_excite." in name)
    assert all(p.requires_grad for name, p in lite.named_parameters() if ".squeeze_excite." not in name)
    # A regular EfficientNet's squeeze-excite computes something: it trains.
    regular = EfficientNetForImageClassification(EfficientNetConfig(
        width_coefficient=0.25, depth_coefficient=0.34, hidden_dim=320, num_block_repeats=[1] * 7, num_labels=3))
    assert freeze_identity_squeeze_excite(regular) == 0
    assert all(p.requires_grad for p in regular.parameters())


def test_freeze_stages_names_a_model_without_stages() -> None:
    text_model = get_task("text-classification").load_model(str(packaged_model_dir("all-MiniLM-L6-v2")), ["a", "b"])
    with pytest.raises(ConfigError, match="cannot find the stages of a BertForSequenceClassification"):
        freeze_stages(text_model, 1)


# ---------------------------------------------------------------------------------- recipe
def test_the_recipe_sizes_images_from_the_data_and_the_model() -> None:
    small = ["a"] * 300 + ["b"] * 300
    digits = decide_recipe(TrainingConfig(), small, None, None, 4_000_000,
                           images=ImageFacts(sides=np.full(200, 28), model_side=224, stages=7))
    assert digits.config.image_size == 64 and digits.config.freeze_stages == 2
    reasons = {row["setting"]: row["reason"] for row in digits.to_json()}
    assert "median shorter side of 200 sampled training images is 28 px" in reasons["training.image_size"]
    assert "first 2 of 7 stages" in reasons["training.freeze_stages"]
    photos = decide_recipe(TrainingConfig(), ["a"] * 3000 + ["b"] * 3000, None, None, 4_000_000,
                           images=ImageFacts(sides=np.array([375, 500, 480, 333]), model_side=224, stages=7))
    assert photos.config.image_size == 224 and photos.config.freeze_stages == 1
    assert "capped at the model's 224 px" in {r["setting"]: r["reason"] for r in photos.to_json()}["training.image_size"]
    middle = decide_recipe(TrainingConfig(), small, None, None, None,
                           images=ImageFacts(sides=np.array([90, 100, 130]), model_side=224, stages=2))
    assert middle.config.image_size == 128 and middle.config.freeze_stages == 1  # all stages but one at most
    given = decide_recipe(TrainingConfig(image_size=96, freeze_stages=0), small, None, None, None,
                          images=ImageFacts(sides=np.full(10, 28), model_side=224, stages=7))
    assert (given.config.image_size, given.config.freeze_stages) == (96, 0)
    assert {r["source"] for r in given.to_json() if "image" in r["setting"] or "freeze" in r["setting"]} == {"config"}
    # A task without image facts (text) leaves the image settings unset.
    text = decide_recipe(TrainingConfig(), small, np.full(600, 20), 512)
    assert text.config.image_size is None and text.config.freeze_stages is None


def test_the_packaged_checkpoint_passes_inspection_and_a_folder_without_processor_does_not(tmp_path) -> None:
    inspection = inspect_checkpoint(PACKAGED_EFFICIENTNET, 10, TASK)
    assert inspection.usable, inspection.reason
    assert inspection.architecture == "EfficientNetForImageClassification"
    broken = tmp_path / "no-processor"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).symlink_to(Path(inspection.local_dir) / name)
    refused = inspect_checkpoint(str(broken), 10, TASK)
    assert not refused.usable and "no image processor" in refused.reason


# ------------------------------------------------------------------------- a real fine-tune
def test_a_few_steps_of_lite0_learn_digits_well_above_the_majority_class(digits, tmp_path) -> None:
    train, validation = digits.iloc[:220], digits.iloc[220:]
    # Dropout off (training.dropout, applied to every dropout of the model): at 60 steps its noise
    # halves the loss drop; the demo's recipe runs 250+ steps with it on (0.95 validation accuracy).
    config = TrainingConfig(max_steps=60, eval_every_steps=20, early_stopping_patience=None, threads=2,
                            learning_rate=1e-3, seed=5, dropout=0.0)
    trained = finetune(train, validation, LABELS, PACKAGED_EFFICIENTNET, config, tmp_path / "model", task=TASK)
    choices = {row["setting"]: row for row in trained.recipe}
    assert choices["training.image_size"]["value"] == SIDE and choices["training.image_size"]["source"] == "auto"
    assert choices["training.freeze_stages"]["value"] == 2
    assert trained.last_loss < trained.first_loss - 0.8, [row["train_loss"] for row in trained.history]

    predictor = Predictor.from_dir(trained.path, device="cpu")
    assert predictor.processor.crop_size.height == SIDE
    probabilities = predictor.predict_proba(validation[TASK.input_column].tolist())
    accuracy = float(np.mean(np.array(LABELS)[probabilities.argmax(1)] == validation[LABEL].to_numpy()))
    majority = float(validation[LABEL].value_counts(normalize=True).max())
    assert accuracy > majority + 0.4, (accuracy, majority)
    # Training scored validation in the run's precision (bf16 autocast on CPUs with AMX): at most
    # one row may fall the other way in fp32.
    assert accuracy == pytest.approx(trained.best_validation["accuracy"], abs=1.01 / len(validation))
    embeddings = predictor.embed(validation[TASK.input_column].tolist()[:4])
    assert embeddings.shape == (4, 1280) and np.isfinite(embeddings).all() and embeddings.std() > 0

    # What stayed frozen is bit for bit the pretrained weights; the rest has trained.
    saved = load_file(str(trained.path / "model.safetensors"))
    original = load_file(str(packaged_model_dir("efficientnet-lite0") / "model.safetensors"))
    for name in ("efficientnet.embeddings.convolution.weight", "efficientnet.encoder.blocks.2.projection.project_conv.weight",
                 "efficientnet.encoder.blocks.9.squeeze_excite.expand.bias"):
        assert torch.equal(saved[name], original[name]), name
    assert not torch.equal(saved["efficientnet.encoder.blocks.3.projection.project_conv.weight"],
                           original["efficientnet.encoder.blocks.3.projection.project_conv.weight"])


def _png(grey: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (20, 24), grey).save(buffer, format="PNG")
    return buffer.getvalue()
