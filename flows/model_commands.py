"""CLI commands for packaged models, runs and serving: ``tuneops models``, ``promote``,
``rollback``, ``runs``, ``serve`` and ``bento``. flows/cli.py registers them on its app with
``register``.

``tuneops serve`` checks what it can in this process (config, model, port) so that a mistake is
one line, then replaces itself with ``bentoml serve`` (same pid: a supervisor or test that
started ``tuneops serve`` can stop the server by that pid).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from tuneops.components.errors import ConfigError, StageError
from tuneops.flows.cli_output import Output, output_option, print_json


def register(app: typer.Typer, guarded: Callable[[Callable[[], int | None]], None]) -> None:
    """Add the model and serving commands to ``app``; ``guarded`` turns errors into one line."""

    @app.command("models")
    def models_command(
        output: Output = output_option(),
        clean: bool = typer.Option(False, "--clean", help="First delete partial entries (saves cut short by a crash)."),
    ) -> None:
        """List packaged models, newest first, with their metrics; * marks the champion."""
        guarded(lambda: list_models(output == Output.json, clean))

    @app.command("promote")
    def promote_command(tag: str = typer.Argument(..., help="Model tag (name:version or version).")) -> None:
        """Make a packaged model the champion (verified first); a running service switches to it."""
        guarded(lambda: promote(tag))

    @app.command("rollback")
    def rollback_command() -> None:
        """Make the previous champion the champion again."""
        guarded(rollback)

    runs_app = typer.Typer(help="Training runs: `tuneops runs` lists them, `tuneops runs show ID` shows one.",
                           no_args_is_help=False)
    app.add_typer(runs_app, name="runs")

    @runs_app.callback(invoke_without_command=True)
    def runs_command(context: typer.Context, output: Output = output_option()) -> None:
        """List training runs, newest first, with their status (a killed run shows as interrupted)."""
        if context.invoked_subcommand is None:
            guarded(lambda: list_runs(output == Output.json))

    @runs_app.command("show")
    def runs_show_command(run_id: str = typer.Argument(..., metavar="RUN_ID", help="A run id from `tuneops runs`."),
                          output: Output = output_option()) -> None:
        """One run's summary: status, metrics, the gate's reasons, stages, model and record."""
        guarded(lambda: show_run(run_id, output == Output.json))

    @app.command("serve")
    def serve_command(
        port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535, help="Default: serving.port."),
        model: Optional[str] = typer.Option(
            None, "--model", "-m", help="Serve this tag, pinned; default: the champion, following promotions."),
        host: Optional[str] = typer.Option(None, "--host", help="Default: serving.host (127.0.0.1)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (its serving section)."),
        overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override: serving.key=value."),
    ) -> None:
        """Serve the champion (or --model TAG) over HTTP with BentoML: POST /classify."""
        guarded(lambda: serve(port, model, host, config, overrides))

    @app.command("bento")
    def bento_command(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Default: the champion."),
    ) -> None:
        """Build the serving bento for a model (then: bentoml containerize TAG)."""
        guarded(lambda: build(model))


def list_models(as_json: bool = False, clean: bool = False) -> int:
    """Print the model table (or JSON). Partial entries are left out and named on stderr; with
    ``clean`` they are deleted first."""
    _prepare()
    from tuneops.components import registry

    if clean:
        for leftover in registry.remove_partial_entries():
            typer.echo(f"removed partial entry {leftover.path} ({leftover.reason})", err=True)
    for leftover in registry.partial_entries():
        typer.echo(f"warning: ignored partial entry {leftover.path} ({leftover.reason}); "
                   "`tuneops models --clean` removes it", err=True)
    releases = registry.list_models()
    if as_json:
        print_json([release.to_json() for release in releases])
        return 0
    if not releases:
        typer.echo("no packaged models yet; `tuneops run` packages one")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {os.environ.get('BENTOML_HOME')}")
    for column in ("", "tag", "created (UTC)", "run", "gate", "macro_f1", "accuracy", "base checkpoint"):
        table.add_column(column, no_wrap=True)
    for release in releases:
        metrics = release.metrics
        table.add_row(
            "*" if release.is_champion else "",
            release.tag,
            release.created.strftime("%Y-%m-%d %H:%M:%S"),
            str(release.run_id or "-"),
            str(release.metadata.get("gate", "-")),
            _number(metrics.get("macro_f1")),
            _number(metrics.get("accuracy")),
            str(release.metadata.get("base_checkpoint", "-")),
        )
    # Piped output has no terminal width; tags must not be cut to fit 80 columns there.
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    return 0


def promote(tag: str) -> int:
    _prepare()
    from tuneops.components import registry

    release = registry.set_champion(tag)
    before = release.previous_champion  # read under the pointer's lock, as the switch was made
    if before == release.tag:
        typer.echo(f"{release.tag} is already the champion")
    else:
        typer.echo(f"champion: {release.tag}" + (f" (was {before})" if before else ""))
    _follow_in_tracking(release.tag)
    return 0


def rollback() -> int:
    _prepare()
    from tuneops.components import registry

    release = registry.rollback()
    typer.echo(f"champion: {release.tag} (rolled back from {release.previous_champion})")
    _follow_in_tracking(release.tag)
    return 0


def _follow_in_tracking(tag: str) -> None:
    """Move the MLflow ``champion`` alias after the pointer (when MLFLOW_TRACKING_URI is set). The
    pointer is what serving follows, so a failure here is a warning, not a failed promotion."""
    from tuneops.components.tracking import move_champion_alias

    warning = move_champion_alias(tag)
    if warning:
        typer.echo(f"warning: {warning}", err=True)


def list_runs(as_json: bool = False) -> int:
    """Print the runs table (or JSON): id, status, start, model, error."""
    from tuneops.components.run_record import list_runs as run_summaries

    summaries = run_summaries()
    if as_json:
        print_json(summaries)
        return 0
    if not summaries:
        typer.echo("no runs yet; `tuneops run` starts one")
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("run", "status", "started (UTC)", "model", "error"):
        table.add_column(column, no_wrap=column != "error")
    for summary in summaries:
        # Errors quote data and paths, which may hold brackets: plain text, not rich markup.
        table.add_row(summary["run_id"], str(summary.get("status")), str(summary.get("started_at") or "-"),
                      str(summary.get("model_tag") or "-"), Text(str(summary.get("error") or "")))
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    return 0


def show_run(run_id: str, as_json: bool = False) -> int:
    """Print one run's summary (summary.json, its status judged) for people, or as JSON."""
    from tuneops.components.run_record import read_summary

    summary = read_summary(run_id)
    if as_json:
        print_json(summary)
        return 0
    from tuneops.flows.run_summary import print_summary

    print_summary(summary)
    stages = summary.get("stages") or {}
    typer.echo("stages: " + ", ".join(f"{name} {entry.get('status')} ({entry.get('seconds', 0):.0f} s)"
                                      for name, entry in stages.items()))
    if summary.get("error"):
        typer.echo(f"error: {summary['error']}")
    return 0


