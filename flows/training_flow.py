"""The training pipeline as one Prefect flow. Each task is a one-line wrapper around a component;
the flow only sequences them and keeps the run record.

The flow takes a validated ``PipelineConfig`` (loaded once, at the edge: the CLI, ``tuneops.run``,
the retrain flow) and picks the task it names once; every stage gets that task object.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect import task as prefect_task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.states import Failed, State

from tuneops.components import registry
from tuneops.components.checkpoints import checkpoint_revision
from tuneops.components.config import PipelineConfig
from tuneops.components.data.columns import LABEL
from tuneops.components.data.loading import DatasetSplits, as_validated, load_data
from tuneops.components.errors import TuneopsError, ValidationBlocked
from tuneops.components.evaluation.evaluate import evaluate
from tuneops.components.evaluation.floor import score_floor
from tuneops.components.evaluation.gate import GateCheck, decide
from tuneops.components.int8_serving import CALIBRATION_ROWS, RuntimeChoice, choose_serving_runtime
from tuneops.components.model_card import split_label_counts, write_model_card
from tuneops.components.monitoring.reference import reference_sample
from tuneops.components.paths import demo_dir, tuneops_home
from tuneops.components.persistent_home import check_persistent_home, persistence_required
from tuneops.components.predictor import Predictor
from tuneops.components.run_record import RunRecord, interruption_message, is_interruption, new_run_id
from tuneops.components.selection.select import select_model
from tuneops.components.tasks.base import Task
from tuneops.components.tasks.registry import get_task
from tuneops.components.tracking import RunOutcome, RunTracking
from tuneops.components.training.finetune import finetune
from tuneops.components.training.search import SEARCH_PAGE
from tuneops.components.validation.validate import blocking_message, validate_data
from tuneops.flows import progress
from tuneops.flows.sigterm import sigterm_noted
from tuneops.serving.infra_validation import InfraValidation, validate_serving
from tuneops.serving.settings import predictor_runtime

# Pipeline objects (frames, models) are not worth hashing for Prefect's cache, so every task opts
# out. No task retries: the steps read local files and compute; a failure is not transient.


@prefect_task(name="load-data", cache_policy=NO_CACHE)
def load_data_task(config: PipelineConfig, task: Task) -> DatasetSplits:
    return load_data(config.data, demo_dir(), task)


@prefect_task(name="validate", cache_policy=NO_CACHE)
def validate_task(splits: DatasetSplits, config: PipelineConfig, output_dir: Path,
                  previous_labels: list[str] | None, task: Task):
    return validate_data(splits, config.validation, output_dir, previous_labels, task)


@prefect_task(name="select-model", cache_policy=NO_CACHE)
def select_task(splits: DatasetSplits, config: PipelineConfig, output_dir: Path, champion_dir: Path | None,
                task: Task):
    return select_model(splits, config.selection, output_dir, champion_dir, task, config.training)


@prefect_task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(splits: DatasetSplits, checkpoint: str, config: PipelineConfig, output_dir: Path,
                  champion_dir: Path | None, resume: bool, task: Task):
    return finetune(splits.train, splits.validation, splits.labels, checkpoint, config.training, output_dir,
                    task=task, progress=progress.current().training_step, champion_dir=champion_dir, resume=resume)


@prefect_task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(predictor: Predictor, splits: DatasetSplits, config: PipelineConfig, output_dir: Path):
    return evaluate(predictor, splits, config.evaluation, output_dir, max_fairness_gap=config.gate.max_fairness_gap)


@prefect_task(name="score-baseline", cache_policy=NO_CACHE)
def baseline_task(splits: DatasetSplits, task: Task, bins: int) -> dict[str, Any]:
    return score_floor(splits, task, bins)


@prefect_task(name="gate", cache_policy=NO_CACHE)
def gate_task(challenger, champion, baseline_metrics, config: PipelineConfig):
    return decide(challenger, champion, baseline_metrics, config.gate)


@prefect_task(name="reference-sample", cache_policy=NO_CACHE)
def reference_task(train: pd.DataFrame, predictor: Predictor, config: PipelineConfig) -> pd.DataFrame:
    return reference_sample(train, predictor, config.evaluation.drift_sample_rows, config.data.split_seed)


@prefect_task(name="serving-runtime", cache_policy=NO_CACHE)
def serving_runtime_task(predictor: Predictor, model_dir: Path, splits: DatasetSplits, fp32_macro_f1: float,
                         config: PipelineConfig) -> RuntimeChoice:
    column = predictor.task.input_column
    return choose_serving_runtime(predictor, model_dir, splits.test[column].tolist(),
                                  splits.test[LABEL].astype(str).tolist(), fp32_macro_f1,
                                  config.serving.int8_max_f1_drop, splits.train[column].head(CALIBRATION_ROWS).tolist(),
                                  enabled=config.serving.int8)


@prefect_task(name="package", cache_policy=NO_CACHE)
def package_task(model_dir: Path, metadata: dict[str, Any], reference: pd.DataFrame) -> registry.ModelRelease:
    return registry.package_model(model_dir, metadata, reference)


@prefect_task(name="infra-validate", cache_policy=NO_CACHE)
def infra_validate_task(tag: str, test: pd.DataFrame, config: PipelineConfig, output_dir: Path) -> InfraValidation:
    # The packaged model, loaded as the service loads it (int8 where packaging chose it): what
    # the server answers must match it.
    served = Predictor.from_dir(registry.get_model(tag).model_dir, runtime=predictor_runtime(config.serving))
    inputs = test[served.task.input_column].head(config.gate.infra_validation.requests).tolist()
    return validate_serving(tag, inputs, served.predict_proba(inputs), served.labels, served.task,
                            config.gate.infra_validation, config.serving, output_dir)


@flow(name="tuneops-train", log_prints=True)
def train_pipeline(config: PipelineConfig, run_id: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Load, validate, select, fine-tune, evaluate, gate and package; returns summary.json's content.

    A rejected challenger is a normal outcome (status ``rejected``). A blocked validation or a failed
    stage marks the run ``failed`` in its record and fails the flow run; Ctrl-C or SIGTERM marks it
    ``interrupted``. ``resume`` continues the interrupted or failed run ``run_id``
    (``RunRecord.resume`` says which may be continued).
    """
    # Before anything is written: a home that vanishes with the pod must not get a model.
    check_persistent_home(tuneops_home(), persistence_required())
    task = get_task(config.task)
    if resume:
        record, previous = RunRecord.resume(run_id, config)
        # The interrupted run's choice of checkpoint is kept, so that its training checkpoints fit.
        resumed_choice = previous.get("base_checkpoint")
    else:
        record, resumed_choice = RunRecord.start(run_id or new_run_id(), config), None
    run_id = record.run_id
    logger = get_run_logger()
    logger.info("run %s: record in %s", run_id, record.run_dir)
    tracking = RunTracking.start(config, run_id)  # None: MLFLOW_TRACKING_URI is not set
    _note_tracking(record, tracking)
    outcome = RunOutcome()
    try:
        failed = _recorded_run(config, task, record, resumed_choice, resume, outcome)
    finally:
        if tracking is not None:
            # After the run, as far as it got; the record is uploaded last, finished and saying
            # which model version the run registered.
            tracking.log_outcome(outcome)
            _note_tracking(record, tracking)
            tracking.finish(record.run_dir, record.status)
            _note_tracking(record, tracking)
    return failed if failed is not None else record.summary()


