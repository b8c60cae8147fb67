"""The image task's evaluation, monitoring and serving pieces on real images: the tiny-image floor
on MNIST digits (the demo's own files), drift descriptors, size and brightness slices,
behavioural perturbations and the request model of ``POST /classify``."""

from __future__ import annotations

import base64
import io
import json
import math
import random
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tuneops.components.config import EvaluationConfig, ServingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.data.demo_images import write_image_demo
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.evaluation.behaviour import run_behavioural_checks
from tuneops.components.metrics import classification_metrics
from tuneops.components.monitoring.prediction_log import is_hashed
from tuneops.components.sampling import stratified_split
from tuneops.components.tasks.image.baseline import C_GRID, train_baseline
from tuneops.components.tasks.image.decode import content_hash
from tuneops.components.tasks.image.descriptors import DESCRIPTORS, describe_bytes, image_descriptors, log_record
from tuneops.components.tasks.image.perturbations import (
    BUILTIN,
    CLASS_MINIMUM_MIN_TESTED,
    FLIP,
    PERTURBATIONS,
    builtin_cases,
    class_minimum_cases,
    perturb,
)
from tuneops.components.tasks.image.schema import EXAMPLE_IMAGE, RequestImage, request_model
from tuneops.components.tasks.image.slices import BRIGHTNESS_COLUMN, SIZE_COLUMN, UNREADABLE, size_slices
from tuneops.components.tasks.registry import get_task

