"""Data drift between a reference sample (the training data) and current data (the test split,
or production traffic in the monitor flow), as an Evidently report.

What is compared, each as one *signal*:
  - text descriptors: ``text_length`` (characters), ``oov_share`` (share of words never seen in the
    reference texts) and ``non_letter_share`` (share of non-space characters that are not letters);
  - ``label`` (the true label) and ``prediction`` (the predicted label), when both frames have them;
  - ``embedding``: the model's own encoder output (mean-pooled), when a predictor or precomputed
    embeddings are given; tested with Evidently's domain-classifier method.

``drift_share`` is the share of signals that drifted; the monitor flow compares it with
``monitoring.drift_threshold``. The frames use ``label`` for the ground truth and ``prediction`` for
the model's answer (a prediction log's predicted label must be renamed to ``prediction``).
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.data import LABEL, TEXT
from components.errors import DataError, StageError

PREDICTION = "prediction"
EMBEDDING = "embedding"
DESCRIPTORS = ("text_length", "oov_share", "non_letter_share")
# Fewer rows than this make every test meaningless; the monitor flow waits for more traffic.
MIN_ROWS = 10
# The domain classifier sees at most this many principal components of the embeddings: enough to
# keep >90% of MiniLM's variance on review-like text, and it keeps Evidently's frame small.
EMBEDDING_COMPONENTS = 32
_WORD = re.compile(r"[^\W\d_]+")


@dataclass
class DriftResult:
    """The outcome of one drift comparison and where its report lies."""

    title: str
    drift_share: float
    drifted_columns: list[str]
    details: dict[str, dict[str, Any]]  # signal -> kind, method, score, threshold, drifted
    reference_rows: int
    current_rows: int
    html_path: Path
    json_path: Path
    snapshot: Any = field(default=None, repr=False)  # evidently Snapshot, for an Evidently workspace

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "details": self.details,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "html_path": str(self.html_path),
        }

    def summary_line(self) -> str:
        """One line for logs and reports."""
        drifted = ", ".join(self.drifted_columns) or "none"
        return (f"{self.title}: {len(self.drifted_columns)}/{len(self.details)} signals drifted "
                f"(share {self.drift_share:.2f}): {drifted}")


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    output_dir: Path,
    predictor=None,
    title: str = "Data drift: reference vs current",
    *,
    reference_embeddings: np.ndarray | None = None,
    current_embeddings: np.ndarray | None = None,
    max_reference_rows: int = 1000,
    seed: int = 0,
) -> DriftResult:
    """Compare ``current`` with ``reference`` and write ``drift.html`` / ``drift.json`` into ``output_dir``.

    Both frames need a ``text`` column; ``label`` and ``prediction`` are compared when both frames
    have them. With a ``predictor``, missing predictions and the embeddings are computed with it;
    callers that already hold embeddings (evaluation) pass them, row-aligned with the frames.
    Raises DataError when a frame lacks text or has fewer than 10 rows.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset

    reference, current = reference.reset_index(drop=True), current.reset_index(drop=True)
    for name, frame in (("reference", reference), ("current", current)):
        if TEXT not in frame.columns:
            raise DataError(f"drift: the {name} data has no '{TEXT}' column")
        if len(frame) < MIN_ROWS:
            raise DataError(f"drift: the {name} data has {len(frame)} rows; at least {MIN_ROWS} are needed")
    for name, frame, embeddings in (("reference", reference, reference_embeddings),
                                    ("current", current, current_embeddings)):
        if embeddings is not None and len(embeddings) != len(frame):
            raise DataError(f"drift: {len(embeddings)} {name} embeddings for {len(frame)} rows")
    if len(reference) > max_reference_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(reference), max_reference_rows, replace=False))
        reference = reference.iloc[keep].reset_index(drop=True)
        if reference_embeddings is not None:
            reference_embeddings = reference_embeddings[keep]
    if predictor is not None:
        reference, reference_embeddings = _score(predictor, reference, reference_embeddings)
        current, current_embeddings = _score(predictor, current, current_embeddings)

    reference_table = text_descriptors(reference[TEXT], reference_vocabulary=None)
    current_table = text_descriptors(current[TEXT], reference_vocabulary=reference[TEXT])
    numerical = list(DESCRIPTORS)
    categorical = [column for column in (LABEL, PREDICTION) if _comparable(reference, current, column)]
    for column in categorical:
        reference_table[column] = _as_category(reference[column])
        current_table[column] = _as_category(current[column])
    embedding_columns: list[str] = []
    embedding_verdict: tuple[float, bool, str] | None = None
    if reference_embeddings is not None and current_embeddings is not None:
        reduced_reference, reduced_current = _principal_components(reference_embeddings, current_embeddings)
        embedding_columns = [f"{EMBEDDING}_{i}" for i in range(reduced_reference.shape[1])]
        reference_table = pd.concat([reference_table, pd.DataFrame(reduced_reference, columns=embedding_columns)], axis=1)
        current_table = pd.concat([current_table, pd.DataFrame(reduced_current, columns=embedding_columns)], axis=1)
        # Bootstrap: the classifier's ROC AUC is compared with what chance gives at these sample
        # sizes, so small production samples (~30 rows) do not read as drift.
        method = ModelDriftMethod(bootstrap=True)
        embedding_verdict = method(current_table[embedding_columns].copy(), reference_table[embedding_columns].copy())

    definition = DataDefinition(
        numerical_columns=numerical,
        categorical_columns=categorical,
        embeddings={EMBEDDING: embedding_columns} if embedding_columns else None,
    )
    metrics: list[Any] = [DataDriftPreset(columns=numerical + categorical)]
    if embedding_columns:
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=ModelDriftMethod(bootstrap=True)))
    with warnings.catch_warnings():
        # Evidently and scipy warn about small samples and constant columns; the verdicts stand.
        warnings.simplefilter("ignore")
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(current_table, data_definition=definition),
            Dataset.from_pandas(reference_table, data_definition=definition),
        )
    details = _column_verdicts(snapshot.dict())
    if embedding_verdict is not None:
        score, drifted, method_name = embedding_verdict
        details[EMBEDDING] = {"kind": "embedding", "method": f"{method_name} (domain classifier ROC AUC vs chance)",
                              "score": float(score), "threshold": None, "drifted": bool(drifted)}
    drifted_columns = [name for name, detail in details.items() if detail["drifted"]]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = output_dir / "drift.html", output_dir / "drift.json"
    snapshot.save_html(str(html_path))  # Evidently writes nothing when given a Path object
    result = DriftResult(
        title=title,
        drift_share=len(drifted_columns) / len(details) if details else 0.0,
        drifted_columns=drifted_columns,
        details=details,
        reference_rows=len(reference),
        current_rows=len(current),
        html_path=html_path,
        json_path=json_path,
        snapshot=snapshot,
    )
    json_path.write_text(json.dumps(result.to_json(), indent=2))
    return result


