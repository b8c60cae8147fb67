"""Children end with their parent, even when the parent is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tuneops.components import process_guard

pytestmark = pytest.mark.skipif(not process_guard.supported(), reason="PR_SET_PDEATHSIG is Linux only")

# A parent that starts a long-sleeping child either way, prints the child's pid, then waits to be killed.
PARENT = """
import subprocess, sys, time
from tuneops.components.process_guard import OrphanGuard, die_with_parent
how = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         preexec_fn=die_with_parent if how == "preexec" else None)
guard = OrphanGuard([child.pid]) if how in ("guard", "released") else None
if how == "released":
    guard.release()
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A dead child of a dead parent is reaped by init; until then it is a zombie.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


# A parent whose guard knows its child by another start time: what the guard sees when the child
# exited early and the system handed its pid to another program.
STALE_PARENT = """
import os, subprocess, sys, time
from tuneops.components.process_guard import _GUARD_SCRIPT, _arm_guard
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
guard = subprocess.Popen([sys.executable, "-c", _GUARD_SCRIPT, str(os.getpid()), f"{child.pid}@0.0"],
                         preexec_fn=_arm_guard)
print(child.pid, flush=True)
time.sleep(600)
"""


def kill_parent_and_watch_child(how: str, patience_s: float = 15.0, script: str = PARENT) -> tuple[int, bool]:
    parent = subprocess.Popen([sys.executable, "-c", script, how], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # the guard is up and waiting
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + patience_s
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    return child, alive(child)


@pytest.mark.parametrize("how", ["preexec", "guard"])
def test_a_child_ends_when_its_parent_is_killed(how):
    child, still_alive = kill_parent_and_watch_child(how)
    assert not still_alive, f"child {child} outlived its SIGKILLed parent"


def test_a_released_guard_leaves_the_child_alone():
    child, still_alive = kill_parent_and_watch_child("released", patience_s=3.0)
    try:
        assert still_alive, "the released guard still stopped the child"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_guard_leaves_alone_a_pid_that_is_no_longer_its_child():
    child, still_alive = kill_parent_and_watch_child("stale", patience_s=3.0, script=STALE_PARENT)
    try:
        assert still_alive, "the guard signalled a process by its pid alone"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
