"""Starting and stopping the local stack's background processes, and waiting for them to answer.

Every process is started in its own session, so its process group is ours alone, and with a marker
in its environment (``records.MARKER_ENV``) that its descendants inherit. ``stop`` signals only what
it can identify as ours: the recorded process (pid, start time, program, marker) with its process
group and descendants while it lives; once it has exited, the processes that carry its marker, and
their group only while one of them is still in it. A stale record whose pid or group id the system
has since handed to another program never leads to a signal to that program.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone
from typing import Callable

from tuneops.components.errors import ConfigError, StageError
from tuneops.components.paths import SOURCE_ROOT, tuneops_home
from tuneops.components.stack.records import (
    MARKER_ENV, ServiceRecord, carries_marker, live_process, new_marker, stack_dir, write_record,
)

# Start-up on a busy 2-core machine: the Prefect server migrates its database and the Evidently
# UI imports its whole stack before listening; both take 10-20 s there, serving loads torch too.
START_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0


def spawn(name: str, command: list[str], env: dict[str, str], url: str, health_url: str | None,
          extra: dict[str, str] | None = None, account: pwd.struct_passwd | None = None,
          leader_signal: str = "") -> ServiceRecord:
    """Start ``command`` in a session of its own, logging to ``stack/logs/<name>.log``, and record it.

    ``account``: the user to run it as (root starting PostgreSQL, which refuses to run as root).
    ``leader_signal``: see ``ServiceRecord.leader_signal``.
    """
    import psutil

    marker = new_marker(name)
    env = {**env, MARKER_ENV: marker}
    log_path = stack_dir() / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- {datetime.now(timezone.utc).isoformat()} {' '.join(command)}\n".encode())
        log.flush()
        # A session of its own: the process group is ours alone, and a Ctrl-C at the terminal
        # that ran `tuneops up` does not reach the background stack.
        process = subprocess.Popen(
            command, cwd=SOURCE_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, **as_account(account),
        )
    record = ServiceRecord(
        name=name, pid=process.pid, create_time=psutil.Process(process.pid).create_time(), command=command,
        url=url, health_url=health_url, log=str(log_path),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), extra=dict(extra or {}),
        marker=marker, leader_signal=leader_signal,
    )
    write_record(record)
    return record


def as_account(account: pwd.struct_passwd | None) -> dict:
    """``subprocess`` arguments that run a child as ``account`` (none: as this process's user)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment with tuneops' state directory pinned and ``extra`` on top."""
    env = dict(os.environ)
    env["TUNEOPS_HOME"] = str(tuneops_home())
    env.update(extra)
    return env


def wait_until(record: ServiceRecord, ready: Callable[[], bool], timeout_s: float, waiting_for: str,
               every_s: float = 0.5) -> None:
    """Call ``ready`` until it is true; StageError naming the log when the process exits first or
    ``timeout_s`` passes (``waiting_for`` says what it did not do in time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if live_process(record) is None:
            raise StageError(f"{record.name} exited while starting; see {record.log}")
        if ready():
            return
        time.sleep(every_s)
    raise StageError(f"{record.name} did not {waiting_for} within {timeout_s:.0f}s; see {record.log}")


def wait_until_healthy(record: ServiceRecord, timeout_s: float) -> None:
    """Wait until the record's health URL answers below 400."""
    wait_until(record, lambda: answers(record.health_url), timeout_s, f"answer {record.health_url}")


def answers(url: str) -> bool:
    """Whether ``url`` answers a GET below 400 within a few seconds."""
    import httpx

    try:
        return httpx.get(url, timeout=3.0).status_code < 400
    except httpx.HTTPError:
        return False


def wait_for_worker(record: ServiceRecord, api_url: str, pool: str, timeout_s: float) -> None:
    """Wait until the worker of ``record`` has sent the server its first heartbeat."""
    wait_until(record, lambda: worker_online(api_url, pool), timeout_s, "send a heartbeat", every_s=1.0)


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
    """SIGTERM what of ``record`` still runs and is ours (see the module docstring): its process
    group and every marked or descendant process, also those in other groups (flow runs the worker
    started in sessions of their own); SIGKILL what is left after the grace period.
    Returns False when nothing of it was running."""
    import psutil

    family = _family(record)
    group = _our_group(record, family)
    if not family and not group:
        return False
    if record.leader_signal and _stop_leader_alone(record):
        family = _family(record)
        group = _our_group(record, family)
        if not family and not group:
            return True
    if group:
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
    while _our_group(record, _family(record)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _our_group(record, _family(record)):
        _signal_group(record.pid, signal.SIGKILL)
    return True


def _stop_leader_alone(record: ServiceRecord) -> bool:
    """Send the recorded process alone its ``leader_signal`` and wait for it to exit; False when it
    no longer ran. A server that shuts down its own children (PostgreSQL's postmaster) does so in
    order, where a signal to each of them would not."""
    import psutil

    leader = live_process(record)
    if leader is None:
        return False
    try:
        leader.send_signal(getattr(signal, record.leader_signal))
        leader.wait(timeout=STOP_GRACE_S)
    except psutil.TimeoutExpired:
        pass
    except psutil.Error:
        return False
    return True


def _family(record: ServiceRecord) -> list:
    """The live processes of ``record`` we can vouch for: the recorded process with its descendants,
    and every process carrying the record's marker (a descendant whose parent has exited)."""
    import psutil

    family = {}
    leader = live_process(record)
    if leader is not None:
        family[leader.pid] = leader
        try:
            family.update((child.pid, child) for child in leader.children(recursive=True))
        except psutil.Error:
            pass
    if record.marker:
        for process in psutil.process_iter():
            if process.pid not in family and process.pid != os.getpid() and carries_marker(process, record):
                family[process.pid] = process
    return [process for process in family.values() if _running(process)]


def _our_group(record: ServiceRecord, family: list) -> bool:
    """Whether the process group ``spawn`` created (its id is the recorded pid) still exists and is
    ours: its leader is the recorded process, or one of its members carries the record's marker.

    A group's id is not handed out again while any member lives, so a marked member proves the
    group is the one we created. Without such proof (a stale record whose pid became the id of a
    stranger's group, or an old record without a marker) the group is left alone.
    """
    for process in family:
        try:
            if os.getpgid(process.pid) == record.pid:
                return True
        except OSError:
            continue
    return False


def _running(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
