"""Model selection: candidate checks, probes on the demo data, constraints, the baseline floor.

One selection run on a small demo (module fixture) serves the table tests; the candidates are
real checkpoints: the packaged MiniLM with layers dropped (1 and 2 layers, fast on CPU), the full
MiniLM (excluded by size before any compute), and real but unusable directories built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuneops.components.checkpoint_inspection import inspect_checkpoint
from tuneops.components.checkpoints import load_for_classification, parse_spec
from tuneops.components.config import PACKAGED_MINILM, DataConfig, SelectionConfig
from tuneops.components.data.loading import as_validated, load_data
from tuneops.components.errors import DataError, StageError
from tuneops.components.predictor import Predictor
from tuneops.components.selection.select import (
    CHOSEN,
    EXCLUDED,
    RANKED,
    SKIPPED,
    CandidateResult,
    candidate_specs,
    rank_candidates,
    select_model,
)
from tuneops.components.sampling import stratified_sample
from tuneops.components.tasks.registry import get_task
from tuneops.components.tasks.text.baseline import train_baseline

TEXT_TASK = get_task("text-classification")
# The floor's row in the table: the text task's TF-IDF baseline.
BASELINE_NAME = "baseline: tf-idf + logistic regression"

MINILM_1 = f"{PACKAGED_MINILM}@layers=1"
MINILM_2 = f"{PACKAGED_MINILM}@layers=2"
# Between the 2-layer MiniLM (~15.6 M parameters) and the full 6-layer one (~22.7 M).
MAX_PARAMS = 20_000_000


@pytest.fixture(scope="module")
def demo_splits(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    return as_validated(load_data(DataConfig(demo_rows=600), directory, TEXT_TASK))


def _tiny_bert(directory: Path, pickle_only: bool = False, with_tokenizer: bool = True) -> Path:
    """A real (randomly initialised) 2-layer BERT checkpoint, saved the way a user's would be."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    model = BertForSequenceClassification(config)
    if pickle_only:
        config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    else:
        model.save_pretrained(directory)
    if with_tokenizer:
        AutoTokenizer.from_pretrained(inspect_checkpoint(PACKAGED_MINILM, 3, TEXT_TASK).local_dir).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def unusable_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "hidden_size": ')  # cut off mid-write
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    return {"broken": broken, "pickle": _tiny_bert(root / "pickle_only", pickle_only=True)}


@pytest.fixture(scope="module")
def selection(demo_splits, unusable_dirs, tmp_path_factory):
    config = SelectionConfig(
        candidates=[PACKAGED_MINILM, MINILM_2, MINILM_1, str(unusable_dirs["broken"]),
                    str(unusable_dirs["pickle"]), "tuneops-tests/no-such-model", "champion"],
        max_params=MAX_PARAMS,
        probe_rows=240,
        probe_finetune_steps=2,
    )
    output = tmp_path_factory.mktemp("selection")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return select_model(demo_splits, config, output, champion_dir=None, task=TEXT_TASK)


def _row(report, candidate: str) -> CandidateResult:
    return next(row for row in report.rows if row.candidate == candidate)


def test_selection_on_demo_ranks_candidates_against_the_baseline(selection):
    ranked = [row for row in selection.rows if row.status in (CHOSEN, RANKED)]
    assert {row.candidate for row in ranked} == {MINILM_1, MINILM_2}
    assert selection.chosen in {MINILM_1, MINILM_2}
    assert sorted(row.rank for row in ranked) == [1, 2]
    for row in ranked:
        assert 0.0 <= row.probe_macro_f1 <= 1.0 and 0.0 <= row.finetune_macro_f1 <= 1.0
        assert row.finetune_steps == 2 and row.score == row.finetune_macro_f1
        assert row.latency_ms_batch1 > 0 and row.latency_ms_batch32 > 0
        assert row.peak_memory_mb is not None and row.beats_baseline is not None
    # Layer dropping gives genuinely different models: fewer layers, fewer parameters.
    assert _row(selection, MINILM_1).parameters < _row(selection, MINILM_2).parameters < MAX_PARAMS
    assert (_row(selection, MINILM_1).layers, _row(selection, MINILM_2).layers) == (1, 2)
    baseline = _row(selection, BASELINE_NAME)
    # The demo reviews are separable by their words: a working TF-IDF floor scores far above chance.
    assert baseline.probe_macro_f1 > 0.6 and selection.baseline["macro_f1"] == baseline.probe_macro_f1


