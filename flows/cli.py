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
from tuneops.flows.cli_output import Output, output_option, print_json

app = typer.Typer(
    name="tuneops",
    help="Fine-tune pretrained models into served, monitored, regularly retrained models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
)

_state = {"debug": False}

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config; unset = the embedded demo defaults.")
SetOption = typer.Option(None, "--set", help="Override one key: section.key=value (repeatable).")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib import metadata

        typer.echo(f"tuneops {metadata.version('tuneops')}")
        raise typer.Exit(0)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs (also after the command)."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    _state["debug"] = debug


# Options of the whole program that a command line may also give after the command
# (`tuneops run --debug`): click only parses them before it, so they are moved there.
GLOBAL_FLAGS = ("--debug",)


def global_flags_first(arguments: list[str]) -> list[str]:
    """``arguments`` with every GLOBAL_FLAGS entry moved in front of the command (none after a
    ``--``, which ends the options)."""
    end = arguments.index("--") if "--" in arguments else len(arguments)
    flags = [argument for argument in arguments[:end] if argument in GLOBAL_FLAGS]
    rest = [argument for argument in arguments[:end] if argument not in GLOBAL_FLAGS]
    return [*dict.fromkeys(flags), *rest, *arguments[end:]]


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
    except BrokenPipeError:
        # The reader stopped reading (`tuneops config schema | head`): not an error of ours. Later
        # writes (the interpreter's flush at exit) go nowhere instead of failing again.
        sys.stdout = open(os.devnull, "w")
        code = 0
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
    output: Output = output_option(),
) -> None:
    """Run the whole training pipeline as one Prefect flow and print where its record is."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)  # bad config: exit 2 before any server starts
        from tuneops.components.paths import tuneops_home
        from tuneops.components.persistent_home import check_persistent_home, persistence_required

        # Also before any server starts; the flow checks again for runs a worker starts.
        check_persistent_home(tuneops_home(), persistence_required())
        _configure_logging()
        from tuneops.flows import progress
        from tuneops.flows.api import run_training

        reporter = progress.for_terminal()
        progress.use(reporter)
        try:
            summary = run_training(loaded, run_id=resume, resume=resume is not None)
        finally:
            reporter.close()
        if output == Output.json:
            print_json(summary)
        else:
            from tuneops.flows.run_summary import print_summary

            print_summary(summary)
        return 0

    guarded(body)


@app.command()
def validate(config: Optional[Path] = ConfigOption, overrides: Optional[list[str]] = SetOption,
             output: Output = output_option()) -> None:
    """Validate the configured data with Great Expectations and print the summary."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)
        _configure_logging()
        from tuneops.components.run_record import new_run_id
        from tuneops.components.paths import tuneops_home
        from tuneops.flows.validate_command import run_validate

        return run_validate(loaded, tuneops_home() / "validations" / new_run_id(), output == Output.json)

    guarded(body)


@app.command()
def up(
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
    prefect_port: int = typer.Option(4200, help="Prefect server port (0 = any free port)."),
    evidently_port: int = typer.Option(8000, help="Evidently UI port (0 = any free port)."),
    serving_port: Optional[int] = typer.Option(None, help="Serving port; unset = serving.port of the config."),
    serve: bool = typer.Option(True, help="Start the serving endpoint (needs a champion)."),
    postgres: bool = typer.Option(
        False, "--postgres",
        help="Keep Prefect's database in PostgreSQL: the server in PREFECT_API_DATABASE_CONNECTION_URL, "
             "else one of tuneops' own under $TUNEOPS_HOME/postgres (initialised and started here)."),
    postgres_port: int = typer.Option(0, help="Port of tuneops' own PostgreSQL, on 127.0.0.1 (0 = any free port)."),
) -> None:
    """Start the local stack in the background: Prefect server (on SQLite or PostgreSQL) + worker,
    serving, Evidently UI."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)
        _configure_logging()
        from tuneops.components.stack.supervisor import StackOptions, run_up

        return run_up(StackOptions(
            serving_port=loaded.serving.port if serving_port is None else serving_port,
            prefect_port=prefect_port, evidently_port=evidently_port, serve=serve,
            postgres=postgres, postgres_port=postgres_port,
            config_path=str(config) if config else None, overrides=list(overrides or []),
        ))

    guarded(body)


@app.command()
def down() -> None:
    """Stop everything `tuneops up` started (its PostgreSQL too, last)."""

    def body() -> int:
        configure_environment()
        from tuneops.components.stack.supervisor import run_down

        return run_down()

    guarded(body)


@app.command()
def status(output: Output = output_option()) -> None:
    """Say which parts of the local stack run, with their URLs."""

    def body() -> int:
        configure_environment()
        from tuneops.components.stack.supervisor import run_status

        return run_status(as_json=output == Output.json)

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
    output: Output = output_option(),
) -> None:
    """Check the traffic since the last check for drift now; retrain if it is due."""

    def body() -> int:
        from tuneops.components.config import load_config

        load_config(config, overrides)  # bad config: exit 2 before any server starts
        _configure_logging()
        from tuneops.flows.monitor_flow import run_monitor

        return run_monitor(str(config) if config else None, list(overrides or []), trigger, output == Output.json)

    guarded(body)


config_app = typer.Typer(help="The config: its JSON Schema, or the effective config after --set.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the whole config (every section and key, with types, defaults, limits)."""

    def body() -> int:
        from tuneops.components.config import PipelineConfig

        print_json(PipelineConfig.model_json_schema())
        return 0

    guarded(body)


@config_app.command("reference")
def config_reference_command() -> None:
    """Print every config key as a Markdown reference (docs/config.md is this)."""

    def body() -> int:
        from tuneops.components.config import PipelineConfig
        from tuneops.flows.config_reference import config_reference

        sys.stdout.write(config_reference(PipelineConfig.model_json_schema(), PipelineConfig().model_dump(mode="json")))
        return 0

    guarded(body)


@config_app.command("show")
def config_show(config: Optional[Path] = ConfigOption, overrides: Optional[list[str]] = SetOption,
                output: Output = output_option()) -> None:
    """Print the effective config: the file (or the embedded defaults) with every --set applied, validated."""

    def body() -> int:
        from tuneops.components.config import load_config

        loaded = load_config(config, overrides)
        if output == Output.json:
            print_json(loaded.model_dump(mode="json"))
        else:
            import yaml

            typer.echo(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False), nl=False)
        return 0

    guarded(body)


# models, promote, rollback, runs, serve, bento: flows/model_commands.py
from tuneops.flows.model_commands import register as _register_model_commands  # noqa: E402

_register_model_commands(app, guarded)


def main() -> None:
    """Console-script entry point."""
    app(args=global_flags_first(sys.argv[1:]), prog_name="tuneops")


if __name__ == "__main__":
    main()
