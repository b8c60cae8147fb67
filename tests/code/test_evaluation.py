"""Evaluation, fairness, behaviour and drift components on real inputs: the demo data, a real
TF-IDF + logistic-regression classifier, and metrics checked against scikit-learn / fairlearn."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from tuneops.components.config import DataConfig, EvaluationConfig, GateConfig, validate_config
from tuneops.components.data.demo import generate_drifted_texts, generate_reviews
from tuneops.components.data.loading import as_validated, load_data
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.evaluation.behaviour import run_behavioural_checks
from tuneops.components.evaluation.drift import compute_drift
from tuneops.components.evaluation.evaluate import evaluate_predictions
from tuneops.components.evaluation.fairness import assess_fairness
from tuneops.components.evaluation.floor import score_floor
from tuneops.components.evaluation.gate import decide
from tuneops.components.metrics import (bootstrap_intervals, classification_metrics, expected_calibration_error,
                                        reliability_bins)
from tuneops.components.pages import write_page
from tuneops.components.run_index import render_index
from tuneops.components.tasks.registry import get_task
from tuneops.components.tasks.text.baseline import train_baseline
from tuneops.components.tasks.text.descriptors import text_descriptors
from tuneops.components.tasks.text.perturbations import NAMES, perturb
from tuneops.components.tasks.text.slices import length_bucket_names

TEXT_TASK = get_task("text-classification")

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The full demo splits (test: ~540 rows, every group above the slice minimum)."""
    return as_validated(load_data(DataConfig(), tmp_path_factory.mktemp("demo"), TEXT_TASK))


@pytest.fixture(scope="module")
def tfidf(demo):
    return train_baseline(demo.train)


def random_probabilities(rows: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(classes), size=rows)


# --- metrics ---------------------------------------------------------------------------------


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    truth = list(rng.choice(LABELS, size=300, p=[0.2, 0.3, 0.5]))
    probabilities = random_probabilities(300, 3, seed=4)
    # Nudge towards the truth so the scores are not all near chance.
    probabilities[np.arange(300), [LABELS.index(t) for t in truth]] += 0.4
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = [LABELS[i] for i in probabilities.argmax(axis=1)]

    metrics = classification_metrics(truth, probabilities, LABELS)

    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    for average in ("macro", "weighted"):
        assert metrics[f"{average}_f1"] == pytest.approx(f1_score(truth, predicted, average=average))
        assert metrics[f"{average}_precision"] == pytest.approx(precision_score(truth, predicted, average=average))
        assert metrics[f"{average}_recall"] == pytest.approx(recall_score(truth, predicted, average=average))
    expected_auc = roc_auc_score(truth, probabilities, multi_class="ovr", labels=LABELS)
    assert metrics["roc_auc_ovr"] == pytest.approx(expected_auc)
    per_class_f1 = f1_score(truth, predicted, average=None, labels=LABELS)
    for label, expected in zip(LABELS, per_class_f1):
        assert metrics["per_class"][label]["f1"] == pytest.approx(expected)
        assert metrics["per_class"][label]["support"] == truth.count(label)
    assert json.loads(json.dumps(metrics)) == metrics  # plain JSON for summary.json


def test_roc_auc_counts_tied_scores_as_half():
    truth = ["a", "b", "a", "b"]
    probabilities = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    metrics = classification_metrics(truth, probabilities, ["a", "b"])
    assert metrics["per_class"]["a"]["roc_auc"] == pytest.approx(roc_auc_score([1, 0, 1, 0], probabilities[:, 0]))


def test_labels_the_model_does_not_know_count_as_wrong():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    metrics = classification_metrics(["a", "b", "c"], probabilities, ["a", "b"])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "roc_auc": 0.5}


def test_expected_calibration_error_on_a_hand_computed_case():
    # Every prediction made with confidence 0.8, half of them right: ECE = |0.5 - 0.8| = 0.3.
    probabilities = np.tile([0.8, 0.2], (10, 1))
    truth = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(truth, probabilities, bins=10) == pytest.approx(0.3)
    # 80% right at confidence 0.8: perfectly calibrated.
    assert expected_calibration_error(np.array([0] * 8 + [1] * 2), probabilities, bins=10) == pytest.approx(0.0)


