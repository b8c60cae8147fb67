"""The Great Expectations suite against good data and deliberately broken data.

Every broken input is generated here, in tmp_path, from the demo reviews. Loader-level cases
(the file cannot be read as a table) must raise DataError / ConfigError with one line;
content-level cases must come back as a failed report, never as an exception.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tuneops.components.config import PipelineConfig, ValidationConfig, load_config
from tuneops.components.data.loading import DatasetSplits, load_data
from tuneops.components.data.demo import generate_reviews
from tuneops.components.errors import ConfigError, DataError, TuneopsError
from tuneops.components.tasks.registry import get_task
from tuneops.components.validation.validate import ValidationReport, blocking_message, validate_data

TASK = get_task("text-classification")

# 600 demo rows split to ~450/60/90: no duplicate or shared texts, ~100+ rows per class.
ROWS = 600
GROUPS = ["product_category", "region"]


def reviews(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    return generate_reviews(rows, seed=seed)[["text", "label", *GROUPS]]


def config_for(path: Path, *overrides: str) -> PipelineConfig:
    groups = "[" + ",".join(GROUPS) + "]"
    return load_config(overrides=[f"data.path={path}", f"data.group_columns={groups}", *overrides])


def validate_file(path: Path, tmp_path: Path, *overrides: str) -> ValidationReport:
    """Load a data file like the flow does and validate it; loader errors propagate."""
    config = config_for(path, *overrides)
    splits = load_data(config.data, tmp_path / "demo", TASK)
    return validate_data(splits, config.validation, tmp_path / "validation", None, TASK)


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def failed(report: ValidationReport) -> dict[str, list]:
    """The failed checks by name: {check: [outcome per split]}."""
    found: dict[str, list] = {}
    for outcome in report.results:
        if not outcome.success:
            found.setdefault(outcome.name, []).append(outcome)
    return found


def assert_one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def good_report(tmp_path_factory) -> ValidationReport:
    tmp_path = tmp_path_factory.mktemp("good")
    return validate_file(write_csv(tmp_path, reviews()), tmp_path)


# --- good data --------------------------------------------------------------------------------


def test_good_data_passes_every_expectation_and_writes_the_summary_and_json(good_report):
    assert good_report.passed, good_report.summary_lines()
    assert all(outcome.success for outcome in good_report.results)
    assert not good_report.blocking_failures and not good_report.warnings
    assert good_report.label_source == "inferred from train"
    assert good_report.labels == ["negative", "neutral", "positive"]
    assert good_report.sampled is False
    # GX's data docs (blank with no network) are opt-in; the summary page shows every check.
    assert good_report.html_path is None and not list((good_report.output_dir / "gx").rglob("*.html"))
    assert good_report.summary_html_path.exists()
    saved = json.loads(good_report.json_path.read_text(encoding="utf-8"))
    assert saved["passed"] is True and len(saved["results"]) == len(good_report.results)
    assert ValidationReport.model_validate_json(good_report.json_path.read_text()) == good_report
    assert len(good_report.gx_results) == 4 and all(path.exists() for path in good_report.gx_results)
    assert good_report.summary_line.startswith("validation: passed")


def test_every_check_is_a_great_expectations_expectation(good_report):
    suites = (good_report.output_dir / "gx" / "expectations").glob("*.json")
    checks = {
        expectation["meta"]["tuneops_check"]
        for suite in suites
        for expectation in json.loads(suite.read_text())["expectations"]
    }
    # label_set_unchanged needs a previous run; every other text check runs on good data (the
    # image checks are tests/data/test_image_data.py's).
    image_checks = {name for name in ValidationConfig().severity if name.startswith("image_")}
    assert checks == set(ValidationConfig().severity) - {"label_set_unchanged"} - image_checks
    gx_result = json.loads(next(p for p in good_report.gx_results if "train_classes" not in str(p)).read_text())
    assert gx_result["success"] is True and gx_result["statistics"]["evaluated_expectations"] > 10


def test_validating_twice_into_the_same_directory_replaces_the_gx_project(tmp_path):
    path = write_csv(tmp_path, reviews(300))
    first = validate_file(path, tmp_path, "validation.min_examples_per_class=5")
    second = validate_file(path, tmp_path, "validation.min_examples_per_class=5")
    assert first.passed and second.passed
    assert len(second.gx_results) == 4  # the previous run's results were replaced, not added


# --- loader-level bad inputs: one line, the right error type, no traceback ------------------


def test_empty_file(tmp_path):
    (tmp_path / "data.csv").write_text("")
    with pytest.raises(DataError) as error:
        validate_file(tmp_path / "data.csv", tmp_path)
    assert "is empty" in assert_one_line(error.value)


def test_header_only(tmp_path):
    (tmp_path / "data.csv").write_text("text,label,product_category,region\n")
    with pytest.raises(DataError) as error:
        validate_file(tmp_path / "data.csv", tmp_path)
    assert "no rows" in assert_one_line(error.value)


def test_missing_column(tmp_path):
    path = write_csv(tmp_path, reviews().drop(columns=["label"]))
    with pytest.raises(ConfigError) as error:
        validate_file(path, tmp_path)
    message = assert_one_line(error.value)
    assert "data.label_column 'label' not found" in message and error.value.exit_code == 2


def test_wrong_delimiter(tmp_path):
    path = tmp_path / "data.csv"
    reviews().to_csv(path, index=False, sep=";")
    with pytest.raises(DataError) as error:
        validate_file(path, tmp_path)
    assert "';'-separated" in assert_one_line(error.value)


def test_tab_separated_file_named_csv_names_the_delimiter(tmp_path):
    path = tmp_path / "data.csv"
    reviews()[["label", "region"]].to_csv(path, index=False, sep="\t")  # no commas in any field
    with pytest.raises(ConfigError) as error:
        validate_file(path, tmp_path)
    assert "is the delimiter right?" in assert_one_line(error.value)


def test_invalid_utf8_bytes(tmp_path):
    data = reviews().to_csv(index=False).encode("utf-8")
    cut = data.index(b"\n", 2000) + 1
    (tmp_path / "data.csv").write_bytes(data[:cut] + b"caf\xe9 latin-1 text,positive,books,europe\n" + data[cut:])
    with pytest.raises(DataError) as error:
        validate_file(tmp_path / "data.csv", tmp_path)
    line = data[:cut].count(b"\n") + 1
    assert f"not valid UTF-8: byte 0xe9 on line {line}" in assert_one_line(error.value)


def test_parquet_with_a_different_schema(tmp_path):
    path = tmp_path / "data.parquet"
    reviews().rename(columns={"text": "review_body"}).to_parquet(path)
    with pytest.raises(ConfigError) as error:
        validate_file(path, tmp_path)
    message = assert_one_line(error.value)
    assert "data.text_column 'text' not found in data.parquet" in message and "review_body" in message


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(DataError) as error:
        validate_file(tmp_path / "nowhere.csv", tmp_path)
    assert "does not exist" in assert_one_line(error.value)


def test_directory_that_is_not_a_dataset(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a dataset")
    with pytest.raises(DataError) as error:
        validate_file(folder, tmp_path)
    assert "not a saved Hugging Face dataset" in assert_one_line(error.value)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("data.csv", b"text,label\nfine,pos\nbin\x00ary,neg\n", "NUL byte on line 3"),
        ("data.csv", b"\x1f\x8b\x08\x00rest", "gzip-compressed"),
        ("data.csv", b"text,label\na,pos,extra,fields\nb,neg\n", "more fields than the header"),
        ("data.jsonl", b'{"text": "a", "label": "pos"}\n{"text": "b", \n', "line 2 is not valid JSON"),
        ("data.jsonl", b"[1, 2]\n[3, 4]\n", "each line must be a JSON object"),
    ],
)
def test_other_unreadable_files_give_one_line(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as error:
        validate_file(tmp_path / name, tmp_path)
    assert expected in assert_one_line(error.value)


# --- content-level bad inputs: a failed report, never an exception --------------------------


def test_label_column_of_floats(tmp_path):
    frame = reviews()
    frame["label"] = np.round(np.random.default_rng(0).uniform(0, 5, len(frame)), 1)
    report = validate_file(write_csv(tmp_path, frame), tmp_path)
    assert not report.passed
    floats = failed(report)["label_not_float"]
    assert {o.split for o in floats} == {"train", "validation", "test"}
    assert "label column holds floats" in floats[0].message
    assert "labels are not floats" in blocking_message(report)


def test_float_label_column_in_parquet(tmp_path):
    frame = reviews()
    frame["label"] = frame["label"].map({"negative": 0.0, "neutral": 1.0, "positive": 2.0})
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    report = validate_file(path, tmp_path)
    assert "label_not_float" in failed(report) and not report.passed
    assert failed(report)["label_not_float"][0].examples[0] in ("'0.0'", "'1.0'", "'2.0'")


def test_label_column_of_mixed_types(tmp_path):
    frame = reviews()
    frame.loc[frame.index % 4 == 0, "label"] = "1"
    report = validate_file(write_csv(tmp_path, frame), tmp_path)
    mixed = failed(report)["label_single_type"][0]
    assert mixed.severity == "block" and not report.passed
    assert any("(integer)" in e for e in mixed.examples) and any("(text)" in e for e in mixed.examples)


def test_mixed_python_types_in_jsonl(tmp_path):
    frame = reviews()
    frame["label"] = [index % 3 if index % 2 else name for index, name in enumerate(frame["label"])]
    path = tmp_path / "data.jsonl"
    frame.to_json(path, orient="records", lines=True)
    report = validate_file(path, tmp_path)
    assert "label_single_type" in failed(report) and not report.passed


def test_nan_labels(tmp_path):
    frame = reviews()
    frame.loc[frame.index % 10 == 0, "label"] = None  # empty cells
    frame.loc[frame.index % 10 == 5, "label"] = "NaN"  # a missing-value marker written out
    report = validate_file(write_csv(tmp_path, frame), tmp_path)
    missing = failed(report)["label_not_null"]
    assert sum(o.failing_rows for o in missing) == len(frame) // 5
    assert report.labels == ["negative", "neutral", "positive"]  # 'NaN' did not become a class
    assert "label not null" in blocking_message(report)


def test_one_class_only(tmp_path):
    frame = reviews()
    frame["label"] = "positive"
    report = validate_file(write_csv(tmp_path, frame), tmp_path)
    count = failed(report)["class_count"][0]
    assert count.observed == 1 and "1 distinct label" in count.message
    assert "number of classes" in blocking_message(report)


def test_all_rows_duplicated(tmp_path):
    frame = pd.concat([reviews(3)] * 200, ignore_index=True)
    report = validate_file(write_csv(tmp_path, frame), tmp_path)
    problems = failed(report)
    assert {"duplicates", "leakage"} <= set(problems) and not report.passed
    train_duplicates = next(o for o in problems["duplicates"] if o.split == "train")
    assert train_duplicates.rate > 0.95 and train_duplicates.examples


def test_one_megabyte_text_cell(tmp_path):
    frame = reviews()
    frame.loc[17, "text"] = "spam " * 200_000
    path = write_csv(tmp_path, frame)
    # One odd cell in a few hundred rows is reported but tolerated (validation.max_length_issue_rate):
    # real corpora hold the odd merged message, and training truncates it.
    tolerated = validate_file(path, tmp_path)
    assert tolerated.passed, tolerated.summary_lines()
    reported = [o for o in tolerated.results if o.name == "text_length" and o.failing_rows]
    assert [o.failing_rows for o in reported] == [1] and reported[0].message == "within the allowed rate"
    report = validate_file(path, tmp_path / "strict", "validation.max_length_issue_rate=0")
    too_long = failed(report)["text_length"]
    assert sum(o.failing_rows for o in too_long) == 1
    assert "(1,000,000 chars)" in too_long[0].examples[0] and len(too_long[0].examples[0]) < 80
    assert len(blocking_message(report)) < 600


def test_utf8_byte_order_mark_is_read_correctly(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbf" + reviews().to_csv(index=False).encode("utf-8"))
    report = validate_file(path, tmp_path)
    assert report.passed, report.summary_lines()


def test_quoted_fields_with_embedded_newlines_are_kept(tmp_path):
    frame = reviews()
    frame.loc[frame.index % 7 == 0, "text"] = frame["text"] + '\nSecond line, with a comma and "quotes".'
    path = write_csv(tmp_path, frame)
    config = config_for(path)
    splits = load_data(config.data, tmp_path / "demo", TASK)
    assert sum(s["text"].str.contains("\nSecond line").sum() for _, s in splits.items()) == (frame.index % 7 == 0).sum()
    report = validate_data(splits, config.validation, tmp_path / "validation", None, TASK)
    assert report.passed, report.summary_lines()


def test_text_that_is_not_strings_is_reported_not_raised(tmp_path):
    frame = reviews()
    texts = frame["text"].tolist()
    texts[3], texts[4] = 12345, ["a", "list"]
    frame["text"] = pd.Series(texts, dtype=object)
    path = tmp_path / "data.jsonl"
    frame.to_json(path, orient="records", lines=True)
    report = validate_file(path, tmp_path)
    wrong = [o for o in failed(report)["text_is_string"]]
    assert sum(o.failing_rows for o in wrong) == 2
    assert any("(int)" in e or "(list)" in e for o in wrong for e in o.examples)


# --- the individual checks --------------------------------------------------------------------


def splits_of(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, labels=None) -> DatasetSplits:
    return DatasetSplits(
        train=train.reset_index(drop=True), validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True), group_columns=GROUPS, source="test", fingerprint="test",
        input_column=TASK.input_column, declared_labels=labels,
    )


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    data = reviews(800, seed=11).drop_duplicates("text")
    return data.iloc[:560].copy(), data.iloc[560:660].copy(), data.iloc[660:].copy()


def test_leakage_between_train_and_test(tmp_path, frames):
    train, validation, test = frames
    test = pd.concat([test.iloc[:-10], train.iloc[:10]])  # 10 test rows copied from train
    report = validate_data(splits_of(train, validation, test), ValidationConfig(), tmp_path, None, TASK)
    leak = failed(report)["leakage"]
    assert [(o.split, o.failing_rows) for o in leak] == [("test", 10)]
    assert leak[0].examples[0].startswith(repr(train["text"].iloc[0])[:20])
    relaxed = ValidationConfig(max_leakage_rate=0.2)
    assert validate_data(splits_of(train, validation, test), relaxed, tmp_path, None, TASK).passed


def test_declared_labels_are_enforced_on_every_split(tmp_path, frames):
    train, validation, test = frames
    test = test.copy()
    test.iloc[:3, test.columns.get_loc("label")] = "Positive"
    splits = splits_of(train, validation, test, labels=["negative", "neutral", "positive"])
    report = validate_data(splits, ValidationConfig(), tmp_path, None, TASK)
    outside = failed(report)["label_in_set"]
    assert [(o.split, o.failing_rows) for o in outside] == [("test", 3)]
    assert outside[0].examples == ["'Positive' x3"]
    assert report.label_source == "declared"


def test_labels_of_a_previous_run_are_enforced(tmp_path, frames):
    train, validation, test = frames
    report = validate_data(
        splits_of(train, validation, test), ValidationConfig(), tmp_path, previous_labels=["negative", "positive"],
        task=TASK,
    )
    assert report.label_source == "previous run"
    changed = failed(report)["label_set_unchanged"][0]
    assert "new 'neutral'" in changed.examples
    assert "label_in_set" in failed(report)
    same = validate_data(
        splits_of(train, validation, test), ValidationConfig(), tmp_path,
        previous_labels=["negative", "neutral", "positive"], task=TASK,
    )
    assert same.passed


def test_minimum_examples_per_class_counts_declared_classes_missing_from_train(tmp_path, frames):
    train, validation, test = frames
    splits = splits_of(train, validation, test, labels=["negative", "neutral", "positive", "mixed"])
    report = validate_data(splits, ValidationConfig(), tmp_path, None, TASK)
    small = failed(report)["min_examples_per_class"][0]
    assert small.failing_rows == 1 and small.examples == ["'mixed' (0)"]


def test_class_imbalance_is_a_warning_by_default(tmp_path, frames):
    train, validation, test = frames
    rare = train[train["label"] == "neutral"].iloc[:21]
    train = pd.concat([train[train["label"] != "neutral"]] * 2 + [rare])
    train = train.assign(text=[f"{t} #{i}" for i, t in enumerate(train["text"])])  # keep texts distinct
    report = validate_data(
        splits_of(train, validation, test), ValidationConfig(max_class_imbalance=5), tmp_path, None, TASK
    )
    assert report.passed  # a warning does not block
    warning = report.warnings[0]
    assert warning.name == "class_imbalance" and warning.examples[0].startswith("'neutral' 21 vs 'positive'")
    assert report.summary_line.endswith("1 warning)")
    assert report.warnings_lines() == [
        f"validation warning: class_imbalance [label: train 1 class] {warning.message}; e.g. {warning.examples[0]}"
    ]


@pytest.mark.parametrize(
    ("check", "bad_text", "blocks"),
    [
        ("text_html_entities", "Great value &amp; fast shipping &#39;five stars&#39;", False),
        ("text_mojibake", "CafÃ© quality, itâ€™s great", True),
        ("text_control_characters", "Works fine\x00\x07 after reset", True),
    ],
)
def test_text_encoding_problems(tmp_path, frames, check, bad_text, blocks):
    train, validation, test = frames
    train = train.copy()
    train.iloc[:20, train.columns.get_loc("text")] = [f"{bad_text} {i}" for i in range(20)]  # 3.6% of train
    report = validate_data(splits_of(train, validation, test), ValidationConfig(), tmp_path, None, TASK)
    problem = failed(report)[check][0]
    assert (problem.split, problem.failing_rows) == ("train", 20)
    assert problem.severity == ("block" if blocks else "warn")
    assert report.passed is (not blocks)
    clean = validate_data(splits_of(*frames), ValidationConfig(), tmp_path, None, TASK)
    assert check not in failed(clean)


def test_blank_text_and_group_column_mostly_null(tmp_path, frames):
    train, validation, test = frames
    train = train.copy()
    train.iloc[:2, train.columns.get_loc("text")] = ["   ", "\t\n"]
    train.iloc[: len(train) // 2, train.columns.get_loc("region")] = None
    report = validate_data(splits_of(train, validation, test), ValidationConfig(), tmp_path, None, TASK)
    assert failed(report)["text_not_blank"][0].failing_rows == 2
    group = failed(report)["group_not_mostly_null"][0]
    assert group.column == "region" and group.severity == "warn" and group.failing_rows == len(train) // 2


def test_texts_of_only_zero_width_characters_are_blank(tmp_path, frames):
    """U+200B/U+200C/U+200D/U+2060/U+FEFF show nothing and are not whitespace to Python (issue 15)."""
    from pydantic import ValidationError

    from tuneops.components.config import ServingConfig
    from tuneops.components.tasks.text.schema import request_model

    train, validation, test = frames
    train = train.copy()
    invisible = ["\u200b", "\u200c\u200d", "\u2060", "\ufeff", " \u200b\t\ufeff "]
    train.iloc[: len(invisible), train.columns.get_loc("text")] = invisible
    report = validate_data(splits_of(train, validation, test), ValidationConfig(), tmp_path, None, TASK)
    blank = failed(report)["text_not_blank"]
    assert [(o.split, o.failing_rows, o.severity) for o in blank] == [("train", len(invisible), "block")]
    assert blank[0].examples == ["'\\u200b'", "'\\u200c\\u200d'", "'\\u2060'"] and not report.passed
    # A visible character among them is text; serving refuses what validation calls blank.
    train.iloc[: len(invisible), train.columns.get_loc("text")] = [f"ok{i}\u200b" for i in range(len(invisible))]
    assert "text_not_blank" not in failed(validate_data(splits_of(train, validation, test), ValidationConfig(),
                                                        tmp_path, None, TASK))
    with pytest.raises(ValidationError, match=r"texts\[1\] is empty"):
        request_model(ServingConfig()).model_validate({"texts": ["fine", "\u200b\ufeff"]})


def test_labels_differing_only_by_case_or_whitespace_are_a_warning(tmp_path, frames):
    train, validation, test = frames
    train = train.copy()
    column = train.columns.get_loc("label")
    positive = np.flatnonzero(train["label"].to_numpy() == "positive")
    train.iloc[positive[:25], column] = "Positive"
    train.iloc[positive[25:47], column] = "positive "
    report = validate_data(splits_of(train, validation, test), ValidationConfig(), tmp_path, None, TASK)
    variants = failed(report)["label_variants"]
    assert [(o.split, o.failing_rows, o.severity) for o in variants] == [("train_classes", 3, "warn")]
    assert variants[0].examples == [f"'Positive' / 'positive' / 'positive ' (25 / {len(positive) - 47} / 22)"]
    assert "differ only by case or surrounding whitespace" in variants[0].message
    assert report.passed and any(line.startswith("validation warning: label_variants") for line in report.warnings_lines())
    # 'positive' is still a train class, so the held-out splits keep to the inferred set: the
    # warning is the only finding, and it does not block.
    assert set(failed(report)) == {"label_variants"}


def test_an_empty_split_is_reported_not_raised(tmp_path, frames):
    train, validation, test = frames
    report = validate_data(splits_of(train, validation, test.iloc[:0]), ValidationConfig(), tmp_path, None, TASK)
    assert [o.split for o in failed(report)["split_not_empty"]] == ["test"]


def test_severity_overrides_warn_and_off(tmp_path, frames):
    train, validation, test = frames
    test = pd.concat([test.iloc[:-10], train.iloc[:10]])
    warn = ValidationConfig(severity={"leakage": "warn"})
    report = validate_data(splits_of(train, validation, test), warn, tmp_path, None, TASK)
    assert report.passed and [o.name for o in report.warnings] == ["leakage"]
    off = ValidationConfig(severity={"leakage": "off"})
    report = validate_data(splits_of(train, validation, test), off, tmp_path, None, TASK)
    assert report.passed and not [o for o in report.results if o.name == "leakage"]
    with pytest.raises(ConfigError, match="did you mean leakage"):
        load_config(overrides=["validation.severity.leakge=warn"])


def test_blocking_message_is_one_line_naming_check_column_rows_and_examples(tmp_path, frames):
    train, validation, test = frames
    test = test.copy()
    test.iloc[:14, test.columns.get_loc("label")] = ["pos"] * 12 + ["neg"] * 2
    report = validate_data(splits_of(train, validation, test), ValidationConfig(), tmp_path, None, TASK)
    message = blocking_message(report)
    assert "\n" not in message and report.summary_line == message
    assert message.startswith("validation: 1 blocking check failed: label values in set (label: test 14 rows")
    assert "e.g. 'pos' x12, 'neg' x2" in message
    lines = report.summary_lines()
    assert lines[0].startswith("validation BLOCKED") and any(line.strip().startswith("BLOCK label_in_set") for line in lines)


# --- the command --------------------------------------------------------------------------------


def test_validate_command_exit_codes(tmp_path, monkeypatch):
    from tuneops.flows.cli import app

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    good = write_csv(tmp_path, reviews(), "good.csv")
    floats = reviews()
    floats["label"] = np.linspace(0, 1, len(floats))
    bad = write_csv(tmp_path, floats, "bad.csv")

    passed = runner.invoke(app, ["validate", "--set", f"data.path={good}"])
    assert passed.exit_code == 0, passed.output
    # GX's data docs need network access to render, so they are built only when asked for.
    assert "validation PASSED" in passed.output and "data docs:" not in passed.output
    with_docs = runner.invoke(app, ["validate", "--set", f"data.path={good}", "--set", "validation.data_docs=true"])
    assert with_docs.exit_code == 0 and "data docs:" in with_docs.output, with_docs.output
    docs_index = Path(with_docs.output.split("data docs:")[1].split()[0])
    assert docs_index.name == "index.html" and docs_index.is_file()
    for asset in ("tuneops_train", "tuneops_validation", "tuneops_test", "tuneops_train_classes"):
        assert asset in docs_index.read_text(encoding="utf-8")

    blocked = runner.invoke(app, ["validate", "--set", f"data.path={bad}"])
    assert blocked.exit_code == 1 and "BLOCK label_not_float" in blocked.output

    warned = runner.invoke(app, ["validate", "--set", f"data.path={bad}", "--set", "validation.on_failure=warn"])
    assert warned.exit_code == 0 and "the run goes on" in warned.output

    missing = runner.invoke(app, ["validate", "--set", f"data.path={tmp_path / 'nope.csv'}"])
    assert missing.exit_code == 1 and "does not exist" in missing.output and "Traceback" not in missing.output

    typo = runner.invoke(app, ["validate", "--set", "validation.max_leakage=0.1"])
    assert typo.exit_code == 2 and "unknown key validation.max_leakage" in typo.output


def test_run_validate_returns_codes_without_the_cli(tmp_path, monkeypatch):
    from tuneops.flows.validate_command import run_validate

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path / "home"))
    frame = reviews()
    frame["label"] = "positive"
    config = config_for(write_csv(tmp_path, frame))
    assert run_validate(config, tmp_path / "out") == 1
    assert (tmp_path / "out" / "validation.json").exists()
    with pytest.raises(TuneopsError):
        run_validate(config_for(tmp_path / "missing.csv"), tmp_path / "out2")


def test_validate_command_enforces_the_champions_label_set(tmp_path, monkeypatch):
    """``tuneops validate`` checks the champion's labels as ``tuneops run`` does: data with a
    label the champion does not know is blocked once a champion exists, and passes before."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tuneops.components import registry
    from tuneops.components.checkpoints import packaged_model_dir
    from tuneops.components.predictor import Predictor
    from tuneops.flows.validate_command import run_validate

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path / "home"))
    config = config_for(write_csv(tmp_path, reviews()))
    assert run_validate(config, tmp_path / "before") == 0  # no champion yet: the label set is free

    champion_labels = ["negative", "positive"]  # the data also has "neutral"
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("all-MiniLM-L6-v2"))
    tiny = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, num_labels=2, id2label=dict(enumerate(champion_labels)),
                      label2id={label: index for index, label in enumerate(champion_labels)})
    model_dir = Predictor(BertForSequenceClassification(tiny), tokenizer, champion_labels, task=TASK,
                          max_length=32).save(tmp_path / "champion", extra={"base_checkpoint": "tiny-test-bert"})
    reference = pd.DataFrame({"text": ["good", "bad"], "label": champion_labels})
    release = registry.package_model(model_dir, {"run_id": "champion-run", "labels": champion_labels}, reference)
    registry.set_champion(release.tag)

    assert run_validate(config, tmp_path / "after") == 1
    saved = ValidationReport.model_validate_json((tmp_path / "after" / "validation.json").read_text())
    assert saved.label_source == "previous run" and saved.labels == champion_labels
    changed = failed(saved)["label_set_unchanged"][0]
    assert changed.severity == "block" and "new 'neutral'" in changed.examples
