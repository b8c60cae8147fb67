"""The classical floor every task shares: class-balanced logistic regression on the task's own
cheap features, its regularisation chosen by cross-validation on the training rows.

The tasks differ only in their features (TF-IDF of the text; tiny pixels and colour histograms of
an image); how the floor is fitted, searched, described and asked for probabilities is here, once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from tuneops.components.data.columns import LABEL
from tuneops.components.errors import DataError
from tuneops.components.metrics import classification_metrics

_FOLDS = 3
_SEED = 42


@dataclass
class LogisticFloor:
    """A fitted ``features -> [feature steps] -> balanced LogisticRegression`` over a fixed label list."""

    pipeline: Any  # sklearn Pipeline(..., logreg), refit on all training rows with the chosen C
    labels: list[str]
    C: float  # the chosen inverse regularisation strength
    cv_macro_f1: float | None  # mean macro-F1 of the chosen C over the folds; None when no search ran
    cv_folds: int  # folds of the search; 0 when a class was too small to search
    #: a short stable label ("tf-idf + logistic regression"): selection's table rows key on it
    name: str
    #: its model classes, for the architecture column
    architecture: str
    #: what it is, for ``description`` ("balanced TF-IDF + logistic regression")
    summary: str
    #: raw inputs (texts, image paths or bytes) -> what the pipeline's first step takes
    featurise: Callable[[list[Any]], Any]
    #: the canonical input column of the task's frames (for ``score``)
    input_column: str

    @property
    def description(self) -> str:
        """What the floor is and how its C was chosen, for reasons and reports."""
        if self.cv_macro_f1 is None:
            how = "no search: a class has a single training row"
        else:
            how = f"chosen by {self.cv_folds}-fold CV, macro-F1 {self.cv_macro_f1:.3f}"
        return f"{self.summary}, C={self.C:g} ({how})"

    @property
    def settings(self) -> dict[str, float | int | None]:
        """The chosen settings as plain values, for the run record."""
        return {"C": self.C, "cv_macro_f1": self.cv_macro_f1, "cv_folds": self.cv_folds}

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:
        """Class probabilities, shape (len(inputs), len(labels)), columns in the order of ``labels``.
        A label that never occurred in the training rows gets probability 0."""
        from threadpoolctl import threadpool_limits

        probabilities = np.zeros((len(inputs), len(self.labels)), dtype=np.float64)
        if not len(inputs):
            return probabilities
        with threadpool_limits(limits=1):
            fitted = self.pipeline.predict_proba(self.featurise(list(inputs)))
        column = {label: index for index, label in enumerate(self.labels)}
        for source, label in enumerate(self.pipeline.classes_):
            probabilities[:, column[str(label)]] = fitted[:, source]
        return probabilities

    def predict(self, inputs: list[Any]) -> list[str]:
        """The most probable label of each input."""
        return [self.labels[i] for i in self.predict_proba(inputs).argmax(axis=1)]

    @property
    def parameter_count(self) -> int:
        """Learned weights: one per (feature, class) plus the intercepts."""
        model = self.pipeline.named_steps["logreg"]
        return int(model.coef_.size + model.intercept_.size)

    def score(self, frame: pd.DataFrame) -> dict[str, float]:
        """Accuracy, macro-F1 and weighted-F1 on a frame with the input and ``label`` columns."""
        scores = classification_metrics(frame[LABEL].astype(str).tolist(),
                                        self.predict_proba(frame[self.input_column].tolist()), self.labels)
        return {name: scores[name] for name in ("accuracy", "macro_f1", "weighted_f1")}


def fit_logistic_floor(train: pd.DataFrame, input_column: str, labels: list[str] | None, *,
                       steps: list[tuple[str, Any]], featurise: Callable[[list[Any]], Any],
                       c_grid: tuple[float, ...], fallback_c: float, max_iter: int,
                       name: str, architecture: str, summary: str) -> LogisticFloor:
    """Fit ``steps`` + class-balanced logistic regression on ``train`` (``input_column``, ``label``).

    C is chosen from ``c_grid`` by stratified k-fold cross-validation on these rows only (macro-F1;
    k = 3, or the rarest class's row count when smaller; every step is refit in each fold), then
    the pipeline is refit on all rows. A class with a single row leaves no stratified split: then
    no search runs and C is ``fallback_c``. Deterministic: fixed folds and seeds. ``labels`` fixes
    the column order of ``predict_proba`` (default: the sorted labels of ``train``). ``featurise``
    runs once on the training inputs, before the search. Raises DataError when there is nothing to
    learn from (a single class) or a label is outside ``labels``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from threadpoolctl import threadpool_limits

    targets = train[LABEL].astype(str).tolist()
    counts = Counter(targets)
    if len(counts) < 2:
        raise DataError(f"baseline: training rows hold {len(counts)} class(es); at least 2 are needed")
    labels = list(labels) if labels else sorted(counts)
    unknown = sorted(set(counts) - set(labels))
    if unknown:
        raise DataError(f"baseline: training labels {unknown} are not in the label set {labels}")
    features = featurise(train[input_column].tolist())
    pipeline = Pipeline([
        *steps,
        # Balanced weights: each class counts as much as the others, as in the macro-F1 it is judged on.
        ("logreg", LogisticRegression(class_weight="balanced", C=fallback_c, max_iter=max_iter, random_state=_SEED)),
    ])
    described = {"labels": labels, "name": name, "architecture": architecture, "summary": summary,
                 "featurise": featurise, "input_column": input_column}
    folds = min(_FOLDS, min(counts.values()))
    # One BLAS/OpenMP thread: these fits are small, and on a shared or busy machine extra threads
    # only contend (a single 2,000-row text fit took 3 s with two threads under load, 0.3 s with one).
    with threadpool_limits(limits=1):
        if folds < 2:
            pipeline.fit(features, targets)
            return LogisticFloor(pipeline=pipeline, C=fallback_c, cv_macro_f1=None, cv_folds=0, **described)
        search = GridSearchCV(pipeline, {"logreg__C": list(c_grid)}, scoring="f1_macro",
                              cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=_SEED),
                              n_jobs=1, refit=True)
        search.fit(features, targets)
    return LogisticFloor(pipeline=search.best_estimator_, C=float(search.best_params_["logreg__C"]),
                         cv_macro_f1=float(search.best_score_), cv_folds=folds, **described)
