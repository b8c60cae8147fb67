"""Choosing the pretrained checkpoint: probe every candidate on the user's data, under budgets.

For each candidate in ``selection.candidates`` (plus the champion, when there is one):
  1. inspect its files before any compute (``tuneops.components.checkpoints.inspect_checkpoint``):
     config, tokenizer, an architecture with a sequence-classification head, safetensors
     weights, no remote code, parameter count, maximum sequence length;
  2. drop it if it is larger than ``selection.max_params``;
  3. probe it on a stratified sample of the training rows: a logistic regression on its frozen
     mean-pooled embeddings (the cheap probe), and optionally a short fine-tune;
  4. measure per-item latency at batch 1 and batch 32 on the current device, and peak memory.
A TF-IDF + logistic-regression baseline, trained on the same sample, is the floor every
candidate is compared with. Constraints filter, the objective picks (best score, ties within
``selection.tie_tolerance`` go to the smaller model), and the ranked table is written as HTML
and JSON into the run record.
"""

from __future__ import annotations

import gc
import html
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from tuneops.components.tasks.text.baseline import train_baseline
from tuneops.components.checkpoints import CheckpointInspection, inspect_checkpoint, load_for_classification
from tuneops.components.config import SelectionConfig
from tuneops.components.data.loading import LABEL, TEXT, DatasetSplits
from tuneops.components.errors import StageError
from tuneops.components.device import resolve_device
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.registry import get_task
from tuneops.components.sampling import stratified_sample
from tuneops.components.sampling import stratified_sample

BASELINE_NAME = "baseline: tf-idf + logistic regression"
SEED = 42
# Probes see texts cut where training cuts them (training.max_length defaults to 128).
PROBE_MAX_LENGTH = 128
# Texts per inference call while embedding; the budget is checked between calls.
EMBED_CHUNK = 64
# Batch-1 latency is the fastest of this many single-text calls (after 2 warm-up calls): short
# enough (< 1 s for MiniLM on CPU) not to dominate the probe.
LATENCY_SINGLE_CALLS = 16
LATENCY_BATCH = 32
LATENCY_BATCH_REPEATS = 3
# The short fine-tune probe: the training defaults' learning rate, a batch small enough for CPU.
FINETUNE_BATCH = 16
FINETUNE_LEARNING_RATE = 1e-4

CHOSEN, RANKED, BASELINE, EXCLUDED, SKIPPED, FAILED = "chosen", "ranked", "baseline", "excluded", "skipped", "failed"


@dataclass
class CandidateResult:
    """One row of the selection table: what was checked and measured for one candidate."""

    candidate: str
    status: str = SKIPPED  # chosen / ranked / baseline / excluded / skipped / failed
    rank: int | None = None
    reason: str | None = None  # why it was excluded, skipped or failed
    architecture: str | None = None
    parameters: int | None = None
    layers: int | None = None
    max_sequence_length: int | None = None
    weights: str | None = None
    score: float | None = None  # the objective's metric from the most thorough probe that ran
    probe_macro_f1: float | None = None
    probe_accuracy: float | None = None
    finetune_steps: int = 0
    finetune_macro_f1: float | None = None
    finetune_accuracy: float | None = None
    latency_ms_batch1: float | None = None
    latency_ms_batch32: float | None = None
    peak_memory_mb: float | None = None
    seconds: float = 0.0
    beats_baseline: bool | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SelectionReport:
    """The outcome of selection: the chosen candidate spec and the ranked table behind it."""

    chosen: str | None
    rows: list[CandidateResult]
    baseline: dict[str, Any]  # the TF-IDF floor's validation metrics (accuracy, macro_f1, weighted_f1)
    objective: str
    constraints: dict[str, Any]
    device: str
    probe_rows: int
    validation_rows: int
    seconds: float
    html_path: Path
    json_path: Path

    @property
    def chosen_result(self) -> CandidateResult | None:
        return next((row for row in self.rows if row.status == CHOSEN), None)

    def table_rows(self) -> list[dict[str, Any]]:
        """The ranked table as flat rows of plain values (for a Prefect table artifact)."""
        table = []
        for row in self.rows:
            table.append({
                "rank": row.rank if row.rank is not None else "-",
                "candidate": row.candidate,
                "status": row.status,
                self.objective: _shown(row.score),
                "probe_macro_f1": _shown(row.probe_macro_f1),
                "finetune_macro_f1": _shown(row.finetune_macro_f1),
                "latency_ms_b1": _shown(row.latency_ms_batch1, 2),
                "latency_ms_b32": _shown(row.latency_ms_batch32, 2),
                "parameters": row.parameters if row.parameters is not None else "-",
                "layers": row.layers if row.layers is not None else "-",
                "peak_memory_mb": _shown(row.peak_memory_mb, 1),
                "seconds": round(row.seconds, 1),
                "reason": "; ".join(filter(None, [row.reason, *row.notes])) or "-",
            })
        return table

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "objective": self.objective,
            "constraints": self.constraints,
            "device": self.device,
            "probe_rows": self.probe_rows,
            "validation_rows": self.validation_rows,
            "seconds": round(self.seconds, 2),
            "baseline": self.baseline,
            "rows": [asdict(row) for row in self.rows],
            "html_path": str(self.html_path),
            "json_path": str(self.json_path),
        }

    def summary(self) -> str:
        """One line for logs."""
        probed = sum(row.status in (CHOSEN, RANKED) for row in self.rows)
        return (f"selection: chose {self.chosen} out of {probed} ranked of {len(self.rows) - 1} candidates "
                f"in {self.seconds:.0f} s on {self.device}")


