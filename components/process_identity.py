"""Telling whether a recorded process still runs: by pid *and* start time.

A pid alone is not an identity: once a process has exited, the system may hand its pid to any
other program. Every record tuneops keeps of a process it may later signal or judge (the local
stack's services, a run record's writer, the orphan guard's children) stores the process's start
time with its pid, and is matched here.
"""

from __future__ import annotations

# psutil reports the start time from the kernel's boot-relative clock in ticks; readings of one
# process differ by far less than this, two processes that share a pid by far more.
START_TIME_TOLERANCE_S = 0.5


def start_time(pid: int) -> float:
    """The start time of the live process ``pid`` (psutil.NoSuchProcess when there is none)."""
    import psutil

    return psutil.Process(pid).create_time()


def recorded_process(pid: int, started: float):
    """The ``psutil.Process`` with ``pid`` if it is the one that started at ``started`` and has
    not exited (a zombie has), else None."""
    import psutil

    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > START_TIME_TOLERANCE_S or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None
