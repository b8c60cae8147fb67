"""The local stack behind ``tuneops up`` / ``down`` / ``status``: a Prefect server, a process
work-pool worker, the serving endpoint and the Evidently UI, each a background process on this
machine (started and stopped by ``stack.processes``, recorded in ``stack.records``).

The Prefect server keeps its database in SQLite under ``$PREFECT_HOME`` unless one of these says
otherwise: ``PREFECT_API_DATABASE_CONNECTION_URL`` names a server (PostgreSQL:
``postgresql+asyncpg://...``), passed through as Prefect reads it; or ``--postgres`` asks for a
PostgreSQL server of tuneops' own under ``$TUNEOPS_HOME/postgres`` (``stack.postgres``), started
first and stopped last, which the stack then keeps using while it runs.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuneops.components.errors import ConfigError
from tuneops.components.stack import postgres, processes
from tuneops.components.stack.records import (
    SERVICES, ServiceRecord, ServiceStatus, live_process, read_record, remove_record, running, stack_dir,
)

WORK_POOL = "tuneops-process"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_EVIDENTLY_PORT = 8000
DATABASE_URL_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"


@dataclass
class StackOptions:
    """What ``tuneops up`` starts and where. Port 0 picks a free port.

    ``config_path`` and ``overrides`` are handed to the serving process (``tuneops serve``), which
    reads its ``serving`` section from them; ``serving_port`` is already resolved by the caller.
    """

    serving_port: int
    host: str = "127.0.0.1"
    prefect_port: int = DEFAULT_PREFECT_PORT
    evidently_port: int = DEFAULT_EVIDENTLY_PORT
    serve: bool = True
    postgres: bool = False
    postgres_port: int = 0
    config_path: str | None = None
    overrides: list[str] = field(default_factory=list)
    timeout_s: float = processes.START_TIMEOUT_S


# --------------------------------------------------------------------------------------- up


def up(options: StackOptions, say: Callable[[str], None] = print) -> list[ServiceStatus]:
    """Start every service of the stack that is not already running; return what runs.

    A service that fails to start stops the ones this call started, then raises StageError
    naming its log file.
    """
    (stack_dir() / "logs").mkdir(parents=True, exist_ok=True)
    started: list[ServiceRecord] = []
    try:
        server = running("prefect-server")
        wants_postgres = options.postgres or running("postgres") is not None
        if server is not None and wants_postgres and not server.extra["database"].startswith("postgresql"):
            raise ConfigError(f"the running Prefect server keeps its database in {server.extra['database']}; "
                              "run `tuneops down` first to start it on PostgreSQL")
        if server is None:
            database_url = postgres_database_url(options, started, say) if wants_postgres else None
            if database_url is None and postgres.initialised():
                say(f"note: the Prefect server uses SQLite; the PostgreSQL cluster in {postgres.cluster_root()} "
                    "is used with --postgres")
            server = _start_prefect_server(options, database_url)
            started.append(server)
            say(f"prefect server: started (pid {server.pid})")
        api_url = server.extra["api_url"]

        worker = running("prefect-worker")
        if worker is None:
            worker = _start_worker(options, api_url)
            started.append(worker)
            say(f"prefect worker: started (pid {worker.pid}, pool {WORK_POOL})")

        ui = running("evidently-ui")
        if ui is None:
            ui = _start_evidently_ui(options)
            started.append(ui)
            say(f"evidently ui: started (pid {ui.pid})")

        if options.serve and running("serving") is None:
            serving = _start_serving(options, api_url, say)
            started.append(serving)
            say(f"serving: started (pid {serving.pid})")
    except BaseException:
        for record in reversed(started):
            processes.stop(record)
            remove_record(record.name)
        raise
    return status()


def postgres_database_url(options: StackOptions, started: list[ServiceRecord], say: Callable[[str], None]) -> str:
    """The database URL for the Prefect server: the user's own server if the environment names
    one, else tuneops' cluster, initialised and started when it does not run yet (its record is
    then appended to ``started``, for ``up`` to stop if a later service fails)."""
    if os.environ.get(DATABASE_URL_ENV):
        say(f"postgres: using the server in {DATABASE_URL_ENV}")
        return os.environ[DATABASE_URL_ENV]
    cluster = postgres.prepare_cluster()
    record = running("postgres")
    if record is None:
        port = processes.free_port(options.postgres_port)
        record = processes.spawn(
            "postgres", cluster.server_command(port), processes.environment({}), url=f"{postgres.HOST}:{port}",
            health_url=None, extra={"port": str(port), "data_dir": str(cluster.data_dir)},
            account=cluster.account, leader_signal="SIGINT",  # the postmaster's fast shutdown
        )
        started.append(record)
        processes.wait_until(record, lambda: postgres.accepting(cluster, port), options.timeout_s,
                             "accept connections")
        say(f"postgres: started (pid {record.pid}, {record.url}, data in {cluster.data_dir})")
    port = int(record.extra["port"])
    postgres.ensure_database(cluster, port)
    return cluster.connection_url(port)


def _start_prefect_server(options: StackOptions, database_url: str | None) -> ServiceRecord:
    port = processes.free_port(options.prefect_port)
    url = f"http://{options.host}:{port}"
    settings = {"PREFECT_API_URL": f"{url}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if database_url:
        settings[DATABASE_URL_ENV] = database_url
    command = [
        sys.executable, "-m", "prefect", "server", "start",
        "--host", options.host, "--port", str(port), "--analytics-off",
    ]
    record = processes.spawn("prefect-server", command, processes.environment(settings), url=url,
                             health_url=f"{url}/api/health",
                             extra={"api_url": f"{url}/api", "database": describe_database(database_url)})
    processes.wait_until_healthy(record, options.timeout_s)
    return record


def _start_worker(options: StackOptions, api_url: str) -> ServiceRecord:
    env = processes.environment({"PREFECT_API_URL": api_url})
    command = [
        sys.executable, "-m", "prefect", "worker", "start",
        "--pool", WORK_POOL, "--type", "process", "--name", f"tuneops-{os.getpid()}",
    ]
    record = processes.spawn("prefect-worker", command, env, url=f"pool {WORK_POOL}", health_url=None,
                             extra={"api_url": api_url, "pool": WORK_POOL})
    processes.wait_for_worker(record, api_url, WORK_POOL, options.timeout_s)
    return record


def _start_evidently_ui(options: StackOptions) -> ServiceRecord:
    from tuneops.components.monitoring.monitor import ensure_project, workspace_dir

    workspace = workspace_dir()
    # The project and its dashboard exist before the UI starts, so its first page already shows them.
    project_id = ensure_project(workspace)
    port = processes.free_port(options.evidently_port)
    url = f"http://{options.host}:{port}"
    command = [
        sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(workspace),
        "--host", options.host, "--port", str(port),
    ]
    record = processes.spawn("evidently-ui", command, processes.environment({}), url=url,
                             health_url=f"{url}/api/version",
                             extra={"project_url": f"{url}/projects/{project_id}", "workspace": str(workspace)})
    processes.wait_until_healthy(record, options.timeout_s)
    return record


def _start_serving(options: StackOptions, api_url: str, say: Callable[[str], None]) -> ServiceRecord:
    from tuneops.components import registry

    # Started even without a champion: alive and not ready until a run promotes one, then serving
    # it without a restart. Healthy means alive here; /readyz says whether a model is served.
    champion = registry.champion_tag()
    if champion is None:
        say("serving: no champion yet; it answers /readyz 503 until a run promotes one, then serves it")
    port = processes.free_port(options.serving_port)
    url = f"http://{options.host}:{port}"
    command = [sys.executable, "-m", "tuneops.flows.cli", "serve", "--host", options.host, "--port", str(port)]
    if options.config_path:
        command += ["--config", str(Path(options.config_path).resolve())]
    for override in options.overrides:
        command += ["--set", override]
    record = processes.spawn("serving", command, processes.environment({"PREFECT_API_URL": api_url}), url=url,
                             health_url=f"{url}/readyz" if champion else f"{url}/healthz")
    processes.wait_until_healthy(record, options.timeout_s)
    return record


# ------------------------------------------------------------------------------- down / status


def down(say: Callable[[str], None] = print) -> list[str]:
    """Stop every process ``up`` started (last started first); return the names stopped."""
    stopped = []
    for name in reversed(SERVICES):
        record = read_record(name)
        if record is None:
            continue
        if processes.stop(record):
            stopped.append(name)
            say(f"{name}: stopped (pid {record.pid})")
        else:
            say(f"{name}: was not running")
        remove_record(name)
    return stopped


def status() -> list[ServiceStatus]:
    """Each service: running (and answering), starting, stopped, or not started."""
    import httpx

    report = []
    for name in SERVICES:
        record = read_record(name)
        if record is None:
            report.append(ServiceStatus(name, "not started"))
            continue
        if live_process(record) is None:
            report.append(ServiceStatus(name, "stopped", record.url, record.pid, f"log: {record.log}"))
            continue
        state, detail = "running", ""
        if record.health_url:
            try:
                answer = httpx.get(record.health_url, timeout=3.0)
                if answer.status_code >= 400:
                    state, detail = "starting", f"health check answered {answer.status_code}"
            except httpx.HTTPError:
                state, detail = "starting", "not answering yet"
        elif name == "postgres":
            if not postgres.accepting(postgres.home_cluster(), int(record.extra["port"])):
                state, detail = "starting", "not accepting connections yet"
            else:
                detail = f"data in {record.extra.get('data_dir')}"
        elif name == "prefect-worker":
            online = processes.worker_online(record.extra.get("api_url", ""), record.extra.get("pool", WORK_POOL))
            state, detail = ("running", f"polling {WORK_POOL}") if online else ("starting", "no heartbeat yet")
        if name == "prefect-server":
            detail = f"API {record.extra.get('api_url')}; database: {record.extra.get('database')}"
        if name == "evidently-ui":
            detail = f"project {record.extra.get('project_url')}"
        report.append(ServiceStatus(name, state, record.url, record.pid, detail))
    return report


def describe_database(url: str | None = None) -> str:
    """Which database the Prefect server uses (``url``, else the environment's), without its password."""
    url = url or os.environ.get(DATABASE_URL_ENV)
    if not url:
        prefect_home = os.environ.get("PREFECT_HOME", str(Path.home() / ".prefect"))
        return f"sqlite ({Path(prefect_home) / 'prefect.db'})"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.split('+')[0]} ({host}{port}{parts.path})"