def select_model(
    splits: DatasetSplits,
    config: SelectionConfig,
    output_dir: Path,
    champion_dir: Path | None = None,
) -> SelectionReport:
    """Probe the configured candidates on ``splits`` and choose one; write the table to ``output_dir``.

    Raises StageError("selection: no usable candidate: ...") with every candidate's reason
    when none passes the checks and constraints (the report is written first).
    """
    started = time.perf_counter()
    deadline = started + config.budget_seconds
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    labels = splits.labels
    train_sample = stratified_sample(splits.train, config.probe_rows, SEED)
    validation = stratified_sample(splits.validation, config.probe_rows, SEED)
    device = resolve_device("auto")

    baseline_row, baseline_metrics = _probe_baseline(train_sample, validation, labels, config.objective)
    rows = [
        _assess_candidate(spec, labels, train_sample, validation, config, device, champion_dir, deadline)
        for spec in candidate_specs(config, champion_dir)
    ]
    chosen = rank_candidates(rows, config)
    _compare_with_baseline(rows, baseline_row)
    ordered = _table_order(rows, baseline_row)

    report = SelectionReport(
        chosen=chosen,
        rows=ordered,
        baseline=baseline_metrics,
        objective=config.objective,
        constraints={
            "max_params": config.max_params,
            "max_latency_ms": config.max_latency_ms,
            "budget_seconds": config.budget_seconds,
            "allow_pickle": config.allow_pickle,
            "tie_tolerance": config.tie_tolerance,
        },
        device=device,
        probe_rows=len(train_sample),
        validation_rows=len(validation),
        seconds=time.perf_counter() - started,
        html_path=output_dir / "selection.html",
        json_path=output_dir / "selection.json",
    )
    report.json_path.write_text(json.dumps(report.to_json(), indent=2))
    report.html_path.write_text(render_html(report), encoding="utf-8")
    if chosen is None:
        reasons = "; ".join(f"{row.candidate}: {row.reason}" for row in rows) or "no candidates configured"
        raise StageError(f"selection: no usable candidate: {reasons}")
    return report


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


def _assess_candidate(
    spec: str,
    labels: list[str],
    train_sample: pd.DataFrame,
    validation: pd.DataFrame,
    config: SelectionConfig,
    device: str,
    champion_dir: Path | None,
    deadline: float,
) -> CandidateResult:
    started = time.perf_counter()
    row = CandidateResult(candidate=spec)
    inspection = inspect_checkpoint(spec, len(labels), champion_dir, config.allow_pickle)
    _copy_inspection(row, inspection)
    if not inspection.usable:
        row.status, row.reason = SKIPPED, inspection.reason
    elif config.max_params is not None and row.parameters is not None and row.parameters > config.max_params:
        row.status, row.reason = EXCLUDED, _too_large(row.parameters, config.max_params)
    elif time.perf_counter() >= deadline:
        row.status = EXCLUDED
        row.reason = f"not probed: selection.budget_seconds ({config.budget_seconds:g} s) used up by earlier candidates"
    else:
        _probe_candidate(row, inspection, labels, train_sample, validation, config, device, deadline)
    row.seconds = time.perf_counter() - started
    return row


class _OutOfBudget(Exception):
    pass