def test_selection_writes_the_table_as_json_html_and_artifact_rows(selection):
    saved = json.loads(selection.json_path.read_text())
    assert saved["chosen"] == selection.chosen
    assert len(saved["rows"]) == len(selection.rows) == 8  # 7 candidates + the baseline
    page = selection.html_path.read_text()
    for row in selection.rows:
        assert row.candidate in page
    table = selection.table_rows()
    assert table[0]["candidate"] == selection.chosen and table[0]["rank"] == 1
    assert all(isinstance(value, (str, int, float)) for row in table for value in row.values())


def test_max_params_excludes_a_larger_candidate_with_the_reason(selection):
    full = _row(selection, PACKAGED_MINILM)
    assert full.status == EXCLUDED
    assert full.parameters > MAX_PARAMS
    assert "selection.max_params" in full.reason and f"{full.parameters:,}" in full.reason
    assert full.probe_macro_f1 is None  # excluded before any compute


def test_broken_directory_is_skipped_with_a_reason(selection, unusable_dirs):
    row = _row(selection, str(unusable_dirs["broken"]))
    assert row.status == SKIPPED and "config.json" in row.reason and "not valid JSON" in row.reason


def test_pickle_only_checkpoint_is_refused_by_default(selection, unusable_dirs):
    row = _row(selection, str(unusable_dirs["pickle"]))
    assert row.status == SKIPPED
    assert "pickle" in row.reason and "pytorch_model.bin" in row.reason and "allow_pickle" in row.reason


def test_hub_id_offline_and_missing_champion_are_skipped_quickly(selection):
    hub = _row(selection, "tuneops-tests/no-such-model")
    assert hub.status == SKIPPED and "not reachable offline" in hub.reason and hub.seconds < 5
    assert "no champion" in _row(selection, "champion").reason


def test_pickle_checkpoint_loads_when_the_user_opts_in(unusable_dirs):
    inspection = inspect_checkpoint(str(unusable_dirs["pickle"]), 3, TEXT_TASK, allow_pickle=True)
    assert inspection.usable and inspection.weights == "pickle" and inspection.parameters is None
    _, model = load_for_classification(parse_spec(str(unusable_dirs["pickle"])), ["a", "b", "c"], TEXT_TASK,
                                       allow_pickle=True)
    assert model.config.num_hidden_layers == 2 and model.num_labels == 3


def test_inspection_reasons_for_unusable_checkpoints(tmp_path):
    no_tokenizer = _tiny_bert(tmp_path / "no_tokenizer", with_tokenizer=False)
    assert "no tokenizer" in inspect_checkpoint(str(no_tokenizer), 3, TEXT_TASK).reason

    remote = _tiny_bert(tmp_path / "remote_code")
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="my-custom-bert", auto_map={"AutoConfig": "modeling_custom.CustomConfig"})
    (remote / "config.json").write_text(json.dumps(config))
    assert "remote code" in inspect_checkpoint(str(remote), 3, TEXT_TASK).reason

    corrupt = _tiny_bert(tmp_path / "corrupt_weights")
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 16)
    assert "not a valid safetensors file" in inspect_checkpoint(str(corrupt), 3, TEXT_TASK).reason

    assert "only 6 layers" in inspect_checkpoint(f"{PACKAGED_MINILM}@layers=9", 3, TEXT_TASK).reason
    assert "does not exist" in inspect_checkpoint(str(tmp_path / "missing"), 3, TEXT_TASK).reason


def test_parameter_count_from_headers_matches_the_loaded_model():
    inspection = inspect_checkpoint(MINILM_2, 3, TEXT_TASK)
    _, model = load_for_classification(parse_spec(MINILM_2), ["a", "b", "c"], TEXT_TASK)
    assert inspection.parameters == sum(p.numel() for p in model.parameters())
    assert inspection.max_sequence_length == 512 and inspection.weights == "safetensors"


