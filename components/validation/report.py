"""The validation report: one outcome per check and split, the verdict, and its messages.

The messages are built here and only here: the one-line ``blocking_message`` of a blocked run,
the CLI's summary lines and the run record's warning lines all group a check's outcomes of the
different splits into one entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tuneops.components.validation.checks import CLASSES
from tuneops.components.validation.display import shorten


class ExpectationOutcome(BaseModel):
    """The result of one check on one split (or on the derived per-class table of train)."""

    name: str = Field(description="the check, as named in validation.severity")
    title: str
    split: str = Field(description="train / validation / test, or train_classes for per-class checks")
    column: str | None
    severity: str = Field(description="block or warn")
    success: bool
    failing_rows: int = Field(0, description="rows (classes, for per-class checks) that break the rule")
    rate: float | None = Field(None, description="failing_rows as a share of the split's rows")
    examples: list[str] = Field(default_factory=list, description="a few failing values, shortened")
    message: str = ""
    expectation_type: str = Field(description="the Great Expectations expectation that decided it")
    observed: Any = None

    def count_text(self) -> str:
        """``train 14 rows (2.1%)``: where and how much, for messages."""
        split = "train" if self.split == CLASSES else self.split
        if not self.failing_rows:
            return split
        one, many = ("class", "classes") if self.split == CLASSES else ("row", "rows")
        share = f" ({self.rate:.1%})" if self.rate is not None and self.split != CLASSES else ""
        return f"{split} {self.failing_rows:,} {one if self.failing_rows == 1 else many}{share}"


class ValidationReport(BaseModel):
    """What validation found: every outcome, whether a blocking one failed, and where the GX
    data docs and the machine-readable result were written."""

    passed: bool = Field(description="no blocking check failed")
    results: list[ExpectationOutcome]
    on_failure: str = "block"
    rows: dict[str, int] = Field(default_factory=dict)
    labels: list[str] | None = Field(None, description="the label set enforced")
    label_source: str = Field("", description="declared / previous run / inferred from train")
    sampled: bool = Field(False, description="always False: every row of every split is checked")
    seconds: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    output_dir: Path
    html_path: Path | None = Field(None, description="GX data docs index.html (only with validation.data_docs)")
    summary_html_path: Path | None = None
    json_path: Path
    gx_results: list[Path] = Field(default_factory=list, description="GX validation result JSON files")
    great_expectations_version: str = ""

    @property
    def blocking_failures(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity == "block"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity == "warn"]

    @property
    def summary_line(self) -> str:
        """One line: the blocking message when blocked, else a pass line with the warning count."""
        if not self.passed:
            return blocking_message(self)
        met = sum(r.success for r in self.results)
        warned = len(grouped(self.warnings))
        tail = f", {warned} warning{'s' if warned != 1 else ''}" if warned else ""
        return f"validation: passed ({met} of {len(self.results)} expectations met{tail})"

    def summary_lines(self) -> list[str]:
        """A short human summary: the verdict, each failed check (once, with its count per
        split, its rule and a few examples), and where the data docs and result are."""
        sizes = " / ".join(f"{name} {count:,}" for name, count in self.rows.items())
        labels = ", ".join(self.labels) if self.labels else "none"
        verdict = "PASSED" if self.passed else "BLOCKED"
        if not self.passed and self.on_failure == "warn":
            verdict = "FAILED (on_failure=warn, so the run goes on)"
        blocking, warned = grouped(self.blocking_failures), grouped(self.warnings)
        lines = [
            f"validation {verdict}: {len(blocking)} blocking, {len(warned)} warning; "
            f"{sum(r.success for r in self.results)} of {len(self.results)} expectations met",
            f"rows: {sizes}; labels ({self.label_source}): {shorten(labels, 100)}",
        ]
        for outcomes in blocking + warned:
            first = outcomes[0]
            tag = "BLOCK" if first.severity == "block" else "WARN "
            counts = ", ".join(o.count_text() for o in outcomes)
            line = f"  {tag} {first.name} [{first.column or '-'}: {counts}] {first.message}"
            if first.examples:
                line += "; e.g. " + ", ".join(first.examples)
            lines.append(line)
        lines.extend(f"  note: {note}" for note in self.notes)
        if self.html_path:
            lines.append(f"data docs: {self.html_path}")
        lines.append(f"result: {self.json_path}")
        return lines

    def warnings_lines(self) -> list[str]:
        """One line per failed warn-severity check (all its splits together), for the run record."""
        lines = []
        for outcomes in grouped(self.warnings):
            first = outcomes[0]
            counts = ", ".join(o.count_text() for o in outcomes)
            example = f"; e.g. {', '.join(first.examples)}" if first.examples else ""
            lines.append(f"validation warning: {first.name} [{first.column or '-'}: {counts}] {first.message}{example}")
        return lines

    def to_json(self) -> str:
        """The whole report as JSON (what is written to ``json_path``)."""
        return self.model_dump_json(indent=2)


def blocking_message(report: ValidationReport) -> str:
    """The one-line error for a blocked run, e.g. ``validation: 2 blocking checks failed:
    label values in set (label: test 14 rows (2.6%); e.g. 'pos' x12, 'nan' x2); ...``."""
    groups = grouped(report.blocking_failures)
    if not groups:
        return "validation: no blocking check failed"
    parts = []
    for outcomes in groups[:3]:
        first = outcomes[0]
        where = ", ".join(o.count_text() for o in outcomes)
        where = f"{first.column}: {where}" if first.column else where
        example = f"; e.g. {', '.join(first.examples)}" if first.examples else ""
        parts.append(f"{first.title} ({where}{example})")
    more = f"; and {len(groups) - 3} more" if len(groups) > 3 else ""
    noun = "check" if len(groups) == 1 else "checks"
    return f"validation: {len(groups)} blocking {noun} failed: {'; '.join(parts)}{more} (details: {report.json_path})"


def grouped(outcomes: list[ExpectationOutcome]) -> list[list[ExpectationOutcome]]:
    """Outcomes of the same check and column (one per split) together, in report order."""
    groups: dict[tuple[str, str | None], list[ExpectationOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.name, outcome.column), []).append(outcome)
    return list(groups.values())
