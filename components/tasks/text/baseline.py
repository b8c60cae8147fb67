"""The classical floor: TF-IDF features and a logistic regression (scikit-learn).

Every selection run trains it on the same sample the pretrained candidates are probed on; a
pretrained candidate that cannot beat it is reported as such, and the gate can require the
fine-tuned model to beat it too.
"""

from __future__ import annotations

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


@dataclass
class TfidfBaseline:
    """A fitted TF-IDF + logistic-regression classifier over a fixed label list."""

    pipeline: object  # sklearn Pipeline(tfidf, logreg)
    labels: list[str]
    name = "tf-idf + logistic regression"
    architecture = "TfidfVectorizer + LogisticRegression"

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
    """Fit TF-IDF + logistic regression on ``train_df`` (columns ``text``, ``label``).

    ``labels`` fixes the column order of ``predict_proba`` (default: sorted labels of ``train_df``).
    Raises DataError when there is nothing to learn from (no rows, or a single class).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = train_df[TEXT].astype(str).tolist()
    targets = train_df[LABEL].astype(str).tolist()
    seen = sorted(set(targets))
    if len(seen) < 2:
        raise DataError(f"baseline: training rows hold {len(seen)} class(es); at least 2 are needed")
    labels = list(labels) if labels else seen
    unknown = sorted(set(seen) - set(labels))
    if unknown:
        raise DataError(f"baseline: training labels {unknown} are not in the label set {labels}")
    pipeline = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=_NGRAMS, sublinear_tf=True, max_features=_MAX_FEATURES)),
        ("logreg", LogisticRegression(max_iter=2000, random_state=_SEED)),
    ])
    pipeline.fit(texts, targets)
    return TfidfBaseline(pipeline=pipeline, labels=labels)