def _note_tracking(record: RunRecord, tracking: RunTracking | None) -> None:
    """Say in the run record where the run is tracked, and whether tracking failed."""
    if tracking is None:
        return
    record.fields["tracking"] = tracking.to_json()
    if tracking.error is not None and tracking.error not in record.warnings:
        record.warnings.append(tracking.error)
    record.write()


def _recorded_run(config: PipelineConfig, task: Task, record: RunRecord, resumed_choice: str | None, resume: bool,
                  outcome: RunOutcome) -> State | None:
    """Run the stages and record how they ended: None when they finished (promoted or rejected),
    a Failed state for a user-fixable error; anything else is raised on."""
    logger = get_run_logger()
    run_id = record.run_id
    with sigterm_noted() as sigterm:
        try:
            _run_stages(config, task, record, resumed_choice, resume, outcome)
        except TuneopsError as error:
            # A problem the user can act on: the flow run ends Failed with the one-line message, and
            # the caller gets the error back, without Prefect logging a traceback for it.
            record.finish("failed", error=str(error))
            logger.error("run %s failed: %s", run_id, error)
            return Failed(message=str(error), data=error)
        except BaseException as error:
            if sigterm or is_interruption(error):  # stopped from outside: resumable as it is
                record.interrupted("interrupted by SIGTERM" if sigterm else interruption_message(error))
                if sigterm and not isinstance(error, TerminationSignal):
                    # Prefect lost its TerminationSignal (see sigterm_noted): raised again, the
                    # process ends as SIGTERM asks (Prefect hands the signal on to the default).
                    raise TerminationSignal(signal.SIGTERM) from error
            else:
                record.finish("failed", error=str(error).splitlines()[0] if str(error) else type(error).__name__)
            raise
    return None


