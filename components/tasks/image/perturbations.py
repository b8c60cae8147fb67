"""Behavioural perturbations of images and the built-in behavioural cases of image classification
(CheckList's invariance tests, Ribeiro et al. 2020, carried over to pixels).

A perturbation is one of:
  - ``flip``: mirrored left to right;
  - ``crop``: the central 90% of each side, scaled back to the original size (a slight zoom);
  - ``brightness``: every pixel 15% brighter or darker (the direction drawn from the generator);
  - ``blur``: a Gaussian blur of about 1% of the shorter side (at least half a pixel).
Each returns the perturbed image as PNG bytes of the original size (the predictor takes bytes),
or None when the perturbation leaves the pixels as they were (a symmetric image under ``flip``).
An image over ``MAX_SIDE`` pixels is shrunk to that size first: every perturbed image of a run is
held in memory until the model has scored them all, and a 12-megapixel photo is ~30 MB as PNG.

Built-in cases (unless ``evaluation.builtin_invariance`` is off): brightness, crop and blur
invariance on a seeded sample of the test images; they suit any label set, since a person gives a
photo the same label after these. ``flip`` changes the class of digits, letters, text and anything
with a handedness (a left arrow, a "b" and a "d"), so its check is built in only with
``evaluation.flip_invariance``, which is on when the training augmentation flips (a run that trains
on mirrored images has declared that a mirror keeps the label).
Per-class minimum (unless ``evaluation.class_minimum_pass_rate`` is unset): each class's held-out
test images must mostly get their own label.
"""

from __future__ import annotations

import io
import os
import random
from typing import Any

import numpy as np

from tuneops.components.config import BehaviouralCase, EvaluationConfig
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.tasks.image.decode import ImageProblem
from tuneops.components.tasks.image.descriptors import load_image

PERTURBATIONS = ("flip", "crop", "brightness", "blur")
CROP_SHARE = 0.9
BRIGHTNESS_CHANGE = 0.15
# Blur radius as a share of the shorter side: 2 px on a 224-px image, softer than a phone photo's
# slight defocus; half a pixel at least, so tiny images are blurred too.
BLUR_SHARE = 0.01
_MIN_BLUR = 0.5
# The largest side a model takes (training.image_size is at most 1024): shrinking to it first loses
# nothing the model would see, and keeps a perturbed photo near 1-3 MB.
MAX_SIDE = 1024
# A class's recall on 10 test images: a model whose true recall is 0.8 shows 4/10 or fewer 0.6% of
# the time, so a 0.5 minimum rarely rejects a good model; on fewer images it would.
CLASS_MINIMUM_MIN_TESTED = 10
# Built-in invariances: (case name, perturbation).
BUILTIN = (("brightness invariance", "brightness"), ("crop invariance", "crop"), ("blur invariance", "blur"))
FLIP = ("flip invariance", "flip")


def perturb(value: Any, perturbation: str, rng: random.Random) -> bytes | None:
    """Apply one perturbation to an image (a path or bytes): PNG bytes of the same size (at most
    ``MAX_SIDE`` a side), or None when the pixels did not change. ConfigError for an unknown perturbation (checked before the
    image is read); DataError naming the image when it cannot be read."""
    if perturbation not in PERTURBATIONS:
        raise ConfigError(f"config: unknown image perturbation {perturbation!r}; use {', '.join(PERTURBATIONS)}")
    try:
        _, image = load_image(value)
    except ImageProblem as problem:
        raise DataError(f"behaviour: image not usable for {perturbation!r}: {problem}") from None
    image = _within_max_side(image)
    changed = _apply(image, perturbation, rng)
    if np.array_equal(np.asarray(changed), np.asarray(image)):
        return None
    buffer = io.BytesIO()
    # Lossless, so the model sees exactly the perturbation; level 1 because these bytes live for
    # one batch, and higher levels only cost time.
    changed.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _within_max_side(image):
    from PIL import Image

    width, height = image.size
    scale = MAX_SIDE / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def _apply(image, perturbation: str, rng: random.Random):
    from PIL import Image, ImageFilter, ImageOps

    width, height = image.size
    if perturbation == "flip":
        return ImageOps.mirror(image)
    if perturbation == "crop":
        keep_w, keep_h = max(1, round(width * CROP_SHARE)), max(1, round(height * CROP_SHARE))
        left, top = (width - keep_w) // 2, (height - keep_h) // 2
        return image.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + keep_w, top + keep_h))
    if perturbation == "brightness":
        factor = 1.0 + (BRIGHTNESS_CHANGE if rng.random() < 0.5 else -BRIGHTNESS_CHANGE)
        scaled = np.asarray(image, dtype=np.float32) * factor
        return Image.fromarray(np.clip(scaled.round(), 0, 255).astype(np.uint8), mode="RGB")
    radius = max(_MIN_BLUR, BLUR_SHARE * min(width, height))
    return image.filter(ImageFilter.GaussianBlur(radius))


def builtin_cases(inputs: list[Any], config: EvaluationConfig, rng: random.Random) -> list[BehaviouralCase]:
    """The built-in invariance cases on one seeded sample of the given (test) image paths.

    Invariance needs no labels: the expected label is the model's own on the original image. Each
    case gates only when it tested ``evaluation.builtin_min_tested`` images.
    """
    if not config.builtin_invariance:
        return []
    paths = _paths(inputs)
    if not paths:
        return []
    size = config.behavioural_sample_rows
    sample = paths if len(paths) <= size else rng.sample(paths, size)
    checks = BUILTIN + (FLIP,) if config.flip_invariance else BUILTIN
    return [BehaviouralCase(kind="invariance", name=name, texts=sample, perturbation=perturbation,
                            min_tested=config.builtin_min_tested) for name, perturbation in checks]


def class_minimum_cases(labels: list[str], inputs: list[Any], truth: list[str] | None, config: EvaluationConfig,
                        rng: random.Random) -> list[BehaviouralCase]:
    """One minimum-functionality case per class: held-out test images of the class must get its label
    at ``evaluation.class_minimum_pass_rate`` (a seeded sample of at most
    ``behavioural_sample_rows`` each). A class the model gets wrong more often than right fails the
    gate whatever the overall accuracy: on imbalanced data a model can ignore a rare class and still
    score well. A class with fewer than ``CLASS_MINIMUM_MIN_TESTED`` test images is reported only.
    """
    if config.class_minimum_pass_rate is None or truth is None:
        return []
    by_class: dict[str, list[str]] = {}
    for value, label in zip(inputs, truth):
        if isinstance(value, (str, os.PathLike)):
            by_class.setdefault(label, []).append(os.fspath(value))
    cases = []
    for label in labels:
        paths = list(dict.fromkeys(by_class.get(label, [])))
        if not paths:
            continue
        size = config.behavioural_sample_rows
        sample = paths if len(paths) <= size else rng.sample(paths, size)
        cases.append(BehaviouralCase(kind="minimum", name=f"class minimum: {label}", texts=sample, expected=label,
                                     min_pass_rate=config.class_minimum_pass_rate,
                                     min_tested=CLASS_MINIMUM_MIN_TESTED))
    return cases


def _paths(inputs: list[Any]) -> list[str]:
    """The distinct image paths among ``inputs``: a case holds its inputs as strings. Images given as
    bytes (never the case for split frames) cannot be named in a case and are left out."""
    return list(dict.fromkeys(os.fspath(value) for value in inputs if isinstance(value, (str, os.PathLike))))