def test_bootstrap_intervals_equal_explicit_resampling():
    truth_labels = list(np.random.default_rng(5).choice(LABELS, size=120))
    truth = np.array([LABELS.index(t) for t in truth_labels])
    probabilities = random_probabilities(120, 3, seed=6)
    intervals = bootstrap_intervals(truth, probabilities, LABELS, samples=40, seed=9)

    # The same multinomial draws, as explicit resampled index lists scored by scikit-learn.
    counts = np.random.default_rng(9).multinomial(120, np.full(120, 1 / 120), size=40)
    predicted = probabilities.argmax(axis=1)
    f1s = [f1_score(truth[np.repeat(np.arange(120), c)], predicted[np.repeat(np.arange(120), c)], average="macro")
           for c in counts]
    assert intervals["macro_f1"] == pytest.approx([np.percentile(f1s, 2.5), np.percentile(f1s, 97.5)])
    point = classification_metrics(truth_labels, probabilities, LABELS)
    for name in ("accuracy", "macro_f1", "roc_auc_ovr", "ece"):
        low, high = intervals[name]
        assert low <= point[name] <= high, name
    assert bootstrap_intervals(truth, probabilities, LABELS, samples=0, seed=0) == {}


def test_length_buckets_are_named_and_ordered():
    names = length_bucket_names(np.array([10, 40, 79, 80, 159, 160, 999]), [80, 40, 160])
    assert list(names) == ["<40", "40-79", "40-79", "80-159", "80-159", ">=160", ">=160"]


def test_the_reliability_bins_are_the_bins_of_the_ece():
    truth = np.random.default_rng(7).integers(0, 3, size=400)
    probabilities = random_probabilities(400, 3, seed=8)
    for bins in (5, 15):
        table = reliability_bins(truth, probabilities, bins)
        assert table["count"].sum() == 400 and len(table["centre"]) <= bins
        weighted_gap = (table["count"] * np.abs(table["accuracy"] - table["confidence"])).sum() / 400
        assert weighted_gap == pytest.approx(expected_calibration_error(truth, probabilities, bins))


def test_the_score_floor_is_the_task_baseline_on_the_test_split(demo, tfidf):
    floor = score_floor(demo, TEXT_TASK, bins=10)
    probabilities = tfidf.predict_proba(demo.test["text"].tolist())
    expected = classification_metrics(demo.test["label"].tolist(), probabilities, tfidf.labels, 10)
    assert {key: floor[key] for key in expected} == expected
    assert floor["floor"] == tfidf.description and floor["floor_C"] == tfidf.C
    assert floor["macro_f1"] > 0.8 and floor["support"] == len(demo.test)


# --- evaluation reports ---------------------------------------------------------------------------