def _run_stages(config: PipelineConfig, task: Task, record: RunRecord, resumed_choice: str | None,
                resume: bool, outcome: RunOutcome) -> None:
    reporter = progress.current()
    directory = record.run_dir

    def stage(name: str) -> progress.ReportingStage:
        reporter.stage_started(name)
        return progress.ReportingStage(record, reporter, name)

    with stage("load_data"):
        splits = load_data_task(config, task)
        record.lineage["data_fingerprint"] = splits.fingerprint
        record.lineage["data_source"] = splits.source
        record.fields["data"] = {"sizes": splits.sizes(), "source": splits.source}

    champion = registry.champion()
    champion_dir = registry.champion_model_dir()
    with stage("validate"):
        # Later runs must keep the champion's label set, unless the config declares a new one.
        previous_labels = Predictor.read_manifest(champion_dir)["labels"] if champion_dir else None
        report = validate_task(splits, config, directory / "validation", previous_labels, task)
        record.add_report("Data validation summary", report.summary_html_path, "validate")
        record.add_report("Data validation (Great Expectations data docs)", report.html_path, "validate")
        record.add_report("Data validation result (JSON)", report.json_path, "validate")
        record.warnings.extend(report.warnings_lines())
        record.fields["validation"] = {"passed": report.passed, "summary": report.summary_lines()}
        if not report.passed and config.validation.on_failure == "block":
            raise ValidationBlocked(blocking_message(report))
    splits = as_validated(splits)

    with stage("select_model"):
        chosen = resumed_choice
        if chosen is None:
            choice = select_task(splits, config, directory / "selection", champion_dir, task)
            record.add_report("Model selection", choice.html_path, "select_model")
            create_table_artifact(key="model-selection", table=choice.table_rows(),
                                  description=f"Candidates ranked for run {record.run_id}")
            chosen = choice.chosen
        record.fields["base_checkpoint"] = chosen
        record.lineage["base_checkpoint"] = chosen
        # Which exact weights: a hub commit, a package version or a content hash (None: unpinnable).
        record.lineage["base_checkpoint_revision"] = checkpoint_revision(chosen, champion_dir)

    with stage("finetune") as entry:
        trained = finetune_task(splits, chosen, config, directory / "model", champion_dir, resume, task)
        entry["first_loss"], entry["last_loss"] = trained.first_loss, trained.last_loss
        if trained.resumed_from_step:
            entry["resumed_from_step"] = trained.resumed_from_step
        record.fields["training"] = {
            "first_loss": trained.first_loss, "last_loss": trained.last_loss,
            "best_validation": trained.best_validation, "throughput": trained.throughput,
        }
        # Every setting decided for this data, with the reason (an explicit config value says so).
        held_out = [splits.validation_share.to_json()] if splits.validation_share else []
        record.fields["recipe"] = held_out + trained.recipe
        record.add_report("Fine-tuning (curves, throughput, settings)", trained.html_path, "finetune")
        if (trained.path / SEARCH_PAGE).is_file():
            record.add_report("Hyperparameter search", trained.path / SEARCH_PAGE, "finetune")
        for name in ("learning_curve.png", "learning_curve.csv"):
            record.add_report(f"Learning curve ({name.rsplit('.', 1)[1]})", trained.path / name, "finetune")
    outcome.history = trained.history

    with stage("evaluate"):
        # Loaded once: evaluation and the reference sample for monitoring score with the same model.
        challenger_model = Predictor.from_dir(trained.path)
        challenger = evaluate_task(challenger_model, splits, config, directory / "evaluation")
        for title, path in challenger.reports():
            record.add_report(title, path, "evaluate")
        record.fields["metrics"] = challenger.metrics
        champion_report = None
        if champion_dir is not None:
            # The champion is re-scored on this run's test data, never trusted from its old numbers.
            champion_report = evaluate_task(Predictor.from_dir(champion_dir), splits, config,
                                            directory / "champion_evaluation")
            record.fields["champion"] = {"tag": champion.tag if champion else None,
                                         "metrics": champion_report.metrics}
        baseline_metrics = baseline_task(splits, task, config.evaluation.calibration_bins)
        # The floor's per-row predictions serve the gate's paired comparison; the record keeps its figures.
        record.fields["baseline_metrics"] = {key: value for key, value in baseline_metrics.items()
                                             if key != "predictions"}
    outcome.test_metrics, outcome.test_intervals = challenger.metrics, challenger.intervals

    with stage("gate"):
        decision = gate_task(challenger, champion_report, baseline_metrics, config)
        record.fields["gate"] = decision.to_json()
        record.add_report("Gate decision", decision.save(directory / "gate"), "gate")
        create_markdown_artifact(key="promotion-decision", markdown=decision.to_markdown(),
                                 description="Champion/challenger gate")

    with stage("package"):
        metadata = record.release_metadata(challenger.metrics, splits.labels, decision.promote)
        # Both in the model's folder before packaging, so they are checksummed with the other files.
        record.fields["serving_runtime"] = serving_runtime_task(challenger_model, trained.path, splits,
                                                                challenger.metrics["macro_f1"], config).to_json()
        write_model_card(trained.path, record.summary(), record.lineage, challenger.to_json(),
                         split_label_counts(splits), infra_validation=config.gate.infra_validation.enabled)
        release = package_task(trained.path, metadata, reference_task(splits.train, challenger_model, config))
        record.fields["model_tag"] = str(release.tag)

    if decision.promote and config.gate.infra_validation.enabled:
        with stage("infra_validate"):
            serving = infra_validate_task(str(release.tag), splits.test, config, directory / "infra_validation")
            record.fields["infra_validation"] = serving.to_json()
            record.add_report("Infrastructure validation (server log)", serving.server_log, "infra_validate")
            decision.add_check(GateCheck("infra", serving.passed, serving.message))
            record.fields["gate"] = decision.to_json()
            decision.save(directory / "gate")
            if not decision.promote:
                # A model that cannot serve is not left in the store as a candidate to promote by
                # hand; its files stay in the run directory for a look.
                registry.remove_model(str(release.tag))
                record.fields["model_tag"] = None
    else:
        record.skip("infra_validate", "the gate rejected the model" if not decision.promote
                    else "gate.infra_validation.enabled is false")
    outcome.promote, outcome.gate_metric = decision.promote, decision.metric
    if record.fields["model_tag"] is not None:  # a model that failed infra validation was removed
        outcome.packaged = (release.path, str(release.tag))
    if decision.promote:
        registry.set_champion(str(release.tag))
        outcome.promoted = True
    record.finish("promoted" if decision.promote else "rejected")
