"""How failing values are shown in messages: short, quoted, with the offending part visible."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# Failing values shown per check and split (messages stay one line; the GX docs have more).
EXAMPLES = 3


def show(value: Any, limit: int = 40) -> str:
    """A value as a short quoted string: long texts are cut and their length given."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "null"
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit])[:-1] + f"...' ({len(text):,} chars)"
    return repr(text)


def show_match(value: Any, pattern: re.Pattern[str], width: int = 16) -> str:
    """Show the part of a long text around the first match, so the offending bytes are visible."""
    text = str(value)
    found = pattern.search(text)
    if found is None or len(text) <= 40:
        return show(text)
    start = max(0, found.start() - width)
    return repr(("..." if start else "") + text[start : found.end() + width] + "...")


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
