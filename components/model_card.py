"""The model card of a packaged model: ``README.md`` in the Hugging Face model-card format (YAML
front matter the hub reads, then Markdown sections a person reads), written from what the run
recorded, so that a model copied out of the store still says what it is, what it was trained
and judged on, and how to reproduce it.

``render_model_card`` is pure (the run's summary, lineage, evaluation and label counts in, the
Markdown out); ``write_model_card`` writes it into the trained model's folder before packaging,
so the card is one of the model's files and checksummed with them (``registry.package_model``).
Facts a run did not record are said so in words; the card never prints "None" or "nan".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from tuneops.components.checkpoints import hub_model_id
from tuneops.components.files import atomic_write_text

CARD_FILE = "README.md"
# The headline test metrics, in the order the card lists them, with the hub's metric id for each
# (the ``metrics`` field of the front matter takes ids from https://hf.co/metrics).
_HEADLINE = (
    ("accuracy", "accuracy", "accuracy"),
    ("macro_f1", "macro F1", "f1"),
    ("weighted_f1", "weighted F1", "f1"),
    ("macro_precision", "macro precision", "precision"),
    ("macro_recall", "macro recall", "recall"),
    ("roc_auc_ovr", "ROC AUC (one vs rest)", "roc_auc"),
    ("ece", "expected calibration error", None),
    ("log_loss", "log loss", None),
)
_UNRECORDED = "not recorded"


def split_label_counts(splits) -> dict[str, dict[str, int]]:
    """``{split: {label: rows}}`` of a ``DatasetSplits`` (validated: labels are strings), for the
    card's training-data section."""
    from tuneops.components.data.columns import LABEL

    return {name: {str(label): int(count) for label, count in frame[LABEL].value_counts().sort_index().items()}
            for name, frame in splits.items()}


def write_model_card(directory: Path, summary: Mapping[str, Any], lineage: Mapping[str, Any],
                     evaluation: Mapping[str, Any] | None, label_counts: Mapping[str, Mapping[str, int]],
                     infra_validation: bool = True) -> Path:
    """Write ``README.md`` (``render_model_card``) into ``directory`` atomically; returns its path."""
    card = render_model_card(summary, lineage, evaluation, label_counts, infra_validation=infra_validation)
    return atomic_write_text(Path(directory) / CARD_FILE, card)


def render_model_card(summary: Mapping[str, Any], lineage: Mapping[str, Any], evaluation: Mapping[str, Any] | None,
                      label_counts: Mapping[str, Mapping[str, int]], infra_validation: bool = True) -> str:
    """The model card of the run ``summary`` (``RunRecord.summary()``, gate included), with its
    ``lineage`` (``RunRecord.lineage``, ``base_checkpoint_revision`` included), the test
    ``evaluation`` (``EvaluationReport.to_json()``; None: only the summary's metrics) and the rows
    per label of each split. ``infra_validation``: whether a promoted model is still to be served
    by a real server before promotion (``gate.infra_validation.enabled``); the card is written
    before that check, into the folder that is packaged."""
    evaluation = evaluation or {}
    metrics = evaluation.get("metrics") or summary.get("metrics") or {}
    sections = [
        _front_matter(summary, lineage, metrics),
        f"# {_title(summary)}\n",
        _description(summary, lineage, label_counts),
        _intended_use(summary, evaluation),
        _training_data(summary, lineage, label_counts),
        _training_procedure(summary),
        _evaluation(metrics, evaluation),
        _gate(summary.get("gate") or {}, infra_validation),
        _lineage(summary, lineage),
    ]
    return "\n".join(sections)