DIGITS = 300  # 30 per class: ~200 to train the floor on, ~100 to test it


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test frames of real MNIST digit PNGs (absolute paths), split by label."""
    folder = write_image_demo(tmp_path_factory.mktemp("digits"), DIGITS)
    paths = sorted(folder.glob("*/*.png"))
    frame = pd.DataFrame({"image": [str(path) for path in paths], LABEL: [path.parent.name for path in paths]})
    train, test = stratified_split(frame, 0.33, seed=3)
    return train.reset_index(drop=True), test.reset_index(drop=True)


@pytest.fixture(scope="module")
def floor(digits):
    return train_baseline(digits[0])


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth colour picture (bilinear blow-up of random colours): no symmetry, real gradients."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height),
                                                                                Image.Resampling.BILINEAR)


def bomb_png(side: int) -> bytes:
    """A real decompression bomb: a ``side`` x ``side`` 1-bit black PNG (all rows compressed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + -(-side // 8))  # filter byte + packed bits
    body = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


# --- the floor ---------------------------------------------------------------------------------


def test_floor_beats_the_majority_class_clearly(digits, floor):
    train, test = digits
    probabilities = floor.predict_proba(test["image"].tolist())
    assert probabilities.shape == (len(test), 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    scores = classification_metrics(test[LABEL].tolist(), probabilities, floor.labels)
    majority = test[LABEL].value_counts().max() / len(test)
    assert scores["accuracy"] > majority + 0.5, scores["accuracy"]
    assert scores["macro_f1"] > 0.6, scores["macro_f1"]
    assert floor.labels == sorted(train[LABEL].unique())
    assert floor.C in C_GRID and floor.settings["cv_folds"] == 3 and 0 < floor.settings["cv_macro_f1"] <= 1
    assert f"C={floor.C:g}" in floor.description
    assert floor.parameter_count == 10 * 328 + 10


def test_floor_reads_bytes_as_it_reads_paths(digits, floor):
    paths = digits[1]["image"].tolist()[:5]
    as_bytes = [Path(path).read_bytes() for path in paths]
    assert np.allclose(floor.predict_proba(paths), floor.predict_proba(as_bytes))
    assert floor.predict_proba([]).shape == (0, 10)


def test_floor_refuses_one_class_and_unreadable_images(digits, tmp_path):
    train = digits[0]
    with pytest.raises(DataError, match="1 class"):
        train_baseline(train[train[LABEL] == "3"])
    note = tmp_path / "notes.png"
    note.write_text("not a picture")
    broken = pd.concat([train, pd.DataFrame({"image": [str(note)], LABEL: ["3"]})], ignore_index=True)
    with pytest.raises(DataError, match=r"notes\.png.*not an image"):
        train_baseline(broken)


def test_floor_is_fast_on_a_few_thousand_images(tmp_path):
    folder = write_image_demo(tmp_path, 2000)
    paths = sorted(folder.glob("*/*.png"))
    frame = pd.DataFrame({"image": [str(path) for path in paths], LABEL: [path.parent.name for path in paths]})
    started = time.perf_counter()
    train_baseline(frame)
    # Measured 2.5 s for 2,000 digits on one busy core (features once, 3 folds x 3 C + refit).
    assert time.perf_counter() - started < 20


# --- descriptors -------------------------------------------------------------------------------


def test_descriptors_of_black_white_gray_and_colour_images(tmp_path):
    black, white = Image.new("RGB", (40, 30), (0, 0, 0)), Image.new("L", (30, 40), 255)
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    images = [png_bytes(black), png_bytes(white), png_bytes(red), jpeg_bytes(photo(300, 200))]
    path = tmp_path / "red.png"
    path.write_bytes(images[2])
    table = image_descriptors(pd.Series(images + [str(path), b"junk", str(tmp_path / "missing.png")]))
    assert list(table.columns) == list(DESCRIPTORS) and len(table) == 7
    assert table.loc[0, "brightness"] == 0 and table.loc[0, "contrast"] == 0
    assert table.loc[1, "brightness"] == pytest.approx(1.0) and table.loc[1, "colourfulness"] == 0
    assert (table.loc[0, "width"], table.loc[0, "height"], table.loc[0, "aspect_ratio"]) == (40, 30, 40 / 30)
    # Pure red: no spread, mean red-green 1 and yellow-blue 0.5 (Hasler & Suesstrunk's 0.3 weight).
    assert table.loc[2, "colourfulness"] == pytest.approx(0.3 * math.hypot(1, 0.5))
    assert table.loc[2, "file_bytes"] == len(images[2])
    assert 0.1 < table.loc[3, "brightness"] < 0.9 and table.loc[3, "contrast"] > 0.05
    assert table.loc[4].equals(table.loc[2])  # a path is described as its bytes are
    assert table.loc[5:].isna().all().all()  # unreadable: a row of NaN, not an error


def test_log_record_keeps_the_hash_and_descriptors_not_pixels():
    data = jpeg_bytes(photo(120, 90))
    record = log_record(data)
    parsed = json.loads(record)
    assert parsed["image"] == content_hash(data) and set(parsed) == {"image", *DESCRIPTORS}
    assert len(record) < 300
    # The monitor drops hashed inputs from drift; a record is kept.
    assert not is_hashed(pd.Series([record])).any()
    from_log = image_descriptors(pd.Series([record]))
    assert from_log.iloc[0].to_dict() == pytest.approx(describe_bytes(data))
    junk = log_record(b"not an image")
    assert json.loads(junk)["brightness"] is None
    assert image_descriptors(pd.Series([junk])).isna().all().all()


# --- slices ------------------------------------------------------------------------------------


def test_slices_bucket_by_shorter_side_and_brightness():
    inputs = pd.Series([
        png_bytes(Image.new("L", (300, 28), 10)),   # small, dark
        png_bytes(Image.new("L", (200, 500), 128)),  # medium, normal
        png_bytes(Image.new("L", (600, 400), 240)),  # large, bright
        b"not an image",
    ])
    slices = size_slices(inputs, EvaluationConfig())
    size, brightness = slices[SIZE_COLUMN], slices[BRIGHTNESS_COLUMN]
    assert isinstance(size, pd.Categorical) and size.ordered and brightness.ordered
    assert [name.split()[0] for name in size] == ["small", "medium", "large", UNREADABLE]
    assert [name.split()[0] for name in brightness] == ["dark", "normal", "bright", UNREADABLE]
    assert list(size.categories)[:3] == ["small (<128 px)", "medium (128-383 px)", "large (>=384 px)"]


def test_digit_slices_are_small_and_dark(digits):
    slices = size_slices(digits[1]["image"], EvaluationConfig())
    assert set(slices[SIZE_COLUMN]) == {"small (<128 px)"}
    assert set(slices[BRIGHTNESS_COLUMN]) <= {"dark (<0.3)", "normal (0.3-0.7)"}


# --- behaviour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PERTURBATIONS)
def test_each_perturbation_changes_the_pixels_and_keeps_the_size(name, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo(90, 60, seed=4)))
    with Image.open(path) as image:
        before = np.asarray(image.convert("RGB"), dtype=float)
    changed = perturb(str(path), name, random.Random(1))
    assert isinstance(changed, bytes) and changed.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(changed)) as image:
        assert image.size == (90, 60) and image.mode == "RGB"
        after = np.asarray(image, dtype=float)
    if name == "flip":
        assert np.array_equal(after, before[:, ::-1])  # lossless: exactly the mirror image
    elif name == "brightness":
        assert after.mean() / before.mean() == pytest.approx(1.15, abs=0.03) or \
            after.mean() / before.mean() == pytest.approx(0.85, abs=0.03)
    else:
        difference = np.abs(after - before).mean()
        assert 0 < difference < 20, difference  # changed, but still the same picture
    assert perturb(str(path), name, random.Random(1)) == changed  # seeded: reproducible


def test_a_large_photo_is_perturbed_at_the_largest_side_a_model_takes():
    changed = perturb(jpeg_bytes(photo(2048, 1536)), "crop", random.Random(0))
    with Image.open(io.BytesIO(changed)) as image:
        assert image.size == (1024, 768)


def test_perturbations_that_change_nothing_or_do_not_exist(tmp_path):
    symmetric = png_bytes(Image.new("RGB", (20, 20), (30, 120, 200)))
    assert perturb(symmetric, "flip", random.Random(0)) is None
    with pytest.raises(ConfigError, match="unknown image perturbation 'rotate'"):
        perturb(str(tmp_path / "nowhere.png"), "rotate", random.Random(0))  # the name first, no read
    with pytest.raises(DataError, match="nowhere.png: file not found"):
        perturb(str(tmp_path / "nowhere.png"), "crop", random.Random(0))


def test_builtin_cases_are_label_agnostic_invariances_on_a_seeded_sample(digits):
    paths = digits[1]["image"].tolist()
    config = EvaluationConfig(behavioural_sample_rows=25, builtin_min_tested=10)
    cases = builtin_cases(paths, config, random.Random(0))
    assert [(case.name, case.perturbation) for case in cases] == list(BUILTIN)
    assert all(case.kind == "invariance" and case.min_tested == 10 and len(case.texts) == 25 for case in cases)
    assert set(cases[0].texts) <= set(paths)
    again = builtin_cases(paths, config, random.Random(0))
    assert [case.texts for case in again] == [case.texts for case in cases]
    assert builtin_cases(paths, EvaluationConfig(builtin_invariance=False), random.Random(0)) == []
    flipped = builtin_cases(paths, EvaluationConfig(flip_invariance=True), random.Random(0))
    assert [(case.name, case.perturbation) for case in flipped] == [*BUILTIN, FLIP]


def test_class_minimum_cases_hold_each_class_to_its_own_test_images(digits):
    test = digits[1]
    paths, truth = test["image"].tolist(), test[LABEL].tolist()
    labels = sorted(set(truth)) + ["never-seen"]
    config = EvaluationConfig(behavioural_sample_rows=12)
    cases = class_minimum_cases(labels, paths, truth, config, random.Random(0))
    # One case per class with test images; a label without any has nothing to test.
    assert [case.expected for case in cases] == sorted(set(truth))
    for case in cases:
        own = set(test.loc[test[LABEL] == case.expected, "image"])
        assert case.kind == "minimum" and set(case.texts) <= own
        assert len(case.texts) == min(12, len(own))
        assert case.min_pass_rate == 0.5 and case.min_tested == CLASS_MINIMUM_MIN_TESTED
    assert class_minimum_cases(labels, paths, None, config, random.Random(0)) == []
    assert class_minimum_cases(labels, paths, truth, EvaluationConfig(class_minimum_pass_rate=None),
                               random.Random(0)) == []


def test_the_floor_through_the_behavioural_checks(digits, floor):
    """The spine's behavioural run with the image task's cases, judging the fitted floor."""
    paths = digits[1]["image"].tolist()
    config = EvaluationConfig(behavioural_sample_rows=30, builtin_min_tested=10)
    truth = digits[1][LABEL].tolist()
    results = run_behavioural_checks(floor, paths, floor.predict_proba(paths), config, get_task("image-classification"),
                                     truth=truth)
    invariances, minimums = results[:len(BUILTIN)], results[len(BUILTIN):]
    assert [result.name for result in invariances] == [name for name, _ in BUILTIN]
    assert [result.name for result in minimums] == [f"class minimum: {label}" for label in floor.labels]
    # Each class's recall on its own test images, as the metrics count it.
    predicted = np.asarray(floor.labels)[floor.predict_proba(paths).argmax(1)]
    for result in minimums:
        label = result.name.removeprefix("class minimum: ")
        own = np.asarray(truth) == label
        assert result.tested == min(30, own.sum())
        if result.tested == own.sum():
            assert result.passed == (predicted[own] == label).sum()
    for result in invariances:
        assert result.tested == 30 and result.skipped is None, result
        # The perturbed images were really classified: the floor keeps most labels (measured on 80
        # digits: brightness 0.84, crop 0.61, blur 0.83; pixel features move under a zoom), far
        # above the 1 in 10 a classifier that ignored its input would keep.
        assert result.passed >= 10, (result.name, result.pass_rate)


# --- the request model -------------------------------------------------------------------------


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def refusal(model, images: list) -> list[tuple[tuple, str]]:
    """The (location, message) of each validation error of ``{"images": images}``."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        model.model_validate({"images": images})
    return [(error["loc"], error["msg"].removeprefix("Value error, ")) for error in caught.value.errors()]


def test_request_model_accepts_png_jpeg_and_data_urls():
    model = request_model(ServingConfig())
    png, jpeg = png_bytes(photo(64, 48)), jpeg_bytes(photo(64, 48))
    request = model.model_validate({"images": [encoded(png), encoded(jpeg),
                                               "data:image/png;base64," + EXAMPLE_IMAGE]})
    images = request.inputs
    assert [bytes(image) for image in images[:2]] == [png, jpeg]
    assert all(isinstance(image, RequestImage) for image in images)
    assert len({image.request_id for image in images}) == 1 and images[0].request_id
    assert images[0].descriptors == pytest.approx(describe_bytes(png))
    assert model.model_json_schema()["properties"]["images"]["type"] == "array"


def test_request_model_as_bentoml_serves_it():
    """``@bentoml.api(input_spec=...)`` rebuilds the model (its item validator runs twice there)."""
    from _bentoml_sdk.io_models import ensure_io_descriptor

    served = ensure_io_descriptor(request_model(ServingConfig()))
    png = png_bytes(photo(40, 40))
    [image] = served.model_validate_json(json.dumps({"images": [encoded(png)]})).inputs
    assert isinstance(image, RequestImage) and bytes(image) == png and image.request_id
    [(location, message)] = refusal(served, [encoded(png), encoded(b"GIF89a junk")])
    assert location == ("images", 1) and message.startswith("not an image in a supported format")


def test_request_model_refuses_each_bad_image_with_its_index_and_reason(tmp_path):
    model = request_model(ServingConfig(max_items=8))
    good = encoded(png_bytes(photo(32, 32)))
    whole = png_bytes(photo(64, 64))
    random_bytes = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    text_file = b"id,label\n1,cat\n2,dog\n"
    errors = refusal(model, [
        good,
        encoded(random_bytes),
        encoded(whole[: len(whole) // 2]),  # truncated PNG
        encoded(text_file),
        "not base64!!",
        good[:20] + "\n" + good[20:],  # whitespace inside: refused, not skipped
        "",
        good,
    ])
    by_index = {location[1]: message for location, message in errors}
    assert set(by_index) == {1, 2, 3, 4, 5, 6}, errors
    assert "not an image" in by_index[1]
    assert "cannot be decoded" in by_index[2]
    assert "not an image" in by_index[3]
    assert "not valid base64" in by_index[4] and "not valid base64" in by_index[5]
    assert "empty" in by_index[6]
    assert all(location[0] == "images" for location, _ in errors)


def test_request_model_refuses_a_bomb_from_its_header():
    model = request_model(ServingConfig())
    bomb = bomb_png(30_000)
    assert len(bomb) < 200_000  # 900 million pixels in a small file
    started = time.perf_counter()
    [(location, message)] = refusal(model, [encoded(bomb)])
    assert time.perf_counter() - started < 1.0  # refused from the header: nothing was expanded
    assert location == ("images", 0)
    assert "over the limit of 40,000,000 pixels" in message


def test_request_model_limits_count_and_bytes():
    model = request_model(ServingConfig(max_items=3, max_image_bytes=5000))
    small = encoded(png_bytes(photo(16, 16)))
    [(location, message)] = refusal(model, [small] * 4)
    assert location == ("images",) and message == "images holds 4 items; at most 3 per request"
    [(_, message)] = refusal(model, [])
    assert "images is empty" in message
    large = encoded(np.random.default_rng(1).integers(0, 256, 6000, dtype=np.uint8).tobytes())
    [(location, message)] = refusal(model, [large])
    assert location == ("images", 0) and "over the limit of 5,000 bytes" in message
    [(location, _)] = refusal(model, [small, 42])  # not a string at all
    assert location == ("images", 1)
    with pytest.raises(Exception, match="extra"):
        model.model_validate({"images": [small], "texts": ["hi"]})


def test_describe_bytes_of_junk_is_nan():
    assert all(math.isnan(value) for value in describe_bytes(b"\x00" * 10).values())
