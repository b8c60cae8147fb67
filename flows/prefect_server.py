"""The Prefect API a CLI command's flow runs against."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Point Prefect at a server for the duration of one command and yield its API URL.

    ``PREFECT_API_URL`` or the server ``tuneops up`` started is used when there is one, so the run
    shows in that server's UI. Otherwise this starts Prefect's own temporary local server (127.0.0.1,
    the one Prefect would start on first use) and stops it on the way out, exception or Ctrl-C
    included. An ``OrphanGuard`` stops it when tuneops is killed outright (``kill -9`` before
    ``tuneops run --resume``), which would otherwise leave it running with nobody to stop it.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tuneops.components.process_guard import OrphanGuard
    from tuneops.components.stack.records import prefect_api_url

    api_url = prefect_api_url()
    if api_url:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url
        return
    server = SubprocessASGIServer()
    server.start()
    try:
        with OrphanGuard([server.server_process.pid]), temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                _send_queued_logs_and_events()
    finally:
        server.stop()


def _send_queued_logs_and_events() -> None:
    """Let Prefect's background workers deliver what they still hold while the server is up: at exit
    they would retry against a stopped server for a minute and print connection errors."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for result in (APILogWorker.drain_all(), EventsWorker.drain_all()):
            if inspect.isawaitable(result):
                await result

    run_coro_as_sync(drain())
