"""The suite: every check to run on every split, as Great Expectations expectations.

The generic checks (the split has rows, the columns exist, labels, classes, groups, duplicates
and leakage of the task's input column) are planned here; the checks of the input values come
from the task (``Task.input_checks``). Each planned check becomes one GX expectation per split
it applies to, tagged with its check name and position so its result finds its way back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from tuneops.components.config import ValidationConfig
from tuneops.components.data.columns import LABEL, SPLITS
from tuneops.components.validation.checks import CLASSES, Check, InputChecks
from tuneops.components.validation.display import shorten
from tuneops.components.validation.explain import (
    explain_class_count, explain_duplicates, explain_imbalance, explain_kind, explain_label_change,
    explain_leakage, explain_mixed_kinds, explain_not_in_set, explain_nulls, explain_small_classes, explain_variants,
)
from tuneops.components.validation.prepare import FOLDED, INFERRED, LABEL_KIND, in_train_column

# The generic checks in the order they are reported around the task's: the schema first, then
# the labels, then the inputs' content, then cross-row measures, so the first failure listed
# is the most basic one.
_BEFORE_INPUT = ("split_not_empty", "columns_present")
_LABEL_CHECKS = ("label_not_null", "label_not_float", "label_single_type", "class_count", "label_in_set",
                 "label_set_unchanged", "label_variants", "min_examples_per_class")
_AFTER_INPUT = ("duplicates", "leakage", "class_imbalance", "group_not_mostly_null")


@dataclass
class Planned:
    """One check on one GX data asset (a split, or the per-class table) with its severity."""

    check: Check
    split: str
    severity: str
    expectation: Any  # a great_expectations.expectations.Expectation


def report_order(inputs: InputChecks) -> list[str]:
    """Every check name in the order outcomes are reported."""
    return [*_BEFORE_INPUT, *(c.name for c in inputs.schema), *_LABEL_CHECKS,
            *(c.name for c in inputs.content), *_AFTER_INPUT]


def plan_checks(
    frames: dict[str, pd.DataFrame],
    classes: pd.DataFrame,
    groups: list[str],
    config: ValidationConfig,
    labels: list[str] | None,
    label_source: str,
    previous_labels: list[str] | None,
    input_column: str,
    input_noun: str,
    inputs: InputChecks,
) -> list[Planned]:
    """Every expectation to run, with its check name, severity, message and how to find
    examples when it fails. Messages carry no counts: outcomes hold those per split."""
    import great_expectations.expectations as gxe

    plan: list[Planned] = []

    def add(split: str, check: Check) -> None:
        severity = config.severity.get(check.name, "block")
        if severity == "off":
            return
        expectation = check.expectation(
            **check.arguments,
            severity="critical" if severity == "block" else "warning",
            meta={"tuneops_check": check.name, "tuneops_key": len(plan)},
            notes=f"tuneops check `{check.name}` ({check.title}), severity: {severity}",
        )
        plan.append(Planned(check, split, severity, expectation))

    shared_column = in_train_column(input_column)
    label_set = shorten(", ".join(labels or []), 80)
    for split in SPLITS:
        frame = frames[split]
        add(split, Check("split_not_empty", "split has rows", None, gxe.ExpectTableRowCountToBeBetween,
                         {"min_value": 1}, "the split has no rows"))
        for column in (input_column, LABEL, *groups):
            add(split, Check("columns_present", "column present", column, gxe.ExpectColumnToExist,
                             {"column": column}, f"column '{column}' is missing"))
        if frame.empty:
            continue  # nothing else can be measured; split_not_empty reports it
        if input_column in frame:
            for check in (*inputs.schema, *inputs.content):
                add(split, check)
            add(split, Check(
                "duplicates", "duplicate rate", input_column, gxe.ExpectColumnProportionOfUniqueValuesToBeBetween,
                {"column": input_column, "min_value": max(0.0, 1.0 - config.max_duplicate_rate)},
                f"rows repeating an earlier {input_noun} of the split; at most {config.max_duplicate_rate:.1%} allowed",
                explain_duplicates(input_column),
            ))
            if shared_column in frame:
                add(split, Check(
                    "leakage", "rows shared with train", input_column, gxe.ExpectColumnValuesToBeInSet,
                    {"column": shared_column, "value_set": [False], "mostly": 1.0 - config.max_leakage_rate},
                    f"rows whose {input_noun} is also in train; at most {config.max_leakage_rate:.1%} allowed",
                    explain_leakage(input_column, shared_column),
                ))
        if LABEL in frame:
            _plan_labels(add, gxe, split, config, labels, label_source, label_set, previous_labels)
        for group in groups:
            if group in frame:
                add(split, Check(
                    "group_not_mostly_null", "group column filled", group, gxe.ExpectColumnValuesToNotBeNull,
                    {"column": group, "mostly": 1.0 - config.max_group_null_rate},
                    f"rows with no value in group column '{group}'; at most {config.max_group_null_rate:.0%} allowed",
                    explain_nulls(group),
                ))

    if len(classes) and len(classes) <= config.max_classes:
        add(CLASSES, Check(
            "min_examples_per_class", "examples per class", LABEL, gxe.ExpectColumnValuesToBeBetween,
            {"column": "count", "min_value": config.min_examples_per_class},
            f"classes with fewer than {config.min_examples_per_class} train examples",
            explain_small_classes(config.min_examples_per_class),
        ))
        add(CLASSES, Check(
            "label_variants", "labels spelled one way", LABEL, gxe.ExpectColumnValuesToBeUnique,
            {"column": FOLDED},
            "classes whose labels differ only by case or surrounding whitespace: each is trained as its own "
            "class; if they mean one, fix the labels in the file",
            explain_variants,
        ))
        if (classes["count"] > 0).sum() >= 2:
            add(CLASSES, Check(
                "class_imbalance", "class imbalance", LABEL, gxe.ExpectColumnValuesToBeBetween,
                {"column": "largest_over_count", "max_value": config.max_class_imbalance},
                f"classes more than {config.max_class_imbalance:g}x smaller than the largest in train "
                "(consider training.class_weights=balanced)",
                explain_imbalance(config.max_class_imbalance),
            ))
    return plan


def _plan_labels(add: Callable[[str, Check], None], gxe: Any, split: str, config: ValidationConfig, labels: list[str] | None, label_source: str,
                 label_set: str, previous_labels: list[str] | None) -> None:
    """The label checks of one split."""
    add(split, Check(
        "label_not_null", "label not null", LABEL, gxe.ExpectColumnValuesToNotBeNull, {"column": LABEL},
        "rows with no label (empty, NaN or a missing-value marker)", explain_nulls(LABEL),
    ))
    add(split, Check(
        "label_not_float", "labels are not floats", LABEL, gxe.ExpectColumnValuesToNotBeInSet,
        {"column": LABEL_KIND, "value_set": ["float"]},
        "label column holds floats: classes must be names or integer ids "
        "(a regression target, or integer ids written out with a NaN?)",
        explain_kind("float"),
    ))
    add(split, Check(
        "label_single_type", "labels of one type", LABEL, gxe.ExpectColumnUniqueValueCountToBeBetween,
        {"column": LABEL_KIND, "max_value": 1},
        "label column mixes types (names, integers, floats): one of them is probably a mistake",
        explain_mixed_kinds,
    ))
    # An inferred set comes from train itself, so it is enforced on the other splits only.
    if labels is not None and (split != "train" or label_source != INFERRED):
        add(split, Check(
            "label_in_set", "label values in set", LABEL, gxe.ExpectColumnValuesToBeInSet,
            {"column": LABEL, "value_set": list(labels)}, f"labels outside the set ({label_source}): {label_set}",
            explain_not_in_set(labels),
        ))
    if split != "train":
        return
    add(split, Check(
        "class_count", "number of classes", LABEL, gxe.ExpectColumnUniqueValueCountToBeBetween,
        {"column": LABEL, "min_value": 2, "max_value": config.max_classes},
        lambda r: (
            f"train has {r.get('observed_value')} distinct label(s); a classifier needs "
            f"2 to {config.max_classes:,} (validation.max_classes)"
        ),
        explain_class_count,
    ))
    if previous_labels:
        add(split, Check(
            "label_set_unchanged", "label set same as previous run", LABEL, gxe.ExpectColumnDistinctValuesToEqualSet,
            {"column": LABEL, "value_set": [str(label) for label in previous_labels]},
            "train labels differ from the previous run's: the new model would not be comparable",
            explain_label_change(previous_labels),
        ))
