"""Labelled feedback: rows whose true label someone supplied after the fact.

Monitoring scores the champion on it (``check_feedback``); a retrain trains on the configured data
plus the feedback (``merge_feedback``). Feedback files are read like training data (CSV, TSV,
JSONL, Parquet), with the task's input column and ``label``.

For a task whose inputs are files (``Task.input_suffixes``: images), the input column holds paths
relative to the feedback file (or absolute ones), as in a training table. Such feedback merges with
the training data (a class-folder layout or a table) into one table of absolute paths and labels;
feedback files whose content (SHA-256) is already in the data, or repeated, are skipped, and so
are feedback inputs that are not usable (missing, unreadable), which validation would otherwise
block the whole retrain on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tuneops.components.config import DataConfig, MonitoringConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.data.image_folder import absolute_paths, file_content_hashes
from tuneops.components.errors import DataError
from tuneops.components.files import atomic_write_text
from tuneops.components.metrics import classification_metrics
from tuneops.components.paths import demo_dir
from tuneops.components.tasks.base import Task


@dataclass
class FeedbackCheck:
    """The champion scored on labelled feedback."""

    path: str
    rows: int
    metric: str
    value: float | None
    below_minimum: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_feedback(path: str | Path, data: DataConfig, task: Task) -> pd.DataFrame:
    """Labelled feedback as a frame of the task's input column and ``label`` strings.

    The columns may be named as in the training data (``task.source_column(data)`` /
    ``data.label_column``) or canonically (``task.input_column`` / ``label``). Rows with a
    blank input are dropped; for a task whose inputs are files, paths are made absolute against
    the feedback file's folder. DataError when the file cannot be read or lacks the columns.
    """
    from tuneops.components.data.loading import read_table

    path = Path(path)
    frame = read_table(path, max_bytes=data.max_bytes)
    inputs = task.input_column
    names = {}
    for canonical, configured in ((inputs, task.source_column(data)), (LABEL, data.label_column)):
        if configured in frame.columns:
            names[canonical] = configured
        elif canonical in frame.columns:
            names[canonical] = canonical
        else:
            raise DataError(f"feedback: {path.name} has no '{configured}' (or '{canonical}') column; "
                            f"columns are: {', '.join(map(str, frame.columns[:20]))}")
    feedback = pd.DataFrame({inputs: frame[names[inputs]], LABEL: frame[names[LABEL]]})
    feedback = feedback.dropna()
    feedback[inputs] = feedback[inputs].astype(str)
    feedback[LABEL] = feedback[LABEL].astype(str)
    feedback = feedback[feedback[inputs].str.strip() != ""].reset_index(drop=True)
    if task.input_suffixes:
        feedback[inputs] = absolute_paths(feedback[inputs], path.parent)
    return feedback


def check_feedback(predictor, feedback: pd.DataFrame, path: str, metric: str, config: MonitoringConfig,
                   bins: int) -> FeedbackCheck:
    """Score the champion on the feedback rows whose label it knows, with ``metric``
    (``bins``: ``evaluation.calibration_bins``, for the ECE among the scores). Rows whose input the
    task cannot use (``Task.input_problem``: an image file gone or corrupt) are left out, with a note."""
    known = feedback[feedback[LABEL].isin(predictor.labels)]
    unknown = len(feedback) - len(known)
    notes = [f"{unknown} rows with labels the model does not know were left out"] if unknown else []
    task = predictor.task
    problems = [task.input_problem(value) for value in known[task.input_column]]
    unusable = [problem for problem in problems if problem is not None]
    if unusable:
        # One bad file must not stop the champion being scored on the rest.
        known = known[[problem is None for problem in problems]]
        notes.append(f"{len(unusable)} feedback {task.input_noun}s that cannot be used were left out "
                     f"(first: {unusable[0]})")
    note = "; ".join(notes)
    if len(known) < config.min_feedback_rows:
        note = "; ".join(filter(None, [f"{len(known)} labelled rows (< monitoring.min_feedback_rows "
                                       f"{config.min_feedback_rows}): not scored", note]))
        return FeedbackCheck(str(path), len(known), metric, None, False, note)
    probabilities = predictor.predict_proba(known[task.input_column].tolist())
    scores = classification_metrics(known[LABEL].tolist(), probabilities, list(predictor.labels), bins)
    value = float(scores[metric])
    return FeedbackCheck(str(path), len(known), metric, value, value < config.min_metric, note)


@dataclass
class FeedbackMerge:
    """The data a retrain uses: where it was written and how many rows came from where.

    ``skipped_rows`` are duplicates (of the data or of each other), ``unusable_rows`` feedback
    inputs that could not be used (only for file inputs: a missing or unreadable image)."""

    path: Path
    base_rows: int
    feedback_rows: int
    skipped_rows: int
    unusable_rows: int = 0

    def data_config(self, data: DataConfig) -> DataConfig:
        """``data`` reading the merged file (CSV) instead, with the configured group columns kept
        (the demo's own included: the merged file is no longer the demo, which would drop them)."""
        return data.model_copy(update={"path": str(self.path), "format": "csv", "group_columns": list(data.groups)})


def merge_feedback(data: DataConfig, feedback_path: str | Path, output_dir: Path, task: Task,
                   demo_directory: Path | None = None) -> FeedbackMerge:
    """Append the labelled feedback to the configured data (or the demo) as one CSV.

    Feedback rows whose input is already in the data, or repeated, are skipped (they would be
    duplicates, or leak between splits). Group columns the feedback lacks are ``unknown``.
    ``FeedbackMerge.data_config`` gives the data section that trains on the merged file.
    For file inputs (images) see ``_merge_files``: inputs are compared by their files' content.
    """
    from tuneops.components.data.loading import read_table

    if data.path is None:
        base_path = task.write_demo(Path(demo_directory or demo_dir()), data.demo_rows)
        base_format = "auto"
    else:
        base_path = Path(data.path).expanduser()
        base_format = data.format
    if task.input_suffixes:
        return _merge_files(data.model_copy(update={"format": base_format}), base_path,
                            read_feedback(feedback_path, data, task), output_dir, task)
    base = read_table(base_path, base_format, data.max_bytes)
    source = task.source_column(data)
    for needed in (source, data.label_column):
        if needed not in base.columns:
            raise DataError(f"retrain: the training data {base_path.name} has no '{needed}' column")
    feedback = read_feedback(feedback_path, data, task)
    inputs = task.input_column
    seen = set(base[source].astype(str))
    fresh = feedback[~feedback[inputs].isin(seen)].drop_duplicates(inputs)
    rows = pd.DataFrame({source: fresh[inputs], data.label_column: fresh[LABEL]})
    for column in data.groups:
        rows[column] = "unknown"
    merged = pd.concat([base, rows], ignore_index=True)
    target = atomic_write_text(Path(output_dir) / "training-data.csv", merged.to_csv(index=False))
    return FeedbackMerge(target, len(base), len(rows), len(feedback) - len(rows))


def _merge_files(data: DataConfig, base_path: Path, feedback: pd.DataFrame, output_dir: Path,
                 task: Task) -> FeedbackMerge:
    """File inputs: the training data (read as loading reads it: a class-folder layout or a table of
    paths) and the usable, new feedback files, as one table of absolute paths under the user's
    column names. "New" is by content: a feedback file with the bytes of a training file (or of an
    earlier feedback file), whatever its name, is skipped."""
    from tuneops.components.data.loading import read_inputs

    inputs, source = task.input_column, task.source_column(data)
    base = read_inputs(base_path, data, task, [])
    usable = feedback[[task.input_problem(value) is None for value in feedback[inputs]]]
    # One cache: a file named both in the data and in the feedback is read once.
    hashes: dict[str, str] = {}
    seen = set(file_content_hashes(base[inputs].astype(str), hashes))
    contents = file_content_hashes(usable[inputs], hashes)
    fresh = usable[~contents.isin(seen) & ~contents.duplicated()]
    rows = pd.DataFrame({inputs: fresh[inputs], LABEL: fresh[LABEL]})
    for column in data.groups:
        rows[column] = "unknown"
    merged = pd.concat([base, rows], ignore_index=True)
    merged.columns = [source, data.label_column, *data.groups]
    target = atomic_write_text(Path(output_dir) / "training-data.csv", merged.to_csv(index=False))
    return FeedbackMerge(target, len(base), len(rows), len(usable) - len(rows), len(feedback) - len(usable))
