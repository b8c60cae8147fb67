"""How much of the training rows to hold out for early stopping (``data.validation_fraction``).

Early stopping and the choice of the best epoch are only as good as the validation split they
are judged on: on 60 rows one example moves macro-F1 by several points, and a class with five
validation examples decides nothing. Unset, the share is therefore the usual 10%, raised until
the split holds ``MIN_VALIDATION_ROWS`` rows and ``MIN_VALIDATION_PER_CLASS`` examples of the
rarest class, and never above ``MAX_SHARE`` (the model still needs most rows to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

DEFAULT_SHARE = 0.1
MAX_SHARE = 0.25
MIN_VALIDATION_ROWS = 200
MIN_VALIDATION_PER_CLASS = 30


@dataclass(frozen=True)
class ValidationShare:
    """The share of the pool held out, whether the config set it, and why."""

    share: float
    source: str  # "config" or "auto"
    reason: str

    def to_json(self) -> dict:
        return {"setting": "data.validation_fraction", "value": round(self.share, 4), "source": self.source,
                "reason": self.reason}


def validation_share(labels: pd.Series, configured: float | None) -> ValidationShare:
    """The share of the rows behind ``labels`` (the training file, or all rows when the test split is
    cut from them too) to hold out for validation.

    ``configured`` is the share the config asks for (a given value always wins).
    """
    if configured is not None:
        return ValidationShare(configured, "config", "set in the config")
    rows = len(labels)
    counts = labels.astype(str).value_counts()
    if rows == 0 or counts.empty:
        return ValidationShare(DEFAULT_SHARE, "auto", "no rows to size the split on: the default 10%")
    rarest_label, rarest = str(counts.index[-1]), int(counts.iloc[-1])
    wanted = max(DEFAULT_SHARE, MIN_VALIDATION_ROWS / rows, MIN_VALIDATION_PER_CLASS / rarest)
    share = min(wanted, MAX_SHARE)
    held_rows, held_rarest = round(rows * share), round(rarest * share)
    if share == DEFAULT_SHARE:
        reason = (f"10% of {rows:,} rows: {held_rows:,} rows, {held_rarest} of the rarest class "
                  f"{rarest_label!r}, enough to judge early stopping")
    elif share < MAX_SHARE:
        reason = (f"{share:.0%} of {rows:,} rows, so that early stopping is judged on at least "
                  f"{MIN_VALIDATION_ROWS} rows and {MIN_VALIDATION_PER_CLASS} examples of the rarest class "
                  f"{rarest_label!r} ({held_rows:,} rows, {held_rarest} of it)")
    else:
        reason = (f"capped at {MAX_SHARE:.0%} of {rows:,} rows ({held_rows:,} rows, {held_rarest} of the rarest "
                  f"class {rarest_label!r}): the data is too small for {MIN_VALIDATION_ROWS} validation rows and "
                  f"{MIN_VALIDATION_PER_CLASS} per class without starving training; early-stopping decisions "
                  "are noisy on this little data")
    return ValidationShare(share, "auto", reason)
