"""The pages a fine-tune leaves beside its weights: learning curves (CSV + PNG) and a small HTML
report (in the shared page shell) that the run index links to."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from tuneops.components.files import atomic_write_text, plain_json
from tuneops.components.pages import html_table, write_page

CURVE_COLUMNS = ["step", "epoch", "learning_rate", "train_loss", "validation_loss",
                 "validation_macro_f1", "validation_accuracy"]


def write_learning_curves(history: list[dict], output_dir: Path) -> tuple[Path, Path]:
    """``learning_curve.csv`` (one row per optimizer step; validation columns filled on evaluation
    steps) and ``learning_curve.png`` (train loss and validation metrics against step)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CURVE_COLUMNS)
    writer.writeheader()
    for row in history:
        writer.writerow({key: row.get(key, "") for key in CURVE_COLUMNS})
    csv_path = atomic_write_text(output_dir / "learning_curve.csv", text.getvalue())
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


def write_html_report(output_dir: Path, summary: dict) -> Path:
    """``training_report.html``: the curves, the best validation scores, throughput and settings."""
    throughput_rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td class=\"num\">{_format(value)}</td></tr>"
        for key, value in summary.get("throughput", {}).items()
    )
    best_rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td class=\"num\">{_format(value)}</td></tr>"
        for key, value in summary.get("best_validation", {}).items()
    )
    args = html.escape(json.dumps(plain_json(summary.get("training_args", {})), indent=2))
    recipe = html_table(["setting", "value", "source", "why"],
                        [[c["setting"], c["value"], c["source"], c["reason"]] for c in summary.get("recipe", [])])
    resumed = summary.get("resumed_from_step")
    notes = []
    if resumed:
        notes.append(f"Resumed from the checkpoint of step {resumed}.")
    if summary.get("stopped_early"):
        notes.append(f"Stopped early at step {summary.get('steps')} (no improvement).")
    body = f"""<p>{summary.get("steps")} of {summary.get("total_steps")} optimizer steps in {_format(summary.get("seconds"))} s
on {html.escape(str(summary.get("device")))} ({html.escape(str(summary.get("precision")))},
{summary.get("world_size", 1)} process(es)). {" ".join(html.escape(n) for n in notes)}</p>
<img src="learning_curve.png" alt="learning curves">
<p><a href="learning_curve.csv">learning_curve.csv</a> · <a href="training_summary.json">training_summary.json</a>
· <a href="training_args.json">training_args.json</a></p>
<h2>Kept checkpoint (best on validation)</h2><table>{best_rows}</table>
<h2>Throughput</h2><table>{throughput_rows}</table>
<h2>Recipe (settings decided for this data; "config" = set in the config)</h2>{recipe}
<h2>Training arguments</h2><pre>{args}</pre>
"""
    title = f"Fine-tune of {summary.get('base_checkpoint', '')}"
    return write_page(output_dir / "training_report.html", title, body, subtitle="training report")


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.3e}"
    return html.escape(str(value))
