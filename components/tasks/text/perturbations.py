"""Behavioural perturbations of texts and the built-in behavioural cases of text classification
(CheckList, Ribeiro et al. 2020; Made With ML's model tests).

A perturbation is one of ``typos``, ``casing`` (lower case), ``uppercase``, ``names``,
``punctuation`` (trailing punctuation removed), ``append:<text>`` or ``prepend:<text>``.

Built-in cases: typo / casing / name-swap invariance on a sample of test texts (unless
``evaluation.builtin_invariance`` is off) and, when ``evaluation.behavioural`` is unset and the labels
are the demo's sentiment labels, directional and minimum cases written in the demo's style.
"""

from __future__ import annotations

import random
import re

from tuneops.components.config import BehaviouralCase, EvaluationConfig
from tuneops.components.errors import ConfigError

# Names from several cultures, including every name the demo data uses.
NAMES = ["Maria", "John", "Aisha", "Wei", "Carlos", "Olga", "Kenji", "Fatima", "Liam", "Priya",
         "Ahmed", "Sofia", "Emeka", "Yuki", "Lucas", "Anna", "Mohammed", "Chen", "Amara", "Diego"]
_NAME_PATTERN = re.compile(r"\b(" + "|".join(NAMES) + r")\b")
_WORD = re.compile(r"[^\W\d_]{4,}")
_SENTIMENT = {"negative", "positive"}

MINIMUM_DEMO = {
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
DIRECTIONAL_DEMO = {
    "negative": "append: Update: it stopped working after a week and support never answered. Avoid.",
    "positive": "append: Update: it still works perfectly and I love it. Would recommend.",
}


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
        enough = config.builtin_min_tested
        cases.append(BehaviouralCase(kind="invariance", name="typo invariance", texts=sample, perturbation="typos",
                                     min_tested=enough))
        cased = [text for text in sample if text != text.lower()]
        if cased:
            cases.append(BehaviouralCase(kind="invariance", name="casing invariance", texts=cased,
                                         perturbation="casing", min_tested=enough))
        # Names are rare in most texts, so all test texts are searched for them, not just the sample.
        named = _sample([text for text in texts if _NAME_PATTERN.search(text)], config.behavioural_sample_rows, rng)
        if named:
            cases.append(BehaviouralCase(kind="invariance", name="name-swap invariance", texts=named,
                                         perturbation="names", min_tested=enough))
    if config.behavioural is None and config.demo_cases and _SENTIMENT <= set(labels):
        cases.extend(demo_cases(labels, texts, predicted, config, rng))
    return cases


def demo_cases(labels: list[str], texts: list[str], predicted: list[str], config: EvaluationConfig,
               rng: random.Random) -> list[BehaviouralCase]:
    """Directional and minimum-functionality cases written in the style of the demo's reviews."""
    cases: list[BehaviouralCase] = []
    for direction, perturbation in DIRECTIONAL_DEMO.items():
        others = [text for text, label in zip(texts, predicted) if label != direction]
        base = _sample(others, config.behavioural_sample_rows // 2, rng)
        if base:
            cases.append(BehaviouralCase(kind="directional", name=f"{direction} update raises {direction}",
                                         texts=base, perturbation=perturbation, direction=direction))
    for label, examples in MINIMUM_DEMO.items():
        if label in labels:
            cases.append(BehaviouralCase(kind="minimum", name=f"clear {label} reviews", texts=examples,
                                         expected=label))
    return cases


def _sample(items: list[str], size: int, rng: random.Random) -> list[str]:
    unique = list(dict.fromkeys(items))
    return unique if len(unique) <= size else rng.sample(unique, size)
