"""Which candidates are tried, and how the probed ones are ranked: the latency constraint, the
choice of the winner under the probes' uncertainty, the comparison with the floor, the table order.

A probe's score comes from a few hundred validation rows, so two candidates' scores differ by
chance as well as by merit. ``rank_candidates`` scores every eligible candidate's validation
predictions on the same ``selection.bootstrap_samples`` resamples of the rows
(``metrics.bootstrap_label_scores``): each score gets a 95% interval, each difference between two
candidates a paired 95% interval. Against the best score:

- a candidate is *clearly beaten* when the paired interval of (best - it) lies entirely above
  ``selection.tie_tolerance``; otherwise it is *indistinguishable* from the best;
- when the best clearly beats every other, it wins;
- when several are indistinguishable, the probes cannot tell them apart, and the **largest** of
  them wins. A probe's tie says little about what fine-tuning reaches: on 600 VADER tweets the
  full MiniLM and its 3-layer version probed 0.630 and 0.618 (a tie), and fine-tuned to 0.676
  and 0.566 macro-F1. Smaller models are preferred through the constraints
  (``selection.max_params``, ``selection.max_latency_ms``), not by a coin that favours them. The
  reason says where the tie stands against the floor.

With ``selection.bootstrap_samples: 0`` there are no intervals and the same rules run on point
scores: within ``tie_tolerance`` of the best is indistinguishable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneops.components.config import SelectionConfig
from tuneops.components.metrics import bootstrap_label_scores
from tuneops.components.selection.report import CHOSEN, EXCLUDED, RANKED, CandidateResult

# How far above the floor a tie's lowest bound must be for the reason to call it "above the floor".
NEAR_FLOOR = 0.02
# Fixed, so that the same data and probes choose the same model on every run.
BOOTSTRAP_SEED = 42
INTERVAL_PERCENTILES = (2.5, 97.5)
# A difference of scores: its point value and its paired 95% interval (None without resamples).
Difference = tuple[float, list[float] | None]


@dataclass(frozen=True)
class Choice:
    """What ranking decided: the chosen spec (None when no candidate is eligible) and one sentence
    saying why it won."""

    candidate: str | None
    why: str


def candidate_specs(config: SelectionConfig, champion_dir: Path | None) -> list[str]:
    """The configured candidates in order, without repeats, plus ``champion`` when there is one
    and ``selection.include_champion`` is on."""
    specs = list(dict.fromkeys(spec.strip() for spec in config.candidates if spec.strip()))
    if config.include_champion and champion_dir is not None and "champion" not in specs:
        specs.append("champion")
    return specs


def rank_candidates(rows: list[CandidateResult], config: SelectionConfig, floor_score: float,
                    truth: np.ndarray | None = None) -> Choice:
    """Apply the latency constraint, choose the winner and number the ranks (in place).

    ``floor_score`` is the floor's score on the objective; ``truth`` the validation rows' class
    indices that the rows' ``predictions`` are compared with (without it, or with
    ``selection.bootstrap_samples: 0``, ranking runs on point scores). The rules are in the module
    docstring. Each eligible row gets its score interval, its difference from the chosen one and
    notes; returns the choice and why.
    """
    _apply_latency_constraint(rows, config)
    eligible = [row for row in rows if row.status == RANKED and row.score is not None]
    if not eligible:
        return Choice(None, "no candidate was probed within the constraints")
    resamples = _resampled_scores(eligible, config, truth)
    for row in eligible:
        row.score_interval = _interval(resamples[row.candidate]) if resamples else None
    best = max(eligible, key=lambda r: (r.score, -(r.parameters or math.inf)))
    leads = {row.candidate: _difference(best, row, resamples) for row in eligible if row is not best}
    beaten = {name for name, (point, interval) in leads.items()
              if (interval[0] if interval else point) > config.tie_tolerance}
    tied = [row for row in eligible if row.candidate not in beaten]

    tie = len(tied) > 1
    if not tie:
        chosen, why = best, _clear_win(best, eligible, leads, config, bool(resamples))
    else:
        chosen = max(tied, key=lambda r: (r.parameters or 0, r.score, -(r.latency_ms_batch1 or math.inf)))
        why = _tie_win(chosen, tied, floor_score, config, bool(resamples))

    for row in eligible:
        if row is not chosen:
            row.versus_chosen, row.versus_chosen_interval = _difference(row, chosen, resamples)
        _note(row, chosen, best, tied, leads, tie, config)
    others = sorted((row for row in eligible if row is not chosen), key=lambda r: (-r.score, r.parameters or math.inf))
    for rank, row in enumerate([chosen, *others], start=1):
        row.rank = rank
    chosen.status = CHOSEN
    return Choice(chosen.candidate, why)


def _apply_latency_constraint(rows: list[CandidateResult], config: SelectionConfig) -> None:
    for row in rows:
        if row.status != RANKED:
            continue
        if config.max_latency_ms is not None and row.latency_ms_batch1 is not None \
                and row.latency_ms_batch1 > config.max_latency_ms:
            row.status = EXCLUDED
            row.reason = (f"latency {row.latency_ms_batch1:.2f} ms/item at batch 1 > "
                          f"selection.max_latency_ms {config.max_latency_ms:g}")


def _resampled_scores(eligible: list[CandidateResult], config: SelectionConfig,
                      truth: np.ndarray | None) -> dict[str, np.ndarray]:
    """Each candidate's objective on the same bootstrap resamples of the validation rows; empty
    when there are no intervals to draw (no samples, no truth, or a row without predictions)."""
    if config.bootstrap_samples <= 0 or truth is None or any(row.predictions is None for row in eligible):
        return {}
    predictions = {row.candidate: np.asarray(row.predictions, dtype=int) for row in eligible}
    # Classes neither true nor predicted count in no metric (the metrics' convention), so any count
    # covering every index seen gives the very scores the probes computed.
    n_labels = 1 + max(int(np.max(truth)), *(int(np.max(p)) for p in predictions.values()))
    return bootstrap_label_scores(truth, predictions, n_labels, config.objective, config.bootstrap_samples,
                                  BOOTSTRAP_SEED)


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, INTERVAL_PERCENTILES)
    return [float(low), float(high)]


def _difference(row: CandidateResult, other: CandidateResult,
                resamples: dict[str, np.ndarray]) -> Difference:
    """``row``'s score minus ``other``'s, and its paired 95% interval when there are resamples."""
    interval = _interval(resamples[row.candidate] - resamples[other.candidate]) if resamples else None
    return row.score - other.score, interval


def _names(rows: list[CandidateResult]) -> str:
    names = [row.candidate for row in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _clear_win(best: CandidateResult, eligible: list[CandidateResult], leads: dict[str, Difference],
               config: SelectionConfig, intervals: bool) -> str:
    if len(eligible) == 1:
        return f"{best.candidate} won: the only candidate probed within the constraints"
    if intervals:
        parts = ", over ".join(f"{name} is [{interval[0]:.3f}, {interval[1]:.3f}]"
                               for name, (_, interval) in leads.items())
        plural = "s" if len(leads) > 1 else ""
        return (f"{best.candidate} won: its lead over {parts} (paired 95% interval{plural}), "
                f"entirely above selection.tie_tolerance {config.tie_tolerance:g}")
    parts = ", over ".join(f"{name} is {point:.3f}" for name, (point, _) in leads.items())
    return (f"{best.candidate} won: its lead over {parts}, more than selection.tie_tolerance "
            f"{config.tie_tolerance:g} (point scores, no bootstrap intervals)")


def _tie_win(chosen: CandidateResult, tied: list[CandidateResult], floor_score: float,
             config: SelectionConfig, intervals: bool) -> str:
    apart = (f"no lead beyond selection.tie_tolerance {config.tie_tolerance:g} at 95%" if intervals
             else f"scores within selection.tie_tolerance {config.tie_tolerance:g} of the best, no bootstrap intervals")
    lowest = min(row.score_interval[0] if row.score_interval else row.score for row in tied)
    measure = "lowest interval bound" if intervals else "lowest score"
    against = "near or below" if lowest < floor_score + NEAR_FLOOR else "above"
    kind = "short fine-tune" if any(row.finetune_steps for row in tied) else "frozen-embedding"
    return (f"{chosen.candidate} won: the probes cannot tell {_names(tied)} apart ({apart}; {measure} "
            f"{lowest:.3f}, {against} the floor's {floor_score:.3f}); a tie of {kind} probes says little about "
            "what fine-tuning reaches, so the largest model wins (selection.max_params or max_latency_ms "
            "prefer smaller ones)")


def _note(row: CandidateResult, chosen: CandidateResult, best: CandidateResult, tied: list[CandidateResult],
          leads: dict[str, Difference], tie: bool, config: SelectionConfig) -> None:
    """One note on where ``row`` stands in the choice (``tie``: the winner won a tie)."""
    if row is chosen and not tie:
        row.notes.append("won: clearly ahead of every other candidate" if leads else "won: the only candidate")
    elif row is chosen:
        others = [other for other in tied if other is not row]
        row.notes.append(f"won: indistinguishable from {_names(others)}; the largest model")
    elif any(row is other for other in tied):
        if best is chosen:
            row.notes.append(f"indistinguishable from {chosen.candidate} (the best score), which won the tie")
        elif row is best:
            row.notes.append(f"the best score, but indistinguishable from {chosen.candidate}, which won the tie")
        else:
            row.notes.append(f"indistinguishable from the best ({best.candidate}); {chosen.candidate} won the tie")
    else:
        point, interval = leads[row.candidate]
        lead = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{point:.3f}"
        row.notes.append(f"clearly behind {best.candidate}: its lead {lead} > selection.tie_tolerance "
                         f"{config.tie_tolerance:g}")


def compare_with_baseline(rows: list[CandidateResult], baseline: CandidateResult) -> None:
    """Mark each probed candidate with whether it beats the floor (a note when it does not)."""
    for row in rows:
        if row.status in (CHOSEN, RANKED) and row.score is not None and baseline.score is not None:
            row.beats_baseline = row.score > baseline.score
            if not row.beats_baseline:
                row.notes.append(f"does not beat the baseline ({row.score:.3f} <= {baseline.score:.3f})")


def table_order(rows: list[CandidateResult], baseline: CandidateResult) -> list[CandidateResult]:
    """Ranked candidates by rank with the baseline where its score falls, then the rest."""
    ranked = sorted((row for row in rows if row.rank is not None), key=lambda r: r.rank)
    position = next((i for i, row in enumerate(ranked) if i > 0 and (row.score or 0) < (baseline.score or 0)),
                    len(ranked))
    rest = [row for row in rows if row.rank is None]
    return [*ranked[:position], baseline, *ranked[position:], *rest]