def _probe_candidate(
    row: CandidateResult,
    inspection: CheckpointInspection,
    labels: list[str],
    train_sample: pd.DataFrame,
    validation: pd.DataFrame,
    config: SelectionConfig,
    device: str,
    deadline: float,
) -> None:
    """Load, probe and time one usable candidate; fills ``row`` (status ranked, excluded or failed)."""
    import torch

    model = tokenizer = predictor = None
    memory = PeakMemory(device)
    try:
        with memory:
            torch.manual_seed(SEED)
            tokenizer, model = load_for_classification(inspection.loading_spec(), labels, allow_pickle=config.allow_pickle)
            row.parameters = sum(parameter.numel() for parameter in model.parameters())
            if config.max_params is not None and row.parameters > config.max_params:
                row.status, row.reason = EXCLUDED, _too_large(row.parameters, config.max_params)
                return
            max_length = min(PROBE_MAX_LENGTH, inspection.max_sequence_length or PROBE_MAX_LENGTH)
            predictor = Predictor(model, tokenizer, labels, task=get_task("text-classification"), max_length=max_length, device=device)
            row.probe_macro_f1, row.probe_accuracy = _linear_probe(predictor, train_sample, validation, labels, deadline)
            row.score = row.probe_macro_f1 if config.objective == "macro_f1" else row.probe_accuracy
            validation_texts = validation[TEXT].astype(str).tolist()
            row.latency_ms_batch1, row.latency_ms_batch32 = measure_latency(
                lambda texts: predictor.predict_proba(texts, batch_size=LATENCY_BATCH), validation_texts
            )
            if config.probe_finetune_steps:
                steps = _short_finetune(model, tokenizer, train_sample, labels, config.probe_finetune_steps,
                                        max_length, device, deadline)
                row.finetune_steps = steps
                if steps < config.probe_finetune_steps:
                    row.notes.append(f"fine-tune probe stopped by the budget after {steps} of "
                                     f"{config.probe_finetune_steps} steps")
                if steps:
                    row.finetune_macro_f1, row.finetune_accuracy = _score(
                        validation[LABEL].astype(str).tolist(),
                        predictor.predict_proba(validation_texts).argmax(axis=1), labels)
                    row.score = row.finetune_macro_f1 if config.objective == "macro_f1" else row.finetune_accuracy
        row.status = RANKED
    except _OutOfBudget:
        row.status = EXCLUDED
        row.reason = f"probe did not finish within selection.budget_seconds ({config.budget_seconds:g} s)"
    except Exception as error:  # one broken candidate must not stop the comparison of the others
        row.status = FAILED
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        row.reason = f"probe failed: {type(error).__name__}: {first}".rstrip(": ")
    finally:
        row.peak_memory_mb = memory.peak_mb
        del model, tokenizer, predictor
        release_memory(device)


def _linear_probe(
    predictor: Predictor, train_sample: pd.DataFrame, validation: pd.DataFrame, labels: list[str], deadline: float
) -> tuple[float, float]:
    """Macro-F1 and accuracy of a logistic regression on the frozen mean-pooled embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_features = _embed(predictor, train_sample[TEXT].astype(str).tolist(), deadline)
    validation_features = _embed(predictor, validation[TEXT].astype(str).tolist(), deadline)
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=SEED))
    head.fit(train_features, train_sample[LABEL].astype(str).to_numpy())
    predicted = head.predict(validation_features)
    index = {label: i for i, label in enumerate(labels)}
    return _score(validation[LABEL].astype(str).tolist(), np.array([index[p] for p in predicted]), labels)


def _embed(predictor: Predictor, texts: list[str], deadline: float) -> np.ndarray:
    """Embeddings in the order of ``texts``, computed in length-sorted chunks (little padding),
    checking the budget between chunks."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    embeddings = None
    for start in range(0, len(texts), EMBED_CHUNK):
        if time.perf_counter() > deadline:
            raise _OutOfBudget
        index = order[start:start + EMBED_CHUNK]
        chunk = predictor.embed([texts[i] for i in index], batch_size=EMBED_CHUNK)
        if embeddings is None:
            embeddings = np.zeros((len(texts), chunk.shape[1]), dtype=np.float32)
        embeddings[index] = chunk
    return embeddings if embeddings is not None else np.zeros((0, 0), dtype=np.float32)


