"""CLI commands for packaged models and serving: ``tuneops models``, ``promote``, ``rollback``,
``serve`` and ``bento``. flows/cli.py registers them on its app with ``register``.

``tuneops serve`` checks what it can in this process (config, model, port) so that a mistake is
one line, then replaces itself with ``bentoml serve`` (same pid: a supervisor or test that
started ``tuneops serve`` can stop the server by that pid).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from tuneops.components.errors import ConfigError, StageError

SERVICE_IMPORT = "tuneops.serving.service:TuneopsClassifier"


def register(app: typer.Typer, guarded: Callable[[Callable[[], int | None]], None]) -> None:
    """Add the model and serving commands to ``app``; ``guarded`` turns errors into one line."""

    @app.command("models")
    def models_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """List packaged models, newest first, with their metrics; * marks the champion."""
        guarded(lambda: list_models(as_json))

    @app.command("promote")
    def promote_command(tag: str = typer.Argument(..., help="Model tag (name:version or version).")) -> None:
        """Make a packaged model the champion (verified first); a running service switches to it."""
        guarded(lambda: promote(tag))

    @app.command("rollback")
    def rollback_command() -> None:
        """Make the previous champion the champion again."""
        guarded(rollback)

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


def list_models(as_json: bool = False) -> int:
    """Print the model table (or JSON)."""
    _prepare()
    from tuneops.components import registry

    releases = registry.list_models()
    if as_json:
        typer.echo(json.dumps([release.to_json() for release in releases], indent=2))
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

    before = registry.champion_tag()
    release = registry.set_champion(tag)
    if before == release.tag:
        typer.echo(f"{release.tag} is already the champion")
    else:
        typer.echo(f"champion: {release.tag}" + (f" (was {before})" if before else ""))
    return 0


def rollback() -> int:
    _prepare()
    from tuneops.components import registry

    before = registry.champion_tag()
    release = registry.rollback()
    typer.echo(f"champion: {release.tag} (rolled back from {before})")
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
    from tuneops.serving.settings import serving_environment

    if model:
        release = registry.verify_model(model)
        mode = "pinned"
    else:
        current = registry.champion()
        if current is None:
            raise StageError("no champion model to serve: `tuneops promote TAG` first "
                             "(`tuneops models` lists them), or `tuneops serve --model TAG`")
        release = registry.verify_model(current.tag)
        mode = "champion, follows promotions"
    _check_port_free(settings.host, settings.port)
    environment = {**os.environ, "TUNEOPS_HOME": str(tuneops_home()),
                   **serving_environment(settings, release.tag if model else None)}
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", settings.host,
               "--port", str(settings.port), "--working-dir", str(SOURCE_ROOT)]
    typer.echo(f"serving {release.tag} ({mode}) on http://{settings.host}:{settings.port}  "
               f"[POST /classify, GET /healthz /readyz /metrics]", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, environment)
    return 0  # not reached: exec replaced this process


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
