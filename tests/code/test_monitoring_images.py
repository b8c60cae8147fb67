"""Monitoring an image champion with real MNIST digits (the image demo's PNG files): prediction-log
records (content hash + descriptors, never pixels) compared with the reference records packaging
kept, after the training files were deleted; brightened and resized traffic drifts, traffic like
the training images does not; hash-only logs compare predictions alone; image feedback is scored
and merged with the training data by content hash.

The champion is the packaged EfficientNet-Lite0 at 64 px with a fresh 10-digit head (untrained:
drift and feedback need a real model's predictions, not a good one's).
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from tuneops.components.config import DataConfig, TrainingConfig, validate_config
from tuneops.components.data.columns import LABEL
from tuneops.components.data.demo_images import write_image_demo
from tuneops.components.errors import StageError
from tuneops.components.monitoring import monitor as monitoring
from tuneops.components.monitoring.prediction_log import INPUT, PredictionLog
from tuneops.components.monitoring.reference import LOGGED, comparable_reference, reference_sample
from tuneops.components.tasks.image.decode import content_hash
from tuneops.components.tasks.image.descriptors import DESCRIPTORS, image_descriptors
from tuneops.components.tasks.registry import get_task

TASK = get_task("image-classification")
LABELS = [str(digit) for digit in range(10)]
SIDE = 64
# Enough predictions for the monitor (monitoring.min_rows) and for the drift tests to mean something.
TRAFFIC = 100


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drifted(data: bytes) -> bytes:
    """A digit as a different camera or scanner would send it: brighter (+90 of 255) and 40x40."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L")
    return png(Image.eval(image, lambda value: min(255, value + 90)).resize((40, 40), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A packaged image champion (own TUNEOPS_HOME under ``root/home``) whose training files were
    deleted after packaging: ``(release, predictor, reference descriptors, reference hashes, root)``."""
    from tuneops.components import registry
    from tuneops.components.checkpoints import packaged_model_dir
    from tuneops.components.predictor import Predictor

    import torch

    root = tmp_path_factory.mktemp("image-champion")
    torch.manual_seed(0)  # the fresh head's weights, so its predictions repeat from run to run
    source = str(packaged_model_dir("efficientnet-lite0"))
    processor = TASK.configure_processor(TASK.load_processor(source), TrainingConfig(image_size=SIDE))
    predictor = Predictor(TASK.load_model(source, LABELS), processor, LABELS, task=TASK)
    folder = write_image_demo(root / "training", 200, seed=5)
    train = pd.DataFrame([{TASK.input_column: str(path), LABEL: path.parent.name}
                          for path in sorted(folder.glob("*/*.png"))])
    reference = reference_sample(train, predictor, rows=150, seed=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNEOPS_HOME", str(root / "home"))  # an own champion pointer (the tests set it again)
        release = registry.package_model(predictor.save(root / "model"), {"run_id": "images"}, reference)
        registry.set_champion(release.tag)
    expected = image_descriptors(reference[TASK.input_column])
    hashes = [content_hash(Path(path).read_bytes()) for path in reference[TASK.input_column]]
    # What the release keeps must be enough: the training images are gone before any monitor run.
    shutil.rmtree(root / "training")
    return release, predictor, expected, hashes, root


@pytest.fixture(scope="module")
def traffic_images(tmp_path_factory) -> list[tuple[str, bytes]]:
    """(label, PNG bytes) of real digits drawn apart from the training ones (another seed)."""
    folder = write_image_demo(tmp_path_factory.mktemp("traffic"), TRAFFIC, seed=9)
    return [(path.parent.name, path.read_bytes()) for path in sorted(folder.glob("*/*.png"))]


def write_log(directory: Path, images: list[bytes], predictor, tag: str, mode: str = "text") -> PredictionLog:
    """Log every image as the service does: the task's ``log_value`` of the bytes, and the prediction."""
    log = PredictionLog(directory)
    for index, (data, prediction) in enumerate(zip(images, predictor.predict(images))):
        log.append([{"request_id": str(index), "model_tag": tag, INPUT: TASK.log_value(data, mode),
                     "label": prediction.label, "score": prediction.score, "probabilities": prediction.probabilities}])
    return log


def run_monitor(root: Path, name: str, **settings) -> monitoring.MonitorReport:
    config = validate_config({"task": "image-classification", "monitoring": {"min_rows": 50, **settings}})
    window = monitoring.MonitorWindow(start=None, end=datetime.now(timezone.utc))
    return monitoring.check_traffic(config, root / "runs" / name, window, name, workspace=root / "workspace",
                                    log_directory=root / "logs" / name)


def test_the_reference_keeps_each_images_log_record_so_the_training_files_are_not_needed(champion):
    release, _, expected, hashes, root = champion
    assert not (root / "training").exists()
    stored = release.reference()
    records = [json.loads(record) for record in stored[LOGGED]]
    assert [record["image"] for record in records] == hashes
    comparable = comparable_reference(stored, TASK)
    described = image_descriptors(comparable[TASK.input_column])
    pd.testing.assert_frame_equal(described, expected, check_exact=False, rtol=1e-9)
    assert described.notna().all().all()  # read from the records, not from the deleted files
    with pytest.raises(StageError, match="no logged records of its images"):
        comparable_reference(stored.drop(columns=[LOGGED]), TASK)


def test_image_traffic_drifts_when_brightened_and_resized_and_not_when_like_the_training_images(
        champion, traffic_images, monkeypatch):
    release, predictor, _, _, root = champion
    monkeypatch.setenv("TUNEOPS_HOME", str(root / "home"))
    images = [data for _, data in traffic_images]
    record = json.loads(TASK.log_value(images[0], "text"))
    assert record["image"] == content_hash(images[0]) and set(DESCRIPTORS) <= set(record)

    write_log(root / "logs" / "calm", images, predictor, release.tag)
    calm = run_monitor(root, "calm")
    assert calm.status == "checked" and calm.rows == TRAFFIC and len(calm.snapshot_ids) == 2
    assert set(DESCRIPTORS) | {"prediction"} == set(calm.drift_details)  # no embedding signal
    assert not {"width", "height", "brightness"} & set(calm.drifted_columns)
    assert calm.drift_share < 0.5 and calm.retrain is False
    assert any("record of each image" in note and "no embedding drift" in note for note in calm.notes)

    write_log(root / "logs" / "drifted", [drifted(data) for data in images], predictor, release.tag)
    moved = run_monitor(root, "drifted")
    assert {"brightness", "width", "height", "file_bytes"} <= set(moved.drifted_columns)
    assert moved.drift_share >= 0.5 and moved.retrain is True
    assert moved.html_path and Path(moved.html_path).is_file()


def test_hash_only_image_logs_compare_the_predictions_alone(champion, traffic_images, monkeypatch):
    release, predictor, _, _, root = champion
    monkeypatch.setenv("TUNEOPS_HOME", str(root / "home"))
    images = [data for _, data in traffic_images]
    assert TASK.log_value(images[0], "hash") == content_hash(images[0])
    write_log(root / "logs" / "hashed", images, predictor, release.tag, mode="hash")
    hashed = run_monitor(root, "hashed")
    assert hashed.status == "checked" and hashed.drift_share is None and len(hashed.snapshot_ids) == 1
    assert any("serving.log_text: hash" in note and "no image or embedding drift" in note for note in hashed.notes)


def test_image_feedback_is_scored_without_the_files_that_cannot_be_used(champion, traffic_images, monkeypatch):
    release, predictor, _, _, root = champion
    monkeypatch.setenv("TUNEOPS_HOME", str(root / "home"))
    folder = root / "feedback"
    rows = []
    for index, (label, data) in enumerate(traffic_images[:30]):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{index}.png").write_bytes(data)
        rows.append({"image": f"{label}/{index}.png", "label": label})
    rows.append({"image": "7/gone.png", "label": "7"})  # deleted since it was labelled
    pd.DataFrame(rows).to_csv(folder / "feedback.csv", index=False)
    images = [data for _, data in traffic_images]
    write_log(root / "logs" / "feedback", images, predictor, release.tag)
    report = run_monitor(root, "feedback", feedback_path=str(folder / "feedback.csv"), min_feedback_rows=20)
    assert report.feedback["rows"] == 30 and report.feedback["value"] is not None
    assert "1 feedback images that cannot be used were left out (first: gone.png: file not found)" in \
        report.feedback["note"]


def test_image_feedback_merges_with_class_folders_or_a_table_by_content_hash(tmp_path):
    from PIL import Image

    from tuneops.components.data.loading import load_data

    folder = write_image_demo(tmp_path / "data", 100, seed=3)
    training = sorted(folder.glob("*/*.png"))
    feedback_dir = tmp_path / "incoming"
    (feedback_dir / "new").mkdir(parents=True)
    rows = []
    for index, path in enumerate(training[:4]):  # new pictures: training digits turned upside down
        Image.open(path).rotate(180).save(feedback_dir / "new" / f"{index}.png")
        rows.append({"image": f"new/{index}.png", "label": path.parent.name})
    shutil.copy(training[10], feedback_dir / "copy-of-training.png")  # same bytes, other name
    shutil.copy(feedback_dir / "new" / "0.png", feedback_dir / "copy-of-new.png")
    (feedback_dir / "junk.png").write_bytes(b"not an image at all")
    rows += [{"image": "copy-of-training.png", "label": training[10].parent.name},
             {"image": "new/1.png", "label": rows[1]["label"]},  # the same row twice
             {"image": "copy-of-new.png", "label": rows[0]["label"]},
             {"image": "missing.png", "label": "3"},
             {"image": "junk.png", "label": "3"}]
    pd.DataFrame(rows).to_csv(feedback_dir / "feedback.csv", index=False)

    table = tmp_path / "table"
    table.mkdir()
    pd.DataFrame({"file": [str(path.relative_to(folder.parent)) for path in training],
                  "digit": [path.parent.name for path in training]}).to_csv(table / "digits.csv", index=False)
    shutil.move(str(folder), str(table / folder.name))  # a table of paths relative to it
    class_folders = DataConfig(path=str(table / folder.name), group_columns=[])
    as_table = DataConfig(path=str(table / "digits.csv"), image_column="file", label_column="digit", group_columns=[])

    for number, data in enumerate((class_folders, as_table)):
        merged = monitoring.merge_feedback(data, feedback_dir / "feedback.csv", tmp_path / f"merged-{number}", TASK)
        assert (merged.base_rows, merged.feedback_rows, merged.skipped_rows, merged.unusable_rows) == (100, 4, 3, 2)
        splits = load_data(merged.data_config(data), tmp_path / "demo", TASK)
        loaded = pd.concat([frame for _, frame in splits.items()])
        assert len(loaded) == 104 and loaded[TASK.input_column].map(lambda value: Path(value).is_absolute()).all()
        added = loaded[loaded[TASK.input_column].str.startswith(str(feedback_dir / "new"))]
        assert sorted(added[LABEL]) == sorted(row["label"] for row in rows[:4])
        assert all(Path(value).is_file() for value in loaded[TASK.input_column])
