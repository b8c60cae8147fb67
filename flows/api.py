"""``tuneops.run``: the training pipeline from Python, the same code path as ``tuneops run``.

The CLI and this API share ``run_training``: the environment (``$TUNEOPS_HOME``, BentoML's and
Prefect's homes, quiet user errors), the Prefect server (the one in ``PREFECT_API_URL`` or
``tuneops up``'s, else a temporary one stopped on the way out) and the flow itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tuneops.components.config import PipelineConfig, load_config, validate_config
from tuneops.components.errors import ConfigError, TuneopsError
from tuneops.components.paths import configure_environment

# Prefect's loggers that report a failing task or flow with its traceback.
_PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine")


def as_config(config: PipelineConfig | dict[str, Any] | str | Path | None) -> PipelineConfig:
    """A validated config from what a caller has: a ``PipelineConfig``, a dict of sections, a
    YAML path, or None for the embedded demo. ConfigError in one line when it is not valid."""
    if isinstance(config, PipelineConfig):
        return config
    if config is None or isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, dict):
        return validate_config(config)
    raise ConfigError(f"config: expected a PipelineConfig, a dict or a YAML path, got {type(config).__name__}")


def prepare_environment() -> None:
    """What every run needs before BentoML or Prefect is imported: their homes under
    ``$TUNEOPS_HOME`` (``configure_environment``), and Prefect's failure logs without a
    traceback for errors the user can act on (bad data, bad config: the one line says it all)."""
    configure_environment()
    for name in _PREFECT_RUN_LOGGERS:
        run_logger = logging.getLogger(name)
        if _no_traceback_for_user_errors not in run_logger.filters:
            run_logger.addFilter(_no_traceback_for_user_errors)


def run_training(config: PipelineConfig, run_id: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the training flow once against the current Prefect server (a temporary one when
    there is none) and return its summary; a TuneopsError when the run failed for a user reason.

    ``resume`` continues the interrupted or failed run ``run_id``; a bad run id, a finished or
    still running run, or a changed config is a ConfigError before any server starts."""
    from tuneops.components.data.guards import check_column_roles
    from tuneops.components.run_record import check_run_request
    from tuneops.components.tasks.registry import get_task

    check_run_request(run_id, config, resume)
    # What the config alone says about column roles, before a server starts (load_data checks it too).
    check_column_roles(config.data, get_task(config.task))
    prepare_environment()
    from tuneops.flows.prefect_server import prefect_api
    from tuneops.flows.training_flow import train_pipeline

    with prefect_api():
        return train_pipeline(config=config, run_id=run_id, resume=resume)


def run(config: PipelineConfig | dict[str, Any] | str | Path | None = None, *, run_id: str | None = None,
        resume: bool = False) -> dict[str, Any]:
    """``tuneops.run``: validate ``config`` (before any server starts), run the pipeline, return
    its summary (the content of ``summary.json``). Raises the TuneopsError of a failed run."""
    return run_training(as_config(config), run_id=run_id, resume=resume)


def _no_traceback_for_user_errors(record: logging.LogRecord) -> bool:
    """Prefect logs every failing task with its traceback; for bad input the one line is enough."""
    if record.exc_info and isinstance(record.exc_info[1], TuneopsError):
        record.exc_info = None
        record.exc_text = None
    return True
