"""Data validation: a Great Expectations suite built from the config and the data, run on every
split before any compute is spent on models.

Each named *check* (``label_in_set``, ``leakage``, ...) becomes one GX expectation per split it
applies to. GX evaluates everything; the few measures GX has no built-in for (label kind, rows
shared with train, per-class counts, imbalance) are computed here with vectorised pandas as
derived columns or a derived table, and GX then validates those, so every check appears in
the GX data docs. Severities (block / warn / off) come from ``ValidationConfig.severity``.

``validate_data`` never raises on bad content: it returns a report with ``passed=False``.
"""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype
from pydantic import BaseModel, Field

from tuneops.components.config import ValidationConfig
from tuneops.components.data.loading import LABEL, SPLITS, TEXT, DatasetSplits
from tuneops.components.errors import StageError

# Derived columns added to each split's frame before GX sees it (prefixed so they never clash
# with a user's group column names).
TEXT_TYPE = "_text_type"
LABEL_KIND = "_label_kind"
IN_TRAIN = "_text_in_train"
# The derived per-class table of train, validated as its own GX data asset.
CLASSES = "train_classes"

# Cells that mean "missing" in exported files (pandas, R, Excel) but arrive as strings because
# data.py keeps raw values. A label declared in the config is never treated as missing.
MISSING_LABEL_TOKENS = frozenset({"", "nan", "null", "na", "n/a", "<na>", "#n/a"})

# &amp; &#39; &#x27; ... left in text that was scraped from HTML and never unescaped.
HTML_ENTITY_REGEX = r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});"
# C0 controls except tab, newline and carriage return (which real text contains), plus DEL.
CONTROL_REGEX = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"
# UTF-8 read as cp1252/Latin-1: a lead byte shown as Ã or Â followed by a continuation byte
# shown as a Latin-1 symbol or a cp1252 punctuation mark ("Ã©" for é, "Â " for a no-break
# space), "â€" (the start of every UTF-8 curly quote and dash), C1 controls (cp1252 bytes read
# as Latin-1), and U+FFFD (bytes already replaced by a lenient decoder). Written as one
# character class followed by lookbehinds so the regex engine can skip ahead on that class:
# the plain alternation is 3x slower on 1M rows.
_CONTINUATION = (
    r"[\u0080-\u00BF\u0152\u0153\u0160\u0161\u0178\u017D\u017E\u0192\u02C6\u02DC"
    r"\u2013\u2014\u2018-\u201E\u2020-\u2022\u2026\u2030\u2039\u203A\u20AC\u2122]"
)
MOJIBAKE_REGEX = (
    r"[\u00C2\u00C3\u00E2\u0080-\u009F\uFFFD]"
    r"(?:(?<=[\u00C2\u00C3])" + _CONTINUATION + r"|(?<=\u00E2)\u20AC|(?<=[\u0080-\u009F\uFFFD]))"
)
BLANK_REGEX = r"\A\s*\Z"

_INTEGER = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][+-]?\d+|inf(?:inity)?)", re.IGNORECASE)

