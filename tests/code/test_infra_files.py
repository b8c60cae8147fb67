"""The infrastructure files (infra/prefect.yaml, infra/docker-compose.yml, docker/*.Dockerfile,
infra/kubernetes/*.yaml) parse and agree with each other and with the code. Docker and Kubernetes
do not run here; these checks catch what would break them: a wrong name, path, port or label."""

from __future__ import annotations

import copy
import inspect
import json
import re
import shlex
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tuneops.components.config import MonitoringConfig, load_config
from tuneops.components.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
KUBERNETES = INFRA / "kubernetes"
BASE_JOB_TEMPLATE = KUBERNETES / "base-job-template.json"
# The oldest Kubernetes the manifests are for: PodDisruptionBudget.unhealthyPodEvictionPolicy is
# GA from 1.31. Schemas of that minor catch a field a 1.31 API server would not know.
KUBERNETES_VERSION = "1.31"


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _kubernetes_documents() -> list[dict]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append({**document, "_file": path.name})
    return documents


def _dockerfile(name: str) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "docker" / name).read_text()
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


# ------------------------------------------------------------------------------ prefect.yaml


def test_prefect_yaml_declares_retrain_weekly_and_monitor_hourly_matching_the_config_defaults():
    from tuneops.flows.deploy import read_deployments

    specs = {spec.name: spec for spec in read_deployments()}
    assert set(specs) == {"retrain", "monitor"}
    defaults = MonitoringConfig()
    assert specs["retrain"].cron == defaults.retrain_cron
    assert specs["monitor"].cron == defaults.monitor_cron
    minute, hour, day, month, weekday = specs["monitor"].cron.split()
    assert minute.isdigit() and (hour, day, month, weekday) == ("*", "*", "*", "*"), "monitor: hourly"
    minute, hour, day, month, weekday = specs["retrain"].cron.split()
    assert minute.isdigit() and hour.isdigit() and (day, month) == ("*", "*") and weekday.isdigit(), "retrain: weekly"


def test_prefect_yaml_entrypoints_name_the_flows_and_their_parameters():
    from tuneops.flows.deploy import read_deployments

    expected_flow_names = {"retrain": "tuneops-retrain", "monitor": "tuneops-monitor"}
    import importlib

    for spec in read_deployments():
        path, _, function = spec.entrypoint.partition(":")
        assert (ROOT / path).is_file(), spec.entrypoint
        # The entrypoint file's module, as the installed package names it (never a bare `flows`).
        module = importlib.import_module("tuneops." + path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function)
        assert flow.name == expected_flow_names[spec.name]
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(spec.parameters) <= accepted, f"{spec.name}: parameters the flow does not take"
        assert {"config_path", "overrides"} <= set(spec.parameters)


def test_prefect_yaml_is_a_valid_prefect_project_file_with_one_pool_and_a_pull_step():
    from tuneops.components.stack.supervisor import WORK_POOL

    document = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    assert document["prefect-version"] == metadata.version("prefect")
    step = document["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $TUNEOPS_PROJECT_DIR }}"
    assert {entry["work_pool"]["name"] for entry in document["deployments"]} == {WORK_POOL}


def test_deploy_takes_schedules_and_parameters_from_the_tuneops_config(tmp_path):
    from tuneops.flows.deploy import configure, read_deployments

    config_file = tmp_path / "my.yaml"
    config_file.write_text("monitoring:\n  monitor_cron: '*/15 * * * *'\n  retrain_cron: '0 4 * * 0'\n")
    config = load_config(config_file, ["training.max_steps=5"])
    specs = {spec.name: configure(spec, config, str(config_file), ["training.max_steps=5"])
             for spec in read_deployments()}
    assert specs["monitor"].cron == "*/15 * * * *"
    assert specs["retrain"].cron == "0 4 * * 0"
    for spec in specs.values():
        assert spec.parameters["config_path"] == str(config_file.resolve())
        assert spec.parameters["overrides"] == ["training.max_steps=5"]
        assert spec.job_variables["env"]["TUNEOPS_HOME"]


def test_deploy_rejects_an_invalid_cron_in_one_line():
    from tuneops.flows.deploy import configure, read_deployments

    config = load_config(None, ["monitoring.monitor_cron=every hour please"])
    monitor = next(spec for spec in read_deployments() if spec.name == "monitor")
    with pytest.raises(ConfigError, match="monitoring.monitor_cron.*not a valid cron"):
        configure(monitor, config, None, [])


def test_a_malformed_prefect_file_is_a_config_error(tmp_path):
    from tuneops.flows.deploy import read_deployments

    broken = tmp_path / "prefect.yaml"
    broken.write_text("deployments:\n  - name: retrain\n    entrypoint: flows/monitor_flow.py:retrain_pipeline\n")
    with pytest.raises(ConfigError, match="needs exactly one cron schedule"):
        read_deployments(broken)


# ------------------------------------------------------------------------ docker-compose.yml


def test_compose_runs_prefect_on_postgres_with_the_installed_prefect_version():
    services = _compose()["services"]
    server = services["prefect-server"]
    assert server["image"] == f"prefecthq/prefect:{metadata.version('prefect')}-python3.11"
    url = server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in url
    assert services["postgres"]["image"].startswith("postgres:") and "latest" not in services["postgres"]["image"]
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_has_the_whole_stack_and_every_reference_resolves():
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "prefect-server", "worker", "deploy", "serving", "evidently-ui"} <= set(services)
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            assert source in declared_volumes, f"{name} mounts undeclared volume {source}"
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        image = service.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, f"{name}: pin the image tag"
        build = service.get("build")
        if build:
            dockerfile = (INFRA / build["context"] / build["dockerfile"]).resolve()
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"


