"""Starting and stopping the local stack's background processes, and waiting for them to answer.

Every process is started in its own session, so its process group is ours alone: ``stop`` signals
that group and any descendant that left it (flow runs the worker spawned in sessions of their
own), and only while the recorded process is still the one we started (pid *and* start time), so
a pid the system has since handed to another program is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone

from tuneops.components.errors import ConfigError, StageError
from tuneops.components.paths import SOURCE_ROOT, tuneops_home
from tuneops.components.stack.records import ServiceRecord, live_process, stack_dir, write_record

# Start-up on a busy 2-core machine: the Prefect server migrates its database and the Evidently
# UI imports its whole stack before listening; both take 10-20 s there, serving loads torch too.
START_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0


def spawn(name: str, command: list[str], env: dict[str, str], url: str, health_url: str | None,
          extra: dict[str, str] | None = None) -> ServiceRecord:
    """Start ``command`` in a session of its own, logging to ``stack/logs/<name>.log``, and record it."""
    import psutil

    log_path = stack_dir() / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
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
    write_record(record)
    return record


def environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment with tuneops' state directory pinned and ``extra`` on top."""
    env = dict(os.environ)
    env["TUNEOPS_HOME"] = str(tuneops_home())
    env.update(extra)
    return env


def wait_until_healthy(record: ServiceRecord, timeout_s: float) -> None:
    """Poll the record's health URL until it answers below 400; StageError naming the log otherwise."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if live_process(record) is None:
            raise StageError(f"{record.name} exited while starting; see {record.log}")
        try:
            if httpx.get(record.health_url, timeout=3.0).status_code < 400:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise StageError(f"{record.name} did not answer {record.health_url} within {timeout_s:.0f}s; see {record.log}")


def wait_for_worker(record: ServiceRecord, api_url: str, pool: str, timeout_s: float) -> None:
    """Wait until the worker of ``record`` has sent the server its first heartbeat."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if live_process(record) is None:
            raise StageError(f"prefect worker exited while starting; see {record.log}")
        if worker_online(api_url, pool):
            return
        time.sleep(1.0)
    raise StageError(f"prefect worker sent no heartbeat within {timeout_s:.0f}s; see {record.log}")


def worker_online(api_url: str, pool: str) -> bool:
    """Whether a worker of ``pool`` has sent a heartbeat to the server (state ONLINE).

    One plain HTTP call to the server's REST API, like the health checks: the stack supervises
    processes and needs no Prefect client for it.
    """
    import httpx

    try:
        answer = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={}, timeout=3.0)
    except httpx.HTTPError:
        return False
    if answer.status_code != 200:
        return False
    return any(worker.get("status") == "ONLINE" for worker in answer.json())


def free_port(requested: int) -> int:
    """``requested``, or a free port when it is 0; ConfigError when it is taken."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", requested))
        except OSError:
            raise ConfigError(f"port {requested} is in use; pick another with the matching --*-port option") from None
        return probe.getsockname()[1]


def stop(record: ServiceRecord) -> bool:
    """SIGTERM the process group we created and any descendant in another group (flow runs the
    worker started in their own sessions); SIGKILL what is left after the grace period.
    Returns False when nothing of it was running."""
    import psutil

    leader = live_process(record)
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
    while _our_group_alive(record, live_process(record)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _our_group_alive(record, live_process(record)):
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
