"""Behavioural checks (CheckList, Ribeiro et al. 2020; Made With ML's model tests), each with a pass rate.

  - invariance: a perturbation that should not matter (a typo, a change of case, another
    person's name) must not change the predicted label; the expectation is the model's own
    prediction on the original input, so these checks suit any label set;
  - directional: a perturbation that pushes one way must not lower the probability of the named
    label by more than ``DIRECTIONAL_TOLERANCE``;
  - minimum functionality: simple inputs must get the expected label.

The task supplies the perturbations (``Task.perturb``) and the built-in cases drawn from the test
inputs (``Task.builtin_behaviour``); cases in ``evaluation.behavioural`` are run as given.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from tuneops.components.config import BehaviouralCase, EvaluationConfig
from tuneops.components.errors import ConfigError
from tuneops.components.tasks.base import Task

# A saturated probability (0.999) jitters by a few thousandths between near-identical inputs;
# a directional check fails only on a real drop.
DIRECTIONAL_TOLERANCE = 0.01
_FAILURE_EXAMPLES = 5


class ProbabilisticClassifier(Protocol):
    labels: list[str]

    def predict_proba(self, inputs: list[Any]) -> np.ndarray: ...


@dataclass
class BehaviouralResult:
    """How one behavioural case went."""

    name: str
    kind: str
    perturbation: str | None
    tested: int
    passed: int
    min_pass_rate: float | None = None  # None: the gate's min_behavioural_pass_rate applies
    min_tested: int | None = None  # fewer inputs tested: reported, not gated (None: always gated)
    skipped: str | None = None  # why nothing was tested
    failures: list[dict[str, Any]] = field(default_factory=list)  # a few examples

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.tested if self.tested else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": self.pass_rate}


def run_behavioural_checks(
    model: ProbabilisticClassifier,
    inputs: list[Any],
    probabilities: np.ndarray,
    config: EvaluationConfig,
    task: Task,
    truth: list[str] | None = None,
) -> list[BehaviouralResult]:
    """Run the task's built-in cases and the configured cases against ``model``.

    ``inputs`` are the test inputs, ``probabilities`` the model's answers on them (reused, not
    recomputed) and ``truth`` their true labels, for the built-in cases that need them. All
    perturbed inputs go to the model in one batch. ConfigError when a configured case names a
    label the model does not have or an unknown perturbation.
    """
    labels = list(model.labels)
    rng = random.Random(config.seed)
    known = dict(zip(inputs, probabilities))
    predicted = [labels[i] for i in np.asarray(probabilities).argmax(axis=1)] if len(inputs) else []
    cases = task.builtin_behaviour(labels, inputs, predicted, truth, config, rng) + list(config.behavioural or [])
    for case in cases:
        _check_case(case, labels, task)

    # Plan every case first, then score all unseen inputs in one call.
    plans = [_plan(case, task, rng) for case in cases]
    wanted = {value for plan in plans for pair in plan for value in pair if value not in known}
    if wanted:
        # Texts are str; perturbed images are bytes beside their paths: sort each kind on its own.
        ordered = sorted(wanted, key=lambda value: (isinstance(value, bytes), value))
        for value, row in zip(ordered, model.predict_proba(ordered)):
            known[value] = row
    return [_judge(case, plan, known, labels) for case, plan in zip(cases, plans)]


def _plan(case: BehaviouralCase, task: Task, rng: random.Random) -> list[tuple[Any, Any]]:
    """(original, perturbed) pairs; for minimum cases the input twice."""
    if case.kind == "minimum":
        return [(value, value) for value in case.texts]
    pairs = []
    for value in case.texts:
        changed = task.perturb(value, case.perturbation or "", rng)
        if changed is not None and changed != value:
            pairs.append((value, changed))
    return pairs


def _judge(case: BehaviouralCase, plan: list[tuple[Any, Any]], known: dict[Any, np.ndarray],
           labels: list[str]) -> BehaviouralResult:
    result = BehaviouralResult(name=case.name, kind=case.kind, perturbation=case.perturbation,
                               tested=len(plan), passed=0, min_pass_rate=case.min_pass_rate,
                               min_tested=case.min_tested)
    if not plan:
        result.skipped = f"the perturbation {case.perturbation!r} applies to none of the {len(case.texts)} inputs"
        return result
    for original, changed in plan:
        before, after = known[original], known[changed]
        # A perturbed image is bytes: the report names what was done to which file instead.
        shown = changed if isinstance(changed, str) else f"{case.perturbation} of {original}"
        if case.kind == "minimum":
            got = labels[int(after.argmax())]
            ok = got == case.expected
            failure = {"text": original, "expected": case.expected, "got": got}
        elif case.kind == "invariance":
            expected, got = labels[int(before.argmax())], labels[int(after.argmax())]
            ok = expected == got
            failure = {"text": original, "perturbed": shown, "expected": expected, "got": got}
        else:
            index = labels.index(case.direction)
            ok = float(after[index]) >= float(before[index]) - DIRECTIONAL_TOLERANCE
            failure = {"text": original, "perturbed": shown, "label": case.direction,
                       "before": round(float(before[index]), 4), "after": round(float(after[index]), 4)}
        if ok:
            result.passed += 1
        elif len(result.failures) < _FAILURE_EXAMPLES:
            result.failures.append(failure)
    return result


def _check_case(case: BehaviouralCase, labels: list[str], task: Task) -> None:
    for role, value in (("expected", case.expected), ("direction", case.direction)):
        if value is not None and value not in labels:
            raise ConfigError(
                f"config: evaluation.behavioural case {case.name!r}: {role} label {value!r} is not one of the "
                f"model's labels ({', '.join(labels)})"
            )
    if case.perturbation is not None and case.kind != "minimum":
        # A private generator, so validating a case does not move the one that perturbs.
        task.perturb(case.texts[0], case.perturbation, random.Random(0))  # raises ConfigError when unknown