def _short_finetune(model, tokenizer, train_sample: pd.DataFrame, labels: list[str], steps: int,
                    max_length: int, device: str, deadline: float) -> int:
    """A few optimizer steps on random batches of the sample; returns the steps actually taken."""
    import torch

    texts = train_sample[TEXT].astype(str).tolist()
    index = {label: i for i, label in enumerate(labels)}
    targets = train_sample[LABEL].astype(str).map(index).to_numpy()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=FINETUNE_LEARNING_RATE)
    rng = np.random.default_rng(SEED)
    model.train()
    done = 0
    for _ in range(steps):
        if time.perf_counter() > deadline:
            break
        batch_rows = rng.choice(len(texts), size=min(FINETUNE_BATCH, len(texts)), replace=False)
        batch = tokenizer([texts[i] for i in batch_rows], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt").to(device)
        loss = model(**batch, labels=torch.tensor(targets[batch_rows], device=device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
    model.eval()
    return done


def measure_latency(predict_proba: Callable[[list[str]], Any], texts: list[str]) -> tuple[float, float]:
    """Per-item latency in ms at batch 1 and at batch 32 (batch time / 32), tokenization included.

    Each is the fastest of repeated calls, as ``timeit`` advises: other processes on a shared
    machine only ever add time, so the minimum is the candidate's own cost and is what stays
    comparable between candidates measured a minute apart (medians varied 10x on a busy box).
    """
    if not texts:
        return math.nan, math.nan
    single = [texts[i % len(texts)] for i in range(LATENCY_SINGLE_CALLS)]
    for text in single[:2]:  # warm-up: first calls pay for lazy initialisation
        predict_proba([text])
    timings = []
    for text in single:
        began = time.perf_counter()
        predict_proba([text])
        timings.append(time.perf_counter() - began)
    batch = [texts[i % len(texts)] for i in range(LATENCY_BATCH)]
    predict_proba(batch)
    batch_timings = []
    for _ in range(LATENCY_BATCH_REPEATS):
        began = time.perf_counter()
        predict_proba(batch)
        batch_timings.append(time.perf_counter() - began)
    return min(timings) * 1000, min(batch_timings) * 1000 / LATENCY_BATCH


def _probe_baseline(
    train_sample: pd.DataFrame, validation: pd.DataFrame, labels: list[str], objective: str
) -> tuple[CandidateResult, dict[str, Any]]:
    started = time.perf_counter()
    row = CandidateResult(candidate=BASELINE_NAME, status=BASELINE, architecture="TfidfVectorizer + LogisticRegression")
    memory = PeakMemory("cpu")
    with memory:
        baseline = train_baseline(train_sample, labels)
        metrics = baseline.score(validation)
        row.latency_ms_batch1, row.latency_ms_batch32 = measure_latency(
            baseline.predict_proba, validation[TEXT].astype(str).tolist())
    row.parameters = baseline.parameter_count
    row.probe_macro_f1, row.probe_accuracy = metrics["macro_f1"], metrics["accuracy"]
    row.score = metrics[objective]
    row.peak_memory_mb = memory.peak_mb
    row.seconds = time.perf_counter() - started
    row.notes.append("the floor: trained on the same sample the candidates are probed on")
    return row, {**metrics, "train_rows": len(train_sample), "validation_rows": len(validation)}


def _compare_with_baseline(rows: list[CandidateResult], baseline: CandidateResult) -> None:
    for row in rows:
        if row.status in (CHOSEN, RANKED) and row.score is not None and baseline.score is not None:
            row.beats_baseline = row.score > baseline.score
            if not row.beats_baseline:
                row.notes.append(f"does not beat the TF-IDF baseline ({row.score:.3f} <= {baseline.score:.3f})")


def _table_order(rows: list[CandidateResult], baseline: CandidateResult) -> list[CandidateResult]:
    """Ranked candidates by rank with the baseline where its score falls, then the rest."""
    ranked = sorted((row for row in rows if row.rank is not None), key=lambda r: r.rank)
    position = next((i for i, row in enumerate(ranked) if i > 0 and (row.score or 0) < (baseline.score or 0)),
                    len(ranked))
    rest = [row for row in rows if row.rank is None]
    return [*ranked[:position], baseline, *ranked[position:], *rest]


def _score(truth: list[str], predicted_index: np.ndarray, labels: list[str]) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = [labels[i] for i in predicted_index]
    macro_f1 = f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
    return float(macro_f1), float(accuracy_score(truth, predicted))


def _copy_inspection(row: CandidateResult, inspection: CheckpointInspection) -> None:
    row.architecture = inspection.architecture
    row.parameters = inspection.parameters
    row.layers = inspection.layers
    row.max_sequence_length = inspection.max_sequence_length
    row.weights = inspection.weights
    row.notes.extend(inspection.notes or [])
    if inspection.layers is not None and inspection.checkpoint_layers not in (None, inspection.layers):
        row.notes.append(f"first {inspection.layers} of {inspection.checkpoint_layers} layers kept")


def _too_large(parameters: int, limit: int) -> str:
    return f"{parameters:,} parameters > selection.max_params {limit:,}"


def _shown(value: float | None, digits: int = 3) -> float | str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


class PeakMemory:
    """Peak memory a block of code adds, in MB: CUDA's allocator peak on a GPU; on CPU the peak
    process RSS above the level at entry, sampled every 10 ms by a background thread."""

    _INTERVAL_SECONDS = 0.01

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._peak = 0

    def __enter__(self) -> "PeakMemory":
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        import psutil

        process = psutil.Process()
        self._start = self._peak = process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(self._INTERVAL_SECONDS):
                self._peak = max(self._peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, name="tuneops-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            import psutil

            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, psutil.Process().memory_info().rss)
        self.peak_mb = max(0, peak - self._start) / 2**20


def release_memory(device: str) -> None:
    """Free what the last candidate held, so the next one's memory is measured on its own.

    glibc keeps freed heap pages in the process; ``malloc_trim`` hands them back to the OS so
    that an RSS delta reflects the next candidate, not the previous one's leftovers.
    """
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the measure is then an upper bound
        pass


# --- HTML -----------------------------------------------------------------------------------

_COLUMNS = [
    ("rank", "rank"), ("candidate", "candidate"), ("status", "status"), ("score", "score"),
    ("probe_macro_f1", "probe macro-F1"), ("finetune_macro_f1", "fine-tune macro-F1"),
    ("latency_ms_b1", "ms/item @1"), ("latency_ms_b32", "ms/item @32"), ("parameters", "parameters"),
    ("layers", "layers"), ("peak_memory_mb", "peak MB"), ("seconds", "seconds"), ("reason", "reason / notes"),
]
_STATUS_COLOURS = {CHOSEN: "#d9f2d9", BASELINE: "#eef", EXCLUDED: "#fbeee0", SKIPPED: "#f3f3f3", FAILED: "#f9dede"}


def render_html(report: SelectionReport) -> str:
    """A self-contained HTML page with the ranked table and how each number was measured."""
    escape = html.escape
    header = "".join(f"<th>{escape(title)}</th>" for _, title in _COLUMNS)
    body = []
    for source, shown in zip(report.rows, report.table_rows()):
        shown = {**shown, "score": shown[report.objective]}
        if isinstance(shown["parameters"], int):
            shown["parameters"] = f"{shown['parameters']:,}"
        colour = _STATUS_COLOURS.get(source.status, "#fff")
        cells = "".join(f"<td>{escape(str(shown[key]))}</td>" for key, _ in _COLUMNS)
        body.append(f'<tr style="background:{colour}">{cells}</tr>')
    constraints = ", ".join(f"{key} = {value}" for key, value in report.constraints.items())
    chosen = escape(str(report.chosen)) if report.chosen else "<b>none: no usable candidate</b>"
    baseline = ", ".join(f"{key} {value:.3f}" for key, value in report.baseline.items() if isinstance(value, float))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tuneops: model selection</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
</style></head><body>
<h1>Model selection</h1>
<p>Chosen: <b>{chosen}</b> &mdash; objective: {escape(report.objective)} (ties go to the smaller model);
constraints: {escape(constraints)}.</p>
<p>Probed on a stratified sample of {report.probe_rows} training rows, scored on {report.validation_rows}
validation rows, device {escape(report.device)}, {report.seconds:.1f} s in all.
TF-IDF baseline on the same rows: {escape(baseline)}.</p>
<table><thead><tr>{header}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<h2>How the numbers are measured</h2>
<ul>
<li><b>probe macro-F1</b>: a logistic regression trained on the candidate's frozen, mean-pooled
last-layer embeddings of the sample, scored on the validation rows.</li>
<li><b>fine-tune macro-F1</b>: after a short fine-tune (selection.probe_finetune_steps), when enabled;
it is then the score.</li>
<li><b>ms/item</b>: wall time per text, tokenization included, at batch 1 and batch 32: the fastest
of repeated calls, so that other processes on the machine do not decide the ranking.</li>
<li><b>parameters</b>: with the classification head; <b>peak MB</b>: memory added while loading and
probing (CUDA allocator peak on a GPU, process RSS above its starting level on CPU).</li>
<li>Candidate specs ending in <code>@layers=K</code> keep only the first K transformer layers
(layer dropping), a smaller and faster model derived from the same checkpoint.</li>
</ul>
</body></html>
"""
