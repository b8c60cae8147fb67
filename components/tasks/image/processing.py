"""The one preprocessing of images, identical in training, evaluation and serving.

A decoded RGB picture (``decode.py``) is resized and centre-cropped to the model's input size as the
checkpoint's image processor configuration says, kept as a ``uint8`` array (height x width x 3: a
quarter of the memory of floats, so a training split is encoded once and held), and normalised into
a float ``[batch, 3, height, width]`` tensor only when a batch is built. Training (``encode`` +
``collate``) and inference (``model_inputs``) call the same two functions, so a served image becomes
exactly the tensor that training would have made of it.

Only the processor's *settings* are read (size, crop, resampling filter, rescale factor, mean,
std); its own ``__call__`` is never used, so there is one implementation and no torchvision.
Training may change the size (``with_side``): the processor saved with the model then carries it,
and serving resizes as training did.

Light augmentation of training batches (``augment``): random horizontal flip, random resized crop
(80-100% of the area, then back to the input size) and +-10% brightness and contrast; numpy and PIL
only, well under a millisecond per 64-px image.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Augmentation bounds. Mild on purpose: the crop keeps at least 80% of the picture so the object
# stays in it, and +-10% light changes what a camera's exposure does without washing out digits.
CROP_AREA = (0.8, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.1
FLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class Preprocessing:
    """What an image processor's configuration asks for, in the form the arrays need.

    ``shortest_edge`` set: the shorter side is resized to it (aspect kept), else the picture is
    resized to ``resize`` (height, width); then the centre ``crop`` (height, width) is cut, if any.
    Pixel values become ``(value * scale + offset - mean) / std`` (divided by ``std`` once more
    with ``include_top``, as Hugging Face's EfficientNet processor does).
    """

    resize: tuple[int, int] | None
    shortest_edge: int | None
    crop: tuple[int, int] | None
    resample: int
    scale: float
    offset: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    include_top: bool = False

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the arrays this preprocessing makes."""
        if self.crop is not None:
            return self.crop
        if self.resize is not None:
            return self.resize
        return (self.shortest_edge, self.shortest_edge)


def preprocessing_of(processor: Any) -> Preprocessing:
    """The preprocessing a Hugging Face image processor is configured for.

    Raises ValueError (one line) for a configuration that cannot give fixed-size inputs (no resize,
    no size, a crop larger than the resized picture, a zero std).
    """
    if not getattr(processor, "do_resize", True):
        raise ValueError("the image processor does not resize (do_resize is false): inputs would differ in size")
    size = _size_dict(getattr(processor, "size", None))
    shortest = size.get("shortest_edge")
    resize = None
    crop = None
    crop_pct = getattr(processor, "crop_pct", None)
    if size.get("height") and size.get("width"):
        resize = (int(size["height"]), int(size["width"]))
    elif shortest:
        shortest = int(shortest)
        if crop_pct and not getattr(processor, "do_center_crop", False):
            # ConvNeXt's convention (transformers applies it below 384 px): resize to edge / crop_pct,
            # then cut the centre edge x edge.
            crop = (shortest, shortest)
            shortest = int(round(shortest / float(crop_pct)))
    else:
        raise ValueError(f"the image processor's size {size or None} names neither height/width nor shortest_edge")
    if getattr(processor, "do_center_crop", False):
        crop_size = _size_dict(getattr(processor, "crop_size", None))
        if not (crop_size.get("height") and crop_size.get("width")):
            raise ValueError("the image processor centre-crops but has no crop_size height/width")
        crop = (int(crop_size["height"]), int(crop_size["width"]))
    if crop is None and resize is None:
        # A shorter-side resize alone leaves the long side free; a square centre cut fixes it.
        crop = (shortest, shortest)
    if crop is not None and resize is not None and (crop[0] > resize[0] or crop[1] > resize[1]):
        raise ValueError(f"the image processor crops {crop[0]}x{crop[1]} out of a {resize[0]}x{resize[1]} picture")
    if crop is not None and shortest is not None and max(crop) > shortest:
        raise ValueError(f"the image processor crops {crop[0]}x{crop[1]} out of a shorter side of {shortest}")
    do_rescale = getattr(processor, "do_rescale", True)
    do_normalize = getattr(processor, "do_normalize", True)
    mean = _triple(getattr(processor, "image_mean", None), 0.0) if do_normalize else (0.0, 0.0, 0.0)
    std = _triple(getattr(processor, "image_std", None), 1.0) if do_normalize else (1.0, 1.0, 1.0)
    if min(std) <= 0:
        raise ValueError(f"the image processor's image_std {std} is not positive")
    return Preprocessing(
        resize=resize,
        shortest_edge=shortest if resize is None else None,
        crop=crop,
        resample=_resample(getattr(processor, "resample", None)),
        scale=float(getattr(processor, "rescale_factor", 1 / 255)) if do_rescale else 1.0,
        offset=-1.0 if do_rescale and getattr(processor, "rescale_offset", False) else 0.0,
        mean=mean,
        std=std,
        include_top=bool(getattr(processor, "include_top", False)) and bool(do_normalize),
    )


def with_side(processor: Any, side: int) -> Any:
    """A copy of ``processor`` whose inputs are ``side`` x ``side``, the resize scaled with it (a
    resize-then-crop keeps its ratio), so that the processor saved with a model says the size the
    model was trained at."""
    current = preprocessing_of(processor)
    changed = copy.deepcopy(processor)
    height, width = current.output_size
    factor = side / max(height, width)
    if current.resize is not None:
        if current.crop is not None:
            changed.size = {"height": _scaled(current.resize[0], factor), "width": _scaled(current.resize[1], factor)}
        else:
            changed.size = {"height": side, "width": side}
    elif getattr(processor, "crop_pct", None) and not getattr(processor, "do_center_crop", False):
        changed.size = {"shortest_edge": side}  # the crop follows from crop_pct
    else:
        changed.size = {"shortest_edge": _scaled(current.shortest_edge, factor) if current.crop else side}
    if getattr(processor, "do_center_crop", False):
        changed.crop_size = {"height": side, "width": side}
    result = preprocessing_of(changed)
    if result.output_size != (side, side):
        raise ValueError(f"cannot set the image processor to {side}x{side} inputs (it gives {result.output_size})")
    return changed


def to_array(image: Any, preprocessing: Preprocessing) -> np.ndarray:
    """A decoded RGB ``PIL.Image`` resized and centre-cropped: ``uint8`` (height, width, 3)."""
    from PIL import Image

    resample = Image.Resampling(preprocessing.resample)
    if preprocessing.resize is not None:
        height, width = preprocessing.resize
        image = image.resize((width, height), resample)
    else:
        edge = preprocessing.shortest_edge
        width, height = image.size
        if width <= height:
            size = (edge, max(edge, int(round(height * edge / width))))
        else:
            size = (max(edge, int(round(width * edge / height))), edge)
        image = image.resize(size, resample)
    if preprocessing.crop is not None:
        crop_height, crop_width = preprocessing.crop
        width, height = image.size
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        image = image.crop((left, top, left + crop_width, top + crop_height))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def normalise(pixels: np.ndarray, preprocessing: Preprocessing):
    """A float32 ``[batch, 3, height, width]`` tensor of ``uint8`` arrays ``[batch, height, width, 3]``."""
    import torch

    values = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).to(torch.float32)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1)
    values = (values * preprocessing.scale + preprocessing.offset - mean) / std
    if preprocessing.include_top:
        values = values / std
    return values.contiguous()


