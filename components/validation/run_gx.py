"""Running the planned suite with Great Expectations: one file-backed GX project under
``output_dir/gx`` with one suite per data asset (each split and the per-class table), its
validation results and, when asked for, its data docs."""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from tuneops.components.data.columns import SPLITS
from tuneops.components.errors import StageError
from tuneops.components.validation.checks import CLASSES
from tuneops.components.validation.display import EXAMPLES
from tuneops.components.validation.plan import Planned

_log = logging.getLogger(__name__)
# Marks a GX project as tuneops' own, so a repeated validation may replace it.
_MARKER = ".tuneops-validation"


@dataclass
class GxRun:
    """What GX returned: raw results by plan position (or ``{"exception": message}``), the GX
    version, the validation result files and the data docs index (None when not built)."""

    results: dict[int, Any]
    version: str
    result_files: list[Path]
    docs_index: Path | None


@contextmanager
def _quiet_gx() -> Iterator[None]:
    """GX logs routine notices (store creation, data docs paths) at INFO/WARNING; tuneops
    prints its own summary, so hold GX to errors while it runs."""
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_great_expectations(
    plan: list[Planned],
    frames: dict[str, pd.DataFrame],
    classes: pd.DataFrame,
    output_dir: Path,
    notes: list[str],
    seconds: dict[str, float],
    data_docs: bool = False,
) -> GxRun:
    """Run one GX suite per data asset in a file context under ``output_dir/gx``.

    ``data_docs`` also builds GX's data docs. Time spent goes into ``seconds``; a data docs
    failure is added to ``notes``. A GX failure on one asset marks its checks as failed with the
    reason, never raises. StageError when ``output_dir/gx`` exists and is not a project tuneops wrote.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = output_dir / "gx"
    marker = root / _MARKER
    if root.exists():
        if not marker.exists():
            raise StageError(f"validation: {root} exists and was not written by tuneops; use an empty output directory")
        # A repeated validation into the same directory replaces the previous GX project.
        shutil.rmtree(root)
    results: dict[int, Any] = {}
    docs_index: Path | None = None
    tick = time.perf_counter()
    with _quiet_gx():
        context = gx.get_context(mode="file", project_root_dir=str(output_dir))
        marker.write_text("written by tuneops validation; replaced on the next run into this directory\n")
        # tqdm bars from metric resolution would interleave with the CLI's own output.
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = context.data_sources.add_pandas("tuneops")
        run_id = RunIdentifier(run_name="tuneops-validation")
        seconds["gx_context"] = time.perf_counter() - tick
        tick = time.perf_counter()
        for asset_name in (*SPLITS, CLASSES):
            planned = [(key, p) for key, p in enumerate(plan) if p.split == asset_name]
            if not planned:
                continue
            frame = classes if asset_name == CLASSES else frames[asset_name]
            asset = source.add_dataframe_asset(asset_name)
            batch = asset.add_batch_definition_whole_dataframe("all rows")
            suite = context.suites.add(
                gx.ExpectationSuite(name=f"tuneops_{asset_name}", expectations=[p.expectation for _, p in planned])
            )
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"tuneops_{asset_name}", data=batch, suite=suite)
            )
            try:
                outcome = definition.run(
                    batch_parameters={"dataframe": frame},
                    # SUMMARY gives counts and a few unexpected values without listing every index.
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES},
                    run_id=run_id,
                )
            except Exception as error:  # a GX failure on odd data must not become a traceback
                message = f"Great Expectations could not validate {asset_name}: {type(error).__name__}: {error}"
                _log.warning(message)
                for key, _ in planned:
                    results[key] = {"exception": message}
            else:
                for result in outcome.results:
                    key = (result.expectation_config.meta or {}).get("tuneops_key")
                    if key is not None:
                        results[int(key)] = result
            seconds[f"gx_{asset_name}"] = time.perf_counter() - tick
            tick = time.perf_counter()
        if data_docs:
            docs_index = _build_data_docs(context, root, notes)
            seconds["gx_data_docs"] = time.perf_counter() - tick
    result_files = sorted((root / "uncommitted" / "validations").rglob("*.json"))
    return GxRun(results, gx.__version__, result_files, docs_index)


def _build_data_docs(context: Any, root: Path, notes: list[str]) -> Path | None:
    """GX's data docs index, or None (and a note) when GX could not build it."""
    try:
        context.build_data_docs()
    except Exception as error:  # docs are a report; failing to render them must not hide the verdict
        notes.append(f"GX data docs could not be built: {type(error).__name__}: {error}")
        return None
    index = root / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return index if index.exists() else None
