"""What validation checks about text inputs (``TextClassification.input_checks``).

The text column is prepared as Python strings (non-strings turned into their ``str`` so every
later check can hash and measure them) with each row's original type beside it. The checks:
strings, not null, not blank, length within bounds, and three encoding problems of scraped or
mis-decoded text (control characters, mojibake, undecoded HTML entities). Their names are the
keys of ``ValidationConfig.severity``: user-facing, so never renamed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from tuneops.components.config import ValidationConfig
from tuneops.components.tasks.text.blank import BLANK_REGEX
from tuneops.components.validation.checks import Check, Explain, InputChecks
from tuneops.components.validation.display import EXAMPLES, show
from tuneops.components.validation.explain import explain_nulls, explain_regex
from tuneops.components.validation.prepare import categorical

# The derived column holding each text cell's original type name (null when null).
TEXT_TYPE = "_text_type"

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


def text_checks(config: ValidationConfig, column: str) -> InputChecks:
    """The text checks of ``column`` with the limits of ``config``."""
    import great_expectations.expectations as gxe

    encoding_mostly = 1.0 - config.max_encoding_issue_rate
    encoding_limit = f"at most {config.max_encoding_issue_rate:.1%} of a split allowed"
    schema = [
        Check("text_is_string", "text values are strings", column, gxe.ExpectColumnValuesToBeInSet,
              {"column": TEXT_TYPE, "value_set": ["str"]}, "text cells that are not strings",
              _explain_types(column)),
        Check("text_not_null", "text not null", column, gxe.ExpectColumnValuesToNotBeNull,
              {"column": column}, "rows with no text", explain_nulls(column)),
    ]
    content = [
        Check("text_not_blank", "text not blank", column, gxe.ExpectColumnValuesToNotMatchRegex,
              {"column": column, "regex": BLANK_REGEX},
              "rows whose text is empty or only whitespace or zero-width characters", explain_regex(column, BLANK_REGEX)),
        Check("text_length", "text length within bounds", column, gxe.ExpectColumnValueLengthsToBeBetween,
              {"column": column, "min_value": config.min_text_chars, "max_value": config.max_text_chars,
               "mostly": 1.0 - config.max_length_issue_rate},
              f"texts shorter than {config.min_text_chars:,} or longer than {config.max_text_chars:,} characters"
              " (a huge cell often means an unbalanced quote in the file); "
              f"at most {config.max_length_issue_rate:.1%} of a split allowed",
              _explain_lengths(column, config.min_text_chars, config.max_text_chars)),
    ]
    for name, title, regex, what in (
        ("text_control_characters", "no control characters", CONTROL_REGEX, "texts with control characters"),
        ("text_mojibake", "no mojibake", MOJIBAKE_REGEX,
         "texts with mojibake (UTF-8 decoded as cp1252/Latin-1, or U+FFFD)"),
        ("text_html_entities", "no undecoded HTML entities", HTML_ENTITY_REGEX, "texts with undecoded HTML entities"),
    ):
        content.append(Check(
            name, title, column, gxe.ExpectColumnValuesToNotMatchRegex,
            {"column": column, "regex": regex, "mostly": encoding_mostly}, f"{what}; {encoding_limit}",
            explain_regex(column, regex),
        ))
    return InputChecks(prepare=lambda raw: _text_columns(column, raw), schema=schema, content=content)


def _text_columns(column: str, raw: pd.Series) -> dict[str, Any]:
    """Text as Python strings (non-strings turned into their str form so that every later
    check can hash and measure them) and each row's original type name (null when null)."""
    values = raw.to_numpy(dtype=object, na_value=None)
    null = pd.isna(values)
    if infer_dtype(values, skipna=True) in ("string", "empty"):
        values = np.where(null, None, values) if null.any() else values
        return {column: values, TEXT_TYPE: pd.Categorical.from_codes(np.where(null, -1, 0), categories=["str"])}
    names = np.array([type(v).__name__ for v in values], dtype=object)
    converted = np.array([None if is_null else v if isinstance(v, str) else str(v) for v, is_null in zip(values, null)], dtype=object)
    return {column: converted, TEXT_TYPE: categorical(np.where(null, -1, np.arange(len(values))), names)}


def _explain_types(column: str) -> Explain:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        bad = frame[TEXT_TYPE].notna() & (frame[TEXT_TYPE] != "str")
        shown = [f"{show(v)} ({t})" for v, t in zip(frame.loc[bad, column].head(EXAMPLES), frame.loc[bad, TEXT_TYPE])]
        return int(bad.sum()), shown
    return explain


def _explain_lengths(column: str, low: int, high: int) -> Explain:
    def explain(frame: pd.DataFrame) -> tuple[int, list[str]]:
        values = frame[column].dropna()
        lengths = values.str.len()
        bad = (lengths < low) | (lengths > high)
        return int(bad.sum()), [show(v) for v in values[bad].head(EXAMPLES)]
    return explain
