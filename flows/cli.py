"""The ``tuneops`` command line.

Exit codes: 0 the command did its job (a run that the gate rejected included), 1 data validation
blocked or a stage failed, 2 a bad config or bad usage. Errors are one line unless ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional

import typer

from tuneops.components.errors import TuneopsError
from tuneops.components.paths import configure_environment
from tuneops.flows.api import prepare_environment

app = typer.Typer(
    name="tuneops",
    help="Fine-tune pretrained models into served, monitored, regularly retrained models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config; unset = the embedded demo defaults.")
SetOption = typer.Option(None, "--set", help="Override one key: section.key=value (repeatable).")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs.")) -> None:
    _state["debug"] = debug


def guarded(command: Callable[[], int | None]) -> None:
    """Run a command body; turn known errors into one line on stderr and the matching exit code."""
    try:
        code = command() or 0
    except TuneopsError as error:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {error}", err=True)
        code = error.exit_code
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        code = 130
    except Exception as error:  # a stage failing unexpectedly: still one line, the detail under --debug
        if _state["debug"]:
            traceback.print_exc()
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        typer.echo(f"error: {type(error).__name__}: {first} (run with --debug for the traceback)", err=True)
        code = 1
    raise typer.Exit(code)


def _configure_logging() -> None:
    prepare_environment()
    level = "DEBUG" if _state["debug"] else "INFO"
    if sys.stderr.isatty() and not _state["debug"]:
        # At a terminal the rich display shows progress; Prefect's own lines would tear it.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "matplotlib", "PIL", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not _state["debug"]:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


@app.command()
def run(
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID",
                                         help="Continue an interrupted or failed run, with the config it started with."),
) -> None:
    """Run the whole training pipeline as one Prefect flow and print where its record is."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)  # bad config: exit 2 before any server starts
        _configure_logging()
        from tuneops.flows import progress
        from tuneops.flows.api import run_training

        reporter = progress.for_terminal()
        progress.use(reporter)
        try:
            summary = run_training(loaded, run_id=resume, resume=resume is not None)
        finally:
            reporter.close()
        _print_summary(summary)
        return 0

    guarded(body)


def _print_summary(summary: dict) -> None:
    from rich.console import Console

    from tuneops.components.config import IMAGE_TASK
    from tuneops.components.paths import run_dir

    console = Console(soft_wrap=True)  # whole lines: logs and greps read them
    metrics = summary.get("metrics") or {}
    shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("accuracy", "macro_f1") if k in metrics)
    console.print(f"run {summary['run_id']}: [bold]{summary['status']}[/bold] ({shown})")
    for reason in (summary.get("gate") or {}).get("reasons", []):
        console.print(f"  - {reason}", markup=False)  # reasons quote data, which may hold brackets
    throughput = (summary.get("training") or {}).get("throughput") or {}
    if throughput and summary.get("task") == IMAGE_TASK:  # images have no tokens
        console.print(f"fine-tune: {throughput['samples_per_second']:,.0f} images/s on {throughput['device']} "
                      f"({throughput['precision']})")
    elif throughput:
        console.print(f"fine-tune: {throughput['real_tokens_per_second']:,.0f} real tokens/s on {throughput['device']} "
                      f"({throughput['precision']}), padding efficiency {throughput['padding_efficiency']:.2f}")
    recipe = summary.get("recipe") or []
    if recipe:
        decided = ", ".join(f"{c['setting'].split('.', 1)[1]}={c['value']}" + ("" if c["source"] == "config" else
                            f" ({c['source']})") for c in recipe)
        console.print(f"recipe: {decided}", markup=False)
    if summary.get("peak_rss_mib"):
        console.print(f"peak memory: {summary['peak_rss_mib'] / 1024:.2f} GiB RSS")
    if summary.get("model_tag"):
        console.print(f"model: {summary['model_tag']}")
    console.print(f"report: {run_dir(summary['run_id']) / 'index.html'}")


@app.command()
def validate(config: Optional[Path] = ConfigOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Validate the configured data with Great Expectations and print the summary."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)
        _configure_logging()
        from tuneops.components.run_record import new_run_id
        from tuneops.components.paths import tuneops_home
        from tuneops.flows.validate_command import run_validate

        return run_validate(loaded, tuneops_home() / "validations" / new_run_id())

    guarded(body)


@app.command()
def up(
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
    prefect_port: int = typer.Option(4200, help="Prefect server port (0 = any free port)."),
    evidently_port: int = typer.Option(8000, help="Evidently UI port (0 = any free port)."),
    serving_port: Optional[int] = typer.Option(None, help="Serving port; unset = serving.port of the config."),
    serve: bool = typer.Option(True, help="Start the serving endpoint (needs a champion)."),
) -> None:
    """Start the local stack in the background: Prefect server + worker, serving, Evidently UI."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)
        _configure_logging()
        from tuneops.components.stack.supervisor import StackOptions, run_up

        return run_up(StackOptions(
            serving_port=loaded.serving.port if serving_port is None else serving_port,
            prefect_port=prefect_port, evidently_port=evidently_port, serve=serve,
            config_path=str(config) if config else None, overrides=list(overrides or []),
        ))

    guarded(body)


@app.command()
def down() -> None:
    """Stop everything `tuneops up` started."""

    def body() -> int:
        configure_environment()
        from tuneops.components.stack.supervisor import run_down

        return run_down()

    guarded(body)


@app.command()
def status() -> None:
    """Say which parts of the local stack run, with their URLs."""

    def body() -> int:
        configure_environment()
        from tuneops.components.stack.supervisor import run_status

        return run_status()

    guarded(body)


@app.command()
def deploy(
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
    pool: Optional[str] = typer.Option(None, help="Work pool to use instead of infra/prefect.yaml's (must exist)."),
    image: Optional[str] = typer.Option(None, help="Job image, for a Docker or Kubernetes work pool."),
    paused: bool = typer.Option(False, "--paused", help="Register with schedules paused (runs only when asked)."),
) -> None:
    """Register the retrain and monitor deployments (infra/prefect.yaml) with the Prefect server."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)
        _configure_logging()
        from tuneops.flows.deploy import run_deploy

        return run_deploy(loaded, str(config) if config else None, list(overrides or []), pool, image, paused)

    guarded(body)


@app.command()
def monitor(
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
    trigger: bool = typer.Option(True, help="Start the retrain deployment when retraining is due."),
) -> None:
    """Check the traffic since the last check for drift now; retrain if it is due."""

    def body() -> int:
        from tuneops.components.config import load_config

        load_config(config, overrides)  # bad config: exit 2 before any server starts
        _configure_logging()
        from tuneops.flows.monitor_flow import run_monitor

        return run_monitor(str(config) if config else None, list(overrides or []), trigger)

    guarded(body)


# models, promote, rollback, serve, bento (issue 7): flows/model_commands.py
from tuneops.flows.model_commands import register as _register_model_commands  # noqa: E402

_register_model_commands(app, guarded)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
