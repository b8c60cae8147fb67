"""The training pipeline as one Prefect flow. Each task is a thin wrapper around a component;
the flow only sequences them and keeps the run record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from tuneops.components.tasks import text_baseline as baseline_component
from tuneops.components.evaluation import evaluate as evaluation
from tuneops.components.evaluation import gate
from tuneops.components import registry
from tuneops.components.selection import select as selection
from tuneops.components.training import finetune as training
from tuneops.components.validation import validate as validation
from tuneops.components.config import PipelineConfig, load_config
from tuneops.components.data.loading import LABEL, TEXT, DatasetSplits, as_validated, load_data
from tuneops.components.errors import ConfigError, TuneopsError, ValidationBlocked
from tuneops.components.metrics import classification_metrics
from tuneops.components.paths import demo_dir, run_dir
from tuneops.components.predictor import Predictor
from tuneops.components.run_record import RunRecord, new_run_id
from tuneops.flows import progress

# Pipeline objects (frames, models) are not worth hashing for Prefect's cache, so every task opts
# out. No task retries: the steps read local files and compute; a failure is not transient.


@task(name="load-data", cache_policy=NO_CACHE)
def load_data_task(config: PipelineConfig) -> DatasetSplits:
    return load_data(config.data, demo_dir())


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(splits: DatasetSplits, config: PipelineConfig, output_dir: Path, previous_labels: list[str] | None):
    return validation.validate_data(splits, config.validation, output_dir, previous_labels)


@task(name="select-model", cache_policy=NO_CACHE)
def select_task(splits: DatasetSplits, config: PipelineConfig, output_dir: Path, champion_dir: Path | None):
    return selection.select_model(splits, config.selection, output_dir, champion_dir)


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(splits: DatasetSplits, checkpoint: str, config: PipelineConfig, output_dir: Path,
                  champion_dir: Path | None, resume: bool):
    return training.finetune(
        splits.train, splits.validation, splits.labels, checkpoint, config.training, output_dir,
        progress=progress.current().training_step, champion_dir=champion_dir, resume=resume,
    )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(model_dir: Path, splits: DatasetSplits, config: PipelineConfig, output_dir: Path):
    return evaluation.evaluate(Predictor.from_dir(model_dir), splits, config.evaluation, output_dir)


@task(name="score-baseline", cache_policy=NO_CACHE)
def baseline_task(splits: DatasetSplits) -> dict[str, Any]:
    floor = baseline_component.train_baseline(splits.train)
    probabilities = floor.predict_proba(splits.test[TEXT].tolist())
    return classification_metrics(splits.test[LABEL].tolist(), probabilities, floor.labels)


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(challenger, champion, baseline_metrics, config: PipelineConfig):
    return gate.decide(challenger, champion, baseline_metrics, config.gate)


@task(name="package", cache_policy=NO_CACHE)
def package_task(model_dir: Path, metadata: dict[str, Any], reference) -> Any:
    return registry.package_model(model_dir, metadata, reference)


@flow(name="tuneops-train", log_prints=True)
def train_pipeline(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    run_id: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Load, validate, select, fine-tune, evaluate, gate and package; returns summary.json's content.

    A rejected challenger is a normal outcome (status ``rejected``). A blocked validation or a failed
    stage marks the run ``failed`` in its record and fails the flow run.
    """
    config = load_config(config_path, overrides)
    run_id = run_id or new_run_id()
    previous = _previous_summary(run_id) if resume else {}
    record = RunRecord.start(run_dir(run_id), run_id, config)
    logger = get_run_logger()
    logger.info("run %s: record in %s", run_id, record.run_dir)
    try:
        _run_stages(config, record, previous.get("base_checkpoint") if resume else None, resume)
    except TuneopsError as error:
        # A problem the user can act on: the flow run ends Failed with the one-line message, and
        # the caller gets the error back, without Prefect logging a traceback for it.
        record.finish("failed", error=str(error))
        logger.error("run %s failed: %s", run_id, error)
        return Failed(message=str(error), data=error)
    except BaseException as error:
        record.finish("failed", error=str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise
    return record.summary()


def _run_stages(config: PipelineConfig, record: RunRecord, resumed_choice: str | None, resume: bool) -> None:
    reporter = progress.current()
    directory = record.run_dir

    def stage(name: str):
        reporter.stage_started(name)
        return _ReportingStage(record, reporter, name)

    with stage("load_data"):
        splits = load_data_task(config)
        record.lineage["data_fingerprint"] = splits.fingerprint
        record.lineage["data_source"] = splits.source
        record.fields["data"] = {"sizes": splits.sizes(), "source": splits.source}

    champion = registry.champion()
    champion_dir = registry.champion_model_dir()
    with stage("validate"):
        # Later runs must keep the champion's label set, unless the config declares a new one.
        previous_labels = Predictor.read_manifest(champion_dir)["labels"] if champion_dir else None
        report = validate_task(splits, config, directory / "validation", previous_labels)
        record.add_report("Data validation (Great Expectations data docs)", report.html_path, "validate")
        record.add_report("Data validation result (JSON)", report.json_path, "validate")
        record.warnings.extend(report.warnings_lines())
        record.fields["validation"] = {"passed": report.passed, "summary": report.summary_lines()}
        if not report.passed and config.validation.on_failure == "block":
            raise ValidationBlocked(validation.blocking_message(report))
    splits = as_validated(splits)

    with stage("select_model"):
        # On --resume the interrupted run's choice is kept, so that its training checkpoints fit.
        chosen = resumed_choice
        if chosen is None:
            choice = select_task(splits, config, directory / "selection", champion_dir)
            record.add_report("Model selection", choice.html_path, "select_model")
            create_table_artifact(key="model-selection", table=choice.table_rows(),
                                  description=f"Candidates ranked for run {record.run_id}")
            chosen = choice.chosen
        record.fields["base_checkpoint"] = chosen
        record.lineage["base_checkpoint"] = chosen

    with stage("finetune") as entry:
        trained = finetune_task(splits, chosen, config, directory / "model", champion_dir, resume)
        entry["first_loss"], entry["last_loss"] = trained.first_loss, trained.last_loss
        if trained.resumed_from_step:
            entry["resumed_from_step"] = trained.resumed_from_step
        record.fields["training"] = {
            "first_loss": trained.first_loss, "last_loss": trained.last_loss,
            "best_validation": trained.best_validation, "throughput": trained.throughput,
        }
        record.add_report("Fine-tuning (curves, throughput, settings)", trained.html_path, "finetune")
        for name in ("learning_curve.png", "learning_curve.csv"):
            record.add_report(f"Learning curve ({name.rsplit('.', 1)[1]})", trained.path / name, "finetune")

    with stage("evaluate"):
        challenger = evaluate_task(trained.path, splits, config, directory / "evaluation")
        for title, path in challenger.reports():
            record.add_report(title, path, "evaluate")
        record.fields["metrics"] = challenger.metrics
        champion_report = None
        if champion_dir is not None:
            # The champion is re-scored on this run's test data, never trusted from its old numbers.
            champion_report = evaluate_task(champion_dir, splits, config, directory / "champion_evaluation")
            record.fields["champion"] = {"tag": champion.tag if champion else None,
                                         "metrics": champion_report.metrics}
        baseline_metrics = baseline_task(splits)
        record.fields["baseline_metrics"] = baseline_metrics

    with stage("gate"):
        decision = gate_task(challenger, champion_report, baseline_metrics, config)
        record.fields["gate"] = decision.to_json()
        record.add_report("Gate decision", decision.save(directory / "gate"), "gate")
        create_markdown_artifact(key="promotion-decision", markdown=decision.to_markdown(),
                                 description="Champion/challenger gate")

    with stage("package"):
        metadata = {
            "run_id": record.run_id,
            "metrics": challenger.metrics,
            "data_fingerprint": splits.fingerprint,
            "config_hash": config.config_hash(),
            "base_checkpoint": chosen,
            "labels": splits.labels,
            "code_version": record.lineage["code_version"],
            "gate": "promote" if decision.promote else "reject",
        }
        release = package_task(trained.path, metadata, _reference_sample(splits, trained.path, config))
        record.fields["model_tag"] = str(release.tag)
        if decision.promote:
            registry.set_champion(str(release.tag))
    record.finish("promoted" if decision.promote else "rejected")


class _ReportingStage:
    """The run record's stage context plus the progress display, as one ``with`` block."""

    def __init__(self, record: RunRecord, reporter, name: str) -> None:
        self._context = record.stage(name)
        self._reporter = reporter
        self._record = record
        self._name = name

    def __enter__(self) -> dict[str, Any]:
        return self._context.__enter__()

    def __exit__(self, *exc_info) -> bool:
        try:
            return bool(self._context.__exit__(*exc_info))
        finally:
            entry = self._record.stages[self._name]
            self._reporter.stage_finished(self._name, entry["status"], entry.get("seconds", 0.0))


def _previous_summary(run_id: str) -> dict[str, Any]:
    """The record of the run being resumed; ConfigError if there is none."""
    summary_path = run_dir(run_id) / "summary.json"
    if not summary_path.exists():
        raise ConfigError(f"resume: no run {run_id!r} under {summary_path.parent.parent}")
    return json.loads(summary_path.read_text())


def _reference_sample(splits: DatasetSplits, model_dir: Path, config: PipelineConfig):
    """Training rows with the model's predictions: what monitoring compares traffic with."""
    reference = splits.train
    if len(reference) > config.evaluation.drift_sample_rows:
        reference = reference.sample(config.evaluation.drift_sample_rows, random_state=config.data.split_seed)
    reference = reference.reset_index(drop=True).copy()
    predictor = Predictor.from_dir(model_dir)
    probabilities = predictor.predict_proba(reference[TEXT].tolist())
    reference["prediction"] = [predictor.labels[i] for i in probabilities.argmax(1)]
    reference["score"] = probabilities.max(1)
    return reference

