"""Files the pipeline writes: atomically (a reader sees the old file or the new one, never half of
one) and as plain JSON (numpy numbers, NaN, paths and datetimes made JSON-safe in one way); and the
one kind of lock file the writers share."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterator


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as ``atomic_write_bytes``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The temporary name is unique, so two writers never share a partial file; the rename is atomic
    on POSIX file systems, and the data is flushed to disk before it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def fsync_directory(path: str | Path) -> None:
    """Flush a directory's entries to disk: a rename into it is durable only once this returns."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def file_lock(path: str | Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block; yields
    True. With ``wait=False`` it yields False at once, holding nothing, when another holder has it.

    The kernel drops the lock when its holder ends, however it ends (``kill -9`` included), so a
    lock that can be taken proves that no live process holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 2) -> Path:
    """``plain_json(value)`` written atomically as JSON."""
    return atomic_write_text(path, json.dumps(plain_json(value), indent=indent) + "\n")


def plain_json(value: Any) -> Any:
    """A copy of ``value`` made of JSON types: numpy scalars and arrays become Python numbers and
    lists, NaN and infinities ``None`` (strict JSON has neither), paths and datetimes strings,
    anything else unknown its ``str``."""
    if isinstance(value, dict):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain_json(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return plain_json(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
