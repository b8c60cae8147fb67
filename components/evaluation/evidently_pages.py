"""The evaluation's Evidently pages: the classification report over the whole test split and the
bias report with one classification section per group. Both are Evidently's own pages (its
widgets and script); the numbers the gate judges come from ``metrics`` and ``fairness``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tuneops.components.evaluation.fairness import FairnessReport, group_values
from tuneops.components.evaluation.evidently_html import write_evidently_page

# Evidently needs a few rows of a group to draw anything useful.
_MIN_ROWS_FOR_EVIDENTLY = 5
_TRUE, _PREDICTED = "tuneops_true", "tuneops_predicted"


def classification_snapshot(y_true: list[str], y_pred: list[str], probabilities: np.ndarray, labels: list[str],
                            full: bool = True):
    """An Evidently classification report over the given rows: the full ClassificationPreset, or
    (``full=False``, per group) quality, confusion matrix and per-class quality only.

    Evidently 0.7 rejects probability columns for classes missing from the target, so those rows
    are described by predicted labels only.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset, ClassificationQuality, ClassificationQualityByLabel

    table = pd.DataFrame(np.asarray(probabilities, dtype=float), columns=labels)
    table[_TRUE], table[_PREDICTED] = list(y_true), list(y_pred)
    with_probabilities = set(labels) <= set(table[_TRUE])
    if len(labels) == 2:
        task = BinaryClassification(target=_TRUE, prediction_labels=_PREDICTED, pos_label=labels[1],
                                    prediction_probas=labels[1] if with_probabilities else None)
    else:
        task = MulticlassClassification(target=_TRUE, prediction_labels=_PREDICTED,
                                        prediction_probas=list(labels) if with_probabilities else None)
    definition = DataDefinition(categorical_columns=[_TRUE, _PREDICTED], numerical_columns=list(labels),
                                classification=[task])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The full preset's PR / ROC / lift plots take ~3x as long; one copy on the overall page is enough.
        metrics = [ClassificationPreset()] if full else [ClassificationQuality(conf_matrix=True),
                                                         ClassificationQualityByLabel()]
        return Report(metrics).run(Dataset.from_pandas(table, data_definition=definition), None)


def write_classification_report(y_true: list[str], y_pred: list[str], probabilities: np.ndarray,
                                labels: list[str], path: Path, notes: list[str]) -> Path | None:
    """Evidently's classification page over every test row; None (and a note) when Evidently
    cannot describe this label set."""
    try:
        snapshot = classification_snapshot(y_true, y_pred, probabilities, labels)
    except Exception as error:  # Evidently raises KeyError/ValueError on degenerate label sets
        notes.append(f"Evidently classification report not written ({type(error).__name__}: {error})")
        return None
    return write_evidently_page(path, snapshot.get_html_str(as_iframe=False))


def write_bias_report(
    frame: pd.DataFrame,
    y_true: list[str],
    y_pred: list[str],
    probabilities: np.ndarray,
    labels: list[str],
    report: FairnessReport,
    output_path: Path,
) -> Path:
    """One Evidently page: the fairness gaps, the per-group rates, and a classification report per group.

    Evidently failures on a degenerate group (e.g. a single class) are noted in ``report.notes`` and
    on the page instead of stopping the evaluation: the numbers above come from fairlearn anyway.
    """
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget, table_data, text_widget

    widgets = [
        table_data(
            title="Fairness gaps (one-vs-rest per class, max over classes)",
            column_names=["column", "metric", "gap", "class", "rate", "lowest group", "highest group",
                          "groups compared"],
            data=[[g.column, g.metric, _fmt(g.value), g.label or "-", g.rate or "-",
                   f"{g.low_group} {_fmt(g.low_value)}" if g.low_group else "-",
                   f"{g.high_group} {_fmt(g.high_value)}" if g.high_group else "-",
                   ", ".join(g.groups_compared) or "-"] for g in report.gaps],
        ),
        table_data(
            title="Per-group rates (small groups are flagged and left out of the gaps)",
            column_names=["column", "group", "support", "small", "accuracy",
                          *[f"selection rate {label}" for label in labels], *[f"TPR {label}" for label in labels]],
            data=[[g.column, g.group, g.support, "yes" if g.small else "", _fmt(g.accuracy),
                   *[_fmt(g.selection_rate[label]) for label in labels],
                   *[_fmt(g.true_positive_rate[label]) for label in labels]] for g in report.groups],
        ),
    ]
    truth, predicted = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    for column in {g.column: None for g in report.groups}:
        values = group_values(frame[column])
        for group in sorted(set(values)):
            mask = values == group
            title = f"{column} = {group} ({int(mask.sum())} rows)"
            if mask.sum() < _MIN_ROWS_FOR_EVIDENTLY:
                note = f"{column}={group}: {int(mask.sum())} rows, too few for an Evidently report"
                report.notes.append(note)
                widgets.append(group_widget(title=title, widgets=[text_widget(text=note)]))
                continue
            try:
                snapshot = classification_snapshot(list(truth[mask]), list(predicted[mask]), probabilities[mask],
                                                   labels, full=False)
                # Snapshot keeps its rendered widgets privately (evidently 0.7.23, pinned); reusing them
                # puts every group on one page with one copy of Evidently's 4 MB script.
                group_widgets = list(snapshot._widgets)
            except Exception as error:  # Evidently raises KeyError/ValueError on degenerate subsets
                note = f"{column}={group}: Evidently could not render this group ({type(error).__name__}: {error})"
                report.notes.append(note)
                group_widgets = [text_widget(text=note)]
            widgets.append(group_widget(title=title, widgets=group_widgets))
    output_path = Path(output_path)
    write_evidently_page(output_path, render_widgets(widgets))
    report.html_path = output_path
    return output_path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
