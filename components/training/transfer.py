"""Transfer-learning controls: what of the pretrained model trains, and how.

Freezing the embeddings and the lowest transformer layers keeps the general-purpose features and
trains fewer parameters (faster steps, less overfitting on small data); adapters (LoRA, IA3 via
peft) train a few added weights and are merged back before saving, so the saved model is a plain
Hugging Face checkpoint that ``Predictor.from_dir`` and serving load without peft.
"""

from __future__ import annotations

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
    """Apply the config's dropout, freezing and adapter settings; return the model to train."""
    if config.dropout is not None:
        set_dropout(model, config.dropout)
    freeze(model, config.freeze_embeddings, config.freeze_layers)
    if config.adapter != "none":
        model = add_adapter(model, config)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ConfigError("config: training settings leave no parameter to train")
    return model


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
