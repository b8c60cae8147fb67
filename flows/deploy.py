"""``tuneops deploy``: register the deployments of infra/prefect.yaml with a Prefect server.

The deployments (retrain, monitor) are read from the project file, their schedules and
parameters filled in from the tuneops config, and registered with ``RunnerDeployment.apply``
against the server in ``PREFECT_API_URL`` (or the one ``tuneops up`` started). The flows run from
this checkout (a ``set_working_directory`` pull step), on a process work pool that is created
when missing. Deploying again updates the deployments in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneops.components.config import PipelineConfig
from tuneops.components.errors import ConfigError, StageError
from tuneops.components.paths import SOURCE_ROOT, tuneops_home

PREFECT_FILE = SOURCE_ROOT / "infra" / "prefect.yaml"
RETRAIN_DEPLOYMENT = "tuneops-retrain/retrain"
MONITOR_DEPLOYMENT = "tuneops-monitor/monitor"
# Which config key holds each deployment's schedule: the tuneops config is the one place a user
# changes it; the crons in prefect.yaml are the same defaults for a plain `prefect deploy`.
CRON_KEYS = {"retrain": "retrain_cron", "monitor": "monitor_cron"}
# Where the flows find tuneops state; set on each deployment so a worker started with another
# environment still reads and writes the deployer's models, prediction log and workspace.
STATE_VARIABLES = ("TUNEOPS_HOME", "BENTOML_HOME")


@dataclass
class DeploymentSpec:
    """One deployment of the project file, as tuneops registers it."""

    name: str
    entrypoint: str
    description: str
    tags: list[str]
    parameters: dict[str, Any]
    cron: str
    timezone: str
    work_pool: str
    work_queue: str | None
    job_variables: dict[str, Any]
    concurrency_limit: int | None


@dataclass
class Registered:
    name: str  # flow name / deployment name
    deployment_id: str
    cron: str
    work_pool: str


def read_deployments(path: Path = PREFECT_FILE) -> list[DeploymentSpec]:
    """The deployments declared in a prefect.yaml; ConfigError naming what is malformed."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"deploy: {path} not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"deploy: {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    entries = document.get("deployments") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"deploy: {path} declares no deployments")
    specs = []
    for index, entry in enumerate(entries):
        where = f"deploy: {path.name} deployments[{index}]"
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("entrypoint"):
            raise ConfigError(f"{where} needs a name and an entrypoint")
        schedules = entry.get("schedules") or []
        if len(schedules) != 1 or "cron" not in schedules[0]:
            raise ConfigError(f"{where} ({entry['name']}) needs exactly one cron schedule")
        pool = entry.get("work_pool") or {}
        if not pool.get("name"):
            raise ConfigError(f"{where} ({entry['name']}) needs work_pool.name")
        specs.append(DeploymentSpec(
            name=entry["name"],
            entrypoint=entry["entrypoint"],
            description=" ".join(str(entry.get("description") or "").split()),
            tags=list(entry.get("tags") or []),
            parameters=dict(entry.get("parameters") or {}),
            cron=str(schedules[0]["cron"]),
            timezone=str(schedules[0].get("timezone") or "UTC"),
            work_pool=pool["name"],
            work_queue=pool.get("work_queue_name"),
            job_variables=dict(pool.get("job_variables") or {}),
            concurrency_limit=entry.get("concurrency_limit"),
        ))
    return specs


def configure(spec: DeploymentSpec, config: PipelineConfig, config_path: str | None,
              overrides: list[str]) -> DeploymentSpec:
    """The spec with the tuneops config applied: its cron, the config file and overrides as
    parameters, and the state variables in the job's environment."""
    cron_key = CRON_KEYS.get(spec.name)
    cron = getattr(config.monitoring, cron_key) if cron_key else spec.cron
    _check_cron(cron, f"monitoring.{cron_key}" if cron_key else spec.name)
    parameters = dict(spec.parameters)
    parameters["config_path"] = str(Path(config_path).resolve()) if config_path else None
    parameters["overrides"] = list(overrides)
    job_variables = dict(spec.job_variables)
    env = dict(job_variables.get("env") or {})
    env.update({name: os.environ[name] for name in STATE_VARIABLES if os.environ.get(name)})
    env["TUNEOPS_HOME"] = str(tuneops_home())
    job_variables["env"] = env
    return DeploymentSpec(**{**spec.__dict__, "cron": cron, "parameters": parameters, "job_variables": job_variables})


