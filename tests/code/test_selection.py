"""Model selection: candidate checks, probes on the demo data, constraints, the baseline floor,
and how the winner is chosen under the probes' uncertainty.

One selection run on a small demo (module fixture) serves the table tests; the candidates are
real checkpoints: the packaged MiniLM with layers dropped (1 and 2 layers, fast on CPU), the full
MiniLM (excluded by size before any compute), and real but unusable directories built here. The
ranking rules are tested on constructed validation predictions whose accuracy is set by hand.
"""

from __future__ import annotations

import html
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
from tuneops.components.metrics import bootstrap_label_scores, label_scores
from tuneops.components.predictor import Predictor
from tuneops.components.selection.probe import SEED, score_predictions
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
PROBE_ROWS = 240


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
        probe_rows=PROBE_ROWS,
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


def test_selection_on_demo_gives_intervals_and_says_why_the_winner_won(selection, demo_splits):
    chosen = selection.chosen_result
    other = next(row for row in selection.rows if row.status == RANKED)
    # The validation rows selection scored on (the same stratified sample).
    truth = stratified_sample(demo_splits.validation, PROBE_ROWS, SEED)["label"].astype(str).tolist()
    for row in (chosen, other):
        low, high = row.score_interval
        assert low <= row.score <= high and high - low > 0
        # The kept predictions are the ones behind the score (the fine-tune probe's, as it ran).
        assert score_predictions(truth, row.predictions, demo_splits.labels)[0] == pytest.approx(row.score)
    assert chosen.versus_chosen is None and chosen.versus_chosen_interval is None
    assert other.versus_chosen == pytest.approx(other.score - chosen.score)
    assert other.versus_chosen_interval[0] <= other.versus_chosen <= other.versus_chosen_interval[1]
    assert selection.why.startswith(f"{selection.chosen} won: ")
    assert selection.why in selection.summary()
    assert any(note.startswith("won: ") for note in chosen.notes)
    assert selection.constraints["bootstrap_samples"] == 200


def test_selection_writes_the_table_as_json_html_and_artifact_rows(selection):
    saved = json.loads(selection.json_path.read_text())
    assert saved["chosen"] == selection.chosen and saved["why"] == selection.why
    assert len(saved["rows"]) == len(selection.rows) == 8  # 7 candidates + the baseline
    assert all("predictions" not in row for row in saved["rows"])  # per-row predictions stay in memory
    chosen = next(row for row in saved["rows"] if row["candidate"] == selection.chosen)
    assert chosen["score_interval"] == selection.chosen_result.score_interval
    page = selection.html_path.read_text()
    for row in selection.rows:
        assert row.candidate in page
    assert "score 95% interval" in page and html.escape(selection.why) in page
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


def test_without_predictions_ranking_runs_on_point_scores_and_latency_is_a_constraint():
    rows = [_probed("big", 0.900, 100, 9.0), _probed("small", 0.905, 10, 2.0), _probed("weak", 0.7, 1, 1.0)]
    choice = rank_candidates(rows, SelectionConfig(tie_tolerance=0.01), floor_score=0.5)
    assert choice.candidate == "big" and "the largest model wins" in choice.why and "no bootstrap intervals" in choice.why
    assert [row.rank for row in rows] == [1, 2, 3]
    assert all(row.score_interval is None for row in rows)

    rows = [_probed("big", 0.90, 100, 9.0), _probed("small", 0.95, 10, 2.0)]
    assert rank_candidates(rows, SelectionConfig(tie_tolerance=0.01), floor_score=0.5).candidate == "small"

    rows = [_probed("big", 0.95, 100, 9.0), _probed("small", 0.90, 10, 2.0)]
    assert rank_candidates(rows, SelectionConfig(max_latency_ms=5.0), floor_score=0.5).candidate == "small"
    assert rows[0].status == EXCLUDED and "selection.max_latency_ms 5" in rows[0].reason

    rows = [_probed("big", 0.95, 100, 9.0)]
    assert rank_candidates(rows, SelectionConfig(max_latency_ms=1.0), floor_score=0.5).candidate is None


# Constructed validation rows: 3 balanced classes; a candidate's predictions are right on exactly
# the given fraction of the rows (its own random choice of rows) and wrong, by one class, elsewhere.
VALIDATION_ROWS = 400
TRUTH = np.arange(VALIDATION_ROWS) % 3


def _predicting(name: str, right: float, parameters: int, seed: int) -> CandidateResult:
    predictions = (TRUTH + 1) % 3
    hits = np.random.default_rng(seed).permutation(VALIDATION_ROWS)[:round(right * VALIDATION_ROWS)]
    predictions[hits] = TRUTH[hits]
    score = label_scores(TRUTH, predictions, 3)["macro_f1"]
    return CandidateResult(candidate=name, status=RANKED, score=score, parameters=parameters,
                           latency_ms_batch1=parameters / 10, predictions=predictions)


