"""The local stack behind ``tuneops up`` / ``down`` / ``status``: a Prefect server, a process
work-pool worker, the serving endpoint and the Evidently UI, each a background process on this
machine.

Every process is started in its own session (so its process group is ours alone) and recorded in
``$TUNEOPS_HOME/stack/<service>.json`` with its pid and start time. ``down`` stops exactly those
processes (and the flow runs the worker spawned in sessions of their own): a recorded pid is only
signalled while the process with that pid still has the recorded start time, so a pid the system
has since handed to another program is never touched.

The Prefect server keeps its database in SQLite under ``$PREFECT_HOME`` unless
``PREFECT_API_DATABASE_CONNECTION_URL`` names another (PostgreSQL: ``postgresql+asyncpg://...``);
the variable is passed through to the server as Prefect reads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from tuneops.components.errors import ConfigError, StageError
from tuneops.components.paths import SOURCE_ROOT, tuneops_home

# The order services start in; ``down`` stops them in reverse.
SERVICES = ("prefect-server", "prefect-worker", "evidently-ui", "serving")
WORK_POOL = "tuneops-process"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_EVIDENTLY_PORT = 8000
DATABASE_URL_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"
# Start-up on a busy 2-core machine: the Prefect server migrates its database and the Evidently
# UI imports its whole stack before listening; both take 10-20 s there, serving loads torch too.
START_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0


@dataclass
class ServiceRecord:
    """What ``up`` wrote about one started process: enough to find, check and stop it."""

    name: str
    pid: int
    create_time: float
    command: list[str]
    url: str
    health_url: str | None
    log: str
    started_at: str
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ServiceStatus:
    name: str
    state: str  # running | starting | stopped | not started
    url: str = ""
    pid: int | None = None
    detail: str = ""


def stack_dir() -> Path:
    """Where the pid files and logs of the local stack live."""
    return tuneops_home() / "stack"


def prefect_api_url() -> str | None:
    """The Prefect API to talk to: ``PREFECT_API_URL`` if set, else the server ``tuneops up``
    started (when it is still running), else None (Prefect's ephemeral server)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    record = _read_record("prefect-server")
    if record is not None and _live_process(record) is not None:
        return record.extra.get("api_url")
    return None


# --------------------------------------------------------------------------------------- up


@dataclass
class StackOptions:
    """What ``tuneops up`` starts and where. Port 0 picks a free port."""

    host: str = "127.0.0.1"
    prefect_port: int = DEFAULT_PREFECT_PORT
    evidently_port: int = DEFAULT_EVIDENTLY_PORT
    serving_port: int | None = None  # None: serving.port of the config
    serve: bool = True
    config_path: str | None = None
    overrides: list[str] = field(default_factory=list)
    timeout_s: float = START_TIMEOUT_S


def up(options: StackOptions, say: Callable[[str], None] = print) -> list[ServiceStatus]:
    """Start every service of the stack that is not already running; return what runs.

    A service that fails to start stops the ones this call started, then raises StageError
    naming its log file.
    """
    from tuneops.components.config import load_config

    config = load_config(options.config_path, options.overrides)
    directory = stack_dir()
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    started: list[ServiceRecord] = []
    try:
        server = _running("prefect-server")
        if server is None:
            server = _start_prefect_server(options)
            started.append(server)
            say(f"prefect server: started (pid {server.pid})")
        api_url = server.extra["api_url"]

        worker = _running("prefect-worker")
        if worker is None:
            worker = _start_worker(options, api_url)
            started.append(worker)
            say(f"prefect worker: started (pid {worker.pid}, pool {WORK_POOL})")

        ui = _running("evidently-ui")
        if ui is None:
            ui = _start_evidently_ui(options)
            started.append(ui)
            say(f"evidently ui: started (pid {ui.pid})")

        if options.serve and _running("serving") is None:
            serving = _start_serving(options, config.serving.port, api_url, say)
            if serving is not None:
                started.append(serving)
                say(f"serving: started (pid {serving.pid})")
    except BaseException:
        for record in reversed(started):
            _stop(record)
            _record_path(record.name).unlink(missing_ok=True)
        raise
    return status()


def _start_prefect_server(options: StackOptions) -> ServiceRecord:
    port = _port(options.prefect_port)
    url = f"http://{options.host}:{port}"
    env = _environment({"PREFECT_API_URL": f"{url}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    command = [
        sys.executable, "-m", "prefect", "server", "start",
        "--host", options.host, "--port", str(port), "--analytics-off",
    ]
    record = _spawn("prefect-server", command, env, url=url, health_url=f"{url}/api/health",
                    extra={"api_url": f"{url}/api", "database": describe_database()})
    _wait_until_healthy(record, options.timeout_s)
    return record


def _start_worker(options: StackOptions, api_url: str) -> ServiceRecord:
    env = _environment({"PREFECT_API_URL": api_url})
    command = [
        sys.executable, "-m", "prefect", "worker", "start",
        "--pool", WORK_POOL, "--type", "process", "--name", f"tuneops-{os.getpid()}",
    ]
    record = _spawn("prefect-worker", command, env, url=f"pool {WORK_POOL}", health_url=None,
                    extra={"api_url": api_url, "pool": WORK_POOL})
    _wait_for_worker(record, api_url, options.timeout_s)
    return record


def _start_evidently_ui(options: StackOptions) -> ServiceRecord:
    from tuneops.components.monitoring.monitor import ensure_project, workspace_dir

    workspace = workspace_dir()
    # The project and its dashboard exist before the UI starts, so its first page already shows them.
    project_id = ensure_project(workspace)
    port = _port(options.evidently_port)
    url = f"http://{options.host}:{port}"
    command = [
        sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(workspace),
        "--host", options.host, "--port", str(port),
    ]
    record = _spawn("evidently-ui", command, _environment({}), url=url, health_url=f"{url}/api/version",
                    extra={"project_url": f"{url}/projects/{project_id}", "workspace": str(workspace)})
    _wait_until_healthy(record, options.timeout_s)
    return record


def _start_serving(options: StackOptions, config_port: int, api_url: str,
                   say: Callable[[str], None]) -> ServiceRecord | None:
    from tuneops.components import registry

    if registry.champion_tag() is None:
        say("serving: not started, there is no champion yet (`tuneops run` makes one; `tuneops up` again then)")
        return None
    port = _port(options.serving_port if options.serving_port is not None else config_port)
    url = f"http://{options.host}:{port}"
    command = [sys.executable, "-m", "tuneops.flows.cli", "serve", "--host", options.host, "--port", str(port)]
    if options.config_path:
        command += ["--config", str(Path(options.config_path).resolve())]
    for override in options.overrides:
        command += ["--set", override]
    record = _spawn("serving", command, _environment({"PREFECT_API_URL": api_url}), url=url,
                    health_url=f"{url}/readyz")
    _wait_until_healthy(record, options.timeout_s)
    return record


# ------------------------------------------------------------------------------- down / status


def down(say: Callable[[str], None] = print) -> list[str]:
    """Stop every process ``up`` started (last started first); return the names stopped."""
    stopped = []
    for name in reversed(SERVICES):
        record = _read_record(name)
        if record is None:
            continue
        if _stop(record):
            stopped.append(name)
            say(f"{name}: stopped (pid {record.pid})")
        else:
            say(f"{name}: was not running")
        _record_path(name).unlink(missing_ok=True)
    return stopped


def status() -> list[ServiceStatus]:
    """Each service: running (and answering), starting, stopped, or not started."""
    import httpx

    report = []
    for name in SERVICES:
        record = _read_record(name)
        if record is None:
            report.append(ServiceStatus(name, "not started"))
            continue
        process = _live_process(record)
        if process is None:
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
        elif name == "prefect-worker":
            online = _worker_online(record.extra.get("api_url", ""), record.extra.get("pool", WORK_POOL))
            state, detail = ("running", f"polling {WORK_POOL}") if online else ("starting", "no heartbeat yet")
        if name == "prefect-server":
            detail = f"API {record.extra.get('api_url')}; database: {record.extra.get('database')}"
        if name == "evidently-ui":
            detail = f"project {record.extra.get('project_url')}"
        report.append(ServiceStatus(name, state, record.url, record.pid, detail))
    return report


def describe_database() -> str:
    """Which database the Prefect server uses, without its password."""
    url = os.environ.get(DATABASE_URL_ENV)
    if not url:
        prefect_home = os.environ.get("PREFECT_HOME", str(Path.home() / ".prefect"))
        return f"sqlite ({Path(prefect_home) / 'prefect.db'})"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.split('+')[0]} ({host}{port}{parts.path})"


# ------------------------------------------------------------------------------- processes


def _spawn(name: str, command: list[str], env: dict[str, str], url: str, health_url: str | None,
           extra: dict[str, str] | None = None) -> ServiceRecord:
    import psutil

    log_path = stack_dir() / "logs" / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n--- {datetime.now(timezone.utc).isoformat()} {' '.join(command)}\n".encode())
        log.flush()
        # A session of its own: the process group is ours alone, and a Ctrl-C at the terminal
        # that ran `tuneops up` does not reach the background stack.
        process = subprocess.Popen(
            command, cwd=SOURCE_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    record = ServiceRecord(
        name=name, pid=process.pid, create_time=psutil.Process(process.pid).create_time(), command=command,
        url=url, health_url=health_url, log=str(log_path),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), extra=dict(extra or {}),
    )
    _write_record(record)
    return record


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["TUNEOPS_HOME"] = str(tuneops_home())
    env.update(extra)
    return env


def _wait_until_healthy(record: ServiceRecord, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _live_process(record) is None:
            raise StageError(f"{record.name} exited while starting; see {record.log}")
        try:
            if httpx.get(record.health_url, timeout=3.0).status_code < 400:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise StageError(f"{record.name} did not answer {record.health_url} within {timeout_s:.0f}s; see {record.log}")


def _wait_for_worker(record: ServiceRecord, api_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _live_process(record) is None:
            raise StageError(f"prefect worker exited while starting; see {record.log}")
        if _worker_online(api_url, WORK_POOL):
            return
        time.sleep(1.0)
    raise StageError(f"prefect worker sent no heartbeat within {timeout_s:.0f}s; see {record.log}")


def _worker_online(api_url: str, pool: str) -> bool:
    """Whether a worker of ``pool`` has sent a heartbeat to the server (state ONLINE)."""
    import httpx

    try:
        answer = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={}, timeout=3.0)
    except httpx.HTTPError:
        return False
    if answer.status_code != 200:
        return False
    return any(worker.get("status") == "ONLINE" for worker in answer.json())


def _port(requested: int) -> int:
    """``requested``, or a free port when it is 0; ConfigError when it is taken."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", requested))
        except OSError:
            raise ConfigError(f"port {requested} is in use; pick another with the matching --*-port option") from None
        return probe.getsockname()[1]


def _live_process(record: ServiceRecord):
    """The recorded process if it still runs, identified by pid *and* start time, else None."""
    import psutil

    try:
        process = psutil.Process(record.pid)
        if abs(process.create_time() - record.create_time) > 0.5 or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def _running(name: str) -> ServiceRecord | None:
    """The record of ``name`` if its process still runs; a stale record is removed."""
    record = _read_record(name)
    if record is None:
        return None
    if _live_process(record) is None:
        _record_path(name).unlink(missing_ok=True)
        return None
    return record


def _stop(record: ServiceRecord) -> bool:
    """SIGTERM the process group we created and any descendant in another group (flow runs the
    worker started in their own sessions); SIGKILL what is left after the grace period."""
    import psutil

    leader = _live_process(record)
    family = []
    if leader is not None:
        try:
            family = [leader, *leader.children(recursive=True)]
        except psutil.Error:
            family = [leader]
    group_alive = _our_group_alive(record, leader)
    if not family and not group_alive:
        return False
    if group_alive:
        _signal_group(record.pid, signal.SIGTERM)
    for process in family:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    while _our_group_alive(record, _live_process(record)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _our_group_alive(record, _live_process(record)):
        _signal_group(record.pid, signal.SIGKILL)
    return True


def _our_group_alive(record: ServiceRecord, leader) -> bool:
    """Whether the process group we created (its id is the leader's pid) still has members.

    While the leader lives, the group is ours. Once it has exited, Linux does not hand its pid to
    a new process while the group still has members, so members found then are ours too; a live
    process *with* that pid but another start time means the group is gone and the pid reused.
    """
    import psutil

    if leader is None and psutil.pid_exists(record.pid):
        return False
    try:
        os.killpg(record.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _record_path(name: str) -> Path:
    return stack_dir() / f"{name}.json"


def _write_record(record: ServiceRecord) -> None:
    path = _record_path(record.name)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record.to_json(), indent=2))
    os.replace(partial, path)


def _read_record(name: str) -> ServiceRecord | None:
    path = _record_path(name)
    try:
        return ServiceRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        raise StageError(f"stack: {path} is damaged; stop its process by hand and delete the file") from None


# ------------------------------------------------------------------------------------ CLI


def run_up(config_path: str | None, overrides: list[str], prefect_port: int, evidently_port: int,
           serving_port: int | None, serve: bool) -> int:
    """``tuneops up``: start the stack, print what runs where."""
    options = StackOptions(
        prefect_port=prefect_port, evidently_port=evidently_port, serving_port=serving_port, serve=serve,
        config_path=config_path, overrides=list(overrides),
    )
    up(options)
    _print_status(status())
    server = _read_record("prefect-server")
    if server is not None:
        print(f"\nexport PREFECT_API_URL={server.extra['api_url']}   # then: tuneops deploy")
    return 0


def run_down() -> int:
    """``tuneops down``: stop what ``tuneops up`` started."""
    if not down():
        print("nothing was running")
    return 0


def run_status() -> int:
    """``tuneops status``: what runs, with URLs; exit 1 when a started service has died."""
    report = status()
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
