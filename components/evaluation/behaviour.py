"""Behavioural checks (CheckList, Ribeiro et al. 2020; Made With ML's model tests), each with a pass rate.

  - invariance: a perturbation that should not matter (a typo, casing, another person's name)
    must not change the predicted label; the expectation is the model's own prediction on the
    original text, so these checks suit any label set;
  - directional: a perturbation that pushes one way (appending a complaint) must not lower the
    probability of the named label by more than ``DIRECTIONAL_TOLERANCE``;
  - minimum functionality: simple texts must get the expected label.

Built-in cases: typo / casing / name-swap invariance on a sample of test texts (unless
``evaluation.builtin_invariance`` is off) and, when ``evaluation.behavioural`` is unset and the labels
are the demo's sentiment labels, directional and minimum cases written in the demo's style. Cases
in ``evaluation.behavioural`` are run as given.

A perturbation is one of ``typos``, ``casing`` (lower case), ``uppercase``, ``names``,
``punctuation`` (trailing punctuation removed), ``append:<text>`` or ``prepend:<text>``.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from tuneops.components.config import BehaviouralCase, EvaluationConfig
from tuneops.components.errors import ConfigError

# A saturated probability (0.999) jitters by a few thousandths between near-identical inputs;
# a directional check fails only on a real drop.
DIRECTIONAL_TOLERANCE = 0.01
_FAILURE_EXAMPLES = 5
# Names from several cultures, including every name the demo data uses.
NAMES = ["Maria", "John", "Aisha", "Wei", "Carlos", "Olga", "Kenji", "Fatima", "Liam", "Priya",
         "Ahmed", "Sofia", "Emeka", "Yuki", "Lucas", "Anna", "Mohammed", "Chen", "Amara", "Diego"]
_NAME_PATTERN = re.compile(r"\b(" + "|".join(NAMES) + r")\b")
_WORD = re.compile(r"[^\W\d_]{4,}")
_SENTIMENT = {"negative", "positive"}

_MINIMUM_DEMO = {
    "positive": [
        "Love the kettle! The handle is excellent. Would recommend.",
        "Really happy with this jacket. The fit works perfectly.",
        "Five stars for this board game. Will buy again!",
        "Best speaker I have bought in years. Impressive sound quality.",
    ],
    "negative": [
        "Terrible blender, total waste of money. Avoid.",
        "The charger broke after two days. Asking for a refund.",
        "Do not buy this raincoat. The zipper is cheap and flimsy.",
        "One star, the puzzle is junk. Never again.",
    ],
    "neutral": [
        "The toaster is okay. The lid is as expected.",
        "It's an average novel. Nothing remarkable about the story.",
        "The webcam does the job, nothing more. Average overall.",
        "Decent sweater for the price, I guess. It's fine.",
    ],
}
_DIRECTIONAL_DEMO = {
    "negative": "append: Update: it stopped working after a week and support never answered. Avoid.",
    "positive": "append: Update: it still works perfectly and I love it. Would recommend.",
}


class ProbabilisticClassifier(Protocol):
    labels: list[str]

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class BehaviouralResult:
    """How one behavioural case went."""

    name: str
    kind: str
    perturbation: str | None
    tested: int
    passed: int
    min_pass_rate: float | None = None  # None: the gate's min_behavioural_pass_rate applies
    skipped: str | None = None  # why nothing was tested
    failures: list[dict[str, Any]] = field(default_factory=list)  # a few examples

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.tested if self.tested else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": self.pass_rate}


def perturb(text: str, perturbation: str, rng: random.Random) -> str | None:
    """Apply one perturbation; None when it does not apply to this text (no name, no long word)."""
    if perturbation == "typos":
        words = list(_WORD.finditer(text))
        if not words:
            return None
        word = rng.choice(words)
        # Swap two adjacent letters inside the word, keeping its first letter: a common slip.
        at = rng.randrange(word.start() + 1, word.end() - 1)
        return text[:at] + text[at + 1] + text[at] + text[at + 2:]
    if perturbation == "casing":
        return text.lower() if text != text.lower() else None
    if perturbation == "uppercase":
        return text.upper() if text != text.upper() else None
    if perturbation == "names":
        match = _NAME_PATTERN.search(text)
        if not match:
            return None
        other = rng.choice([name for name in NAMES if name != match.group(1)])
        return text[:match.start()] + other + text[match.end():]
    if perturbation == "punctuation":
        stripped = text.rstrip(".!?")
        return stripped if stripped != text else None
    if perturbation.startswith("append:"):
        return text.rstrip() + " " + perturbation[len("append:"):].strip()
    if perturbation.startswith("prepend:"):
        return perturbation[len("prepend:"):].strip() + " " + text.lstrip()
    raise ConfigError(
        f"config: unknown perturbation {perturbation!r}; use typos, casing, uppercase, names, punctuation, "
        "append:<text> or prepend:<text>"
    )


def builtin_cases(labels: list[str], texts: list[str], predicted: list[str], config: EvaluationConfig,
                  rng: random.Random) -> list[BehaviouralCase]:
    """The built-in cases for these labels, drawn from the given (test) texts."""
    cases: list[BehaviouralCase] = []
    sample = _sample(texts, config.behavioural_sample_rows, rng)
    if config.builtin_invariance and sample:
        cases.append(BehaviouralCase(kind="invariance", name="typo invariance", texts=sample, perturbation="typos"))
        cased = [text for text in sample if text != text.lower()]
        if cased:
            cases.append(BehaviouralCase(kind="invariance", name="casing invariance", texts=cased,
                                         perturbation="casing"))
        # Names are rare in most texts, so all test texts are searched for them, not just the sample.
        named = _sample([text for text in texts if _NAME_PATTERN.search(text)], config.behavioural_sample_rows, rng)
        if named:
            cases.append(BehaviouralCase(kind="invariance", name="name-swap invariance", texts=named,
                                         perturbation="names"))
    if config.behavioural is None and _SENTIMENT <= set(labels):
        for direction, perturbation in _DIRECTIONAL_DEMO.items():
            others = [text for text, label in zip(texts, predicted) if label != direction]
            base = _sample(others, config.behavioural_sample_rows // 2, rng)
            if base:
                cases.append(BehaviouralCase(kind="directional", name=f"{direction} update raises {direction}",
                                             texts=base, perturbation=perturbation, direction=direction))
        for label, examples in _MINIMUM_DEMO.items():
            if label in labels:
                cases.append(BehaviouralCase(kind="minimum", name=f"clear {label} reviews", texts=examples,
                                             expected=label))
    return cases


def run_behavioural_checks(
    model: ProbabilisticClassifier,
    texts: list[str],
    probabilities: np.ndarray,
    config: EvaluationConfig,
) -> list[BehaviouralResult]:
    """Run the built-in and configured cases against ``model``.

    ``texts`` are the test texts and ``probabilities`` the model's answers on them (reused, not
    recomputed). All perturbed texts go to the model in one batch. ConfigError when a configured
    case names a label the model does not have or an unknown perturbation.
    """
    labels = list(model.labels)
    rng = random.Random(config.seed)
    known = dict(zip(texts, probabilities))
    predicted = [labels[i] for i in np.asarray(probabilities).argmax(axis=1)] if len(texts) else []
    cases = builtin_cases(labels, texts, predicted, config, rng) + list(config.behavioural or [])
    for case in cases:
        _check_labels(case, labels)

    # Plan every case first, then score all unseen texts in one call.
    plans = [_plan(case, rng) for case in cases]
    wanted = {text for plan in plans for pair in plan for text in pair if text not in known}
    if wanted:
        ordered = sorted(wanted)
        for text, row in zip(ordered, model.predict_proba(ordered)):
            known[text] = row
    results = []
    for case, plan in zip(cases, plans):
        results.append(_judge(case, plan, known, labels))
    return results


def _plan(case: BehaviouralCase, rng: random.Random) -> list[tuple[str, str]]:
    """(original, perturbed) pairs; for minimum cases the text twice."""
    if case.kind == "minimum":
        return [(text, text) for text in case.texts]
    pairs = []
    for text in case.texts:
        changed = perturb(text, case.perturbation or "", rng)
        if changed is not None and changed != text:
            pairs.append((text, changed))
    return pairs


def _judge(case: BehaviouralCase, plan: list[tuple[str, str]], known: dict[str, np.ndarray],
           labels: list[str]) -> BehaviouralResult:
    result = BehaviouralResult(name=case.name, kind=case.kind, perturbation=case.perturbation,
                               tested=len(plan), passed=0, min_pass_rate=case.min_pass_rate)
    if not plan:
        result.skipped = f"the perturbation {case.perturbation!r} applies to none of the {len(case.texts)} texts"
        return result
    for original, changed in plan:
        before, after = known[original], known[changed]
        if case.kind == "minimum":
            got = labels[int(after.argmax())]
            ok = got == case.expected
            failure = {"text": original, "expected": case.expected, "got": got}
        elif case.kind == "invariance":
            expected, got = labels[int(before.argmax())], labels[int(after.argmax())]
            ok = expected == got
            failure = {"text": original, "perturbed": changed, "expected": expected, "got": got}
        else:
            index = labels.index(case.direction)
            ok = float(after[index]) >= float(before[index]) - DIRECTIONAL_TOLERANCE
            failure = {"text": original, "perturbed": changed, "label": case.direction,
                       "before": round(float(before[index]), 4), "after": round(float(after[index]), 4)}
        if ok:
            result.passed += 1
        elif len(result.failures) < _FAILURE_EXAMPLES:
            result.failures.append(failure)
    return result


def _check_labels(case: BehaviouralCase, labels: list[str]) -> None:
    for role, value in (("expected", case.expected), ("direction", case.direction)):
        if value is not None and value not in labels:
            raise ConfigError(
                f"config: evaluation.behavioural case {case.name!r}: {role} label {value!r} is not one of the "
                f"model's labels ({', '.join(labels)})"
            )
    if case.perturbation is not None and case.kind != "minimum":
        perturb("probe text", case.perturbation, random.Random(0))  # raises ConfigError when unknown


def _sample(items: list[str], size: int, rng: random.Random) -> list[str]:
    unique = list(dict.fromkeys(items))
    return unique if len(unique) <= size else rng.sample(unique, size)