def test_evaluate_predictions_writes_every_report(demo, tfidf, tmp_path):
    probabilities = tfidf.predict_proba(demo.test["text"].tolist())
    config = EvaluationConfig(bootstrap_samples=50, min_slice_support=60)
    report = evaluate_predictions(demo.test, probabilities, tfidf.labels, demo.group_columns, config, tmp_path,
                                  TEXT_TASK, data_fingerprint=demo.fingerprint, model="tfidf")

    assert report.metrics["macro_f1"] > 0.8
    assert set(report.intervals) >= {"accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr", "ece"}
    # Every group value and length bucket is a slice; small ones are flagged, not dropped.
    regions = {s.value: s for s in report.slices if s.column == "region"}
    assert set(regions) == set(demo.test["region"])
    assert sum(s.support for s in regions.values()) == len(demo.test)
    assert regions["latin_america"].small and not regions["north_america"].small
    assert {s.column for s in report.slices} == {"product_category", "region", "text_length"}

    titles = dict(report.reports())
    for path in titles.values():
        assert path.exists() and path.stat().st_size > 0
    assert {"Evaluation summary", "Classification report (Evidently)", "Bias report per group (fairlearn + Evidently)",
            "Confusion matrix", "Reliability diagram"} <= set(titles)
    summary = report.html_path.read_text()
    assert "Slices" in summary and "latin_america" in summary and "small (not judged)" in summary
    # The text task's length buckets are listed from short to long, not alphabetically.
    assert [s.value for s in report.slices if s.column == "text_length"] == ["<40", "40-79", "80-159", ">=160"]
    bias = report.bias_html.read_text()
    for group in ("kitchen", "europe", "latin_america"):
        assert f"{group} (" in bias  # one Evidently section per group
    # Evidently's 3.5 MB script is one shared file beside the pages, not inlined into each.
    scripts = list((report.bias_html.parent / "evidently").glob("evidently-*.js"))
    assert len(scripts) == 1 and scripts[0].stat().st_size > 1_000_000
    for title in ("Classification report (Evidently)", "Bias report per group (fairlearn + Evidently)"):
        page = titles[title].read_text()
        assert f'<script src="evidently/{scripts[0].name}">' in page and len(page) < 1_000_000, title
    saved = json.loads(report.json_path.read_text())
    assert saved["metrics"]["macro_f1"] == pytest.approx(report.metrics["macro_f1"])
    assert saved["data_fingerprint"] == demo.fingerprint


def test_calibration_bins_are_honoured_and_the_page_links_back_to_its_run(demo, tmp_path):
    # Right at confidence 0.6 on even rows, wrong at 0.9 on odd ones: two bins merge them, 15 do not.
    truth = np.array([LABELS.index(label) for label in demo.test["label"]])
    rows = np.arange(len(truth))
    probabilities = np.full((len(truth), 3), 0.05)
    probabilities[rows % 2 == 0] = 0.2
    probabilities[rows[rows % 2 == 0], truth[rows % 2 == 0]] = 0.6
    probabilities[rows[rows % 2 == 1], (truth[rows % 2 == 1] + 1) % 3] = 0.9
    (tmp_path / "summary.json").write_text("{}")  # tmp_path plays a run record
    config = EvaluationConfig(bootstrap_samples=0, evidently_reports=False, calibration_bins=2)
    report = evaluate_predictions(demo.test, probabilities, LABELS, [], config, tmp_path / "evaluation", TEXT_TASK)
    assert report.metrics["ece"] == pytest.approx(expected_calibration_error(truth, probabilities, bins=2))
    assert report.metrics["ece"] == pytest.approx(0.25, abs=0.01)
    assert expected_calibration_error(truth, probabilities, bins=15) == pytest.approx(0.65, abs=0.01)
    page = report.html_path.read_text()
    assert 'href="../index.html"' in page and "<h1>Evaluation on the test split</h1>" in page


def test_evaluation_refuses_probabilities_of_the_wrong_shape(demo, tmp_path):
    with pytest.raises(DataError, match="probabilities of shape"):
        evaluate_predictions(demo.test, np.ones((3, 3)) / 3, LABELS, [], EvaluationConfig(), tmp_path, TEXT_TASK)


# --- fairness ---------------------------------------------------------------------------------


