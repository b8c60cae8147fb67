"""Behavioural checks, evaluation and the gate on a MiniLM fine-tuned in this test session."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tuneops.components.checkpoints import load_for_classification, parse_spec
from tuneops.components.config import PACKAGED_MINILM, EvaluationConfig, GateConfig, validate_config
from tuneops.components.data.demo import generate_drifted_texts
from tuneops.components.evaluation.behaviour import run_behavioural_checks
from tuneops.components.evaluation.drift import compute_drift
from tuneops.components.evaluation.evaluate import evaluate
from tuneops.components.evaluation.gate import decide
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.registry import get_task

TEXT_TASK = get_task("text-classification")

# Small samples keep each evaluate() call to seconds on a CPU; the code paths are the full ones.
# demo_cases: the session's model is trained on the demo, whose own review cases apply to it.
QUICK = EvaluationConfig(bootstrap_samples=50, drift_sample_rows=120, behavioural_sample_rows=30, demo_cases=True)


def test_finetuned_model_passes_the_builtin_behavioural_checks(finetuned, demo_splits):
    texts = demo_splits.test["text"].tolist()
    results = run_behavioural_checks(finetuned, texts, finetuned.predict_proba(texts), QUICK, finetuned.task)
    kinds = {result.kind for result in results}
    assert kinds == {"invariance", "directional", "minimum"}
    for result in results:
        assert result.tested > 0, result.name
        assert result.pass_rate >= 0.8, (result.name, result.failures)


def test_configured_cases_judge_the_model_as_written(finetuned):
    config = validate_config({"evaluation": {"builtin_invariance": False, "behavioural": [
        {"kind": "minimum", "name": "praise", "texts": ["Love the blender! Will buy again!"], "expected": "positive"},
        {"kind": "minimum", "name": "wrong on purpose", "texts": ["Love the blender! Will buy again!"],
         "expected": "negative"},
        {"kind": "directional", "name": "complaint", "texts": ["The kettle arrived on time."],
         "perturbation": "append: It broke the next day, total waste of money.", "direction": "negative"},
        {"kind": "invariance", "name": "punctuation", "texts": ["Great scarf, exactly as described."],
         "perturbation": "punctuation"},
    ]}}).evaluation
    results = {r.name: r for r in run_behavioural_checks(finetuned, [], np.zeros((0, 3)), config, finetuned.task)}
    assert results["praise"].pass_rate == 1.0
    assert results["wrong on purpose"].pass_rate == 0.0
    assert results["wrong on purpose"].failures == [
        {"text": "Love the blender! Will buy again!", "expected": "negative", "got": "positive"}]
    assert results["complaint"].pass_rate == 1.0
    assert results["punctuation"].tested == 1


def test_evaluate_writes_every_report(finetuned, demo_splits, tmp_path):
    report = evaluate(finetuned, demo_splits, QUICK, tmp_path)

    assert report.rows == len(demo_splits.test) and report.data_fingerprint == demo_splits.fingerprint
    assert report.metrics["macro_f1"] > 0.7
    low, high = report.intervals["macro_f1"]
    assert low <= report.metrics["macro_f1"] <= high
    assert report.behavioural and all(r.pass_rate is not None for r in report.behavioural)
    # Training sample vs its own test split: the same distribution, so at most a chance alarm.
    assert set(report.drift.details) == {"text_length", "oov_share", "non_letter_share", "label", "prediction",
                                         "embedding"}
    assert report.drift.drift_share <= 2 / 6
    written = dict(report.reports())
    assert len(written) == 7
    for path in written.values():
        assert path.exists() and path.stat().st_size > 0
    assert json.loads(report.json_path.read_text())["behavioural"]


def test_drifted_traffic_moves_the_models_own_embeddings(finetuned, demo_splits, tmp_path):
    reference = demo_splits.train.sample(150, random_state=0)
    traffic = pd.DataFrame({"text": generate_drifted_texts(40)})
    result = compute_drift(reference, traffic, tmp_path, finetuned.task, predictor=finetuned, title="traffic")
    assert result.details["embedding"]["drifted"] is True
    assert "prediction" in result.details
    assert result.drift_share >= 0.5


@pytest.fixture(scope="module")
def untrained_dir(tmp_path_factory, demo_splits):
    """MiniLM with a fresh, untrained classification head: a real model that is clearly worse."""
    import torch

    torch.manual_seed(0)
    tokenizer, model = load_for_classification(parse_spec(PACKAGED_MINILM), demo_splits.labels, TEXT_TASK)
    directory = tmp_path_factory.mktemp("untrained") / "model"
    Predictor(model, tokenizer, demo_splits.labels, task=TEXT_TASK, max_length=64).save(directory)
    return directory


def test_better_challenger_becomes_champion_and_worse_one_is_rejected(finetuned_dir, untrained_dir, demo_splits,
                                                                       tmp_path):
    from tuneops.components import registry

    reference = demo_splits.train[["text", "label"]].head(50)
    incumbent = registry.package_model(untrained_dir, {"run_id": "untrained"}, reference)
    registry.set_champion(incumbent.tag)

    # The champion is re-scored from the store on the same splits, as the flow does.
    config = QUICK.model_copy(update={"evidently_reports": False})
    champion_report = evaluate(Predictor.from_dir(registry.champion_model_dir(), device="cpu"), demo_splits,
                               config, tmp_path / "champion")
    challenger_report = evaluate(Predictor.from_dir(finetuned_dir, device="cpu"), demo_splits, config,
                                 tmp_path / "challenger")

    decision = decide(challenger_report, champion_report, None, GateConfig())
    assert decision.promote, decision.reasons
    assert decision.reasons[0].startswith("macro_f1") and "vs champion" in decision.reasons[0]
    release = registry.package_model(finetuned_dir, {"run_id": "finetuned", "gate": "promote"}, reference)
    registry.set_champion(release.tag)
    assert registry.champion_tag() == release.tag

    backwards = decide(champion_report, challenger_report, None, GateConfig())
    assert not backwards.promote
    assert any(r.startswith("macro_f1") and "drop" in r for r in backwards.reasons)
    assert registry.champion_tag() == release.tag  # a rejection changes nothing
