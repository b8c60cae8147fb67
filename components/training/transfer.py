"""Transfer-learning controls: what of the pretrained model trains, and how.

Freezing the embeddings and the lowest transformer layers keeps the general-purpose features and
trains fewer parameters (faster steps, less overfitting on small data); for vision backbones the
same is done by stages (``freeze_stages``: the stem and the first K stages, whose edges and
textures transfer across domains, and whose backward pass at the highest resolution is the most
expensive). Squeeze-excite blocks that are exact identities (EfficientNet-Lite has none; its
conversion to Hugging Face's EfficientNet writes them as identities) are always frozen, so training
never turns them into something Lite0 does not have. Adapters (LoRA, IA3 via
peft) train a few added weights and are merged back before saving, so the saved model is a plain
Hugging Face checkpoint that ``Predictor.from_dir`` and serving load without peft.
"""

from __future__ import annotations

import math
import types
import warnings

from tuneops.components.checkpoints import transformer_layers
from tuneops.components.config import TrainingConfig
from tuneops.components.errors import ConfigError

_DROPOUT_CONFIG_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                        "dropout", "attention_dropout", "seq_classif_dropout")


def set_dropout(model, probability: float) -> None:
    """Set every dropout of the model to ``probability`` (and say so in its saved config)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = probability
    for key in _DROPOUT_CONFIG_KEYS:
        if getattr(model.config, key, None) is not None:
            setattr(model.config, key, probability)


def freeze(model, embeddings: bool, layers: int) -> None:
    """Stop gradients to the embedding block and/or the first ``layers`` transformer blocks."""
    if embeddings:
        block = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
        for parameter in block.parameters():
            parameter.requires_grad_(False)
    if layers:
        blocks = transformer_layers(model)
        if blocks is None:
            raise ConfigError(f"config: training.freeze_layers: cannot find the layers of a {type(model).__name__}")
        if layers > len(blocks):
            raise ConfigError(f"config: training.freeze_layers is {layers} but the model has {len(blocks)} layers")
        for block in list(blocks)[:layers]:
            for parameter in block.parameters():
                parameter.requires_grad_(False)


def stage_count(config) -> int | None:
    """How many stages ``freeze_stages`` counts in a vision model of this config (None: unknown).

    EfficientNet: its base blocks (``num_block_repeats``: 7 for B0/Lite0); ResNet, ConvNeXt, Swin:
    ``depths``; ViT-like models: their layers."""
    if getattr(config, "model_type", None) == "efficientnet":
        return len(config.num_block_repeats)
    depths = getattr(config, "depths", None)
    if isinstance(depths, (list, tuple)) and depths:
        return len(depths)
    layers = getattr(config, "num_hidden_layers", None)
    return layers if isinstance(layers, int) and layers > 0 else None


def backbone_stages(model) -> tuple[list, list] | None:
    """(stem modules, stages) of a vision backbone, each stage a list of modules; None when the
    model's layout is not one tuneops knows."""
    base = model.base_model
    stem = next((getattr(base, name) for name in ("embeddings", "embedder") if hasattr(base, name)), None)
    # transformers 5's ViT holds its layers on the base model itself, with no encoder module.
    encoder = getattr(base, "encoder", base)
    if stem is None:
        return None
    if getattr(model.config, "model_type", None) == "efficientnet":
        # One flat list of blocks; stage i is the next ceil(depth_coefficient * repeats_i) of them
        # (the rounding EfficientNetEncoder builds them with).
        blocks, stages, start = list(encoder.blocks), [], 0
        for repeats in model.config.num_block_repeats:
            count = int(math.ceil(model.config.depth_coefficient * repeats))
            stages.append(blocks[start:start + count])
            start += count
        return ([stem], stages) if start == len(blocks) else None
    for name in ("stages", "layer", "layers"):
        children = getattr(encoder, name, None)
        if children is not None and hasattr(children, "__len__"):
            return [stem], [[stage] for stage in children]
    return None


