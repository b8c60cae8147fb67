"""``tuneops validate``: load the configured data, run the validation stage alone and print its
summary. No Prefect flow: validation is a plain component and needs no orchestration here.

It validates exactly as ``tuneops run`` does, the champion's label set included, so data that
passes here is not blocked by the run."""

from __future__ import annotations

from pathlib import Path

from tuneops.components import registry
from tuneops.components.config import PipelineConfig
from tuneops.components.data.loading import load_data
from tuneops.components.paths import demo_dir
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.registry import get_task
from tuneops.components.validation.validate import ValidationReport, validate_data


def run_validate(config: PipelineConfig, output_dir: Path, as_json: bool = False) -> int:
    """Validate the data of ``config`` into ``output_dir`` and print the summary (``as_json``: the
    whole report, as the run record's validation JSON holds it).

    Returns the exit code: 0 when no blocking expectation failed (or ``validation.on_failure``
    is ``warn``), 1 when validation blocks. Unreadable data raises DataError / ConfigError,
    which the CLI turns into one line and exit 1 / 2.
    """
    task = get_task(config.task)
    splits = load_data(config.data, demo_dir(), task)
    report = validate_data(splits, config.validation, output_dir, champion_labels(), task)
    if as_json:
        from tuneops.flows.cli_output import print_json

        print_json(report.model_dump(mode="json"))
    else:
        print_report(report)
    if not report.passed and config.validation.on_failure == "block":
        return 1
    return 0


def champion_labels() -> list[str] | None:
    """The champion model's label set (what a run must keep unless the config declares one),
    or None when no model was ever promoted."""
    champion_dir = registry.champion_model_dir()
    return Predictor.read_manifest(champion_dir)["labels"] if champion_dir else None


def print_report(report: ValidationReport) -> None:
    """Print the report's summary lines with colour: red for blocking, yellow for warnings."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    lines = report.summary_lines()
    verdict_style = "bold green" if report.passed else "bold red"
    for index, line in enumerate(lines):
        stripped = line.lstrip()
        if index == 0:
            style = verdict_style
        elif stripped.startswith("BLOCK"):
            style = "red"
        elif stripped.startswith("WARN"):
            style = "yellow"
        else:
            style = None
        # markup=False: examples are user text and may contain [brackets] rich would parse.
        console.print(line, style=style, markup=False, soft_wrap=True)