def serve(port: int | None, model: str | None, host: str | None, config_path: Path | None,
          overrides: list[str] | None) -> int:
    """Check config, model and port, then exec ``bentoml serve`` with the serving environment."""
    from tuneops.components.config import load_config

    config = load_config(config_path, overrides)
    settings = config.serving.model_copy(update={
        key: value for key, value in (("port", port), ("host", host)) if value is not None
    })
    _prepare()
    from tuneops.components import registry
    from tuneops.components.paths import SOURCE_ROOT, tuneops_home
    from tuneops.serving.settings import SERVICE_IMPORT, serving_environment

    pinned = None
    if model:
        # A model asked for by name must be the one served: refused here if it does not verify.
        pinned = registry.verify_model(model).tag
        what = f"{pinned} (pinned)"
    else:
        # Following the champion, the service always starts: with no champion, or one that does not
        # verify, it is alive and not ready (or serves the previous champion) until one is promoted.
        what = f"{_champion_state(registry)} (champion, follows promotions)"
    _check_port_free(settings.host, settings.port)
    environment = {**os.environ, "TUNEOPS_HOME": str(tuneops_home()),
                   **serving_environment(settings, pinned)}
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", settings.host,
               "--port", str(settings.port), "--working-dir", str(SOURCE_ROOT)]
    typer.echo(f"serving {what} on http://{settings.host}:{settings.port}  "
               f"[POST /classify, GET /healthz /readyz /metrics]", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, environment)
    return 0  # not reached: exec replaced this process


def _champion_state(registry) -> str:
    """The champion's tag, or what the service will do without a usable one (said before it starts)."""
    tag = registry.champion_tag()
    if tag is None:
        return "no model yet: not ready (/readyz 503) until `tuneops promote TAG` or a run promotes one"
    try:
        return registry.verify_model(tag).tag
    except StageError as error:
        return f"{tag}, which does not verify ({error}): the previous champion that does, if any"


def build(model: str | None) -> int:
    _prepare()
    from tuneops.serving.packaging import build_bento

    tag = build_bento(model)
    typer.echo(f"bento: {tag}\ncontainer: bentoml containerize {tag}")
    return 0


def _prepare() -> None:
    """BentoML reads BENTOML_HOME when first imported: point it into $TUNEOPS_HOME before that."""
    from tuneops.components.paths import configure_environment

    configure_environment()


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"serve: cannot listen on {host}:{port}: {error.strerror or error}") from None


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