def deploy(config: PipelineConfig, config_path: str | None, overrides: list[str], api_url: str,
           prefect_file: Path = PREFECT_FILE, work_pool: str | None = None, image: str | None = None,
           paused: bool = False) -> list[Registered]:
    """Register every deployment of ``prefect_file`` with the server at ``api_url``.

    ``config`` is the validated config (its schedules); ``config_path`` and ``overrides``, which it
    was loaded from, become the deployments' parameters: each scheduled run loads them again at
    its start, so an edited config file applies from the next run.

    ``work_pool`` replaces the file's pool (it must exist then: a Kubernetes or Docker pool is
    the user's to create); ``image`` is the job image for such a pool. The file's own pool is
    created as a process pool when missing. ``paused`` registers them with their schedules
    paused: they run only when asked (the monitor's trigger, the UI, ``prefect deployment run``).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tuneops.components.monitoring.monitor import ensure_project

    specs = [configure(spec, config, config_path, overrides) for spec in read_deployments(prefect_file)]
    for spec in specs:
        if work_pool:
            spec.work_pool, spec.work_queue = work_pool, None
        if image:
            spec.job_variables["image"] = image
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        _check_server(api_url)
        for pool in sorted({spec.work_pool for spec in specs}):
            ensure_work_pool(pool, create=work_pool is None)
        registered = [_apply(spec, paused) for spec in specs]
    # The monitor flow writes into this project; creating it now lets the Evidently UI show its
    # dashboard before the first monitor run.
    ensure_project()
    return registered


def ensure_work_pool(name: str, create: bool = True) -> None:
    """Check that the work pool ``name`` exists; create it as a process pool if ``create``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return
        except ObjectNotFound:
            if not create:
                raise ConfigError(f"deploy: work pool {name!r} does not exist on the server; create it first "
                                  f"(prefect work-pool create {name} --type kubernetes)") from None
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:  # a worker starting at the same moment created it
            pass


def _apply(spec: DeploymentSpec, paused: bool) -> Registered:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage
    from prefect.schedules import Cron

    deployment = RunnerDeployment.from_storage(
        storage=LocalStorage(str(SOURCE_ROOT)),
        entrypoint=spec.entrypoint,
        name=spec.name,
        schedules=[Cron(spec.cron, timezone=spec.timezone)],
        parameters=spec.parameters,
        description=spec.description,
        tags=spec.tags,
        work_pool_name=spec.work_pool,
        work_queue_name=spec.work_queue,
        job_variables=spec.job_variables,
        concurrency_limit=spec.concurrency_limit,
        paused=paused,
    )
    deployment_id = deployment.apply()
    return Registered(f"{deployment.flow_name}/{spec.name}", str(deployment_id), spec.cron, spec.work_pool)


def _check_server(api_url: str) -> None:
    import httpx

    try:
        answer = httpx.get(f"{api_url.rstrip('/')}/health", timeout=10.0)
    except httpx.HTTPError as error:
        raise StageError(f"deploy: no Prefect server answers at {api_url} ({type(error).__name__}); "
                         "`tuneops up` starts one") from None
    if answer.status_code != 200:
        raise StageError(f"deploy: the Prefect server at {api_url} answered {answer.status_code} to /health")


def _check_cron(cron: str, key: str) -> None:
    from pydantic import ValidationError
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(f"config: {key}: {cron!r} is not a valid cron expression") from None


def run_deploy(config: PipelineConfig, config_path: str | None, overrides: list[str], work_pool: str | None = None,
               image: str | None = None, paused: bool = False) -> int:
    """``tuneops deploy``: register the deployments and print them."""
    from tuneops.components.stack.records import prefect_api_url

    api_url = prefect_api_url()
    if not api_url:
        raise ConfigError("deploy: no Prefect server: set PREFECT_API_URL or start one with `tuneops up`")
    for entry in deploy(config, config_path, overrides, api_url, work_pool=work_pool, image=image, paused=paused):
        schedule = f"cron '{entry.cron}'" + (", paused" if paused else "")
        print(f"deployed {entry.name} ({schedule}, pool {entry.work_pool}, id {entry.deployment_id})")
    print(f"server: {api_url}")
    return 0
