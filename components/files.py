"""Files the pipeline writes: atomically (a reader sees the old file or the new one, never half of
one) and as plain JSON (numpy numbers, NaN, paths and datetimes made JSON-safe in one way)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any


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
