"""Errors that tuneops reports to a user as one line, with the exit code that goes with each."""

from __future__ import annotations


class TuneopsError(Exception):
    """A problem the user can act on. ``str(error)`` is the one-line message shown to them."""

    exit_code = 1


class ConfigError(TuneopsError):
    """The config file, a ``--set`` override or a command-line argument is wrong (exit 2)."""

    exit_code = 2


class DataError(TuneopsError):
    """The data cannot be read or does not have the shape the config declares (exit 1)."""


class ValidationBlocked(TuneopsError):
    """A blocking data expectation failed: the run stops before any model work (exit 1)."""


class StageError(TuneopsError):
    """A pipeline stage failed for a reason the user can fix (exit 1)."""


def one_line(error: BaseException, limit: int | None = None) -> str:
    """``error``'s message as one line (its type's name when it has none), cut to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    if limit is not None and len(text) > limit:
        return text[: limit - 3] + "..."
    return text