def _front_matter(summary: Mapping[str, Any], lineage: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    base = str(lineage.get("base_checkpoint") or summary.get("base_checkpoint") or "")
    fields: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": str(summary.get("task"))}
    hub_id = hub_model_id(base) if base else None
    if hub_id:
        # The hub validates base_model as a hub id: a local folder or the champion is named in the text.
        fields["base_model"] = hub_id
    fields["tags"] = ["tuneops", str(summary.get("task"))]
    fields["metrics"] = list(dict.fromkeys(hub for key, _, hub in _HEADLINE if hub and _number(metrics.get(key))))
    return "---\n" + yaml.safe_dump(fields, sort_keys=False) + "---\n"


def _title(summary: Mapping[str, Any]) -> str:
    return f"{summary.get('task')} model of tuneops run {summary.get('run_id')}"


def _description(summary: Mapping[str, Any], lineage: Mapping[str, Any], label_counts) -> str:
    labels = _labels(summary, label_counts)
    base = lineage.get("base_checkpoint") or summary.get("base_checkpoint") or _UNRECORDED
    revision = lineage.get("base_checkpoint_revision") or "no revision recorded"
    lines = [
        "## Model description\n",
        f"A {summary.get('task')} model fine-tuned by tuneops from `{base}` ({_code(revision)}). "
        f"It assigns one of {len(labels)} labels to each input: {', '.join(f'`{label}`' for label in labels)}.",
        "It loads with `transformers` (`AutoModelFor...Classification` and the processor saved beside it); "
        "`tuneops.json` holds the label order and the input settings serving uses.\n",
    ]
    return "\n".join(lines)


def _intended_use(summary: Mapping[str, Any], evaluation: Mapping[str, Any]) -> str:
    data = summary.get("data") or {}
    lines = [
        "## Intended use and limits\n",
        f"Intended for inputs like the training data (`{data.get('source') or _UNRECORDED}`), to be sorted into "
        "the labels above. Limits:\n",
        "- It only knows these labels: every input gets one of them, however far from the training data it is.",
        "- The figures below hold for data like the test split; traffic that drifts from it (tuneops monitors "
        "that) can score worse.",
    ]
    max_length = _recipe_value(summary, "training.max_length")
    if max_length is not None:
        lines.append(f"- Inputs longer than {max_length} tokens are cut to that length.")
    image_size = _recipe_value(summary, "training.image_size")
    if image_size is not None:
        lines.append(f"- Images are resized to {image_size} px on a side.")
    weakest = _weakest_slice(evaluation.get("slices") or [])
    if weakest:
        lines.append(f"- Its weakest well-supported slice is `{weakest['name']}`: macro F1 "
                     f"{_fmt(weakest.get('macro_f1'))} on {_count(weakest.get('support'))} test rows.")
    failed = [case for case in evaluation.get("behavioural") or [] if case.get("tested") and
              case.get("passed", 0) < case["tested"]]
    if failed:
        lines.append("- Behavioural cases it does not always pass: "
                     + "; ".join(f"{case['name']} ({_pct(case.get('pass_rate'))})" for case in failed) + ".")
    return "\n".join(lines) + "\n"


def _training_data(summary: Mapping[str, Any], lineage: Mapping[str, Any], label_counts) -> str:
    data = summary.get("data") or {}
    sizes = data.get("sizes") or {split: sum(counts.values()) for split, counts in label_counts.items()}
    splits = list(sizes) or list(label_counts)
    lines = [
        "## Training data\n",
        f"- Source: `{data.get('source') or lineage.get('data_source') or _UNRECORDED}`",
        f"- Fingerprint: `{lineage.get('data_fingerprint') or _UNRECORDED}` (of the rows of every split)",
        "- Rows: " + ", ".join(f"{split} {_count(sizes.get(split))}" for split in splits) + "\n",
        "| label | " + " | ".join(splits) + " |",
        "| --- | " + " | ".join("---:" for _ in splits) + " |",
    ]
    for label in _labels(summary, label_counts):
        lines.append(f"| {label} | " + " | ".join(_count((label_counts.get(split) or {}).get(label, 0))
                                                 for split in splits) + " |")
    return "\n".join(lines) + "\n"


def _training_procedure(summary: Mapping[str, Any]) -> str:
    lines = ["## Training procedure\n",
             "Every setting tuneops decided for this data, with its reason (`config`: set in the run's config).\n",
             "| setting | value | source | reason |", "| --- | --- | --- | --- |"]
    for entry in summary.get("recipe") or []:
        lines.append(f"| `{entry.get('setting')}` | {_value(entry.get('value'))} | {entry.get('source') or ''} | "
                     f"{_cell(entry.get('reason') or '')} |")
    training = summary.get("training") or {}
    throughput = training.get("throughput") or {}
    best = training.get("best_validation") or {}
    lines.append("")
    lines.append(f"Loss fell from {_fmt(training.get('first_loss'))} to {_fmt(training.get('last_loss'))}; "
                 f"the best validation step ({_count(best.get('step'))}) had macro F1 {_fmt(best.get('macro_f1'))}. "
                 f"Trained on {throughput.get('device') or _UNRECORDED} in {throughput.get('precision') or _UNRECORDED}"
                 f", processes: {_count(throughput.get('processes'))}.")
    runtime = summary.get("serving_runtime") or {}
    if runtime:
        served = "int8 (ONNX Runtime)" if runtime.get("runtime") == "onnx-int8" else "fp32 (torch)"
        lines.append("")
        lines.append(f"Served in {served}: {_cell(runtime.get('reason') or '')}.")
    return "\n".join(lines) + "\n"


def _evaluation(metrics: Mapping[str, Any], evaluation: Mapping[str, Any]) -> str:
    intervals = evaluation.get("intervals") or {}
    rows = evaluation.get("rows") or metrics.get("support")
    lines = ["## Evaluation\n",
             f"On the held-out test split ({_count(rows)} rows); intervals are 95% bootstrap intervals.\n",
             "| metric | value | 95% interval |", "| --- | ---: | --- |"]
    for key, name, _ in _HEADLINE:
        if _number(metrics.get(key)):
            interval = intervals.get(key)
            shown = f"[{_fmt(interval[0])}, {_fmt(interval[1])}]" if _interval(interval) else "not computed"
            lines.append(f"| {name} | {_fmt(metrics[key])} | {shown} |")
    per_class = metrics.get("per_class") or {}
    if per_class:
        lines += ["", "| label | precision | recall | F1 | test rows |", "| --- | ---: | ---: | ---: | ---: |"]
        for label, figures in per_class.items():
            lines.append(f"| {label} | {_fmt(figures.get('precision'))} | {_fmt(figures.get('recall'))} | "
                         f"{_fmt(figures.get('f1'))} | {_count(figures.get('support'))} |")
    lines += ["", "### Slices and fairness\n", _slices_headline(evaluation), _fairness_headline(evaluation),
              "", "### Behavioural checks\n"]
    cases = evaluation.get("behavioural") or []
    if cases:
        lines += ["| case | kind | passed | pass rate |", "| --- | --- | ---: | ---: |"]
        for case in cases:
            rate = f"skipped: {case['skipped']}" if case.get("skipped") else _pct(case.get("pass_rate"))
            lines.append(f"| {case.get('name')} | {case.get('kind')} | {_count(case.get('passed'))} of "
                         f"{_count(case.get('tested'))} | {_cell(rate)} |")
    else:
        lines.append("No behavioural checks were recorded.")
    return "\n".join(lines) + "\n"


def _slices_headline(evaluation: Mapping[str, Any]) -> str:
    slices = evaluation.get("slices") or []
    if not slices:
        return "- Slices: none (the data has no group columns)."
    weakest = _weakest_slice(slices)
    text = f"- Slices: {len(slices)} measured"
    if weakest:
        text += (f"; the weakest with at least {_count(evaluation.get('min_slice_support'))} rows is "
                 f"`{weakest['name']}` (macro F1 {_fmt(weakest.get('macro_f1'))}, {_count(weakest.get('support'))} rows)")
    return text + "."


def _fairness_headline(evaluation: Mapping[str, Any]) -> str:
    gaps = [gap for gap in (evaluation.get("fairness") or {}).get("gaps") or [] if _number(gap.get("value"))]
    if not gaps:
        return "- Fairness: no gap measured (fewer than two groups with enough rows, or no group columns)."
    parts = [f"{gap['metric'].replace('_', ' ')} over `{gap['column']}` {_fmt(gap['value'])}"
             + (f" (`{gap['low_group']}` {_fmt(gap.get('low_value'))} vs `{gap['high_group']}` "
                f"{_fmt(gap.get('high_value'))}, class `{gap['label']}`)" if gap.get("low_group") and gap.get("label")
                else "")
             for gap in gaps]
    return "- Fairness: " + "; ".join(parts) + "."


def _gate(gate: Mapping[str, Any], infra_validation: bool) -> str:
    if not gate:
        return "## Gate decision\n\nNo gate decision was recorded.\n"
    verdict = "promote" if gate.get("promote") else "reject"
    lines = ["## Gate decision\n",
             f"**{verdict}** on `{gate.get('metric') or _UNRECORDED}` (challenger {_fmt(gate.get('challenger'))}, "
             f"champion {_fmt(gate.get('champion'), 'none yet')}, classical floor {_fmt(gate.get('baseline'))}).\n"]
    lines += [f"- {reason}" for reason in gate.get("reasons") or []]
    checks = gate.get("checks") or []
    if checks:
        lines += ["", "| check | passed | detail |", "| --- | --- | --- |"]
        lines += [f"| {check.get('name')} | {'yes' if check.get('passed') else 'no'} | {_cell(check.get('message') or '')} |"
                  for check in checks]
    if gate.get("promote") and not any(check.get("name") == "infra" for check in checks):
        lines.append("\nInfrastructure validation (a real server answering test inputs) follows packaging; "
                     "a model that fails it is removed from the store." if infra_validation else
                     "\nInfrastructure validation was off for this run (`gate.infra_validation.enabled: false`): "
                     "the model was promoted on the checks above alone, without a real server answering test inputs.")
    return "\n".join(lines) + "\n"


def _lineage(summary: Mapping[str, Any], lineage: Mapping[str, Any]) -> str:
    base = lineage.get("base_checkpoint") or summary.get("base_checkpoint") or _UNRECORDED
    lines = ["## Lineage\n",
             f"- Run: `{lineage.get('run_id') or summary.get('run_id')}`",
             f"- Config hash: `{lineage.get('config_hash') or _UNRECORDED}`",
             f"- Code version: `{lineage.get('code_version') or _UNRECORDED}`",
             f"- Data fingerprint: `{lineage.get('data_fingerprint') or _UNRECORDED}`",
             f"- Base checkpoint: `{base}`",
             f"- Base checkpoint revision: {_code(lineage.get('base_checkpoint_revision') or 'none recorded')}"]
    packages = lineage.get("packages") or {}
    if packages:
        lines += ["", "| package | version |", "| --- | --- |"]
        lines += [f"| {name} | {version} |" for name, version in packages.items() if version]
    return "\n".join(lines) + "\n"


def _labels(summary: Mapping[str, Any], label_counts) -> list[str]:
    per_class = (summary.get("metrics") or {}).get("per_class") or {}
    seen = list(per_class) + [label for counts in label_counts.values() for label in counts]
    return list(dict.fromkeys(str(label) for label in seen))


def _recipe_value(summary: Mapping[str, Any], setting: str) -> Any:
    return next((entry.get("value") for entry in summary.get("recipe") or [] if entry.get("setting") == setting), None)


def _weakest_slice(slices: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    supported = [item for item in slices if not item.get("small") and _number(item.get("macro_f1"))]
    return min(supported, key=lambda item: item["macro_f1"]) if supported else None


def _code(revision: str) -> str:
    """A revision in backticks when it is one, in words when it says there is none."""
    return revision if revision.startswith(("no ", "none")) else f"revision `{revision}`"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _interval(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(bound) for bound in value)


def _fmt(value: Any, missing: str = _UNRECORDED) -> str:
    """Three decimals: the bootstrap intervals of a few hundred test rows are wider than that."""
    return f"{value:.3f}" if _number(value) else missing


def _pct(value: Any) -> str:
    return f"{value:.0%}" if _number(value) else _UNRECORDED


def _count(value: Any) -> str:
    return f"{int(value):,}" if _number(value) else _UNRECORDED


def _value(value: Any) -> str:
    if _number(value) and isinstance(value, float):
        return f"{value:g}"
    return _cell(str(value)) if value is not None else "unset"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no column breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")
