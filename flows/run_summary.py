"""A training run's summary as ``tuneops run`` and ``tuneops runs show`` print it."""

from __future__ import annotations


def print_summary(summary: dict) -> None:
    """A run's summary for people: status and metrics, the gate's reasons, speed, recipe, model, record."""
    from rich.console import Console

    from tuneops.components.config import IMAGE_TASK
    from tuneops.components.paths import run_dir

    console = Console(soft_wrap=True)  # whole lines: logs and greps read them
    metrics = summary.get("metrics") or {}
    shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("accuracy", "macro_f1") if k in metrics)
    console.print(f"run {summary['run_id']}: [bold]{summary['status']}[/bold] ({shown})")
    for reason in (summary.get("gate") or {}).get("reasons", []):
        console.print(f"  - {reason}", markup=False)  # reasons quote data, which may hold brackets
    throughput = (summary.get("training") or {}).get("throughput") or {}
    if throughput and summary.get("task") == IMAGE_TASK:  # images have no tokens
        console.print(f"fine-tune: {throughput['samples_per_second']:,.0f} images/s on {throughput['device']} "
                      f"({throughput['precision']})")
    elif throughput:
        console.print(f"fine-tune: {throughput['real_tokens_per_second']:,.0f} real tokens/s on {throughput['device']} "
                      f"({throughput['precision']}), padding efficiency {throughput['padding_efficiency']:.2f}")
    recipe = summary.get("recipe") or []
    if recipe:
        decided = ", ".join(f"{c['setting'].split('.', 1)[1]}={c['value']}" + ("" if c["source"] == "config" else
                            f" ({c['source']})") for c in recipe)
        console.print(f"recipe: {decided}", markup=False)
    if summary.get("peak_rss_mib"):
        console.print(f"peak memory: {summary['peak_rss_mib'] / 1024:.2f} GiB RSS")
    if summary.get("model_tag"):
        console.print(f"model: {summary['model_tag']}")
    console.print(f"report: {run_dir(summary['run_id']) / 'index.html'}")
