"""Loading and splitting: formats, stratification, fingerprints, the demo generator, and the
inputs loading refuses (non-regular files, sources over data.max_bytes, labels that are lists,
columns named twice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tuneops.components.config import IMAGE_TASK, DataConfig
from tuneops.components.data.loading import as_validated, load_data, read_table
from tuneops.components.data.demo import generate_reviews
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.tasks.registry import get_task

TASK = get_task("text-classification")
# A FIFO or a device that loading opened would hang or fill memory; well under this it must refuse.
REFUSAL_TIMEOUT_S = 60


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


# --- inputs that would hang or exhaust memory (issue 15, 7) ------------------------------------


def tuneops_cli(*arguments: str, home: Path) -> subprocess.CompletedProcess:
    """``tuneops ARGUMENTS`` in a fresh process, killed after REFUSAL_TIMEOUT_S (a hang fails the
    test with TimeoutExpired instead of blocking the suite)."""
    environment = {**os.environ, "TUNEOPS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tuneops.flows.cli", *arguments], capture_output=True, text=True,
                          timeout=REFUSAL_TIMEOUT_S, env=environment)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def linked(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


def saved_dataset_with_a_fifo(folder: Path) -> Path:
    import datasets

    datasets.Dataset.from_pandas(generate_reviews(60)).save_to_disk(str(folder))
    shard = next(folder.glob("*.arrow"))
    shard.unlink()
    return fifo(shard).parent  # the dataset loader would open the shard and block


@pytest.mark.parametrize(
    ("make", "sets", "refused"),
    [
        (lambda tmp: fifo(tmp / "x.csv"), [], "x.csv is not a regular file"),
        (lambda tmp: Path("/dev/urandom"), ["data.format=jsonl"], "/dev/urandom is not a regular file"),
        (lambda tmp: linked(tmp / "u.jsonl", "/dev/urandom"), [], "u.jsonl is not a regular file"),
        (lambda tmp: linked(tmp / "z.csv", "/dev/zero"), [], "z.csv is not a regular file"),
        (saved_dataset_with_a_fifo, [], ".arrow is not a regular file"),
    ],
    ids=["fifo-csv", "urandom-jsonl", "link-to-urandom", "link-to-zero", "fifo-in-saved-dataset"],
)
def test_non_regular_files_are_refused_at_once_with_one_line(tmp_path, make, sets, refused):
    path = make(tmp_path)
    if not Path(path).exists():  # a device can be missing in a minimal container
        pytest.skip(f"{path} is not on this machine")
    overrides = [option for setting in [f"data.path={path}", *sets] for option in ("--set", setting)]
    started = time.perf_counter()
    result = tuneops_cli("validate", *overrides, home=tmp_path / "home")
    assert result.returncode == 1, result.stderr
    assert refused in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: data: ")
    assert time.perf_counter() - started < REFUSAL_TIMEOUT_S / 2


def test_a_source_over_data_max_bytes_is_refused_before_it_is_read(tmp_path):
    # A sparse file: 3 GB by its size, no disk. Reading it would take seconds and GBs (it is all
    # NUL bytes); refusing it from its size takes a stat.
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as handle:
        handle.truncate(3_000_000_000)
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"huge.csv holds 3,000,000,000 bytes, over data.max_bytes \(2,000,000,000\)"):
        load_data(DataConfig(path=str(huge)), tmp_path, TASK)
    assert time.perf_counter() - started < 1
    small = tmp_path / "small.csv"
    generate_reviews(300).to_csv(small, index=False)
    with pytest.raises(DataError, match="raise data.max_bytes to read it"):
        load_data(DataConfig(path=str(small), max_bytes=1000), tmp_path, TASK)
    assert sum(load_data(DataConfig(path=str(small), max_bytes=small.stat().st_size), tmp_path, TASK).sizes().values()) == 300


def write_class_folders(root: Path, per_class: int = 12) -> Path:
    """Two class folders of small, distinct PNGs."""
    from PIL import Image

    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            shade = index * 10 + (0 if label == "cat" else 5)
            Image.new("L", (16, 16), color=shade).save(root / label / f"{index}.png")
    return root


def test_image_folders_never_open_devices_or_fifos_and_are_bounded_by_data_max_bytes(tmp_path):
    photos = write_class_folders(tmp_path / "photos")
    fifo(photos / "cat" / "pipe.png")
    linked(photos / "dog" / "noise.png", "/dev/urandom")
    # In a fresh process with a timeout: opening either file would block or never end.
    script = (
        "import json, sys\n"
        "from tuneops.components.config import DataConfig\n"
        "from tuneops.components.data.loading import load_data\n"
        "from tuneops.components.tasks.registry import get_task\n"
        "splits = load_data(DataConfig(path=sys.argv[1], group_columns=[]), sys.argv[2], get_task(sys.argv[3]))\n"
        "print(json.dumps(sorted(p.rsplit('/', 1)[1] for _, f in splits.items() for p in f['image'])))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(photos), str(tmp_path / "demo"), IMAGE_TASK],
                            capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    # Kept as rows, never opened: validation's image_decodes blocks on them ("not a regular file").
    names = json.loads(result.stdout)
    assert "pipe.png" in names and "noise.png" in names and len(names) == 26

    image_task = get_task(IMAGE_TASK)
    images = sum((photos / label / f"{index}.png").stat().st_size for label in ("cat", "dog") for index in range(12))
    with pytest.raises(DataError, match=rf"the 24 input files of photos hold {images:,} bytes, over data.max_bytes"):
        load_data(DataConfig(path=str(photos), group_columns=[], max_bytes=images - 1), tmp_path, image_task)
    table = tmp_path / "table.csv"
    pd.DataFrame({"image": [f"photos/cat/{i}.png" for i in range(12)] * 2, "label": ["cat", "dog"] * 12}).to_csv(
        table, index=False)
    cats = sum((photos / "cat" / f"{index}.png").stat().st_size for index in range(12))
    assert cats > table.stat().st_size  # the table fits the limit below, the files it names do not
    with pytest.raises(DataError, match=rf"the 12 input files of table.csv hold {cats:,} bytes"):
        load_data(DataConfig(path=str(table), group_columns=[], max_bytes=table.stat().st_size), tmp_path, image_task)
    assert len(load_data(DataConfig(path=str(photos), group_columns=[], max_bytes=images), tmp_path,
                         image_task).train) > 0


# --- labels must be single values (issue 15, 8) ------------------------------------------------


def test_list_and_dict_labels_are_refused_naming_the_column_and_row(tmp_path):
    rows = generate_reviews(120).rename(columns={"label": "sentiment"}).to_dict("records")
    rows[3]["sentiment"] = ["a", "b"]
    jsonl = tmp_path / "lists.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError) as caught:
        load_data(DataConfig(path=str(jsonl), label_column="sentiment"), tmp_path, TASK)
    assert str(caught.value) == (
        "data: data.label_column 'sentiment' holds a list, not one label, in row 4 of lists.jsonl (['a', 'b']); "
        "give each row a single label (a name or an integer id)"
    )
    rows[3]["sentiment"] = {"name": "positive"}
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=r"holds a dict, not one label, in row 4 of lists.jsonl \(\{'name': 'positive'\}\)"):
        load_data(DataConfig(path=str(jsonl), label_column="sentiment"), tmp_path, TASK)


def test_a_parquet_list_column_as_labels_is_refused(tmp_path):
    frame = generate_reviews(120)
    frame["label"] = [[label] for label in frame["label"]]  # a Parquet list<string> column
    path = tmp_path / "lists.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"'label' holds a list, not one label, in row 1 of lists.parquet \(\['"):
        load_data(DataConfig(path=str(path)), tmp_path, TASK)
    frame["label"] = [label[0] for label in frame["label"]]
    frame.to_parquet(path)
    assert sum(load_data(DataConfig(path=str(path)), tmp_path, TASK).sizes().values()) == 120


# --- columns with two roles (issue 15, 9) ----------------------------------------------------------


def test_colliding_group_columns_exit_2_from_the_command(tmp_path):
    path = tmp_path / "d.csv"
    generate_reviews(120).to_csv(path, index=False)
    for groups, message in (
        ("[region, region]", "data.group_columns lists 'region' more than once"),
        ("[text]", "data.group_columns names the text column 'text' (data.text_column)"),
    ):
        result = tuneops_cli("validate", "--set", f"data.path={path}", "--set", f"data.group_columns={groups}",
                             home=tmp_path / "home")
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr and "ValueError" not in result.stderr


def test_a_group_named_like_a_column_the_splits_rename_is_a_config_error(tmp_path):
    path = tmp_path / "d.csv"
    # A file with its own 'text' and 'label' columns beside the configured body and sentiment.
    generate_reviews(120).assign(body=lambda f: f["text"], sentiment=lambda f: f["label"]).to_csv(path, index=False)
    named = dict(path=str(path), text_column="body", label_column="sentiment")
    for group, role in (("text", "data.text_column ('body')"), ("label", "data.label_column ('sentiment')")):
        with pytest.raises(ConfigError) as caught:
            load_data(DataConfig(**named, group_columns=[group]), tmp_path, TASK)
        assert f"names '{group}', the name tuneops gives {role} in its splits" in str(caught.value)
        assert caught.value.exit_code == 2
    assert list(load_data(DataConfig(**named, group_columns=["region"]), tmp_path, TASK).train.columns) == [
        "text", "label", "region"]
