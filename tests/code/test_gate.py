"""The champion/challenger gate on real models: TF-IDF + logistic-regression classifiers trained on
the demo data (a good one, a weak one, and one trained on a group's corrupted labels), each judged
on the same test split by the real evaluation."""

from __future__ import annotations

import html
import json
from dataclasses import replace

import pytest

from tuneops.components.config import DataConfig, EvaluationConfig, GateConfig
from tuneops.components.data.loading import as_validated, load_data
from tuneops.components.errors import StageError
from tuneops.components.evaluation.behaviour import BehaviouralResult
from tuneops.components.evaluation.evaluate import evaluate_predictions
from tuneops.components.evaluation.floor import score_floor
from tuneops.components.evaluation.gate import decide
from tuneops.components.tasks.registry import get_task
from tuneops.components.tasks.text.baseline import train_baseline

TEXT_TASK = get_task("text-classification")

# Intervals and the Evidently pages play no part in the gate; leaving them out keeps the tests quick.
EVALUATION = EvaluationConfig(bootstrap_samples=20, evidently_reports=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The full demo: ~540 test rows, so every product category and region is judged."""
    return as_validated(load_data(DataConfig(), tmp_path_factory.mktemp("demo"), TEXT_TASK))


def judge(model, splits, directory, test=None):
    test = splits.test if test is None else test
    return evaluate_predictions(test, model.predict_proba(test["text"].tolist()), model.labels,
                                splits.group_columns, EVALUATION, directory, TEXT_TASK,
                                data_fingerprint=splits.fingerprint)


@pytest.fixture(scope="module")
def floor(demo):
    """The floor as the flow scores it: the task's baseline fitted on train, scored on test."""
    return score_floor(demo, TEXT_TASK, EVALUATION.calibration_bins)


@pytest.fixture(scope="module")
def good(demo, tmp_path_factory):
    model = train_baseline(demo.train)
    return model, judge(model, demo, tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def weak(demo, tmp_path_factory):
    # 60 training rows instead of ~2700: a clearly worse model of the same kind.
    model = train_baseline(demo.train.sample(60, random_state=1))
    return model, judge(model, demo, tmp_path_factory.mktemp("weak"))


@pytest.fixture(scope="module")
def biased(demo, tmp_path_factory):
    # Every kitchen review labelled negative in training: the model learns "kitchen means negative".
    train = demo.train.copy()
    train.loc[train["product_category"] == "kitchen", "label"] = "negative"
    model = train_baseline(train)
    return model, judge(model, demo, tmp_path_factory.mktemp("biased"))


def test_a_challenger_worse_than_the_champion_is_rejected(good, weak):
    decision = decide(weak[1], good[1], None, GateConfig())
    assert not decision.promote and decision.status == "rejected"
    metric_reason = next(r for r in decision.reasons if r.startswith("macro_f1"))
    assert f"{weak[1].metrics['macro_f1']:.3f} vs champion {good[1].metrics['macro_f1']:.3f}" in metric_reason
    assert "tolerance 0.010" in metric_reason
    assert any(r.startswith("slice ") and "max_slice_drop 0.05" in r for r in decision.reasons)


def test_a_better_challenger_is_promoted_with_every_reason(good, weak):
    decision = decide(good[1], weak[1], None, GateConfig())
    assert decision.promote and decision.status == "promoted"
    assert {c.name for c in decision.checks} == {"metric", "slice", "fairness", "behavioural"}
    assert all(c.passed for c in decision.checks) and len(decision.reasons) == len(decision.checks)
    assert decision.champion_value == pytest.approx(weak[1].metrics["macro_f1"])
    saved = json.loads(json.dumps(decision.to_json()))
    assert saved["promote"] is True and saved["reasons"] == decision.reasons


def test_a_model_biased_against_one_group_is_rejected_naming_it(demo, good, biased):
    # As the first model and against a champion: the fairness gap is judged either way.
    for champion in (None, good[1]):
        decision = decide(biased[1], champion, good[0].score(demo.test), GateConfig())
        assert not decision.promote
        fairness = [r for r in decision.reasons if r.startswith("fairness product_category")]
        assert fairness and "equalized_odds_difference" in fairness[0] and "kitchen" in fairness[0]
    slice_reason = next(r for r in decide(biased[1], good[1], None, GateConfig()).reasons
                        if r.startswith("slice product_category=kitchen"))
    assert "macro_f1" in slice_reason and "vs champion" in slice_reason


def test_a_dataset_with_one_groups_labels_corrupted_fails_the_fairness_gap(demo, good, tmp_path):
    test = demo.test.copy()
    europe = test["region"] == "europe"
    rotate = {"negative": "neutral", "neutral": "positive", "positive": "negative"}
    test.loc[europe, "label"] = test.loc[europe, "label"].map(rotate)
    report = judge(good[0], demo, tmp_path, test=test)
    decision = decide(report, None, None, GateConfig())
    reason = next(r for r in decision.reasons if r.startswith("fairness region"))
    assert "europe" in reason and "equalized_odds_difference" in reason and "> max_fairness_gap 0.25" in reason


def test_the_first_model_must_beat_the_baseline(weak, good):
    baseline = {"macro_f1": good[1].metrics["macro_f1"]}
    only_baseline = {"max_fairness_gap": 1.0}  # the weak model's fairness gaps are not the point here
    rejected = decide(weak[1], None, baseline, GateConfig(**only_baseline))
    assert not rejected.promote
    assert rejected.reasons == [rejected.checks[0].message]
    assert rejected.reasons[0].startswith("first model: macro_f1") and "classical floor's" in rejected.reasons[0]
    unchecked = decide(weak[1], None, baseline, GateConfig(require_beat_baseline=False, **only_baseline))
    assert unchecked.promote and "comparison is off" in unchecked.reasons[0]
    lower_floor = {"macro_f1": good[1].metrics["macro_f1"] - 0.05}
    assert decide(good[1], None, lower_floor, GateConfig()).promote


def test_the_floor_is_scored_with_what_it_is(demo, floor):
    assert floor["support"] == len(demo.test)
    assert floor["floor"].startswith("balanced TF-IDF + logistic regression, C=")
    assert f"C={floor['floor_C']:g} (chosen by {floor['floor_cv_folds']}-fold CV" in floor["floor"]
    assert 0 < floor["floor_cv_macro_f1"] < 1 and 0 < floor["macro_f1"] <= 1


def test_a_floor_that_beats_the_first_model_is_named_with_the_numbers(demo, weak, floor, tmp_path):
    report = weak[1]
    value, (low, high) = report.metrics["macro_f1"], report.intervals["macro_f1"]
    assert value < floor["macro_f1"]  # 60 training rows against ~2,700: the floor is ahead
    decision = decide(report, None, floor, GateConfig(max_fairness_gap=1.0))
    assert not decision.promote and decision.baseline_value == pytest.approx(floor["macro_f1"])
    reason = decision.reasons[0]
    assert reason.startswith(f"first model: macro_f1 {value:.3f} (95% interval [{low:.3f}, {high:.3f}]) "
                             f"does not beat the classical floor's {floor['macro_f1']:.3f} on the same "
                             f"{len(demo.test)} test rows: the floor is ahead by {floor['macro_f1'] - value:.3f}")
    where = ("even the interval's upper end is below the floor" if high < floor["macro_f1"]
             else "the floor lies within the model's interval")
    assert f"; {where}; the floor is {floor['floor']}" in reason
    figures = decision.to_json()["floor"]["figures"]
    assert list(figures) == ["macro_f1", "accuracy", "weighted_f1"]
    assert figures["macro_f1"] == {"challenger": value, "interval": [low, high], "floor": floor["macro_f1"],
                                   "gap": pytest.approx(value - floor["macro_f1"])}
    assert decision.floor["settings"]["C"] == floor["floor_C"] and decision.floor["rows"] == len(demo.test)
    (tmp_path / "summary.json").write_text("{}")
    page = decision.save(tmp_path / "gate").read_text()
    assert "<h2>The classical floor</h2>" in page and html.escape(floor["floor"]) in page
    assert f'<td class="num">{floor["macro_f1"]:.3f}</td>' in page
    assert f'<td class="num">{value - floor["macro_f1"]:+.3f}</td>' in page


def test_a_first_model_above_the_floor_passes_with_the_numbers(good, floor):
    report = good[1]
    raised = {**floor, "macro_f1": report.metrics["macro_f1"] - 0.01}  # a floor just below the model
    check = next(c for c in decide(report, None, raised, GateConfig()).checks if c.name == "baseline")
    assert check.passed and "beats the classical floor's" in check.message and "by 0.010" in check.message
    assert "95% interval [" in check.message and floor["floor"] in check.message


def test_a_floor_scored_on_other_rows_is_refused(weak, floor):
    with pytest.raises(StageError, match="the floor was scored on"):
        decide(weak[1], None, {**floor, "support": floor["support"] - 1}, GateConfig())


def test_a_behavioural_failure_rejects_with_the_case_name(good):
    results = [BehaviouralResult(name="clear negative reviews", kind="minimum", perturbation=None, tested=4, passed=2),
               BehaviouralResult(name="strict", kind="minimum", perturbation=None, tested=4, passed=3,
                                 min_pass_rate=1.0)]
    decision = decide(replace(good[1], behavioural=results), None, None, GateConfig())
    assert not decision.promote
    assert "behavioural 'clear negative reviews' (minimum): pass rate 0.50 < minimum 0.80 (2/4)" in decision.reasons
    assert any("'strict'" in r and "< minimum 1.00" in r for r in decision.reasons)


def test_a_check_with_fewer_inputs_than_its_min_tested_is_reported_not_judged(good):
    # On 2,000 VADER tweets the name-swap check found 4 tweets with a name: 3/4 is not evidence.
    results = [BehaviouralResult(name="name-swap invariance", kind="invariance", perturbation="names", tested=4,
                                 passed=3, min_tested=20),
               BehaviouralResult(name="typo invariance", kind="invariance", perturbation="typos", tested=80,
                                 passed=79, min_tested=20)]
    decision = decide(replace(good[1], behavioural=results), None, None, GateConfig())
    check = next(c for c in decision.checks if c.name == "behavioural")
    assert check.passed and "typo invariance 0.99" in check.message
    assert "reported, not judged (fewer inputs than its min_tested): name-swap invariance 3/4" in check.message
    # The same 3/4 with enough inputs asked for, or a case that always gates, fails.
    results[0] = replace(results[0], min_tested=None)
    assert not decide(replace(good[1], behavioural=results), None, None, GateConfig()).promote


def test_the_champion_must_be_scored_on_the_same_test_data(demo, good, tmp_path):
    other = judge(good[0], demo, tmp_path, test=demo.test.iloc[:100])
    with pytest.raises(StageError, match="re-score it on this run's splits"):
        decide(good[1], other, None, GateConfig())


def test_the_decision_is_saved_as_json_and_html(good, weak, tmp_path):
    decision = decide(weak[1], good[1], None, GateConfig())
    (tmp_path / "summary.json").write_text("{}")  # tmp_path plays a run record
    html_path = decision.save(tmp_path / "gate")
    page = html_path.read_text()
    assert html_path.exists() and "<h1>Gate: reject</h1>" in page
    assert 'href="../index.html"' in page  # the shared page shell links the run's index
    assert '<tr class="bad"><td>FAIL</td><td>metric</td>' in page
    assert json.loads(decision.json_path.read_text())["status"] == "rejected"
    assert "FAIL: macro_f1" in decision.to_markdown()



# --- the evidence: paired-bootstrap comparison ---------------------------------------------------


def test_identical_predictions_differ_by_exactly_zero(good):
    decision = decide(good[1], good[1], None, GateConfig())
    for name, entry in decision.comparison["metrics"].items():
        assert entry["challenger - champion"] == {"value": 0.0, "interval": [0.0, 0.0]}, name
        # The paired table's point values are the evaluation's own numbers.
        assert entry["challenger"]["value"] == pytest.approx(good[1].metrics[name])


def test_a_challenger_right_on_strictly_more_rows_has_a_positive_difference(good):
    report = good[1]
    right = [i for i, (t, p) in enumerate(zip(report.y_true, report.y_pred)) if t == p]
    worse = list(report.y_pred)
    for i in right[:30]:  # the champion misses 30 rows the challenger gets right, and nothing else differs
        worse[i] = next(label for label in report.labels if label != report.y_true[i])
    champion = replace(report, y_pred=worse)
    accuracy = decide(report, champion, None, GateConfig()).comparison["metrics"]["accuracy"]["challenger - champion"]
    assert accuracy["value"] == pytest.approx(30 / report.rows)
    assert 0 < accuracy["interval"][0] <= accuracy["value"] <= accuracy["interval"][1]


def test_the_comparison_table_is_in_gate_json_and_gate_html(good, weak, floor, tmp_path):
    decision = decide(good[1], weak[1], floor, GateConfig())
    comparison = decision.comparison
    assert comparison["models"] == ["challenger", "champion", "floor"]
    assert comparison["differences"] == ["challenger - champion", "challenger - floor"]
    assert list(comparison["metrics"]) == ["macro_f1", "accuracy", "weighted_f1"]
    macro = comparison["metrics"]["macro_f1"]
    assert macro["champion"]["value"] == pytest.approx(weak[1].metrics["macro_f1"])
    assert macro["floor"]["value"] == pytest.approx(floor["macro_f1"])
    difference = macro["challenger - champion"]
    assert difference["value"] == pytest.approx(good[1].metrics["macro_f1"] - weak[1].metrics["macro_f1"])
    assert difference["interval"][0] > 0  # ~2,700 training rows against 60: clearly better
    (tmp_path / "summary.json").write_text("{}")
    page = decision.save(tmp_path / "gate").read_text()
    saved = json.loads(decision.json_path.read_text())
    assert saved["comparison"] == json.loads(json.dumps(comparison))
    assert "<h2>Challenger, champion and floor on the same test rows</h2>" in page
    assert "challenger - champion 95% interval" in page and "challenger - floor 95% interval" in page
    low, high = difference["interval"]
    assert f'<td class="num">[{low:+.3f}, {high:+.3f}]</td>' in page
    assert f"{EVALUATION.bootstrap_samples} paired bootstrap resamples of the same {len(good[1].y_true)}" in page


def test_a_floor_that_predicted_other_rows_is_refused(good, floor):
    with pytest.raises(StageError, match="the floor predicted"):
        decide(good[1], None, {**floor, "predictions": floor["predictions"][:-1]}, GateConfig())