def freeze_stages(model, stages: int) -> None:
    """Freeze the stem and the first ``stages`` stages of a vision backbone (0: nothing): no
    gradients, and their batch norms keep the pretrained statistics even in training mode (a
    frozen stage whose normalisation drifted would no longer compute what it was trained to).

    Raises ConfigError for a model that is not a vision backbone tuneops knows, or too few stages."""
    if not stages:
        return
    name = type(model).__name__
    layout = backbone_stages(model) if getattr(model, "main_input_name", None) == "pixel_values" else None
    if layout is None:
        raise ConfigError(f"config: training.freeze_stages: cannot find the stages of a {name} "
                          "(known: EfficientNet, ResNet, ConvNeXt, ViT-like image models)")
    stem, blocks = layout
    if stages > len(blocks):
        raise ConfigError(f"config: training.freeze_stages is {stages} but the {name} has {len(blocks)} stages")
    for module in stem + [part for stage in blocks[:stages] for part in stage]:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        hold_norm_statistics(module)


def hold_norm_statistics(module) -> None:
    """Hold every batch norm inside ``module`` in eval mode, whatever ``model.train()`` asks.

    Fine-tuning batches are small and of one domain: batch norms in train mode would normalise
    with each batch's statistics and overwrite the pretrained running ones (measured on the
    digits demo: 0.374 test accuracy, against 0.95 with the statistics held). Dropout, by
    contrast, trains as pretraining did."""
    import torch

    def train_frozen(self, mode: bool = True):
        return torch.nn.Module.train(self, False)

    for child in module.modules():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            child.train = types.MethodType(train_frozen, child)
            child.eval()


def freeze_identity_squeeze_excite(model) -> int:
    """Freeze every squeeze-excite block that is an exact identity; returns how many.

    Checked by what the block computes (a fixed random probe comes back bit for bit), not by a
    model's name, so a regular EfficientNet, whose squeeze-excite blocks are real, trains them."""
    import torch

    generator = torch.Generator().manual_seed(0)  # its own stream: the run's seeded ones stay untouched
    frozen = 0
    for name, module in model.named_modules():
        if not name.endswith("squeeze_excite"):
            continue
        channels = getattr(module, "dim", None)
        parameter = next(module.parameters(), None)
        if not isinstance(channels, int) or parameter is None:
            continue
        probe = torch.randn(2, channels, 3, 3, generator=generator).to(parameter.device, parameter.dtype)
        with torch.no_grad():
            identity = torch.equal(module(probe), probe)
        if identity:
            for weight in module.parameters():
                weight.requires_grad_(False)
            frozen += 1
    return frozen


def add_adapter(model, config: TrainingConfig):
    """Wrap ``model`` with a peft adapter (base weights frozen, classifier head trained in full)."""
    import peft

    targets = config.adapter_target_modules  # None: peft's defaults for the architecture
    try:
        if config.adapter == "lora":
            adapter_config = peft.LoraConfig(
                task_type=peft.TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout, target_modules=targets,
            )
        else:
            adapter_config = peft.IA3Config(task_type=peft.TaskType.SEQ_CLS, target_modules=targets,
                                            feedforward_modules=[] if targets else None)
        with warnings.catch_warnings():
            # peft reads transformers' deprecated is_gradient_checkpointing; nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return peft.get_peft_model(model, adapter_config)
    except ValueError as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(f"config: training.adapter {config.adapter}: {first}") from None


def merge_adapter(model):
    """The plain model with adapter weights folded into the base weights (no-op without adapter)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def prepare_model(model, config: TrainingConfig):
    """Apply the config's dropout, freezing and adapter settings; return the model to train, in
    train mode (dropout on; ``from_pretrained`` returns eval mode) with its batch-norm statistics
    held."""
    if config.dropout is not None:
        set_dropout(model, config.dropout)
    freeze(model, config.freeze_embeddings, config.freeze_layers)
    freeze_stages(model, config.freeze_stages or 0)
    freeze_identity_squeeze_excite(model)
    hold_norm_statistics(model)
    if config.adapter != "none":
        model = add_adapter(model, config)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ConfigError("config: training settings leave no parameter to train")
    return model.train()


def trainable_parameters(model) -> dict:
    """Name -> parameter for everything that trains (what checkpoints and best-model copies hold)."""
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only, never on biases and LayerNorm scales (decaying
    those only pulls them towards 0 without regularising anything)."""
    decay, no_decay = [], []
    for parameter in trainable_parameters(model).values():
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def count_parameters(model) -> dict[str, int]:
    """Total and trainable parameter counts."""
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
