"""tuneops: labelled data + pretrained checkpoints in, a served, monitored, retrained model out.

The Python API is small on purpose::

    import tuneops
    summary = tuneops.run("my.yaml")          # or a dict, or a tuneops.PipelineConfig
    print(summary["status"], summary["metrics"]["macro_f1"])

Importing this package starts nothing and imports neither torch nor Prefect; ``run`` does that.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily below: `import tuneops` stays cheap
    from pathlib import Path

    from tuneops.components.config import PipelineConfig

try:
    __version__ = _metadata.version("tuneops")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["PipelineConfig", "__version__", "load_config", "run"]


def run(config: "PipelineConfig | dict[str, Any] | str | Path | None" = None, *, run_id: str | None = None,
        resume: bool = False) -> dict[str, Any]:
    """Run the training pipeline once and return its summary (the content of ``summary.json``).

    ``config`` is a ``PipelineConfig``, a plain dict of sections, a YAML path, or ``None`` for the
    embedded demo. Raises ``tuneops.components.errors.TuneopsError`` subclasses with a one-line
    message for bad config or data, as the CLI does.
    """
    from tuneops.flows.api import run as _run

    return _run(config, run_id=run_id, resume=resume)


def __getattr__(name: str) -> Any:
    if name in ("PipelineConfig", "load_config"):
        from tuneops.components import config as _config

        return getattr(_config, name)
    raise AttributeError(f"module 'tuneops' has no attribute {name!r}")
