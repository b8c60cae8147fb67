"""The champion pointer file, ``$TUNEOPS_HOME/champion.json``: ``{"tag", "promoted_at", "history"}``.

``write`` replaces it atomically (``files.atomic_write_json``, then the directory is flushed), so
a reader sees the old pointer or the new one, never a torn one; writers hold ``lock`` around their
read-modify-write. ``read`` checks the shape as well as the JSON: only a hand edit can break
either, and each is a one-line StageError naming the file rather than a TypeError later on.
``registry`` decides what goes into the pointer; this module only keeps the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneops.components.errors import StageError
from tuneops.components.files import atomic_write_json, file_lock, fsync_directory
from tuneops.components.paths import tuneops_home

POINTER_FILE = "champion.json"


def pointer_path() -> Path:
    """The champion pointer file (the service watches it to pick up a new champion)."""
    return tuneops_home() / POINTER_FILE


def read() -> dict[str, Any]:
    """The pointer's content (``{}`` when no model was ever promoted), its shape checked."""
    path = pointer_path()
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        # Cannot happen through ``write`` (the file is replaced atomically); a hand edit can.
        raise StageError(f"champion pointer {path} is not valid JSON; fix or delete it") from None
    problem = _problem(state)
    if problem:
        # Also only a hand edit; checked here so that no caller fails later on a TypeError.
        raise StageError(f"champion pointer {path} is malformed: {problem}; fix or delete it")
    return state


def _problem(state: Any) -> str | None:
    """What is wrong with the shape of the pointer file's content, or None."""
    if not isinstance(state, dict):
        return f"expected a JSON object, found {type(state).__name__}"
    if state.get("tag") is not None and not _is_tag(state["tag"]):
        return "'tag' is not a model tag"
    if not isinstance(state.get("promoted_at"), (str, type(None))):
        return "'promoted_at' is not a string"
    history = state.get("history", [])
    if not isinstance(history, list):
        return "'history' is not a list"
    for index, entry in enumerate(history):
        if not isinstance(entry, dict) or not _is_tag(entry.get("tag")):
            return f"history[{index}] is not an object with a model tag"
        if not isinstance(entry.get("promoted_at"), (str, type(None))):
            return f"history[{index}].promoted_at is not a string"
    return None


def _is_tag(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def write(state: dict[str, Any]) -> None:
    """Replace the pointer with ``state``, atomically and durably."""
    path = atomic_write_json(pointer_path(), state)
    # The rename itself is durable only once the directory entry is on disk.
    fsync_directory(path.parent)


def lock():
    """Serialises the pointer's writers; readers need no lock (the file is replaced atomically)."""
    return file_lock(tuneops_home() / (POINTER_FILE + ".lock"))
