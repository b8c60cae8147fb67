"""What selection checks of an image checkpoint's processor before any compute."""

from __future__ import annotations

from pathlib import Path

from tuneops.components.checkpoint_inspection import CandidateUnusable, first_line

PREPROCESSOR_FILE = "preprocessor_config.json"
# Fetched with a hub checkpoint, beside its config and weights.
PROCESSOR_FILES = (PREPROCESSOR_FILE,)


def load_image_processor(source: str | Path):
    """The image processor of a checkpoint folder or hub id (transformers' PIL backend where
    torchvision is missing; tuneops only reads its settings)."""
    import warnings

    from transformers import AutoImageProcessor

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*requires torchvision.*")
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=False)


def inspect_image_processor(directory: Path, config, names: list[str]) -> None:
    """Check the checkpoint has an image processor that gives fixed-size RGB inputs.

    Raises CandidateUnusable with the reason otherwise. Images have no longest input: returns None.
    """
    from tuneops.components.tasks.image.processing import preprocessing_of

    if PREPROCESSOR_FILE not in names:
        raise CandidateUnusable(f"no image processor: no {PREPROCESSOR_FILE} in {directory}")
    try:
        processor = load_image_processor(directory)
    except Exception as error:  # transformers raises OSError/ValueError/KeyError for bad processor files
        raise CandidateUnusable(f"no usable image processor ({first_line(error)})") from None
    try:
        preprocessing_of(processor)
    except ValueError as error:
        raise CandidateUnusable(f"unusable image processor: {first_line(error)}") from None
    channels = getattr(config, "num_channels", 3)
    if channels != 3:
        raise CandidateUnusable(f"the model takes {channels}-channel images; tuneops feeds RGB (3 channels)")
    return None
