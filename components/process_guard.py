"""Child processes that end with tuneops, even when tuneops is killed with SIGKILL.

A ``kill -9`` (or the OOM killer) gives a process no chance to stop its children: Prefect's temporary
API server and the training processes of a local data-parallel run would live on, holding memory,
CPU and ports. On Linux the kernel can signal a child when its parent dies (``PR_SET_PDEATHSIG``):
children we start ourselves ask for that in ``die_with_parent``; a child started by a library, which
takes no such hook, gets an ``OrphanGuard``: a tiny process that asks for the signal on the library
child's behalf and passes it on. Elsewhere both are no-ops, and the children behave as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1

# Run by the guard process. SIGTERM arrives blocked (see _arm_guard) so it stays pending until
# sigwait takes it, however early the parent dies; a parent gone before the guard could even ask
# for the signal shows as a changed parent process id.
_GUARD_SCRIPT = """
import os, signal, sys
parent, pids = int(sys.argv[1]), [int(pid) for pid in sys.argv[2:]]
if os.getppid() == parent:
    signal.sigwait({signal.SIGTERM})
for pid in pids:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
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
        if supported() and pids:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _GUARD_SCRIPT, str(os.getpid()), *map(str, pids)],
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
