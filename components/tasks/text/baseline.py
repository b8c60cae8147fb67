"""The classical floor: TF-IDF features and a class-balanced logistic regression (scikit-learn).

Every selection run trains it on the same sample the pretrained candidates are probed on; a
pretrained candidate that cannot beat it is reported as such, and the gate can require the
fine-tuned model to beat it too. The floor is only worth something if it is honest: an unweighted
logistic regression on imbalanced data predicts mostly the majority class (0.53 macro-F1 on 2,000
VADER tweets, 0.62 on fine-food reviews) and lets weak models through, while balanced class
weights and a regularisation strength picked by cross-validation reach 0.60 and 0.77.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tuneops.components.data.columns import LABEL
from tuneops.components.errors import DataError
from tuneops.components.metrics import classification_metrics
from tuneops.components.tasks.text import TEXT

# Word uni- and bigrams with sublinear term frequency: the standard strong TF-IDF text baseline.
_NGRAMS = (1, 2)
_MAX_FEATURES = 100_000
_SEED = 42
# Inverse regularisation strengths tried, weakest regularisation last. On ties GridSearchCV keeps
# the first, so the more regularised model wins a tie.
C_GRID = (0.25, 1.0, 4.0, 16.0)
# Used without a search when a class has a single training row (no stratified split exists):
# the C the search picks on 2,000 VADER tweets and 2,000 fine-food reviews (docs/evaluation.md).
FALLBACK_C = 4.0
_FOLDS = 3


@dataclass
class TfidfBaseline:
    """A fitted TF-IDF + balanced logistic-regression classifier over a fixed label list."""

    pipeline: object  # sklearn Pipeline(tfidf, logreg), refit on all training rows with the chosen C
    labels: list[str]
    C: float  # the chosen inverse regularisation strength
    cv_macro_f1: float | None  # mean macro-F1 of the chosen C over the folds; None when no search ran
    cv_folds: int  # folds of the search; 0 when a class was too small to search
    # A short stable label: selection's table rows and tests key on it; ``description`` has the detail.
    name = "tf-idf + logistic regression"
    architecture = "TfidfVectorizer + LogisticRegression(class_weight=balanced)"

    @property
    def description(self) -> str:
        """What the floor is and how its C was chosen, for reasons and reports."""
        if self.cv_macro_f1 is None:
            how = "no search: a class has a single training row"
        else:
            how = f"chosen by {self.cv_folds}-fold CV, macro-F1 {self.cv_macro_f1:.3f}"
        return f"balanced TF-IDF + logistic regression, C={self.C:g} ({how})"

    @property
    def settings(self) -> dict[str, float | int | None]:
        """The chosen settings as plain values, for the run record."""
        return {"C": self.C, "cv_macro_f1": self.cv_macro_f1, "cv_folds": self.cv_folds}

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)), columns in the order of ``labels``.

        A label that never occurred in the training rows gets probability 0.
        """
        fitted = self.pipeline.predict_proba([str(text) for text in texts])
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        column = {label: index for index, label in enumerate(self.labels)}
        for source, label in enumerate(self.pipeline.classes_):
            probabilities[:, column[str(label)]] = fitted[:, source]
        return probabilities

    def predict(self, texts: list[str]) -> list[str]:
        """The most probable label of each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    @property
    def parameter_count(self) -> int:
        """Learned weights: one per (feature, class) plus the intercepts."""
        model = self.pipeline.named_steps["logreg"]
        return int(model.coef_.size + model.intercept_.size)

    def score(self, frame: pd.DataFrame) -> dict[str, float]:
        """Accuracy, macro-F1 and weighted-F1 on a frame with ``text`` and ``label`` columns."""
        scores = classification_metrics(frame[LABEL].astype(str).tolist(),
                                        self.predict_proba(frame[TEXT].tolist()), self.labels)
        return {name: scores[name] for name in ("accuracy", "macro_f1", "weighted_f1")}


def train_baseline(train_df: pd.DataFrame, labels: list[str] | None = None) -> TfidfBaseline:
    """Fit TF-IDF + balanced logistic regression on ``train_df`` (columns ``text``, ``label``).

    C is chosen from ``C_GRID`` by stratified k-fold cross-validation on these rows only (macro-F1;
    k = 3, or the rarest class's row count when smaller; the vectoriser is refit in every fold),
    then the pipeline is refit on all rows. A class with a single row leaves no stratified split:
    then no search runs and C is ``FALLBACK_C``. Deterministic: fixed folds and seeds.
    ``labels`` fixes the column order of ``predict_proba`` (default: sorted labels of ``train_df``).
    Raises DataError when there is nothing to learn from (no rows, or a single class).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from threadpoolctl import threadpool_limits

    texts = train_df[TEXT].astype(str).tolist()
    targets = train_df[LABEL].astype(str).tolist()
    counts = Counter(targets)
    if len(counts) < 2:
        raise DataError(f"baseline: training rows hold {len(counts)} class(es); at least 2 are needed")
    labels = list(labels) if labels else sorted(counts)
    unknown = sorted(set(counts) - set(labels))
    if unknown:
        raise DataError(f"baseline: training labels {unknown} are not in the label set {labels}")
    pipeline = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=_NGRAMS, sublinear_tf=True, max_features=_MAX_FEATURES)),
        # Balanced weights: each class counts as much as the others, as in the macro-F1 it is judged on.
        ("logreg", LogisticRegression(class_weight="balanced", C=FALLBACK_C, max_iter=2000, random_state=_SEED)),
    ])
    folds = min(_FOLDS, min(counts.values()))
    # One BLAS/OpenMP thread: these fits are small, and on a shared or busy machine extra threads
    # only contend (a single 2,000-row fit took 3 s with two threads under load, 0.3 s with one).
    with threadpool_limits(limits=1):
        if folds < 2:
            pipeline.fit(texts, targets)
            return TfidfBaseline(pipeline=pipeline, labels=labels, C=FALLBACK_C, cv_macro_f1=None, cv_folds=0)
        search = GridSearchCV(pipeline, {"logreg__C": list(C_GRID)}, scoring="f1_macro",
                              cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=_SEED),
                              n_jobs=1, refit=True)
        search.fit(texts, targets)
    return TfidfBaseline(pipeline=search.best_estimator_, labels=labels, C=float(search.best_params_["logreg__C"]),
                         cv_macro_f1=float(search.best_score_), cv_folds=folds)
