"""Which candidates are tried, and how the probed ones are ranked: the latency constraint, the
objective with ties going to the smaller model, the comparison with the floor, the table order."""

from __future__ import annotations

import math
from pathlib import Path

from tuneops.components.config import SelectionConfig
from tuneops.components.selection.report import CHOSEN, EXCLUDED, RANKED, CandidateResult


def candidate_specs(config: SelectionConfig, champion_dir: Path | None) -> list[str]:
    """The configured candidates in order, without repeats, plus ``champion`` when there is one
    and ``selection.include_champion`` is on."""
    specs = list(dict.fromkeys(spec.strip() for spec in config.candidates if spec.strip()))
    if config.include_champion and champion_dir is not None and "champion" not in specs:
        specs.append("champion")
    return specs


def rank_candidates(rows: list[CandidateResult], config: SelectionConfig) -> str | None:
    """Apply the latency constraint, pick by the objective and number the ranks (in place).

    Among the probed candidates within the constraints, those whose score is within
    ``tie_tolerance`` of the best tie, and the tie goes to the fewest parameters (then the
    lowest batch-1 latency). Returns the chosen spec, or None when no candidate is eligible.
    """
    for row in rows:
        if row.status != RANKED:
            continue
        if config.max_latency_ms is not None and row.latency_ms_batch1 is not None \
                and row.latency_ms_batch1 > config.max_latency_ms:
            row.status = EXCLUDED
            row.reason = (f"latency {row.latency_ms_batch1:.2f} ms/item at batch 1 > "
                          f"selection.max_latency_ms {config.max_latency_ms:g}")
    eligible = [row for row in rows if row.status == RANKED and row.score is not None]
    if not eligible:
        return None
    best = max(row.score for row in eligible)
    tied = [row for row in eligible if row.score >= best - config.tie_tolerance]
    chosen = min(tied, key=lambda r: (r.parameters or math.inf, r.latency_ms_batch1 or math.inf, -r.score))
    others = sorted((row for row in eligible if row is not chosen),
                    key=lambda r: (-r.score, r.parameters or math.inf))
    for rank, row in enumerate([chosen, *others], start=1):
        row.rank = rank
    chosen.status = CHOSEN
    if len(tied) > 1:
        chosen.notes.append(f"tie within {config.tie_tolerance:g} of the best score: the smallest model wins")
    return chosen.candidate


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
