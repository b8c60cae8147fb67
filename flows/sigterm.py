"""Telling a run stopped by SIGTERM from a run that failed, in the flow's process."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

from prefect.exceptions import TerminationSignal


@contextlib.contextmanager
def sigterm_noted() -> Iterator[list[int]]:
    """Note a SIGTERM that arrives during the block, then hand it on to the handler before it
    (Prefect's, which raises TerminationSignal in the flow). Prefect loses that exception when the
    signal lands while it starts a task run (its crash handling fails with a ValueError of its
    own), so the note is what tells a stopped run from a failed one. Only the main thread can
    handle signals; elsewhere nothing is noted."""
    seen: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)

    def note(number: int, frame) -> None:
        if previous is signal.SIG_IGN:
            return
        seen.append(number)
        if callable(previous):
            previous(number, frame)
        raise TerminationSignal(number)

    try:
        signal.signal(signal.SIGTERM, note)
    except ValueError:  # not the main thread
        yield seen
        return
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)
