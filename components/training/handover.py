"""What a data-parallel fine-tune hands to its processes: a folder with the two splits (Parquet)
and ``handover.json``, the validated settings (the ``TrainingConfig`` as pydantic dumped it, the
task name, label set, base checkpoint, champion folder).

The config is validated once, where it was loaded; each process validates the JSON back into the
same models (``model_validate_json``) instead of reading YAML and applying ``--set`` strings again.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from tuneops.components.config import TrainingConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.files import atomic_write_text

INPUTS_DIR = "distributed-inputs"
SETTINGS_FILE = "handover.json"
TRAIN_FILE = "train.parquet"
VALIDATION_FILE = "validation.parquet"
# How the local launcher tells its processes where to meet (a file:// URL); unset under torchrun,
# whose MASTER_ADDR / MASTER_PORT are read through init_method "env://".
INIT_METHOD_VARIABLE = "TUNEOPS_DIST_INIT"


class HandoverSettings(BaseModel):
    """The validated settings every process of a run receives."""

    model_config = ConfigDict(extra="forbid")

    task: str
    checkpoint: str
    labels: list[str]
    champion_dir: str | None = None
    training: TrainingConfig
    recipe: list[dict] = []  # the recipe's decisions behind ``training`` (already applied to it)


def inputs_dir(output_dir: Path) -> Path:
    """Where a run's handover lives: beside its model directory (``runs/<id>/distributed-inputs``)."""
    return Path(output_dir).parent / INPUTS_DIR


def write_handover(directory: Path, settings: HandoverSettings, train: pd.DataFrame, validation: pd.DataFrame,
                   input_column: str) -> Path:
    """Write the splits (their input and label columns) and the settings into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for frame, name in ((train, TRAIN_FILE), (validation, VALIDATION_FILE)):
        frame[[input_column, LABEL]].astype({LABEL: str}).to_parquet(directory / name, index=False)
    # Written last: a folder with settings holds its splits too.
    atomic_write_text(directory / SETTINGS_FILE, settings.model_dump_json(indent=2))
    return directory


def read_settings(directory: Path) -> HandoverSettings:
    """The settings of a handover folder, validated. Raises ConfigError when missing or invalid."""
    path = Path(directory) / SETTINGS_FILE
    if not path.is_file():
        raise ConfigError(f"config: no {SETTINGS_FILE} in {directory}: write it with "
                          "python -m tuneops.components.training.prepare (or let tuneops launch the processes)")
    try:
        return HandoverSettings.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"config: {path}: {where + ': ' if where else ''}{first['msg']}") from None


def read_splits(directory: Path, input_column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and validation splits of a handover folder. Raises DataError when unreadable."""
    frames = []
    for name in (TRAIN_FILE, VALIDATION_FILE):
        path = Path(directory) / name
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            raise DataError(f"data: cannot read {path}: {str(error).splitlines()[0]}") from None
        if input_column not in frame or LABEL not in frame:
            raise DataError(f"data: {path} needs columns {input_column!r} and {LABEL!r}")
        frames.append(frame)
    return frames[0], frames[1]