def test_compose_tuneops_services_share_the_state_volume_and_the_worker_polls_the_deployments_pool():
    from tuneops.components.stack.supervisor import WORK_POOL

    services = _compose()["services"]
    for name in ("worker", "deploy", "serving", "evidently-ui"):
        assert "tuneops-data:/data" in services[name]["volumes"], name
        assert services[name]["environment"]["TUNEOPS_HOME"] == "/data", name
    command = services["worker"]["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] == WORK_POOL
    assert command[command.index("--type") + 1] == "process"
    assert services["worker"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert services["deploy"]["command"] == ["tuneops", "deploy"]
    ui = services["evidently-ui"]["command"]
    assert ui[:2] == ["evidently", "ui"] and ui[ui.index("--workspace") + 1] == "/data/evidently"


# ------------------------------------------------------------------------------ Dockerfiles


def test_worker_dockerfile_installs_the_lock_and_runs_a_worker_where_the_pull_step_points():
    from tuneops.components.stack.supervisor import WORK_POOL

    instructions = _dockerfile("worker.Dockerfile")
    base = next(arguments for word, arguments in instructions if word == "FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    runs = " ".join(arguments for word, arguments in instructions if word == "RUN")
    assert "-r requirements.lock" in runs and "--no-deps -e ." in runs
    copied = " ".join(arguments for word, arguments in instructions if word == "COPY")
    for directory in ("components", "flows", "serving", "infra", "requirements.lock"):
        assert directory in copied and (ROOT / directory).exists(), directory
    environment = " ".join(arguments for word, arguments in instructions if word == "ENV")
    workdir = next(arguments for word, arguments in instructions if word == "WORKDIR")
    assert f"TUNEOPS_PROJECT_DIR={workdir}" in environment
    assert "TUNEOPS_HOME=/data" in environment
    user = [arguments for word, arguments in instructions if word == "USER"]
    assert user and user[-1] not in ("root", "0"), "the worker runs as a non-root user"
    command = json.loads(next(arguments for word, arguments in instructions if word == "CMD"))
    assert command[:3] == ["prefect", "worker", "start"] and command[command.index("--pool") + 1] == WORK_POOL


# ------------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_parse_and_live_in_one_namespace():
    documents = _kubernetes_documents()
    kinds = {(document["kind"], document["metadata"]["name"]) for document in documents}
    assert ("Deployment", "tuneops-worker") in kinds
    assert ("Deployment", "tuneops-serving") in kinds
    assert ("Service", "tuneops-serving") in kinds
    assert ("HorizontalPodAutoscaler", "tuneops-serving") in kinds
    for document in documents:
        assert document.get("apiVersion") and document["metadata"].get("name"), document["_file"]
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == "tuneops", document["_file"]


def test_kubernetes_selectors_ports_volumes_and_scaling_target_agree():
    documents = _kubernetes_documents()
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    for name, deployment in by_kind["Deployment"].items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{name}: selector does not match its pods"
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            assert claim is None or claim in by_kind["PersistentVolumeClaim"], f"{name}: unknown claim {claim}"
    serving = by_kind["Deployment"]["tuneops-serving"]
    service = by_kind["Service"]["tuneops-serving"]
    pod_labels = serving["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = serving["spec"]["template"]["spec"]["containers"][0]
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert all(port["targetPort"] in port_names for port in service["spec"]["ports"])
    assert port_names["http"] == 3000  # the port the serving image listens on (serving.port default)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    hpa = by_kind["HorizontalPodAutoscaler"]["tuneops-serving"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "tuneops-serving")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "resources" in container and container["resources"]["requests"]["cpu"], "HPA needs CPU requests"


def test_kubernetes_worker_uses_a_kubernetes_pool_that_the_deploy_job_targets_with_rbac():
    documents = _kubernetes_documents()
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    worker = by_kind["Deployment"]["tuneops-worker"]["spec"]["template"]["spec"]
    command = worker["containers"][0]["command"]
    assert command[command.index("--type") + 1] == "kubernetes"
    pool = command[command.index("--pool") + 1]
    deploy = by_kind["Job"]["tuneops-deploy"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert deploy[:2] == ["tuneops", "deploy"] and deploy[deploy.index("--pool") + 1] == pool
    assert worker["serviceAccountName"] in by_kind["ServiceAccount"]
    binding = next(iter(by_kind["RoleBinding"].values()))
    assert binding["roleRef"]["name"] in by_kind["Role"]
    assert {subject["name"] for subject in binding["subjects"]} == {worker["serviceAccountName"]}
    verbs = {verb for rule in next(iter(by_kind["Role"].values()))["rules"] if "jobs" in rule["resources"]
             for verb in rule["verbs"]}
    assert {"create", "get", "watch", "delete"} <= verbs


def test_kubernetes_readme_covers_every_manifest():
    readme = (KUBERNETES / "README.md").read_text()
    for path in [*KUBERNETES.glob("*.yaml"), *KUBERNETES.glob("*.json")]:
        assert path.name in readme, f"README does not mention {path.name}"
    assert "HorizontalPodAutoscaler" in readme and "work pool" in readme


def _by_kind() -> dict[str, dict[str, dict]]:
    by_kind: dict[str, dict[str, dict]] = {}
    for document in _kubernetes_documents():
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    return by_kind


def _base_job_template() -> dict:
    return json.loads(BASE_JOB_TEMPLATE.read_text())


def _flow_run_job(deployment_env: dict[str, str] | None = None) -> dict:
    """The Job the Kubernetes worker creates from base-job-template.json for a flow run of a
    deployment that `tuneops deploy` registered (its image, its env): the template rendered with
    the variables' defaults the way Prefect renders it, then the worker's own two steps."""
    from prefect.utilities.templating import apply_values

    template = _base_job_template()
    # Prefect leaves None defaults out, so their keys drop out of the manifest.
    values = {name: spec["default"] for name, spec in template["variables"]["properties"].items()
              if spec.get("default") is not None}
    values |= {
        "name": "tuneops-retrain-run",
        "image": "registry.example.com/tuneops-worker:0.1.0",
        "command": "prefect flow-run execute",
        "labels": {"prefect.io/flow-run-name": "tuneops-retrain-run"},
        "env": {"TUNEOPS_HOME": "/data", "PREFECT_API_URL": "http://prefect-server:4200/api"}
        if deployment_env is None else deployment_env,
    }
    configuration = apply_values(copy.deepcopy(template["job_configuration"]), values)
    manifest = configuration["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    # The worker puts the run's env ahead of a list the template fixes (a name in both: the
    # run's), and splits the command into args.
    run_env = [{"name": name, "value": value} for name, value in configuration["env"].items()]
    fixed = [entry for entry in container.get("env") or [] if entry["name"] not in configuration["env"]]
    container["env"] = [*run_env, *fixed]
    container["args"] = shlex.split(container["args"])
    return manifest


def _validation_failures(manifests: list[tuple[str, dict]]) -> list[str]:
    import kubernetes_validate

    failures = []
    for name, document in manifests:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
            failures.append(f"{name}: {where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            failures.append(f"{name}: {error.message}")
    return failures


def _all_manifests() -> list[tuple[str, dict]]:
    manifests = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text()), start=1):
            if document:
                manifests.append((f"{path.name} #{index} ({document.get('kind')} "
                                  f"{document.get('metadata', {}).get('name')})", document))
    job = _flow_run_job()
    pod = job["spec"]["template"]["spec"]
    # Prefect's worker insists on these two in the pod spec, where Kubernetes has no such field
    # (they are Job fields); the API server drops them with a warning, a strict schema would not.
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    manifests.append((f"{BASE_JOB_TEMPLATE.name} (the flow-run Job)", job))
    return manifests


def test_every_kubernetes_manifest_is_valid_against_the_kubernetes_api_schemas():
    manifests = _all_manifests()
    assert len(manifests) >= 10, [name for name, _ in manifests]
    failures = _validation_failures(manifests)
    assert not failures, f"invalid for Kubernetes {KUBERNETES_VERSION}:\n" + "\n".join(failures)


def test_the_schema_check_catches_a_misspelled_field_and_a_wrong_type():
    serving = next(document for name, document in _all_manifests() if name.startswith("serving.yaml #1"))
    misspelled = copy.deepcopy(serving)
    container = misspelled["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    wrong_type = copy.deepcopy(serving)
    wrong_type["spec"]["replicas"] = "two"
    failures = _validation_failures([("misspelled", misspelled), ("wrong type", wrong_type)])
    assert len(failures) == 2 and failures[0].startswith("misspelled: ") and "readinesProbe" in failures[0]
    assert failures[1].startswith("wrong type: spec/replicas: "), failures


def test_serving_probes_fit_a_service_that_waits_unready_without_a_champion():
    container = _by_kind()["Deployment"]["tuneops-serving"]["spec"]["template"]["spec"]["containers"][0]
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}
    # Liveness on /readyz would restart every replica forever while there is no champion.
    assert liveness["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container.get("startupProbe")
    if startup:
        assert startup["httpGet"]["path"] == "/healthz"
        start_budget = startup["periodSeconds"] * startup["failureThreshold"]
    else:
        start_budget = liveness.get("initialDelaySeconds", 0)
    # At least the start period the serving image's own HEALTHCHECK allows for the model load.
    healthcheck = " ".join(arguments for word, arguments in _dockerfile("serving.Dockerfile") if word == "HEALTHCHECK")
    image_start_period = int(re.search(r"--start-period=(\d+)s", healthcheck).group(1))
    assert start_budget >= image_start_period, (start_budget, image_start_period)
    # Liveness tolerates a replica busy with a burst for longer than one slow answer.
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 30
    assert liveness["timeoutSeconds"] >= readiness["timeoutSeconds"]


def test_a_disruption_budget_keeps_a_serving_pod_and_does_not_block_drains():
    by_kind = _by_kind()
    serving = by_kind["Deployment"]["tuneops-serving"]
    pod_labels = serving["spec"]["template"]["metadata"]["labels"]
    budgets = [pdb for pdb in by_kind["PodDisruptionBudget"].values()
               if pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()]
    assert len(budgets) == 1, "one PodDisruptionBudget selects the serving pods"
    spec = budgets[0]["spec"]
    fewest = min(serving["spec"]["replicas"], by_kind["HorizontalPodAutoscaler"]["tuneops-serving"]["spec"]["minReplicas"])
    # Either form leaves one pod serving and still lets a drain evict one (a budget of all pods
    # would block every node drain).
    if "minAvailable" in spec:
        assert 1 <= spec["minAvailable"] < fewest, (spec, fewest)
    else:
        assert 1 <= spec["maxUnavailable"] < fewest, (spec, fewest)
    assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"


def test_the_serving_token_comes_from_a_secret():
    from tuneops.components.config import ServingConfig

    by_kind = _by_kind()
    container = by_kind["Deployment"]["tuneops-serving"]["spec"]["template"]["spec"]["containers"][0]
    env = {entry["name"]: entry for entry in container["env"]}
    token = env[ServingConfig().auth_token_env]
    assert "value" not in token, "the token is never written into the Deployment"
    reference = token["valueFrom"]["secretKeyRef"]
    assert not reference.get("optional"), "a pod without its token would serve without auth"
    secret = by_kind["Secret"][reference["name"]]
    assert reference["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}
    readme = (KUBERNETES / "README.md").read_text()
    assert f"kubectl -n tuneops create secret generic {reference['name']}" in readme


def test_the_base_job_template_mounts_the_shared_claim_at_data_for_every_flow_run():
    from prefect.server.schemas.actions import validate_base_job_template

    template = _base_job_template()
    validate_base_job_template(template)  # what the server checks when the pool is created
    claims = set(_by_kind()["PersistentVolumeClaim"])
    # A deployment's env replaces the env variable whole: the volume settings must survive it.
    for deployment_env in (None, {}, {"TUNEOPS_HOME": "/data", "SOMETHING": "else"}):
        job = _flow_run_job(deployment_env)
        assert job["metadata"]["namespace"] == "tuneops"
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {volume["name"]: volume["persistentVolumeClaim"]["claimName"] for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert volumes[mounts["/data"]] in claims, (volumes, mounts, claims)
        env = {entry["name"]: entry["value"] for entry in container["env"]}
        assert len(env) == len(container["env"]), "one entry per name"
        assert env["TUNEOPS_HOME"] == "/data", deployment_env
        assert env["TUNEOPS_REQUIRE_PERSISTENT_HOME"] == "1", deployment_env
        assert container["image"] == "registry.example.com/tuneops-worker:0.1.0"
        assert container["args"] == ["prefect", "flow-run", "execute"]


def test_the_deploy_job_writes_the_template_to_the_pool_before_any_deployment_exists():
    by_kind = _by_kind()
    worker = by_kind["Deployment"]["tuneops-worker"]["spec"]["template"]["spec"]["containers"][0]["command"]
    pool = worker[worker.index("--pool") + 1]
    job = by_kind["Job"]["tuneops-deploy"]["spec"]["template"]["spec"]
    (init,) = job["initContainers"]
    command = init["command"]
    assert command[:4] == ["prefect", "work-pool", "create", pool]
    assert command[command.index("--type") + 1] == "kubernetes" and "--overwrite" in command
    path = command[command.index("--base-job-template") + 1]
    assert (ROOT / path) == BASE_JOB_TEMPLATE  # relative to the worker image's workdir, a checkout
    assert init["image"] == job["containers"][0]["image"]
    copied = [arguments.split() for word, arguments in _dockerfile("worker.Dockerfile") if word == "COPY"]
    assert ["infra", "./infra"] in copied
    readme = (KUBERNETES / "README.md").read_text()
    assert f"prefect work-pool create {pool} --type kubernetes --base-job-template {path}" in readme
    assert "TUNEOPS_REQUIRE_PERSISTENT_HOME" in readme


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_venv_git_and_state_out_and_nothing_an_image_copies():
    import fnmatch

    patterns = _dockerignore()
    for needed in (".venv", ".git", ".tuneops"):
        assert needed in patterns, needed
    for dockerfile in ("worker.Dockerfile", "serving.Dockerfile"):
        for word, arguments in _dockerfile(dockerfile):
            if word != "COPY":
                continue
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} is missing"
                for pattern in patterns:
                    bare = pattern.removeprefix("**/")
                    hit = fnmatch.fnmatch(source, pattern) or any(
                        fnmatch.fnmatch(part, bare) for part in Path(source).parts)
                    assert not hit, f"{dockerfile}: .dockerignore {pattern!r} drops COPY {source}"


@pytest.mark.parametrize("name", ["worker.Dockerfile", "serving.Dockerfile"])
def test_hf_hub_offline_is_on_by_default_and_switchable(name):
    instructions = _dockerfile(name)
    words = [word for word, _ in instructions]
    arguments = [arguments for _, arguments in instructions]
    # A build argument with default 1 (docker build --build-arg HF_HUB_OFFLINE=0 switches it)...
    arg = words.index("ARG", words.index("FROM"))
    assert arguments[arg] == "HF_HUB_OFFLINE=1"
    # ...that an ENV passes on, so a run can still override it (docker run -e, a pod's env).
    setting = [index for index, (word, rest) in enumerate(instructions)
               if word == "ENV" and "HF_HUB_OFFLINE=" in rest]
    assert len(setting) == 1 and setting[0] > arg
    assert re.search(r"(^|\s)HF_HUB_OFFLINE=\$\{HF_HUB_OFFLINE\}(\s|$)", arguments[setting[0]])
    readme = (ROOT / "docker" / "README.md").read_text()
    assert "--build-arg HF_HUB_OFFLINE=0" in readme and "-e HF_HUB_OFFLINE=0" in readme
