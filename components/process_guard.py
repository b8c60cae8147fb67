"""Child processes that end with tuneops, even when tuneops is killed with SIGKILL.

A ``kill -9`` (or the OOM killer) gives a process no chance to stop its children: Prefect's temporary
API server and the training processes of a local data-parallel run would live on, holding memory,
CPU and ports. On Linux the kernel can signal a child when its parent dies (``PR_SET_PDEATHSIG``):
children we start ourselves ask for that in ``die_with_parent``; a child started by a library, which
takes no such hook, gets an ``OrphanGuard``: a tiny process that asks for the signal on the library
child's behalf and passes it on, to the child it was given only (pid *and* start time: a child that
exited early may have left its pid to another program by the time the guard acts). Elsewhere both
are no-ops, and the children behave as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from tuneops.components.process_identity import START_TIME_TOLERANCE_S, start_time

_PR_SET_PDEATHSIG = 1

# Run by the guard process, with the parent's pid and one ``pid@start-time`` per child. SIGTERM
# arrives blocked (see _arm_guard) so it stays pending until sigwait takes it, however early the
# parent dies; a parent gone before the guard could even ask for the signal shows as a changed parent
# process id. A start time within START_TIME_TOLERANCE_S is the same process (process_identity;
# the script stays a few lines of its own, so the guard starts without importing tuneops).
_GUARD_SCRIPT = """
import os, signal, sys
parent = int(sys.argv[1])
children = [(int(pid), float(start)) for pid, start in (arg.split("@") for arg in sys.argv[2:])]
if os.getppid() == parent:
    signal.sigwait({signal.SIGTERM})
import psutil
for pid, start in children:
    try:
        if abs(psutil.Process(pid).create_time() - start) <= TOLERANCE:
            os.kill(pid, signal.SIGTERM)
    except (psutil.Error, ProcessLookupError):
        pass
"""


def supported() -> bool:
    """Whether the kernel can tell a child that its parent died (Linux)."""
    return sys.platform.startswith("linux")


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when the thread that started it
    ends, which for a child started and waited for in one thread means when its parent dies."""
    if supported():
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _identities(pids: list[int]) -> list[str]:
    """``pid@start-time`` of each process in ``pids`` that still runs (one already gone needs no guard)."""
    import psutil

    identities = []
    for pid in pids:
        try:
            identities.append(f"{pid}@{start_time(pid)!r}")
        except psutil.Error:
            continue
    return identities


def _arm_guard() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    die_with_parent()


class OrphanGuard:
    """Sends SIGTERM to ``pids`` if this process dies before ``release()`` is called.

    Start it in the thread that lives as long as the process (the main thread): the kernel ties the
    signal to the thread that started the guard.
    """

    def __init__(self, pids: list[int]) -> None:
        self._process: subprocess.Popen | None = None
        children = _identities(pids) if supported() else []
        if children:
            self._process = subprocess.Popen(
                [sys.executable, "-c", f"TOLERANCE = {START_TIME_TOLERANCE_S!r}\n{_GUARD_SCRIPT}", str(os.getpid()),
                 *children],
                stdin=subprocess.DEVNULL, preexec_fn=_arm_guard,
            )

    def release(self) -> None:
        """Stand the guard down: the caller stops the processes itself. SIGKILL, as SIGTERM would
        make the guard do its job."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> "OrphanGuard":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
