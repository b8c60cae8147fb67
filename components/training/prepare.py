"""Prepare a hand-started data-parallel fine-tune (torchrun, accelerate launch): load the tuneops
config once, load the data, and write the handover folder that every process then reads.

    python -m tuneops.components.training.prepare --config tuneops.yaml \\
        --checkpoint packaged:all-MiniLM-L6-v2 --output-dir runs/manual/model
    torchrun --standalone --nproc_per_node 4 -m tuneops.components.training.distributed \\
        --output-dir runs/manual/model

The pipeline's own launcher (``training.processes > 1``) writes the handover itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from tuneops.components.config import load_config
from tuneops.components.data.columns import LABEL
from tuneops.components.errors import DataError, TuneopsError
from tuneops.components.tasks.base import Task
from tuneops.components.training.recipe import recipe_for_run
from tuneops.components.training.handover import HandoverSettings, inputs_dir, write_handover


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuneops.components.training.prepare",
                                     description="Write the handover folder of a hand-started data-parallel fine-tune.")
    parser.add_argument("--config", help="tuneops YAML config (its task, data and training sections are used)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    parser.add_argument("--checkpoint", required=True, help="candidate spec, e.g. packaged:all-MiniLM-L6-v2")
    parser.add_argument("--output-dir", required=True, type=Path,
                        help="model directory of the run (the handover goes beside it)")
    parser.add_argument("--train", type=Path, help="train file with the task's input and label columns; "
                                                   "unset = load the config's data")
    parser.add_argument("--validation", type=Path, help="validation file (with --train)")
    parser.add_argument("--labels",
                        help="comma-separated label set; unset = the config's labels, else those seen in train")
    parser.add_argument("--champion-dir", type=Path, help="the champion model folder (for candidate 'champion')")
    return parser.parse_args(argv)


def _load_splits(arguments: argparse.Namespace, config, task: Task) -> tuple[pd.DataFrame, pd.DataFrame]:
    from tuneops.components.data.loading import as_validated, load_data, read_table

    if arguments.train is not None:
        if arguments.validation is None:
            raise DataError("data: --train needs --validation too")
        limit = config.data.max_bytes
        train, validation = read_table(arguments.train, max_bytes=limit), read_table(arguments.validation, max_bytes=limit)
        for name, frame in (("train", train), ("validation", validation)):
            if task.input_column not in frame or LABEL not in frame:
                raise DataError(f"data: the {name} file needs columns {task.input_column!r} and {LABEL!r}")
    else:
        from tuneops.components.paths import demo_dir

        splits = as_validated(load_data(config.data, demo_dir(), task))
        train, validation = splits.train, splits.validation
    # Rows the task cannot use, or without a label, cannot train; the pipeline's validation stage
    # reports them, this standalone entry drops them.
    return _usable_rows(train, task), _usable_rows(validation, task)


def _usable_rows(frame: pd.DataFrame, task: Task) -> pd.DataFrame:
    frame = frame.dropna(subset=[task.input_column, LABEL])
    usable = frame[task.input_column].map(lambda value: task.input_problem(value) is None)
    return frame[usable].astype({LABEL: str}).reset_index(drop=True)


def prepare(arguments: argparse.Namespace) -> Path:
    """Load config and data once and write the handover; returns its folder."""
    from tuneops.components.tasks.registry import get_task  # an entry point picks the task, like a flow

    config = load_config(arguments.config, arguments.overrides)
    task = get_task(config.task)
    train, validation = _load_splits(arguments, config, task)
    if arguments.labels:
        labels = [label.strip() for label in arguments.labels.split(",") if label.strip()]
    else:
        labels = config.data.labels or sorted(set(train[LABEL]))
    recipe = recipe_for_run(train, arguments.checkpoint, config.training, task, arguments.champion_dir)
    settings = HandoverSettings(
        task=task.name, checkpoint=arguments.checkpoint, labels=labels, training=recipe.config,
        champion_dir=str(arguments.champion_dir.resolve()) if arguments.champion_dir else None,
        recipe=recipe.to_json(),
    )
    return write_handover(inputs_dir(arguments.output_dir), settings, train, validation, task.input_column)


def main(argv: list[str] | None = None) -> int:
    arguments = _parse_arguments(argv)
    try:
        folder = prepare(arguments)
    except TuneopsError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"handover written to {folder}; start the processes with: torchrun --nproc_per_node N "
          f"-m tuneops.components.training.distributed --output-dir {arguments.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
