"""How a run shows its progress: a rich live display at a terminal, plain log lines elsewhere.

The CLI picks the reporter; the flow only calls ``current()``. Keeping it out of the flow's
parameters keeps those plain data, as Prefect deployments need; a module global (not a context
variable) because Prefect may run tasks on worker threads.
"""

from __future__ import annotations

import logging
import sys
from typing import Protocol

logger = logging.getLogger("tuneops")


class Reporter(Protocol):
    def stage_started(self, name: str) -> None: ...
    def stage_finished(self, name: str, status: str, seconds: float) -> None: ...
    def training_step(self, step: int, total: int, loss: float) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """One log line per stage and every 10% of training: readable in CI logs and files."""

    def __init__(self) -> None:
        self._last_decile = -1

    def stage_started(self, name: str) -> None:
        logger.info("stage %s: started", name)

    def stage_finished(self, name: str, status: str, seconds: float) -> None:
        logger.info("stage %s: %s in %.1fs", name, status, seconds)

    def training_step(self, step: int, total: int, loss: float) -> None:
        decile = step * 10 // max(total, 1)
        if decile != self._last_decile:
            self._last_decile = decile
            logger.info("training: step %d/%d, loss %.4f", step, total, loss)

    def close(self) -> None:
        pass


class RichReporter:
    """A live progress display: the current stage with a spinner, a bar for training steps."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self._tasks: dict[str, int] = {}

    def stage_started(self, name: str) -> None:
        self._tasks[name] = self.progress.add_task(name, total=None, detail="")

    def stage_finished(self, name: str, status: str, seconds: float) -> None:
        task = self._tasks.get(name)
        if task is not None:
            mark = {"completed": "[green]done", "failed": "[red]failed"}.get(status, status)
            self.progress.update(task, total=1, completed=1, detail=f"{mark}[/] {seconds:.1f}s")

    def training_step(self, step: int, total: int, loss: float) -> None:
        task = self._tasks.get("finetune")
        if task is not None:
            self.progress.update(task, total=total, completed=step, detail=f"step {step}/{total} loss {loss:.4f}")

    def close(self) -> None:
        self.progress.stop()


_current: Reporter | None = None


def current() -> Reporter:
    """The reporter the CLI chose, or plain log lines when the flow runs elsewhere (a worker)."""
    global _current
    if _current is None:
        _current = PlainReporter()
    return _current


def use(reporter: Reporter) -> None:
    global _current
    _current = reporter


def for_terminal() -> Reporter:
    """Rich at an interactive terminal, plain otherwise (CI, pipes, files)."""
    return RichReporter() if sys.stderr.isatty() else PlainReporter()


class ReportingStage:
    """A run record's stage context plus the progress display, as one ``with`` block."""

    def __init__(self, record, reporter: Reporter, name: str) -> None:
        self._context = record.stage(name)
        self._reporter = reporter
        self._record = record
        self._name = name

    def __enter__(self) -> dict:
        return self._context.__enter__()

    def __exit__(self, *exc_info) -> bool:
        try:
            return bool(self._context.__exit__(*exc_info))
        finally:
            entry = self._record.stages[self._name]
            self._reporter.stage_finished(self._name, entry["status"], entry.get("seconds", 0.0))
