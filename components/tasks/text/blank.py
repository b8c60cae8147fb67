"""What counts as a blank text, for validation (``text_not_blank``), the task's input check and
serving alike. A module of its own, free of the validation imports, because the served bento
carries the text task's request schema but not the validation package."""

from __future__ import annotations

import re

# Zero-width space, non-joiner, joiner, word joiner and the byte-order mark: format characters
# that show nothing, and that Python's \s (and str.strip) do not count as whitespace. A text of
# only these (a copy-paste artefact) is as empty to a model as a text of spaces. Written as regex
# escapes so the GX suite and data docs show them, rather than holding invisible characters.
BLANK_REGEX = r"\A[\s\u200B\u200C\u200D\u2060\uFEFF]*\Z"
_BLANK = re.compile(BLANK_REGEX)


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty or only whitespace and zero-width characters: what validation's
    ``text_not_blank`` refuses, and what serving refuses as an empty text."""
    return _BLANK.match(text) is not None
