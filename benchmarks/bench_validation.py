"""Benchmark: tuneops' validation stage (Great Expectations) against hand-written vectorised pandas
checks of the same expectations, on 1,000,000 rows (text, label, group), in one run.

    .venv/bin/python benchmarks/bench_validation.py [--rows 1000000] [--repeat 1]
    .venv/bin/python benchmarks/bench_validation.py --quick      # 100,000 rows, well under a minute

Prints the time of each, the stage's own breakdown, and whether both reached the same verdict on
every check, and ends with ``validation_vs_pandas: RATIO x (goal >= 0.33 x)``: the hand-written
checks' time over the stage's (GX may cost up to 3x hand-written code for its suites, results and
one way of declaring checks; 1.0 would be as fast). Nothing is sampled: both check every row of
every split.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from figures import figure_line  # noqa: E402  (benchmarks/figures.py, beside this script)
from tuneops.components.config import ValidationConfig  # noqa: E402
from tuneops.components.data.columns import LABEL  # noqa: E402
from tuneops.components.data.demo import ASPECTS, PRODUCTS  # noqa: E402
from tuneops.components.data.loading import DatasetSplits  # noqa: E402
from tuneops.components.tasks.registry import get_task  # noqa: E402
from tuneops.components.tasks.text.checks import (  # noqa: E402
    BLANK_REGEX,
    CONTROL_REGEX,
    HTML_ENTITY_REGEX,
    MOJIBAKE_REGEX,
)
from tuneops.components.validation.prepare import MISSING_LABEL_TOKENS  # noqa: E402

TASK = get_task("text-classification")
TEXT = TASK.input_column
GROUP = "region"


def make_splits(rows: int, seed: int = 0) -> DatasetSplits:
    """``rows`` review-like rows split 80/10/10. Texts are 6-14 words drawn from the demo's
    vocabulary, so they are distinct (as real data mostly is) and of realistic length."""
    rng = np.random.default_rng(seed)
    words = sorted({w.lower() for names in (*PRODUCTS.values(), *ASPECTS.values()) for n in names for w in n.split()})
    words += ["great", "bad", "okay", "really", "not", "very", "the", "and", "but", "it", "was", "is", "works",
              "broke", "love", "hate", "fine", "cheap", "quality", "fast", "slow", "delivery", "again", "never"]
    vocabulary = np.array(words, dtype=object)
    lengths = rng.integers(6, 15, rows)
    picks = vocabulary[rng.integers(0, len(vocabulary), (rows, 14))]
    columns = [pd.Series(picks[:, k]).where(lengths > k, "") for k in range(14)]
    text = columns[0].str.cat(columns[1:], sep=" ").str.rstrip()
    frame = pd.DataFrame({
        TEXT: text,
        LABEL: rng.choice(["negative", "neutral", "positive"], rows, p=[0.3, 0.25, 0.45]).astype(object),
        GROUP: pd.Series(rng.choice(["north_america", "europe", "asia_pacific", "latin_america"], rows), dtype=object),
    })
    train_end, validation_end = int(rows * 0.8), int(rows * 0.9)
    return DatasetSplits(
        train=frame.iloc[:train_end].reset_index(drop=True),
        validation=frame.iloc[train_end:validation_end].reset_index(drop=True),
        test=frame.iloc[validation_end:].reset_index(drop=True),
        group_columns=[GROUP],
        source="benchmark",
        fingerprint="benchmark",
        input_column=TEXT,
    )


def pandas_checks(splits: DatasetSplits, config: ValidationConfig) -> dict[tuple[str, str], bool]:
    """The same expectations written directly in vectorised pandas: {(check, split): passed}."""
    verdicts: dict[tuple[str, str], bool] = {}
    regexes = {
        "text_not_blank": (re.compile(BLANK_REGEX), 1.0),
        "text_control_characters": (re.compile(CONTROL_REGEX), 1.0 - config.max_encoding_issue_rate),
        "text_mojibake": (re.compile(MOJIBAKE_REGEX), 1.0 - config.max_encoding_issue_rate),
        "text_html_entities": (re.compile(HTML_ENTITY_REGEX), 1.0 - config.max_encoding_issue_rate),
    }
    labels_by_split: dict[str, pd.Series] = {}
    for split, frame in splits.items():
        verdicts[("split_not_empty", split)] = len(frame) >= 1
        verdicts[("columns_present", split)] = all(c in frame for c in (TEXT, LABEL, GROUP))
        text = frame[TEXT]
        present = text.dropna()
        verdicts[("text_is_string", split)] = infer_dtype(present, skipna=True) in ("string", "empty")
        verdicts[("text_not_null", split)] = not text.isna().any()
        for name, (pattern, mostly) in regexes.items():
            hits = present.str.contains(pattern)
            verdicts[(name, split)] = (1.0 - hits.mean()) >= mostly if len(hits) else True
        lengths = present.str.len()
        verdicts[("text_length", split)] = bool(lengths.between(config.min_text_chars, config.max_text_chars).all())
        verdicts[("duplicates", split)] = present.nunique() / max(len(present), 1) >= 1.0 - config.max_duplicate_rate
        # Labels: the string the model sees, missing markers as null, kind per distinct value.
        codes, uniques = pd.factorize(frame[LABEL], use_na_sentinel=True)
        names = np.array([str(u) for u in uniques] + [None], dtype=object)
        missing = np.array([str(u).strip().lower() in MISSING_LABEL_TOKENS for u in uniques] + [True])
        kinds = np.array([_kind(u) for u in uniques] + [None], dtype=object)
        label = pd.Series(np.where(missing[codes], None, names[codes]), dtype=object)
        kind = pd.Series(np.where(missing[codes], None, kinds[codes]), dtype=object)
        labels_by_split[split] = label
        verdicts[("label_not_null", split)] = not label.isna().any()
        verdicts[("label_not_float", split)] = not (kind == "float").any()
        verdicts[("label_single_type", split)] = kind.dropna().nunique() <= 1
        verdicts[("group_not_mostly_null", split)] = frame[GROUP].isna().mean() <= config.max_group_null_rate
    train_text = splits.train[TEXT].dropna()
    label_set = sorted(labels_by_split["train"].dropna().unique())
    for split in ("validation", "test"):
        text = splits.split(split)[TEXT]
        shared = text.isin(train_text) & text.notna()
        verdicts[("leakage", split)] = shared.mean() <= config.max_leakage_rate
        verdicts[("label_in_set", split)] = bool(labels_by_split[split].dropna().isin(label_set).all())
    counts = labels_by_split["train"].value_counts()
    verdicts[("class_count", "train")] = 2 <= len(counts) <= config.max_classes
    verdicts[("min_examples_per_class", "train_classes")] = bool((counts >= config.min_examples_per_class).all())
    verdicts[("class_imbalance", "train_classes")] = counts.max() / counts.min() <= config.max_class_imbalance
    verdicts[("label_variants", "train_classes")] = pd.Index(counts.index.astype(str).str.strip().str.casefold()).is_unique
    return verdicts


def _kind(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, (float, np.floating)):
        return "float"
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return "integer"
    if re.fullmatch(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][+-]?\d+|inf(?:inity)?)", text, re.IGNORECASE):
        return "float"
    return "text"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="take the best of N timings of each")
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    args = parser.parse_args()
    if args.quick:
        args.rows = 100_000

    tick = time.perf_counter()
    splits = make_splits(args.rows)
    print(f"data: {args.rows:,} rows (text, label, {GROUP}) split {splits.sizes()}, made in {time.perf_counter() - tick:.1f}s")
    config = ValidationConfig()

    tick = time.perf_counter()
    import great_expectations  # noqa: F401  (a one-off cost per process, reported on its own)

    import_seconds = time.perf_counter() - tick
    from tuneops.components.validation.validate import validate_data

    tuneops_times, pandas_times = [], []
    with tempfile.TemporaryDirectory(prefix="tuneops-bench-") as scratch:
        for attempt in range(args.repeat):
            tick = time.perf_counter()
            report = validate_data(splits, config, Path(scratch) / f"run{attempt}", None, TASK)
            tuneops_times.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            verdicts = pandas_checks(splits, config)
            pandas_times.append(time.perf_counter() - tick)

    ours = {(r.name, r.split): r.success for r in report.results if r.name != "columns_present"}
    theirs = {key: value for key, value in verdicts.items() if key[0] != "columns_present"}
    disagree = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    best_tuneops, best_pandas = min(tuneops_times), min(pandas_times)
    print(f"tuneops validation (Great Expectations): {best_tuneops:6.2f}s  "
          f"({len(report.results)} expectations, summary page + JSON written, passed={report.passed})")
    print(f"hand-written pandas checks:              {best_pandas:6.2f}s  ({len(theirs)} checks)")
    print(f"great_expectations import (once per process): {import_seconds:.2f}s")
    print("tuneops breakdown (last run): " + ", ".join(f"{k} {v:.2f}s" for k, v in report.seconds.items()))
    print(f"sampled: {'yes' if report.sampled else 'no, every row of every split is checked'}")
    print("verdicts agree: " + ("yes, on every check" if not disagree else f"NO: {disagree}"))
    print(figure_line("validation_vs_pandas", best_pandas / best_tuneops if not disagree else None, 0.33))


if __name__ == "__main__":
    main()