# ------------------------------------------------------------------------------------ CLI


def run_up(options: StackOptions) -> int:
    """``tuneops up``: start the stack, print what runs where."""
    up(options)
    _print_status(status())
    server = read_record("prefect-server")
    if server is not None:
        print(f"\nexport PREFECT_API_URL={server.extra['api_url']}   # then: tuneops deploy")
    return 0


def run_down() -> int:
    """``tuneops down``: stop what ``tuneops up`` started."""
    if not down():
        print("nothing was running")
    return 0


def run_status(as_json: bool = False) -> int:
    """``tuneops status``: what runs, with URLs (``as_json``: one JSON list of the services);
    exit 1 when a started service has died."""
    report = status()
    if as_json:
        print(json.dumps([asdict(entry) for entry in report], indent=2))
    else:
        _print_status(report)
    return 1 if any(entry.state == "stopped" for entry in report) else 0


def _print_status(report: list[ServiceStatus]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("service", "state", "pid", "url", "detail")
    colours = {"running": "green", "starting": "yellow", "stopped": "red", "not started": "dim"}
    for entry in report:
        colour = colours.get(entry.state, "white")
        table.add_row(entry.name, f"[{colour}]{entry.state}[/]", str(entry.pid or ""), entry.url, entry.detail)
    Console(width=200).print(table)
