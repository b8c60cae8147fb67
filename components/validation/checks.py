"""What one validation check is, and what a task contributes about its input column.

A ``Check`` is one named rule (``label_in_set``, ``text_length``, ...) as Great Expectations will
run it on each split it applies to: the GX expectation, its arguments, the message shown when it
fails and how to find a few failing rows. The generic checks (labels, classes, groups, splits,
duplicates, leakage) are planned in ``tuneops.components.validation.plan``; the checks of the
input values are the task's (``Task.input_checks``), so validation never names a modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

# Count the failing rows of a split and show a few of them: run only when a check failed.
Explain = Callable[[pd.DataFrame], tuple[int, list[str]]]


@dataclass(frozen=True)
class Check:
    """One check on one column, the same for every split it runs on."""

    #: the check's key in ``ValidationConfig.severity`` (user-facing: never rename one)
    name: str
    #: a short title for messages ("text length within bounds")
    title: str
    #: the column shown to the user; the expectation may look at a derived column instead
    column: str | None
    #: a ``great_expectations.expectations`` class, e.g. ``ExpectColumnValuesToNotBeNull``
    expectation: type
    #: its arguments (``column=...``, ``regex=...``, ``mostly=...``)
    arguments: dict[str, Any] = field(default_factory=dict)
    #: the failure message: fixed, or built from the GX result (``observed_value``, ...)
    message: str | Callable[[dict[str, Any]], str] = ""
    explain: Explain | None = None

    def describe(self, result: dict[str, Any]) -> str:
        """The message for a failed result (counts are reported per split, not here)."""
        if callable(self.message):
            return self.message(result)
        return self.message or self.title


@dataclass(frozen=True)
class InputChecks:
    """What a task validates about its input column (``Task.input_checks``).

    ``prepare`` turns the raw input column of one split into the columns GX sees: the input
    column itself (values that can be hashed and compared, for duplicates and leakage) plus any
    derived columns its checks read (each name starting with ``_``). ``schema`` checks are
    reported with the column checks, before the label checks; ``content`` checks after them.
    ``preview``, when set, turns the prepared train frame into an HTML section of the validation
    page (images: a contact sheet of a few pictures per class).
    """

    prepare: Callable[[pd.Series], dict[str, Any]]
    schema: list[Check]
    content: list[Check]
    preview: Callable[[pd.DataFrame], str] | None = None


# The derived per-class table of train, validated as its own GX data asset next to the splits.
CLASSES = "train_classes"