def text_descriptors(texts: pd.Series, reference_vocabulary: pd.Series | None) -> pd.DataFrame:
    """Per-text length, out-of-vocabulary share and non-letter share.

    The vocabulary is the set of words in ``reference_vocabulary``'s texts. With None, ``texts`` are
    the reference themselves and each text is scored leave-one-out (a word is out of vocabulary
    when no *other* reference text has it), so reference and current are scored alike.
    """
    strings = texts.astype(str).tolist()
    words = [_WORD.findall(text.lower()) for text in strings]
    if reference_vocabulary is None:
        document_frequency = Counter(word for text_words in words for word in set(text_words))
        oov = [_share(sum(document_frequency[w] <= 1 for w in text_words), len(text_words)) for text_words in words]
    else:
        vocabulary = {w for text in reference_vocabulary.astype(str) for w in _WORD.findall(text.lower())}
        oov = [_share(sum(w not in vocabulary for w in text_words), len(text_words)) for text_words in words]
    non_space = [re.sub(r"\s", "", text) for text in strings]
    non_letter = [_share(sum(not ch.isalpha() for ch in chars), len(chars)) for chars in non_space]
    return pd.DataFrame({
        "text_length": np.array([len(text) for text in strings], dtype=float),
        "oov_share": np.array(oov, dtype=float),
        "non_letter_share": np.array(non_letter, dtype=float),
    })


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _score(predictor, frame: pd.DataFrame, embeddings: np.ndarray | None) -> tuple[pd.DataFrame, np.ndarray]:
    """Fill in predictions and embeddings that the caller did not bring."""
    needs_prediction = PREDICTION not in frame.columns or frame[PREDICTION].isna().all()
    if not needs_prediction and embeddings is not None:
        return frame, embeddings
    probabilities, computed = predictor.predict_and_embed(frame[TEXT].astype(str).tolist())
    frame = frame.copy()
    if needs_prediction:
        frame[PREDICTION] = [predictor.labels[i] for i in probabilities.argmax(axis=1)]
    return frame, embeddings if embeddings is not None else computed


def _comparable(reference: pd.DataFrame, current: pd.DataFrame, column: str) -> bool:
    """A categorical column is compared when both frames have enough known values of it."""
    return all(column in frame.columns and frame[column].notna().sum() >= MIN_ROWS for frame in (reference, current))


def _as_category(values: pd.Series) -> pd.Series:
    return values.map(lambda value: None if pd.isna(value) else str(value))


def _principal_components(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project both sets onto the reference's leading principal components."""
    from sklearn.decomposition import PCA

    components = max(1, min(EMBEDDING_COMPONENTS, reference.shape[1], len(reference) - 1))
    pca = PCA(n_components=components, random_state=0).fit(reference)
    return pca.transform(reference), pca.transform(current)


def _column_verdicts(snapshot_dict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per column: Evidently's method, score, threshold and its own drift verdict (from its tests)."""
    scores = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            scores[config["column"]] = (config.get("method"), float(metric["value"]), config.get("threshold"))
    verdicts: dict[str, dict[str, Any]] = {}
    for test in snapshot_dict.get("tests", []):
        params = (test.get("metric_config") or {}).get("params", {})
        column = params.get("column")
        if column in scores and test.get("id") == "drift":
            method, score, threshold = scores[column]
            status = getattr(test.get("status"), "value", test.get("status"))
            kind = "descriptor" if column in DESCRIPTORS else "categorical"
            verdicts[column] = {"kind": kind, "method": method, "score": score,
                                "threshold": threshold, "drifted": status == "FAIL"}
    missing = set(scores) - set(verdicts)
    if missing:
        raise StageError(f"drift: Evidently gave no verdict for {sorted(missing)}")
    return verdicts
