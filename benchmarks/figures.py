"""The one closing format of every benchmark in this folder: a line per figure,
``NAME: RATIO x (goal >= G x)``, a ratio of two things measured side by side in the same run
(absolute times on shared machines are noise; ratios are figures). Higher is better."""

from __future__ import annotations


def figure_line(name: str, ratio: float | None, goal: float) -> str:
    """``NAME: RATIO x (goal >= G x)``; ``n/a`` when the figure could not be measured."""
    shown = f"{ratio:.2f}" if ratio is not None else "n/a"
    return f"{name}: {shown} x (goal >= {goal:.2f} x)"