def test_fairness_gap_names_the_group_whose_labels_are_corrupted(demo, tfidf):
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    test = demo.test.copy()
    predicted = [tfidf.labels[i] for i in tfidf.predict_proba(test["text"].tolist()).argmax(axis=1)]
    # Corrupt one group's true labels (rotate them): the model now "fails" europe only.
    rotate = {"negative": "neutral", "neutral": "positive", "positive": "negative"}
    europe = test["region"] == "europe"
    test.loc[europe, "label"] = test.loc[europe, "label"].map(rotate)

    report = assess_fairness(test, test["label"].tolist(), predicted, LABELS, ["region"], 30, 10)

    gap = report.gap("region", "equalized_odds_difference")
    assert gap.value > 0.8
    assert gap.low_group == "europe" and gap.rate == "true_positive_rate"
    assert "europe" in gap.describe() and "equalized_odds_difference" in gap.describe()
    # The same numbers as fairlearn's own functions, class by class.
    truth, pred = test["label"].to_numpy(), np.array(predicted)
    for label in LABELS:
        expected = equalized_odds_difference(truth == label, pred == label, sensitive_features=test["region"])
        assert gap.per_class[label] == pytest.approx(expected)
        parity = demographic_parity_difference(truth == label, pred == label, sensitive_features=test["region"])
        assert report.gap("region", "demographic_parity_difference").per_class[label] == pytest.approx(parity)
    rates = {g.group: g for g in report.groups if g.column == "region"}
    assert rates["europe"].true_positive_rate["positive"] < 0.2 < rates["north_america"].true_positive_rate["positive"]


def test_small_groups_are_listed_but_left_out_of_the_gaps():
    frame = pd.DataFrame({"group": ["big"] * 60 + ["other"] * 60 + ["tiny"] * 5})
    truth = (["a"] * 30 + ["b"] * 30) * 2 + ["a"] * 5
    predicted = truth[:120] + ["b"] * 5  # the tiny group is always wrong
    report = assess_fairness(frame, truth, predicted, ["a", "b"], ["group"], 30, 10)
    assert report.excluded_groups == {"group": ["tiny"]}
    assert report.gap("group", "equalized_odds_difference").value == pytest.approx(0.0)
    assert any(g.group == "tiny" and g.small for g in report.groups)


# --- behaviour ---------------------------------------------------------------------------------


def test_perturbations_change_only_what_they_name():
    rng = random.Random(0)
    text = "Bought the kettle for Maria and it was a hit."
    typo = perturb(text, "typos", rng)
    assert typo != text and sorted(typo) == sorted(text) and len(typo) == len(text)
    swapped = perturb(text, "names", rng)
    assert "Maria" not in swapped and any(name in swapped for name in NAMES)
    assert perturb(text, "casing", rng) == text.lower()
    assert perturb("no names here", "names", rng) is None
    assert perturb(text, "append:Avoid.", rng).endswith("a hit. Avoid.")
    with pytest.raises(ConfigError, match="unknown perturbation"):
        perturb(text, "shuffle", rng)


def test_behavioural_checks_on_a_real_classifier(demo, tfidf):
    texts = demo.test["text"].tolist()
    probabilities = tfidf.predict_proba(texts)
    results = {r.name: r for r in run_behavioural_checks(tfidf, texts, probabilities,
                                                         EvaluationConfig(behavioural_sample_rows=40, demo_cases=True),
                                                         TEXT_TASK)}
    assert {"typo invariance", "casing invariance", "name-swap invariance", "clear negative reviews"} <= set(results)
    assert {r.kind for r in results.values()} == {"invariance", "directional", "minimum"}
    for result in results.values():
        assert result.tested > 0 and 0 <= result.pass_rate <= 1
        assert len(result.failures) == min(5, result.tested - result.passed)


def test_the_demo_cases_judge_the_demo_only(demo, tfidf):
    """A user's data is never gated on the demo's hand-written product reviews, even when its labels
    are the demo's (negative / neutral / positive): only the label-agnostic invariances run."""
    from tuneops.components.config import PipelineConfig

    assert PipelineConfig().evaluation.demo_cases is True
    user = PipelineConfig.model_validate({"data": {"path": "tweets.csv"}})
    assert user.evaluation.demo_cases is False
    assert PipelineConfig.model_validate({"data": {"path": "x.csv"}, "evaluation": {"demo_cases": True}}).evaluation.demo_cases
    texts = demo.test["text"].tolist()
    results = run_behavioural_checks(tfidf, texts, tfidf.predict_proba(texts),
                                     user.evaluation.model_copy(update={"behavioural_sample_rows": 40}), TEXT_TASK)
    assert {r.kind for r in results} == {"invariance"}
    assert not any("review" in r.name for r in results)


