"""Loading and splitting: formats, stratification, fingerprints, the demo generator."""

from __future__ import annotations

import pandas as pd
import pytest

from tuneops.components.config import DataConfig
from tuneops.components.data.loading import as_validated, load_data, read_table
from tuneops.components.data.demo import generate_reviews
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.tasks.registry import get_task

TASK = get_task("text-classification")


def test_demo_data_is_deterministic_realistic_and_balanced_enough():
    first, second = generate_reviews(600, seed=3), generate_reviews(600, seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert set(first["label"]) == {"negative", "neutral", "positive"}
    assert first["product_category"].nunique() == 5 and first["region"].nunique() == 4
    assert first["text"].str.len().between(20, 400).all()
    assert first["text"].nunique() > 0.95 * len(first)
    assert not generate_reviews(600, seed=4).equals(first)


def test_demo_splits_are_stratified_disjoint_and_fingerprinted(tmp_path):
    config = DataConfig()
    splits = load_data(config, tmp_path, TASK)
    sizes = splits.sizes()
    assert sum(sizes.values()) == config.demo_rows
    assert abs(sizes["test"] / config.demo_rows - config.test_fraction) < 0.01
    shares = {name: frame["label"].value_counts(normalize=True) for name, frame in splits.items()}
    for label in splits.labels:
        assert abs(shares["train"][label] - shares["test"][label]) < 0.02
    assert splits.fingerprint == load_data(config, tmp_path, TASK).fingerprint
    assert (tmp_path / f"reviews-{config.demo_rows}-7.csv").exists()


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "parquet", "hf"])
def test_every_supported_format_loads(tmp_path, suffix):
    frame = generate_reviews(300).rename(columns={"text": "body", "label": "sentiment"})
    path = tmp_path / f"data.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == "parquet":
        frame.to_parquet(path)
    else:
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    config = DataConfig(path=str(path), text_column="body", label_column="sentiment", group_columns=["region"])
    splits = as_validated(load_data(config, tmp_path, TASK))
    assert sum(splits.sizes().values()) == 300
    assert list(splits.train.columns) == ["text", "label", "region"]


def test_separate_test_file_is_used_as_the_test_split(tmp_path):
    generate_reviews(300, seed=1).to_csv(tmp_path / "train.csv", index=False)
    generate_reviews(90, seed=2).to_csv(tmp_path / "test.csv", index=False)
    config = DataConfig(path=str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"))
    splits = load_data(config, tmp_path, TASK)
    assert len(splits.test) == 90 and len(splits.train) + len(splits.validation) == 300


def test_missing_column_names_the_columns_that_exist(tmp_path):
    generate_reviews(50).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ConfigError, match=r"data.text_column 'body' not found in d.csv; columns are: id, text"):
        load_data(DataConfig(path=str(tmp_path / "d.csv"), text_column="body"), tmp_path, TASK)


def test_unreadable_inputs_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_table(tmp_path / "d.xlsx")