# Short titles used in messages, in the order checks are reported (schema first, then labels,
# then text, then cross-split measures), so the first failure listed is the most basic one.
CHECK_TITLES: dict[str, str] = {
    "split_not_empty": "split has rows",
    "columns_present": "column present",
    "text_is_string": "text values are strings",
    "text_not_null": "text not null",
    "label_not_null": "label not null",
    "label_not_float": "labels are not floats",
    "label_single_type": "labels of one type",
    "class_count": "number of classes",
    "label_in_set": "label values in set",
    "label_set_unchanged": "label set same as previous run",
    "min_examples_per_class": "examples per class",
    "text_not_blank": "text not blank",
    "text_length": "text length within bounds",
    "text_control_characters": "no control characters",
    "text_mojibake": "no mojibake",
    "text_html_entities": "no undecoded HTML entities",
    "duplicates": "duplicate rate",
    "leakage": "rows shared with train",
    "class_imbalance": "class imbalance",
    "group_not_mostly_null": "group column filled",
}
_EXAMPLES = 3
_log = logging.getLogger(__name__)


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
    html_path: Path | None = Field(None, description="GX data docs index.html")
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
        warned = len(_grouped(self.warnings))
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
        blocking, warned = _grouped(self.blocking_failures), _grouped(self.warnings)
        lines = [
            f"validation {verdict}: {len(blocking)} blocking, {len(warned)} warning; "
            f"{sum(r.success for r in self.results)} of {len(self.results)} expectations met",
            f"rows: {sizes}; labels ({self.label_source}): {_shorten(labels, 100)}",
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
        for outcomes in _grouped(self.warnings):
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
    groups = _grouped(report.blocking_failures)
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


def _grouped(outcomes: list[ExpectationOutcome]) -> list[list[ExpectationOutcome]]:
    """Outcomes of the same check and column (one per split) together, in report order."""
    groups: dict[tuple[str, str | None], list[ExpectationOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.name, outcome.column), []).append(outcome)
    return list(groups.values())


def validate_data(
    splits: DatasetSplits,
    config: ValidationConfig,
    output_dir: Path,
    previous_labels: list[str] | None = None,
) -> ValidationReport:
    """Validate every split with a Great Expectations suite built from ``config`` and the data.

    Writes the GX project (suites, results, data docs) under ``output_dir/gx``, a summary page
    ``output_dir/summary.html`` and the report as ``output_dir/validation.json``.
    ``previous_labels`` (the label set of the last run, if any) is enforced when the config
    declares none. Bad content gives ``passed=False``, never an exception.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    notes: list[str] = []

    labels, label_source = _expected_labels(splits, previous_labels, config.max_classes)
    missing_tokens = MISSING_LABEL_TOKENS - {label.strip().lower() for label in (labels or [])}
    frames = _prepare_splits(splits, missing_tokens)
    classes = _class_table(frames["train"], labels if label_source != "inferred from train" else None)
    if labels is None and label_source == "too many to infer":
        notes.append("label set not inferred: train holds more distinct labels than validation.max_classes")
    seconds["prepare"] = time.perf_counter() - started

    tick = time.perf_counter()
    plan = _plan(frames, classes, splits.group_columns, config, labels, label_source, previous_labels)
    seconds["plan"] = time.perf_counter() - tick  # mostly the first import of great_expectations
    raw_results, gx_version, gx_files, docs_index = _run_great_expectations(
        plan, frames, classes, output_dir, notes, seconds
    )

    tick = time.perf_counter()
    results = [_outcome(planned, raw_results.get(key), frames, classes) for key, planned in enumerate(plan)]
    order = list(CHECK_TITLES)
    results.sort(key=lambda r: (order.index(r.name), SPLITS.index(r.split) if r.split in SPLITS else 0))
    seconds["explain"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started

    report = ValidationReport(
        passed=not any(not r.success and r.severity == "block" for r in results),
        results=results,
        on_failure=config.on_failure,
        rows={name: len(frames[name]) for name in SPLITS},
        labels=labels,
        label_source=label_source,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        notes=notes,
        output_dir=output_dir,
        html_path=docs_index,
        summary_html_path=output_dir / "summary.html",
        json_path=output_dir / "validation.json",
        gx_results=gx_files,
        great_expectations_version=gx_version,
    )
    report.summary_html_path.write_text(_summary_html(report), encoding="utf-8")
    report.json_path.write_text(report.to_json(), encoding="utf-8")
    return report


# --- preparing the frames GX sees -------------------------------------------------------------


def _expected_labels(
    splits: DatasetSplits, previous_labels: list[str] | None, max_classes: int
) -> tuple[list[str] | None, str]:
    """The label set to enforce and where it came from: declared, else the previous run's,
    else the distinct train labels (left unset when there are too many to be classes)."""
    if splits.declared_labels:
        return [str(label) for label in splits.declared_labels], "declared"
    if previous_labels:
        return [str(label) for label in previous_labels], "previous run"
    if LABEL not in splits.train.columns:
        return None, "no label column"
    strings, _ = _label_strings(splits.train[LABEL], MISSING_LABEL_TOKENS)
    distinct = list(strings.categories)  # exactly the non-missing label strings seen in train
    if len(distinct) > max_classes:
        return None, "too many to infer"
    return sorted(str(value) for value in distinct), "inferred from train"


def _prepare_splits(splits: DatasetSplits, missing_tokens: frozenset[str]) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    train_texts: pd.Series | None = None
    for name in SPLITS:
        frame = _prepare(splits.split(name), splits.group_columns, missing_tokens)
        if name == "train":
            train_texts = frame[TEXT].dropna() if TEXT in frame else None
        elif TEXT in frame:
            # Leakage: held-out rows whose exact text is also a train row (hash join, O(n)).
            shared = frame[TEXT].isin(train_texts) if train_texts is not None else False
            frame[IN_TRAIN] = np.asarray(shared & frame[TEXT].notna(), dtype=bool)
        frames[name] = frame
    return frames


def _prepare(frame: pd.DataFrame, groups: list[str], missing_tokens: frozenset[str]) -> pd.DataFrame:
    """The columns GX validates: text (strings), label as the string the model will see (null
    when missing), the group columns, and derived columns for types.

    Low-cardinality columns are categoricals: GX filters nulls and copies the frame for every
    metric, which on object columns of 1M rows costs ~10 ms each time; on categoricals it is
    a scan of small integer codes.
    """
    data: dict[str, Any] = {}
    if TEXT in frame.columns:
        data[TEXT], data[TEXT_TYPE] = _text_values(frame[TEXT])
    if LABEL in frame.columns:
        data[LABEL], data[LABEL_KIND] = _label_strings(frame[LABEL], missing_tokens)
    for group in groups:
        if group in frame.columns and group not in data:
            try:
                data[group] = pd.Categorical(frame[group])
            except TypeError:  # unhashable cells: validated as they are
                data[group] = frame[group].to_numpy()
    return pd.DataFrame(data, index=pd.RangeIndex(len(frame)))


def _categorical(row_codes: np.ndarray, values: np.ndarray) -> pd.Categorical:
    """Rows given as positions into ``values`` (-1 = missing; ``values`` may hold None and
    repeats) as a Categorical of the distinct non-null values."""
    value_codes, categories = pd.factorize(values, use_na_sentinel=True)
    codes = np.append(value_codes, -1)[row_codes]  # position -1 lands on the appended -1
    return pd.Categorical.from_codes(codes, categories=categories)


def _text_values(raw: pd.Series) -> tuple[np.ndarray, pd.Categorical]:
    """Text as Python strings (non-strings turned into their str form so that every later
    check can hash and measure them) and each row's original type name (null when null)."""
    values = raw.to_numpy(dtype=object, na_value=None)
    null = pd.isna(values)
    if infer_dtype(values, skipna=True) in ("string", "empty"):
        values = np.where(null, None, values) if null.any() else values
        return values, pd.Categorical.from_codes(np.where(null, -1, 0), categories=["str"])
    names = np.array([type(v).__name__ for v in values], dtype=object)
    converted = np.array([None if is_null else v if isinstance(v, str) else str(v) for v, is_null in zip(values, null)], dtype=object)
    return converted, _categorical(np.where(null, -1, np.arange(len(values))), names)


def _label_strings(raw: pd.Series, missing_tokens: frozenset[str]) -> tuple[pd.Categorical, pd.Categorical]:
    """Labels as the strings the model trains on (null when missing) and each row's kind:
    text, integer, float, boolean or other. Work is done once per distinct value, not per row."""
    values = raw.to_numpy(dtype=object, na_value=None)
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except TypeError:  # unhashable cells (lists or dicts from JSON) are compared by their text
        values = np.array([v if v is None or isinstance(v, (str, int, float, bool)) else repr(v) for v in values], dtype=object)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    strings = np.empty(len(uniques), dtype=object)
    kinds = np.empty(len(uniques), dtype=object)
    for position, value in enumerate(uniques):
        text = value if isinstance(value, str) else str(value)
        missing = text.strip().lower() in missing_tokens
        strings[position] = None if missing else text
        kinds[position] = None if missing else _kind(value)
    return _categorical(codes, strings), _categorical(codes, kinds)


def _kind(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        stripped = value.strip()
        if _INTEGER.fullmatch(stripped):
            return "integer"
        if _FLOAT.fullmatch(stripped):
            return "float"
        return "text"
    return "other"


def _class_table(train: pd.DataFrame, expected: list[str] | None) -> pd.DataFrame:
    """One row per class of train: its count and how many times smaller it is than the
    largest class. Declared/previous classes absent from train appear with count 0."""
    counts = train[LABEL].value_counts(dropna=True) if LABEL in train else pd.Series(dtype="int64")
    counts = counts[counts > 0]  # a categorical lists unused categories with count 0
    counts.index = counts.index.astype(object)
    if expected is not None:
        counts = counts.reindex(expected, fill_value=0)
    table = pd.DataFrame({"label": counts.index.astype(str), "count": counts.to_numpy(dtype="int64")})
    largest = table["count"].max() if len(table) else 0
    # A class with no examples has no ratio; the per-class minimum reports it instead.
    table["largest_over_count"] = np.where(table["count"] > 0, largest / table["count"].clip(lower=1), np.nan)
    return table


# --- the suite -------------------------------------------------------------------------------


@dataclass
class _Planned:
    name: str
    split: str  # the GX data asset: a split, or CLASSES
    column: str | None
    severity: str
    expectation: Any  # a great_expectations.expectations.Expectation
    explain: Callable[[pd.DataFrame], tuple[int, list[str]]] | None = None
    describe: Callable[[dict[str, Any]], str] | None = None


def _plan(
    frames: dict[str, pd.DataFrame],
    classes: pd.DataFrame,
    groups: list[str],
    config: ValidationConfig,
    labels: list[str] | None,
    label_source: str,
    previous_labels: list[str] | None,
) -> list[_Planned]:
    """Every expectation to run, with its check name, severity, message and how to find
    examples when it fails. Messages carry no counts: outcomes hold those per split."""
    import great_expectations.expectations as gxe

    plan: list[_Planned] = []

    def add(
        name: str,
        split: str,
        where: str | None,
        expectation_class: Any,
        message: str | Callable[[dict[str, Any]], str],
        explain: Callable[[pd.DataFrame], tuple[int, list[str]]] | None = None,
        **kwargs: Any,
    ) -> None:
        # ``where`` is the column shown to the user; the GX column may be a derived one.
        severity = config.severity.get(name, "block")
        if severity == "off":
            return
        expectation = expectation_class(
            **kwargs,
            severity="critical" if severity == "block" else "warning",
            meta={"tuneops_check": name, "tuneops_key": len(plan)},
            notes=f"tuneops check `{name}` ({CHECK_TITLES[name]}), severity: {severity}",
        )
        describe = message if callable(message) else (lambda _result, text=message: text)
        plan.append(_Planned(name, split, where, severity, expectation, explain, describe))

    encoding_mostly = 1.0 - config.max_encoding_issue_rate
    encoding_limit = f"at most {config.max_encoding_issue_rate:.1%} of a split allowed"
    label_set = _shorten(", ".join(labels or []), 80)
    for split in SPLITS:
        frame = frames[split]
        add("split_not_empty", split, None, gxe.ExpectTableRowCountToBeBetween, "the split has no rows", min_value=1)
        for column in (TEXT, LABEL, *groups):
            add("columns_present", split, column, gxe.ExpectColumnToExist, f"column '{column}' is missing", column=column)
        if frame.empty:
            continue  # nothing else can be measured; split_not_empty reports it
        if TEXT in frame:
            add(
                "text_is_string", split, TEXT, gxe.ExpectColumnValuesToBeInSet, "text cells that are not strings",
                _explain_values(TEXT_TYPE, original=TEXT), column=TEXT_TYPE, value_set=["str"],
            )
            add("text_not_null", split, TEXT, gxe.ExpectColumnValuesToNotBeNull, "rows with no text", _explain_nulls(TEXT), column=TEXT)
            add(
                "text_not_blank", split, TEXT, gxe.ExpectColumnValuesToNotMatchRegex, "rows whose text is only whitespace",
                _explain_regex(TEXT, BLANK_REGEX), column=TEXT, regex=BLANK_REGEX,
            )
            add(
                "text_length", split, TEXT, gxe.ExpectColumnValueLengthsToBeBetween,
                f"texts shorter than {config.min_text_chars:,} or longer than {config.max_text_chars:,} characters"
                " (a huge cell often means an unbalanced quote in the file)",
                _explain_lengths(config.min_text_chars, config.max_text_chars),
                column=TEXT, min_value=config.min_text_chars, max_value=config.max_text_chars,
            )
            for name, regex, what in (
                ("text_control_characters", CONTROL_REGEX, "texts with control characters"),
                ("text_mojibake", MOJIBAKE_REGEX, "texts with mojibake (UTF-8 decoded as cp1252/Latin-1, or U+FFFD)"),
                ("text_html_entities", HTML_ENTITY_REGEX, "texts with undecoded HTML entities"),
            ):
                add(
                    name, split, TEXT, gxe.ExpectColumnValuesToNotMatchRegex, f"{what}; {encoding_limit}",
                    _explain_regex(TEXT, regex), column=TEXT, regex=regex, mostly=encoding_mostly,
                )
            add(
                "duplicates", split, TEXT, gxe.ExpectColumnProportionOfUniqueValuesToBeBetween,
                f"rows repeating an earlier text of the split; at most {config.max_duplicate_rate:.1%} allowed",
                _explain_duplicates, column=TEXT, min_value=max(0.0, 1.0 - config.max_duplicate_rate),
            )
            if IN_TRAIN in frame:
                add(
                    "leakage", split, TEXT, gxe.ExpectColumnValuesToBeInSet,
                    f"rows whose text is also in train; at most {config.max_leakage_rate:.1%} allowed",
                    _explain_leakage, column=IN_TRAIN, value_set=[False], mostly=1.0 - config.max_leakage_rate,
                )
        if LABEL in frame:
            add(
                "label_not_null", split, LABEL, gxe.ExpectColumnValuesToNotBeNull,
                "rows with no label (empty, NaN or a missing-value marker)", _explain_nulls(LABEL), column=LABEL,
            )
            add(
                "label_not_float", split, LABEL, gxe.ExpectColumnValuesToNotBeInSet,
                "label column holds floats: classes must be names or integer ids "
                "(a regression target, or integer ids written out with a NaN?)",
                _explain_kind("float"), column=LABEL_KIND, value_set=["float"],
            )
            add(
                "label_single_type", split, LABEL, gxe.ExpectColumnUniqueValueCountToBeBetween,
                "label column mixes types (names, integers, floats): one of them is probably a mistake",
                _explain_mixed_kinds, column=LABEL_KIND, max_value=1,
            )
            # An inferred set comes from train itself, so it is enforced on the other splits only.
            if labels is not None and (split != "train" or label_source != "inferred from train"):
                add(
                    "label_in_set", split, LABEL, gxe.ExpectColumnValuesToBeInSet,
                    f"labels outside the set ({label_source}): {label_set}",
                    _explain_not_in_set(labels), column=LABEL, value_set=list(labels),
                )
            if split == "train":
                add(
                    "class_count", split, LABEL, gxe.ExpectColumnUniqueValueCountToBeBetween,
                    lambda r: (
                        f"train has {r.get('observed_value')} distinct label(s); a classifier needs "
                        f"2 to {config.max_classes:,} (validation.max_classes)"
                    ),
                    _explain_class_count, column=LABEL, min_value=2, max_value=config.max_classes,
                )
                if previous_labels:
                    add(
                        "label_set_unchanged", split, LABEL, gxe.ExpectColumnDistinctValuesToEqualSet,
                        "train labels differ from the previous run's: the new model would not be comparable",
                        _explain_label_change(previous_labels), column=LABEL,
                        value_set=[str(label) for label in previous_labels],
                    )
        for group in groups:
            if group in frame:
                add(
                    "group_not_mostly_null", split, group, gxe.ExpectColumnValuesToNotBeNull,
                    f"rows with no value in group column '{group}'; at most {config.max_group_null_rate:.0%} allowed",
                    _explain_nulls(group), column=group, mostly=1.0 - config.max_group_null_rate,
                )

    if len(classes) and len(classes) <= config.max_classes:
        add(
            "min_examples_per_class", CLASSES, LABEL, gxe.ExpectColumnValuesToBeBetween,
            f"classes with fewer than {config.min_examples_per_class} train examples",
            _explain_small_classes(config.min_examples_per_class), column="count",
            min_value=config.min_examples_per_class,
        )
        if (classes["count"] > 0).sum() >= 2:
            add(
                "class_imbalance", CLASSES, LABEL, gxe.ExpectColumnValuesToBeBetween,
                f"classes more than {config.max_class_imbalance:g}x smaller than the largest in train "
                "(consider training.class_weights=balanced)",
                _explain_imbalance(config.max_class_imbalance), column="largest_over_count",
                max_value=config.max_class_imbalance,
            )
    return plan


# --- running GX --------------------------------------------------------------------------------


@contextmanager
def _quiet_gx() -> Iterator[None]:
    """GX logs routine notices (store creation, data docs paths) at INFO/WARNING; tuneops
    prints its own summary, so hold GX to errors while it runs."""
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_great_expectations(
    plan: list[_Planned],
    frames: dict[str, pd.DataFrame],
    classes: pd.DataFrame,
    output_dir: Path,
    notes: list[str],
    seconds: dict[str, float],
) -> tuple[dict[int, Any], str, list[Path], Path | None]:
    """Run one GX suite per data asset in a file context under ``output_dir/gx``; return the
    raw results keyed by plan position, the GX version, result files and the data docs index."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = output_dir / "gx"
    marker = root / ".tuneops-validation"
    if root.exists():
        if not marker.exists():
            raise StageError(f"validation: {root} exists and was not written by tuneops; use an empty output directory")
        # A repeated validation into the same directory replaces the previous GX project.
        shutil.rmtree(root)
    results: dict[int, Any] = {}
    docs_index: Path | None = None
    tick = time.perf_counter()
    with _quiet_gx():
        context = gx.get_context(mode="file", project_root_dir=str(output_dir))
        marker.write_text("written by tuneops validation; replaced on the next run into this directory\n")
        # tqdm bars from metric resolution would interleave with the CLI's own output.
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = context.data_sources.add_pandas("tuneops")
        run_id = RunIdentifier(run_name="tuneops-validation")
        seconds["gx_context"] = time.perf_counter() - tick
        tick = time.perf_counter()
        for asset_name in (*SPLITS, CLASSES):
            planned = [(key, p) for key, p in enumerate(plan) if p.split == asset_name]
            if not planned:
                continue
            frame = classes if asset_name == CLASSES else frames[asset_name]
            asset = source.add_dataframe_asset(asset_name)
            batch = asset.add_batch_definition_whole_dataframe("all rows")
            suite = context.suites.add(
                gx.ExpectationSuite(name=f"tuneops_{asset_name}", expectations=[p.expectation for _, p in planned])
            )
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"tuneops_{asset_name}", data=batch, suite=suite)
            )
            try:
                outcome = definition.run(
                    batch_parameters={"dataframe": frame},
                    # SUMMARY gives counts and a few unexpected values without listing every index.
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES},
                    run_id=run_id,
                )
            except Exception as error:  # a GX failure on odd data must not become a traceback
                message = f"Great Expectations could not validate {asset_name}: {type(error).__name__}: {error}"
                _log.warning(message)
                for key, _ in planned:
                    results[key] = {"exception": message}
            else:
                for result in outcome.results:
                    key = (result.expectation_config.meta or {}).get("tuneops_key")
                    if key is not None:
                        results[int(key)] = result
            seconds[f"gx_{asset_name}"] = time.perf_counter() - tick
            tick = time.perf_counter()
        try:
            context.build_data_docs()
            docs_index = root / "uncommitted" / "data_docs" / "local_site" / "index.html"
            if not docs_index.exists():
                docs_index = None
        except Exception as error:  # docs are a report; failing to render them must not hide the verdict
            notes.append(f"GX data docs could not be built: {type(error).__name__}: {error}")
        seconds["gx_data_docs"] = time.perf_counter() - tick
    result_files = sorted((root / "uncommitted" / "validations").rglob("*.json"))
    return results, gx.__version__, result_files, docs_index


def _outcome(planned: _Planned, raw: Any, frames: dict[str, pd.DataFrame], classes: pd.DataFrame) -> ExpectationOutcome:
    """Turn one GX result into an outcome with counts, examples and a message."""
    base: dict[str, Any] = dict(
        name=planned.name,
        title=CHECK_TITLES[planned.name],
        split=planned.split,
        column=planned.column,
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
    observed = info.get("observed_value")
    if isinstance(observed, np.generic):
        observed = observed.item()
    frame = classes if planned.split == CLASSES else frames[planned.split]
    # Map expectations count failing rows themselves; with ``mostly`` a passing one may still
    # have some (e.g. 3 leaked rows under the 2% limit), which the report keeps.
    failing = int(info.get("unexpected_count") or 0)
    if raw.success:
        rate = failing / len(frame) if failing and len(frame) else None
        return ExpectationOutcome(
            **base, success=True, failing_rows=failing, rate=rate, observed=_jsonable(observed),
            message="ok" if not failing else "within the allowed rate",
        )
    examples = [_show(v) for v in (info.get("partial_unexpected_list") or [])[:_EXAMPLES]]
    if planned.explain is not None:
        counted, examples = planned.explain(frame)
        failing = failing or counted
    rate = failing / len(frame) if len(frame) and planned.split != CLASSES else None
    message = planned.describe(info) if planned.describe else CHECK_TITLES[planned.name]
    return ExpectationOutcome(
        **base, success=False, failing_rows=failing, rate=rate, examples=examples, message=message,
        observed=_jsonable(observed),
    )


# --- explaining failures (run only for failed checks, so a passing run pays nothing) ---------


def _explain_values(column: str, original: str) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        bad = frame[column].notna() & (frame[column] != "str")
        shown = [f"{_show(v)} ({t})" for v, t in zip(frame.loc[bad, original].head(_EXAMPLES), frame.loc[bad, column])]
        return int(bad.sum()), shown
    return explain


def _explain_nulls(column: str) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        bad = frame[column].isna()
        return int(bad.sum()), [f"row {i}" for i in frame.index[bad][:_EXAMPLES]]
    return explain




def _explain_regex(column: str, regex: str) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    pattern = re.compile(regex)

    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        values = frame[column].dropna()
        bad = values.astype(str).str.contains(pattern)
        shown = [_show_match(v, pattern) for v in values[bad].head(_EXAMPLES)]
        return int(bad.sum()), shown
    return explain


def _explain_lengths(low: int, high: int) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        values = frame[TEXT].dropna()
        lengths = values.str.len()
        bad = (lengths < low) | (lengths > high)
        return int(bad.sum()), [_show(v) for v in values[bad].head(_EXAMPLES)]
    return explain


def _explain_duplicates(frame: pd.DataFrame) -> tuple[int, list[str]]:
    values = frame[TEXT].dropna()
    repeated = values.duplicated(keep="first")
    top = values[values.isin(values[repeated])].value_counts().head(_EXAMPLES)
    return int(repeated.sum()), [f"{_show(text)} x{count:,}" for text, count in top.items()]


def _explain_leakage(frame: pd.DataFrame) -> tuple[int, list[str]]:
    shared = frame[IN_TRAIN].to_numpy(dtype=bool)
    return int(shared.sum()), [_show(v) for v in pd.unique(frame.loc[shared, TEXT])[:_EXAMPLES]]


def _explain_kind(kind: str) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        bad = (frame[LABEL_KIND] == kind).to_numpy()
        return int(bad.sum()), [_show(v) for v in pd.unique(frame[LABEL].astype(object)[bad])[:_EXAMPLES]]
    return explain


def _explain_mixed_kinds(frame: pd.DataFrame) -> tuple[int, list[str]]:
    kinds = frame[LABEL_KIND].astype(object).dropna()
    counts = kinds.value_counts()
    # The rows of every kind but the most common one are the odd ones out.
    minority = kinds[kinds != counts.index[0]] if len(counts) else kinds
    shown = [f"{_show(frame.at[i, LABEL])} ({kinds[i]})" for i in [kinds.index[kinds == k][0] for k in counts.index[:_EXAMPLES]]]
    return int(len(minority)), shown


def _explain_not_in_set(labels: list[str]) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    allowed = set(labels)

    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        values = frame[LABEL].astype(object).dropna()
        bad = values[~values.isin(allowed)]
        return int(len(bad)), [f"{_show(v)} x{n:,}" for v, n in bad.value_counts().head(_EXAMPLES).items()]
    return explain


def _explain_class_count(frame: pd.DataFrame) -> tuple[int, list[str]]:
    # The count is of classes, not rows: no row is wrong on its own.
    counts = frame[LABEL].astype(object).value_counts()
    return 0, [f"{_show(v)} x{n:,}" for v, n in counts.head(_EXAMPLES).items()]


def _explain_label_change(previous: list[str]) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    before = {str(label) for label in previous}

    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        now = set(frame[LABEL].astype(object).dropna().unique())
        added = sorted(now - before)
        gone = sorted(before - now)
        shown = [f"new {_show(v)}" for v in added[:_EXAMPLES]] + [f"missing {_show(v)}" for v in gone[:_EXAMPLES]]
        rows = int(frame[LABEL].astype(object).isin(added).sum())
        return rows, shown[:_EXAMPLES]
    return explain


def _explain_small_classes(minimum: int) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        small = frame[frame["count"] < minimum].sort_values("count")
        return len(small), [f"{_show(row.label)} ({row.count})" for row in small.head(_EXAMPLES).itertuples()]
    return explain


def _explain_imbalance(limit: float) -> Callable[[pd.DataFrame], tuple[int, list[str]]]:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        largest = frame.loc[frame["count"].idxmax()]
        small = frame[frame["largest_over_count"] > limit].sort_values("count")
        shown = [
            f"{_show(row.label)} {row.count:,} vs {_show(largest['label'])} {int(largest['count']):,}"
            for row in small.head(_EXAMPLES).itertuples()
        ]
        return len(small), shown
    return explain


# --- formatting ------------------------------------------------------------------------------






def _show(value: Any, limit: int = 40) -> str:
    """A value as a short quoted string: long texts are cut and their length given."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "null"
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit])[:-1] + f"...' ({len(text):,} chars)"
    return repr(text)


