"""What a fine-tune leaves beside its weights: learning curves (CSV + PNG), training arguments,
throughput figures and a small HTML page the run index links to."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

CURVE_COLUMNS = ["step", "epoch", "learning_rate", "train_loss", "validation_loss",
                 "validation_macro_f1", "validation_accuracy"]


def write_learning_curves(history: list[dict], output_dir: Path) -> tuple[Path, Path]:
    """``learning_curve.csv`` (one row per optimizer step; validation columns filled on evaluation
    steps) and ``learning_curve.png`` (train loss and validation metrics against step)."""
    csv_path = output_dir / "learning_curve.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({key: row.get(key, "") for key in CURVE_COLUMNS})
    png_path = output_dir / "learning_curve.png"
    _plot(history, png_path)
    return csv_path, png_path


def _plot(history: list[dict], path: Path) -> None:
    # Figure + Agg canvas directly: no pyplot, so no global backend state and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    loss_axis = figure.add_subplot(1, 1, 1)
    steps = [row["step"] for row in history]
    loss_axis.plot(steps, [row["train_loss"] for row in history], color="tab:blue", alpha=0.35, label="train loss")
    if len(history) >= 10:
        window = max(5, len(history) // 20)
        smoothed = [sum(r["train_loss"] for r in history[max(0, i - window + 1):i + 1]) / len(history[max(0, i - window + 1):i + 1])
                    for i in range(len(history))]
        loss_axis.plot(steps, smoothed, color="tab:blue", label=f"train loss ({window}-step mean)")
    evaluated = [row for row in history if "validation_loss" in row]
    if evaluated:
        loss_axis.plot([r["step"] for r in evaluated], [r["validation_loss"] for r in evaluated],
                       "o-", color="tab:orange", label="validation loss")
        metric_axis = loss_axis.twinx()
        metric_axis.plot([r["step"] for r in evaluated], [r["validation_macro_f1"] for r in evaluated],
                         "s-", color="tab:green", label="validation macro F1")
        metric_axis.set_ylabel("macro F1")
        metric_axis.set_ylim(0, 1)
        metric_axis.legend(loc="center right")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("cross-entropy loss")
    loss_axis.legend(loc="upper right")
    loss_axis.set_title("Learning curves")
    figure.tight_layout()
    figure.savefig(path)


def write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def write_html_report(output_dir: Path, summary: dict) -> Path:
    """``training_report.html``: the curves, the best validation scores, throughput and settings."""
    throughput_rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{_format(value)}</td></tr>"
        for key, value in summary.get("throughput", {}).items()
    )
    best_rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{_format(value)}</td></tr>"
        for key, value in summary.get("best_validation", {}).items()
    )
    args = html.escape(json.dumps(summary.get("training_args", {}), indent=2, default=str))
    resumed = summary.get("resumed_from_step")
    notes = []
    if resumed:
        notes.append(f"Resumed from the checkpoint of step {resumed}.")
    if summary.get("stopped_early"):
        notes.append(f"Stopped early at step {summary.get('steps')} (no improvement).")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Training report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style>
</head><body>
<h1>Fine-tune of {html.escape(str(summary.get("base_checkpoint", "")))}</h1>
<p>{summary.get("steps")} of {summary.get("total_steps")} optimizer steps in {_format(summary.get("seconds"))} s
on {html.escape(str(summary.get("device")))} ({html.escape(str(summary.get("precision")))},
{summary.get("world_size", 1)} process(es)). {" ".join(html.escape(n) for n in notes)}</p>
<img src="learning_curve.png" alt="learning curves" style="max-width:100%">
<p><a href="learning_curve.csv">learning_curve.csv</a> · <a href="training_summary.json">training_summary.json</a>
· <a href="training_args.json">training_args.json</a></p>
<h2>Kept checkpoint (best on validation)</h2><table>{best_rows}</table>
<h2>Throughput</h2><table>{throughput_rows}</table>
<h2>Training arguments</h2><pre>{args}</pre>
</body></html>
"""
    path = output_dir / "training_report.html"
    path.write_text(page)
    return path


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.3e}"
    return html.escape(str(value))
