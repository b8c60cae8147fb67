"""The production loop as Prefect flows: ``tuneops-monitor`` watches the traffic and, when the
data drifted or feedback shows the model got worse, starts ``tuneops-retrain``, which runs the
training spine (``tuneops-train``) on the configured data plus the labelled feedback.

Both are deployed from infra/prefect.yaml (``tuneops deploy``); the tasks only wrap
``tuneops.components.monitoring.monitor``. As deployment entry points (scheduled, or started by
the monitor on a worker) they take the config file and overrides and load the config once, at
their start; the retrain hands the training flow the loaded config, with the merged data
applied by ``model_copy``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops.components.config import PipelineConfig, load_config
from tuneops.components.monitoring import monitor as monitoring
from tuneops.components.paths import tuneops_home
from tuneops.components.tasks.registry import get_task

RETRAIN_DEPLOYMENT = "tuneops-retrain/retrain"


@task(name="check-traffic", cache_policy=NO_CACHE)
def check_traffic_task(config: PipelineConfig, output_dir: Path, window: monitoring.MonitorWindow,
                       run_id: str) -> monitoring.MonitorReport:
    return monitoring.check_traffic(config, output_dir, window, run_id)


def _retry_unless_missing(task, task_run, state) -> bool:
    """Retry API hiccups, not a deployment that is not registered (that will not change)."""
    from prefect.exceptions import ObjectNotFound

    try:
        state.result()
    except ObjectNotFound:
        return False
    except Exception:
        return True
    return False


# Talking to the Prefect API is the one step here whose I/O can fail transiently.
@task(name="trigger-retrain", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=_retry_unless_missing)
def trigger_retrain_task(parameters: dict[str, Any], reason: str) -> tuple[str, bool]:
    """Create a run of the retrain deployment (returns at once, the worker runs it), unless one is
    already running or due: then that run's id. Returns (flow run id, created)."""
    from prefect.deployments import run_deployment

    pending = retrain_in_progress()
    if pending is not None:
        return pending, False
    flow_run = run_deployment(
        RETRAIN_DEPLOYMENT, parameters={**parameters, "reason": reason}, timeout=0, as_subflow=False,
        tags=["tuneops", "triggered-by-monitor"],
    )
    return str(flow_run.id), True