def test_configured_cases_run_and_bad_ones_are_one_line_errors(tfidf):
    cases = [{"kind": "minimum", "name": "obvious", "texts": ["Terrible, total waste of money. Avoid."],
              "expected": "negative", "min_pass_rate": 1.0},
             {"kind": "invariance", "name": "shouting", "texts": ["The kettle is okay."], "perturbation": "uppercase"}]
    config = validate_config({"evaluation": {"behavioural": cases, "builtin_invariance": False}}).evaluation
    results = run_behavioural_checks(tfidf, [], np.zeros((0, 3)), config, TEXT_TASK)
    assert [r.name for r in results] == ["obvious", "shouting"]  # no built-in cases once cases are configured
    assert results[0].min_pass_rate == 1.0 and results[0].tested == 1

    bad_label = validate_config({"evaluation": {"behavioural": [dict(cases[0], expected="angry")]}}).evaluation
    with pytest.raises(ConfigError, match="'angry' is not one of the model's labels"):
        run_behavioural_checks(tfidf, [], np.zeros((0, 3)), bad_label, TEXT_TASK)
    with pytest.raises(ConfigError, match="needs expected"):
        validate_config({"evaluation": {"behavioural": [{"kind": "minimum", "name": "x", "texts": ["a"]}]}})


# --- drift ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reviews():
    return generate_reviews(rows=900, seed=21)


def test_no_drift_between_samples_of_the_same_data(reviews, tmp_path):
    result = compute_drift(reviews.iloc[:600], reviews.iloc[600:], tmp_path, TEXT_TASK)
    assert set(result.details) == {"text_length", "oov_share", "non_letter_share", "label"}
    assert result.drift_share <= 0.25
    assert result.html_path.exists() and result.html_path.stat().st_size > 100_000
    assert json.loads(result.json_path.read_text())["drift_share"] == result.drift_share
    assert result.snapshot is not None


def test_drifted_traffic_is_detected_from_a_small_sample_without_labels(reviews, tmp_path):
    current = pd.DataFrame({"text": generate_drifted_texts(30)})
    result = compute_drift(reviews, current, tmp_path, TEXT_TASK)
    assert "label" not in result.details  # the traffic has no labels: not compared, no error
    assert {"text_length", "oov_share", "non_letter_share"} <= set(result.drifted_columns)
    assert result.drift_share >= 0.5


def test_embedding_and_prediction_drift(reviews, tmp_path):
    rng = np.random.default_rng(0)
    reference = reviews.iloc[:400].assign(prediction=reviews["label"].iloc[:400])
    current = reviews.iloc[400:500].assign(prediction="negative")  # the model suddenly says one thing
    same = compute_drift(reference, current, tmp_path / "same", TEXT_TASK,
                         reference_embeddings=rng.normal(size=(400, 16)), current_embeddings=rng.normal(size=(100, 16)))
    assert same.details["embedding"]["drifted"] is False
    assert same.details["prediction"]["drifted"] is True
    shifted = compute_drift(reference, current, tmp_path / "shifted", TEXT_TASK,
                            reference_embeddings=rng.normal(size=(400, 16)),
                            current_embeddings=rng.normal(loc=1.0, size=(100, 16)))
    assert shifted.details["embedding"]["drifted"] is True
    assert "Drift in the model" in shifted.html_path.read_text()


def test_drift_needs_text_and_enough_rows(reviews, tmp_path):
    with pytest.raises(DataError, match="at least 10"):
        compute_drift(reviews, reviews.iloc[:5], tmp_path, TEXT_TASK)
    with pytest.raises(DataError, match="no 'text' column"):
        compute_drift(reviews, reviews.rename(columns={"text": "body"}), tmp_path, TEXT_TASK)


