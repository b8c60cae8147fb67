"""Which part of the prediction log a monitor run looks at, and the state that remembers it.

A run's window goes from where the last completed run stopped to now; the window end is kept in
``$TUNEOPS_HOME/monitoring/state.json`` once a run has used it. Too little traffic leaves the window
open: the next run sees those rows again, with more.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuneops.components.errors import StageError
from tuneops.components.files import atomic_write_json
from tuneops.components.paths import tuneops_home

STATE_FILE = "state.json"


def monitoring_dir() -> Path:
    """Monitor state and per-run reports: ``$TUNEOPS_HOME/monitoring``."""
    return tuneops_home() / "monitoring"


def new_monitor_id(now: datetime | None = None) -> str:
    """Sortable and unique, like training run ids."""
    moment = now or datetime.now(timezone.utc)
    return moment.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass
class MonitorWindow:
    """The part of the prediction log one run looks at: ``[start, end)``; no start = from the beginning."""

    start: datetime | None
    end: datetime


def read_state(directory: Path | None = None) -> dict[str, Any]:
    """The saved state (``window_end``, ``last_run_id``, ``last_run_at``); empty before the first run.
    StageError when the file is damaged (not JSON, or a ``window_end`` that is not an ISO time)."""
    path = Path(directory or monitoring_dir()) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise StageError(f"monitoring state {path} is not valid JSON; delete it to start from the whole log") from None
    if not isinstance(state, dict):
        raise StageError(f"monitoring state {path} is not a JSON object; delete it to start from the whole log")
    window_end = state.get("window_end")
    if window_end is not None and _iso_time(window_end) is None:
        raise StageError(f"monitoring state {path}: window_end {json.dumps(window_end)[:40]} is not an ISO 8601 "
                         "time; delete the file to start from the whole log")
    return state


def _iso_time(value: Any) -> datetime | None:
    """``value`` as a datetime when it is an ISO 8601 string, else None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def next_window(now: datetime | None = None, directory: Path | None = None) -> MonitorWindow:
    """From where the last completed run stopped, to ``now``."""
    state = read_state(directory)
    start = _iso_time(state["window_end"]) if state.get("window_end") else None
    return MonitorWindow(start=start, end=now or datetime.now(timezone.utc))


def save_state(window: MonitorWindow, run_id: str, directory: Path | None = None) -> None:
    """Record that ``run_id`` consumed the log up to ``window.end`` (written atomically)."""
    state = {
        "window_end": window.end.isoformat(),
        "last_run_id": run_id,
        "last_run_at": datetime.now(timezone.utc).isoformat(),
    }
    atomic_write_json(Path(directory or monitoring_dir()) / STATE_FILE, state)