def augment(pixels: np.ndarray, rng: np.random.Generator,
            operations: tuple[str, ...] = ("flip", "crop", "jitter")) -> np.ndarray:
    """One random light augmentation of a ``uint8`` (height, width, 3) array, same shape and type,
    by the named ``operations``: ``flip`` horizontally (half the time), ``crop`` a resized 80-100%
    of the area, ``jitter`` brightness and contrast each by up to +-10%."""
    if "flip" in operations and rng.random() < FLIP_PROBABILITY:
        pixels = pixels[:, ::-1]
    if "crop" in operations:
        pixels = _resized_crop(pixels, rng)
    if "jitter" in operations:
        pixels = _jitter(pixels.astype(np.float32), rng)
    return np.ascontiguousarray(pixels)


def _resized_crop(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 80-100% of the area (aspect ratio within ``CROP_RATIO``), resized back."""
    from PIL import Image

    height, width = pixels.shape[:2]
    area = rng.uniform(*CROP_AREA) * height * width
    ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
    crop_width = min(float(width), math.sqrt(area * ratio))
    crop_height = min(float(height), math.sqrt(area / ratio))
    left = rng.uniform(0.0, width - crop_width)
    top = rng.uniform(0.0, height - crop_height)
    # resize with a (sub-pixel) box: the crop and the resize back in one resampling pass.
    image = Image.fromarray(np.ascontiguousarray(pixels)).resize(
        (width, height), Image.Resampling.BILINEAR, box=(left, top, left + crop_width, top + crop_height))
    return np.asarray(image)


def _jitter(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast and brightness each scaled by a random factor within +-``JITTER``."""
    contrast = rng.uniform(1 - JITTER, 1 + JITTER)
    brightness = rng.uniform(1 - JITTER, 1 + JITTER)
    grey = values.mean()
    values = ((values - grey) * contrast + grey) * brightness
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _size_dict(size: Any) -> dict[str, Any]:
    """A processor's size (a dict, a transformers ``SizeDict`` or a bare int) as a plain dict."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, dict):
        return {key: value for key, value in size.items() if value is not None}
    return {key: value for key, value in vars(size).items() if value is not None}


def _triple(value: Any, default: float) -> tuple[float, float, float]:
    if value is None:
        return (default,) * 3
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = [float(item) for item in value]
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) != 3:
        raise ValueError(f"the image processor's mean/std has {len(values)} values; RGB needs 3")
    return (values[0], values[1], values[2])


def _resample(value: Any) -> int:
    """PIL's filter number (transformers' ``PILImageResampling`` shares PIL's numbering)."""
    from PIL import Image

    if value is None:
        return int(Image.Resampling.BILINEAR)  # transformers' default when a processor names none
    return int(Image.Resampling(int(value)))


def _scaled(value: int, factor: float) -> int:
    return max(1, int(round(value * factor)))