def test_out_of_vocabulary_share_is_leave_one_out_on_the_reference():
    reference = pd.Series(["good kettle", "good blender", "unique words"])
    own = text_descriptors(reference, reference_vocabulary=None)
    # "kettle", "blender", "unique", "words" occur in one reference text only.
    assert list(own["oov_share"]) == [0.5, 0.5, 1.0]
    other = text_descriptors(pd.Series(["good drone!!"]), reference_vocabulary=reference)
    assert other["oov_share"][0] == 0.5 and other["non_letter_share"][0] == pytest.approx(2 / 11)


# --- the report's pictures and the run's navigation -----------------------------------------------


def test_the_page_draws_slices_and_fairness_and_counts_the_reliability_bins(demo, tfidf, tmp_path):
    probabilities = tfidf.predict_proba(demo.test["text"].tolist())
    config = EvaluationConfig(bootstrap_samples=40, evidently_reports=False)
    report = evaluate_predictions(demo.test, probabilities, tfidf.labels, demo.group_columns, config, tmp_path,
                                  TEXT_TASK, max_fairness_gap=0.25)
    page = report.html_path.read_text()
    for chart in ("slice_chart", "fairness_chart"):
        assert re.search(rf'<figure class="chart" id="{chart}"><img src="data:image/png;base64,[A-Za-z0-9+/=]{{500,}}"',
                         page), chart
    assert "fairness gaps per group column against gate.max_fairness_gap 0.25" in page
    # Every slice has its interval, around its own value.
    for piece in report.slices:
        low, high = piece.intervals["macro_f1"]
        assert low <= high and 0 <= low <= 1 and 0 <= high <= 1, piece.name
    # The reliability bins, with their row counts, are on the page and in evaluation.json.
    bins = report.reliability
    assert sum(b["rows"] for b in bins) == len(demo.test)
    assert [b["rows"] for b in bins] == list(reliability_bins(
        np.array([report.labels.index(t) for t in report.y_true]), probabilities, config.calibration_bins)["count"])
    for b in bins:
        assert f'<td>{b["low"]:.2f}-{b["high"]:.2f}</td><td class="num">{b["rows"]}</td>' in page
    assert json.loads(report.json_path.read_text())["reliability"] == bins


def test_every_page_of_a_run_has_the_nav_and_nothing_from_outside(demo, tfidf, tmp_path):
    run = tmp_path / "20260101-000000-abcdef"
    run.mkdir()
    (run / "summary.json").write_text("{}")  # a run record
    write_page(run / "validation" / "summary.html", "Data validation: passed", "<p>checks</p>")
    probabilities = tfidf.predict_proba(demo.test["text"].tolist())
    config = EvaluationConfig(bootstrap_samples=10, evidently_reports=False)
    report = evaluate_predictions(demo.test, probabilities, tfidf.labels, demo.group_columns, config,
                                  run / "evaluation", TEXT_TASK)
    decide(report, None, score_floor(demo, TEXT_TASK, 15), GateConfig()).save(run / "gate")
    reports = [{"path": p, "title": p, "stage": "-"} for p in
               ("validation/summary.html", "evaluation/evaluation.html", "gate/gate.html")]
    (run / "index.html").write_text(render_index({"run_id": run.name, "status": "promoted", "stages": {},
                                                  "reports": reports}, {}))
    pages = {path.relative_to(run).as_posix(): path.read_text() for path in run.rglob("*.html")}
    assert set(pages) == {"index.html", "validation/summary.html", "evaluation/evaluation.html", "gate/gate.html"}
    external = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*["\']?\s*(?:https?:)?//', re.IGNORECASE)
    for name, page in pages.items():
        nav = re.search(r'<nav class="run-nav"[^>]*>(.*?)</nav>', page, re.DOTALL)
        assert nav, name
        links = set(re.findall(r'href="([^"]+)"', nav.group(1)))
        folder = Path(name).parent
        targets = {Path(os.path.normpath(folder / href)).as_posix() for href in links}
        # Every page links the index and every other page of the run, the ones written after it too.
        assert targets == set(pages) - {name}, name
        assert 'aria-current="page">' in nav.group(1), name
        assert not external.search(page), name
        assert "http://" not in page and "https://" not in page, name
