"""Turning each GX result into an ``ExpectationOutcome``: success, failing rows, their share,
a few examples and the message. Failing rows are explained only for failed checks."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tuneops.components.files import plain_json
from tuneops.components.validation.checks import CLASSES
from tuneops.components.validation.display import EXAMPLES, show
from tuneops.components.validation.plan import Planned
from tuneops.components.validation.report import ExpectationOutcome


def outcome(planned: Planned, raw: Any, frames: dict[str, pd.DataFrame], classes: pd.DataFrame) -> ExpectationOutcome:
    """The outcome of one planned check from its GX result (``raw``: None when GX returned
    none, ``{"exception": message}`` when GX failed on the whole asset)."""
    check = planned.check
    base: dict[str, Any] = dict(
        name=check.name,
        title=check.title,
        split=planned.split,
        column=check.column,
        severity=planned.severity,
        expectation_type=planned.expectation.expectation_type,
    )
    if raw is None or isinstance(raw, dict):
        reason = raw["exception"] if isinstance(raw, dict) else "Great Expectations returned no result"
        return ExpectationOutcome(**base, success=False, message=reason)
    info = dict(raw.result or {})
    exception = raw.exception_info or {}
    if isinstance(exception, dict) and exception.get("raised_exception"):
        reason = str(exception.get("exception_message") or "unknown error").strip().splitlines()[0]
        return ExpectationOutcome(**base, success=False, message=f"could not be evaluated: {reason}")
    observed = plain_json(info.get("observed_value"))
    frame = classes if planned.split == CLASSES else frames[planned.split]
    # Map expectations count failing rows themselves; with ``mostly`` a passing one may still
    # have some (e.g. 3 leaked rows under the 2% limit), which the report keeps.
    failing = int(info.get("unexpected_count") or 0)
    if raw.success:
        rate = failing / len(frame) if failing and len(frame) else None
        return ExpectationOutcome(
            **base, success=True, failing_rows=failing, rate=rate, observed=observed,
            message="ok" if not failing else "within the allowed rate",
        )
    examples = [show(v) for v in (info.get("partial_unexpected_list") or [])[:EXAMPLES]]
    if check.explain is not None:
        counted, examples = check.explain(frame)
        failing = failing or counted
    rate = failing / len(frame) if len(frame) and planned.split != CLASSES else None
    return ExpectationOutcome(
        **base, success=False, failing_rows=failing, rate=rate, examples=examples,
        message=check.describe(info), observed=observed,
    )