def _show_match(value: Any, pattern: re.Pattern[str], width: int = 16) -> str:
    """Show the part of a long text around the first match, so the offending bytes are visible."""
    text = str(value)
    found = pattern.search(text)
    if found is None or len(text) <= 40:
        return _show(text)
    start = max(0, found.start() - width)
    return repr(("..." if start else "") + text[start : found.end() + width] + "...")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _summary_html(report: ValidationReport) -> str:
    """A one-page table of every check with its severity and result, linking the GX data docs."""
    rows = []
    for r in report.results:
        status = "pass" if r.success else ("BLOCK" if r.severity == "block" else "warn")
        colour = {"pass": "#e6f4ea", "BLOCK": "#fce8e6", "warn": "#fef7e0"}[status]
        rows.append(
            f"<tr style='background:{colour}'><td>{html.escape(status)}</td><td>{html.escape(r.name)}</td>"
            f"<td>{html.escape(r.split)}</td><td>{html.escape(r.column or '')}</td><td>{html.escape(r.severity)}</td>"
            f"<td>{r.failing_rows:,}</td><td>{html.escape(r.message)}</td>"
            f"<td>{html.escape(', '.join(r.examples))}</td><td><code>{html.escape(r.expectation_type)}</code></td></tr>"
        )
    docs = ""
    if report.html_path is not None:
        link = report.html_path.relative_to(report.output_dir).as_posix()
        docs = f"<p><a href='{html.escape(link)}'>Great Expectations data docs</a></p>"
    head = "".join(f"<li>{html.escape(line)}</li>" for line in report.summary_lines()[:2])
    return (
        "<!doctype html><meta charset='utf-8'><title>tuneops validation</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;text-align:left;"
        "vertical-align:top;border-bottom:1px solid #ddd}table{border-collapse:collapse}</style>"
        f"<h1>Data validation: {'passed' if report.passed else 'failed'}</h1><ul>{head}</ul>{docs}"
        "<p><a href='validation.json'>validation.json</a> (machine-readable)</p>"
        "<table><tr><th>result</th><th>check</th><th>split</th><th>column</th><th>severity</th>"
        "<th>failing</th><th>message</th><th>examples</th><th>GX expectation</th></tr>"
        + "".join(rows)
        + "</table>"
    )