def test_champion_is_probed_from_its_model_directory(demo_splits, tmp_path):
    tokenizer, model = load_for_classification(parse_spec(MINILM_1), demo_splits.labels, TEXT_TASK)
    champion = Predictor(model, tokenizer, demo_splits.labels, task=TEXT_TASK).save(tmp_path / "champion")
    config = SelectionConfig(candidates=["champion"], probe_rows=120)
    report = select_model(demo_splits, config, tmp_path / "selection", champion_dir=champion, task=TEXT_TASK)
    assert report.chosen == "champion"
    assert _row(report, "champion").layers == 1
    assert candidate_specs(SelectionConfig(candidates=[MINILM_1]), champion) == [MINILM_1, "champion"]
    assert candidate_specs(SelectionConfig(candidates=[MINILM_1], include_champion=False), champion) == [MINILM_1]


def test_no_usable_candidate_fails_with_every_reason(demo_splits, unusable_dirs, tmp_path):
    config = SelectionConfig(candidates=[str(unusable_dirs["broken"]), "champion"], probe_rows=60)
    with pytest.raises(StageError, match=r"^selection: no usable candidate: .*not valid JSON.*no champion"):
        select_model(demo_splits, config, tmp_path, None, TEXT_TASK)
    assert json.loads((tmp_path / "selection.json").read_text())["chosen"] is None


def test_a_spent_budget_excludes_candidates_not_yet_probed(demo_splits, tmp_path):
    config = SelectionConfig(candidates=[MINILM_1], probe_rows=60, budget_seconds=0.001)
    with pytest.raises(StageError, match="budget_seconds"):
        select_model(demo_splits, config, tmp_path, None, TEXT_TASK)


def _probed(name: str, score: float, parameters: int, latency: float) -> CandidateResult:
    return CandidateResult(candidate=name, status=RANKED, score=score, parameters=parameters,
                           latency_ms_batch1=latency)


def test_objective_prefers_the_smaller_model_on_a_tie_and_latency_is_a_constraint():
    rows = [_probed("big", 0.905, 100, 9.0), _probed("small", 0.900, 10, 2.0), _probed("weak", 0.7, 1, 1.0)]
    assert rank_candidates(rows, SelectionConfig(tie_tolerance=0.01)) == "small"
    assert [row.rank for row in rows] == [2, 1, 3]

    rows = [_probed("big", 0.95, 100, 9.0), _probed("small", 0.90, 10, 2.0)]
    assert rank_candidates(rows, SelectionConfig(tie_tolerance=0.01)) == "big"

    rows = [_probed("big", 0.95, 100, 9.0), _probed("small", 0.90, 10, 2.0)]
    assert rank_candidates(rows, SelectionConfig(max_latency_ms=5.0)) == "small"
    assert rows[0].status == EXCLUDED and "selection.max_latency_ms 5" in rows[0].reason

    rows = [_probed("big", 0.95, 100, 9.0)]
    assert rank_candidates(rows, SelectionConfig(max_latency_ms=1.0)) is None


def test_stratified_sample_keeps_label_shares(demo_splits):
    sample = stratified_sample(demo_splits.train, 120, seed=1)
    assert abs(len(sample) - 120) <= 3
    expected = demo_splits.train["label"].value_counts(normalize=True)
    observed = sample["label"].value_counts(normalize=True)
    assert (abs(expected - observed) < 0.03).all()
    assert len(stratified_sample(demo_splits.validation, 10_000, seed=1)) == len(demo_splits.validation)


def test_baseline_learns_the_demo_and_aligns_columns_with_the_label_set(demo_splits):
    labels = [*demo_splits.labels, "unseen"]
    baseline = train_baseline(demo_splits.train, labels)
    probabilities = baseline.predict_proba(demo_splits.validation["text"].tolist())
    assert probabilities.shape == (len(demo_splits.validation), len(labels))
    assert np.allclose(probabilities.sum(axis=1), 1.0) and (probabilities[:, -1] == 0).all()
    metrics = train_baseline(demo_splits.train).score(demo_splits.validation)
    assert metrics["macro_f1"] > 0.6 and metrics["accuracy"] > 0.7
    with pytest.raises(DataError, match="at least 2"):
        train_baseline(pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}))