def test_paired_bootstrap_scores_every_prediction_on_the_same_resamples():
    good, weak = _predicting("good", 0.9, 1, seed=1), _predicting("weak", 0.6, 1, seed=2)
    scores = bootstrap_label_scores(TRUTH, {"good": good.predictions, "same": good.predictions.copy(),
                                            "weak": weak.predictions}, 3, "macro_f1", 300, seed=7)
    assert sorted(scores) == ["good", "same", "weak"] and all(values.shape == (300,) for values in scores.values())
    assert np.array_equal(scores["good"], scores["same"])  # same weights: identical predictions, identical scores
    assert abs(scores["good"].mean() - good.score) < 0.01 and scores["good"].std() > 0
    # Paired: the difference varies less than either score does on independent resamples.
    assert (scores["good"] - scores["weak"]).std() < np.hypot(scores["good"].std(), scores["weak"].std())
    again = bootstrap_label_scores(TRUTH, {"good": good.predictions}, 3, "macro_f1", 300, seed=7)
    assert np.array_equal(again["good"], scores["good"])
    assert bootstrap_label_scores(TRUTH, {"good": good.predictions}, 3, "macro_f1", 0, seed=7) == {}


def test_a_clear_lead_wins_even_for_the_larger_model():
    rows = [_predicting("big", 0.9, 100, seed=1), _predicting("small", 0.6, 10, seed=2)]
    choice = rank_candidates(rows, SelectionConfig(), floor_score=0.5, truth=TRUTH)
    big, small = rows
    assert choice.candidate == "big" and big.status == CHOSEN and (big.rank, small.rank) == (1, 2)
    low, high = small.versus_chosen_interval
    assert high < -0.2 and low <= small.versus_chosen <= high
    assert choice.why == (f"big won: its lead over small is [{-high:.3f}, {-low:.3f}] (paired 95% interval), "
                          "entirely above selection.tie_tolerance 0.01")
    for row in rows:
        assert row.score_interval[0] < row.score < row.score_interval[1]
    assert small.notes[-1].startswith("clearly behind big")


def test_a_tie_goes_to_the_larger_model_near_the_floor_and_above_it():
    # Measured on 600 VADER tweets: a probe tie (0.630 vs 0.618) fine-tuned to 0.676 vs 0.566.
    rows = [_predicting("small", 0.66, 10, seed=3), _predicting("big", 0.64, 100, seed=4)]
    choice = rank_candidates(rows, SelectionConfig(), floor_score=0.63, truth=TRUTH)
    assert choice.candidate == "big"
    assert "cannot tell small and big apart" in choice.why and "near or below the floor's 0.630" in choice.why
    assert "a tie of frozen-embedding probes says little about what fine-tuning reaches" in choice.why
    small = rows[0]
    low, high = small.versus_chosen_interval
    assert low < 0 < high  # the probes cannot tell them apart
    assert small.notes[-1] == "the best score, but indistinguishable from big, which won the tie"
    # Far above the floor it is still a tie of probes: the larger model, said so.
    rows = [_predicting("small", 0.66, 10, seed=3), _predicting("big", 0.64, 100, seed=4)]
    above = rank_candidates(rows, SelectionConfig(), floor_score=0.3, truth=TRUTH)
    assert above.candidate == "big" and "above the floor's 0.300" in above.why


def test_a_clearly_beaten_candidate_is_out_of_the_tie():
    rows = [_predicting("big", 0.92, 100, seed=5), _predicting("small", 0.91, 10, seed=6),
            _predicting("weak", 0.5, 1000, seed=7)]
    choice = rank_candidates(rows, SelectionConfig(), floor_score=0.6, truth=TRUTH)
    big, small, weak = rows
    # weak has the most parameters but is clearly behind: the tie is big and small only.
    assert choice.candidate == "big" and big.rank == 1 and weak.rank == 3
    assert "cannot tell big and small apart" in choice.why and "the largest model wins" in choice.why
    assert weak.notes[-1].startswith("clearly behind big")
    assert small.versus_chosen_interval[0] < 0 < small.versus_chosen_interval[1]


def test_zero_bootstrap_samples_falls_back_to_point_scores():
    config = SelectionConfig(bootstrap_samples=0, tie_tolerance=0.03)
    rows = [_predicting("small", 0.92, 10, seed=5), _predicting("big", 0.91, 100, seed=6)]
    assert abs(rows[0].score - rows[1].score) <= 0.03
    choice = rank_candidates(rows, config, floor_score=0.6, truth=TRUTH)
    assert choice.candidate == "big" and "no bootstrap intervals" in choice.why
    assert all(row.score_interval is None and row.versus_chosen_interval is None for row in rows)
    assert rows[0].versus_chosen == pytest.approx(rows[0].score - rows[1].score)
    # Beyond the tolerance the point lead wins, even for the smaller model.
    config = SelectionConfig(bootstrap_samples=0, tie_tolerance=0.001)
    rows = [_predicting("small", 0.92, 10, seed=5), _predicting("big", 0.91, 100, seed=6)]
    assert rank_candidates(rows, config, floor_score=0.6, truth=TRUTH).candidate == "small"
    # A point lead of 0.02 beats the 0.01 tolerance; the paired interval of the same lead does not.
    rows = [_predicting("small", 0.92, 10, seed=5), _predicting("big", 0.90, 100, seed=6)]
    assert rank_candidates(rows, SelectionConfig(bootstrap_samples=0), floor_score=0.6, truth=TRUTH).candidate == "small"
    rows = [_predicting("small", 0.92, 10, seed=5), _predicting("big", 0.90, 100, seed=6)]
    assert rank_candidates(rows, SelectionConfig(), floor_score=0.6, truth=TRUTH).candidate == "big"


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