def retrain_in_progress() -> str | None:
    """A retrain flow run that is running, starting, or scheduled for now or earlier.

    Drift that persists would otherwise queue a retrain every monitor run while the first one
    still trains. Runs the scheduler created for future weeks do not count.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    active = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["tuneops-retrain"])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=active))),
            limit=200,
        )
    now = datetime.now(timezone.utc)
    for run in runs:
        due = run.expected_start_time is None or run.expected_start_time <= now
        if run.state_type != StateType.SCHEDULED or due:
            return str(run.id)
    return None


@flow(name="tuneops-monitor", log_prints=True)
def monitor_pipeline(config_path: str | None = None, overrides: list[str] | None = None,
                     trigger_retrain: bool = True) -> dict[str, Any]:
    """Compare the traffic since the last run with the champion's reference; retrain if needed.

    Returns monitor.json's content. The window of the prediction log is only marked as used when
    the run compared it (enough rows) and any retrain it asked for was triggered.
    """
    from prefect.exceptions import ObjectNotFound

    logger = get_run_logger()
    config = load_config(config_path, overrides)
    now = datetime.now(timezone.utc)
    run_id = monitoring.new_monitor_id(now)
    output_dir = monitoring.monitoring_dir() / "runs" / run_id
    window = monitoring.next_window(now)
    report = check_traffic_task(config, output_dir, window, run_id)
    logger.info("monitor %s: %d predictions, drift share %s; %s", run_id, report.rows,
                "n/a" if report.drift_share is None else f"{report.drift_share:.2f}", "; ".join(report.reasons))
    triggered = True
    if report.retrain and trigger_retrain:
        parameters = {"config_path": config_path, "overrides": list(overrides or []),
                      "feedback_path": config.monitoring.feedback_path}
        try:
            report.retrain_flow_run_id, created = trigger_retrain_task(parameters, "; ".join(report.reasons))
            if created:
                logger.info("monitor %s: started retrain flow run %s", run_id, report.retrain_flow_run_id)
            else:
                report.notes.append(f"a retrain is already running or due (flow run {report.retrain_flow_run_id}); "
                                    "no second one was started")
                logger.info(report.notes[-1])
        except ObjectNotFound:
            triggered = False
            report.notes.append(f"retraining is due but the deployment {RETRAIN_DEPLOYMENT} is not registered "
                                "with this Prefect server (`tuneops deploy`)")
            logger.warning(report.notes[-1])
    elif report.retrain:
        report.notes.append("retraining is due; not triggered (trigger_retrain is off)")
    if report.consumed_window and triggered:
        monitoring.save_state(window, run_id)
    report.write(output_dir)
    create_markdown_artifact(key="monitor-decision", markdown=_markdown(report),
                             description="Drift check and retraining decision")
    return report.to_json()


@task(name="merge-feedback", cache_policy=NO_CACHE)
def merge_feedback_task(config: PipelineConfig, feedback_path: str, output_dir: Path) -> monitoring.FeedbackMerge:
    return monitoring.merge_feedback(config.data, feedback_path, output_dir, get_task(config.task))


@flow(name="tuneops-retrain", log_prints=True)
def retrain_pipeline(config_path: str | None = None, overrides: list[str] | None = None,
                     feedback_path: str | None = None, reason: str = "scheduled") -> dict[str, Any]:
    """Train again on the configured data plus labelled feedback, through the same spine and gate.

    ``feedback_path`` defaults to ``monitoring.feedback_path``; a missing file means no feedback
    yet, and the retrain uses the configured data alone. Returns the training run's summary.
    """
    from tuneops.flows.training_flow import train_pipeline

    logger = get_run_logger()
    config = load_config(config_path, overrides)
    feedback_path = feedback_path or config.monitoring.feedback_path
    merged = None
    if feedback_path and Path(feedback_path).exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        merged = merge_feedback_task(config, feedback_path, tuneops_home() / "monitoring" / "retrain-data" / stamp)
        config = config.model_copy(update={"data": merged.data_config(config.data)})
        logger.info("retrain: %d feedback rows added to %d training rows (%d skipped as duplicates, %d unusable)",
                    merged.feedback_rows, merged.base_rows, merged.skipped_rows, merged.unusable_rows)
    elif feedback_path:
        logger.info("retrain: no feedback file at %s yet; training on the configured data", feedback_path)
    logger.info("retrain (%s)", reason)
    summary = train_pipeline(config=config)
    summary = dict(summary)
    summary["retrain"] = {
        "reason": reason,
        "feedback_path": feedback_path,
        "feedback_rows": merged.feedback_rows if merged else 0,
        "training_data": str(merged.path) if merged else None,
    }
    return summary


def _markdown(report: monitoring.MonitorReport) -> str:
    verdict = "**retrain**" if report.retrain else "no retraining"
    lines = [f"# Monitor run `{report.run_id}`: {verdict}", "",
             f"- champion: `{report.champion_tag}`", f"- predictions: {report.rows} ({report.status})"]
    if report.drift_share is not None:
        lines.append(f"- drift share: {report.drift_share:.2f} (drifted: {', '.join(report.drifted_columns) or 'none'})")
    if report.retrain_flow_run_id:
        lines.append(f"- retrain flow run: `{report.retrain_flow_run_id}`")
    lines += [f"- {line}" for line in _report_lines(report.to_json())]
    return "\n".join(lines) + "\n"


def _report_lines(result: dict[str, Any]) -> list[str]:
    """The reasons and notes of a monitor report, with the feedback check's note (rows it left out,
    or why it was not scored), for the artifact and the terminal alike."""
    feedback = result.get("feedback") or {}
    feedback_note = [f"feedback {feedback['path']}: {feedback['note']}"] if feedback.get("note") else []
    return [*result["reasons"], *feedback_note, *result["notes"]]


def run_monitor(config_path: str | None, overrides: list[str], trigger_retrain: bool, as_json: bool = False) -> int:
    """``tuneops monitor``: one monitor run now (on the stack's Prefect server when it is up);
    ``as_json`` prints its result as one JSON document instead."""
    from tuneops.flows.prefect_server import prefect_api

    if config_path:
        # The retrain it may start runs in the worker's working directory: pass an absolute path.
        config_path = str(Path(config_path).resolve())
    # Without a server (no PREFECT_API_URL, no `tuneops up`) the flow runs on a temporary one, where
    # no retrain deployment exists: the report then says retraining is due.
    with prefect_api():
        result = monitor_pipeline(config_path=config_path, overrides=list(overrides), trigger_retrain=trigger_retrain)
    if as_json:
        from tuneops.flows.cli_output import print_json

        print_json(result)
        return 0
    drift = "n/a" if result["drift_share"] is None else f"{result['drift_share']:.2f}"
    print(f"monitor {result['run_id']}: {result['status']}, {result['rows']} predictions, drift share {drift}")
    for line in _report_lines(result):
        print(f"  - {line}")
    if result["retrain_flow_run_id"]:
        print(f"retrain flow run: {result['retrain_flow_run_id']}")
    if result["html_path"]:
        print(f"report: {result['html_path']}")
    return 0
