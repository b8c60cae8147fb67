"""The classical floor: TF-IDF features and a class-balanced logistic regression (scikit-learn).

Every selection run trains it on the same sample the pretrained candidates are probed on; a
pretrained candidate that cannot beat it is reported as such, and the gate can require the
fine-tuned model to beat it too. The floor is only worth something if it is honest: an unweighted
logistic regression on imbalanced data predicts mostly the majority class (0.53 macro-F1 on 2,000
VADER tweets, 0.62 on fine-food reviews) and lets weak models through, while balanced class
weights and a regularisation strength picked by cross-validation reach 0.60 and 0.77.
"""

from __future__ import annotations

import pandas as pd

from tuneops.components.logistic_floor import LogisticFloor, fit_logistic_floor
from tuneops.components.tasks.text import TEXT

# Word uni- and bigrams with sublinear term frequency: the standard strong TF-IDF text baseline.
_NGRAMS = (1, 2)
_MAX_FEATURES = 100_000
# Inverse regularisation strengths tried, weakest regularisation last. On ties GridSearchCV keeps
# the first, so the more regularised model wins a tie.
C_GRID = (0.25, 1.0, 4.0, 16.0)
# Used without a search when a class has a single training row (no stratified split exists):
# the C the search picks on 2,000 VADER tweets and 2,000 fine-food reviews (docs/evaluation.md).
FALLBACK_C = 4.0


def _texts(values: list) -> list[str]:
    return [str(value) for value in values]


def train_baseline(train_df: pd.DataFrame, labels: list[str] | None = None) -> LogisticFloor:
    """Fit TF-IDF + balanced logistic regression on ``train_df`` (columns ``text``, ``label``).

    C is chosen from ``C_GRID`` by stratified 3-fold cross-validation on these rows (the vectoriser
    refit in every fold), ``FALLBACK_C`` when a class has a single row; see
    ``logistic_floor.fit_logistic_floor``. Raises DataError when there is nothing to learn from.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    return fit_logistic_floor(
        train_df, TEXT, labels,
        steps=[("tfidf", TfidfVectorizer(ngram_range=_NGRAMS, sublinear_tf=True, max_features=_MAX_FEATURES))],
        featurise=_texts, c_grid=C_GRID, fallback_c=FALLBACK_C, max_iter=2000,
        name="tf-idf + logistic regression", architecture="TfidfVectorizer + LogisticRegression(class_weight=balanced)",
        summary="balanced TF-IDF + logistic regression",
    )
