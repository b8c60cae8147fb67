"""The MLflow ``Tracker`` (tuneops.components.tracking): runs, parameters, metric curves and
artifacts in a tracking server, and the packaged models as versions of a registered model whose
``champion`` alias follows the champion pointer. Imported only when ``MLFLOW_TRACKING_URI`` is set.

It talks through ``MlflowClient`` with an explicit run id, never MLflow's fluent "active run"
(process-global state that a Prefect flow running tasks in threads would share). No pyfunc flavour
is logged: the model's artifacts are the BentoML model folder as packaged, which
``Predictor.from_dir`` loads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# Parameters and metrics per request: the REST API's log-batch limits are 100 and 1000.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# MLflow's limit on a parameter's value; a longer one (a long candidate list) is cut, not refused.
_MAX_PARAM_CHARS = 6000
# Where in a run the packaged model's files go (the registered version's source).
MODEL_ARTIFACTS = "model"
_STATUSES = {"promoted": "FINISHED", "rejected": "FINISHED", "interrupted": "KILLED"}


class MlflowTracker:
    """A ``Tracker`` on the MLflow tracking server (and registry) at ``uri``."""

    def __init__(self, uri: str, request_timeout_s: float) -> None:
        # MLflow retries a failed request 7 times with backoff, for minutes; a tracking server
        # that is down must cost a run seconds. A value the user set in the environment wins.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, request_timeout_s))))
        # MLflow prints "View run ... at" links to stdout when a run ends; stdout is the CLI's
        # one document (-o json), and the run record already says where the run is tracked.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # GitPython (imported by mlflow) warns at import when no git executable is installed.
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.run_id: str | None = None

    def start_run(self, experiment: str, name: str, tags: dict[str, str]) -> str:
        """Start a run named ``name`` in ``experiment``, made if missing."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(experiment)
            except MlflowException:  # made meanwhile by a concurrent run
                experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        return self.run_id

    def log_params(self, params: dict[str, str]) -> None:
        """Log ``params`` in batches of the API's size."""
        from mlflow.entities import Param

        items = [Param(key, value[:_MAX_PARAM_CHARS]) for key, value in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(self._run(), params=items[start:start + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` (0 when not a curve: MLflow keys every value by a step)."""
        self.log_curve([(step or 0, metrics)])

    def log_curve(self, points: list[tuple[int, dict[str, float]]]) -> None:
        """Log every (step, values) point, batched: a long fine-tune is thousands of steps."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for step, values in points for key, value in values.items()]
        for start in range(0, len(items), _METRICS_PER_BATCH):
            self.client.log_batch(self._run(), metrics=items[start:start + _METRICS_PER_BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set ``tags`` on the run."""
        from mlflow.entities import RunTag

        self.client.log_batch(self._run(), tags=[RunTag(key, value) for key, value in tags.items()])

    def log_artifacts(self, local_path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's files (the server stores them: ``--serve-artifacts``)."""
        local_path = Path(local_path)
        if local_path.is_dir():
            self.client.log_artifacts(self._run(), str(local_path), artifact_path)
        else:
            self.client.log_artifact(self._run(), str(local_path), artifact_path)

    def register_model(self, local_dir: Path, name: str, tags: dict[str, str]) -> str:
        """Upload ``local_dir`` as the run's ``model`` artifacts; a new version of ``name`` points at them."""
        from mlflow.exceptions import MlflowException

        run_id = self._run()
        self.client.log_artifacts(run_id, str(local_dir), MODEL_ARTIFACTS)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, description="Models packaged by tuneops (docs/tracking.md)")
            except MlflowException:  # made meanwhile by a concurrent run
                self.client.get_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACTS}"
        version = self.client.create_model_version(name, source, run_id=run_id, tags=tags)
        return str(version.version)

    def find_version(self, tag: str, value: str) -> tuple[str, str] | None:
        """The newest registered version whose tag ``tag`` is ``value``."""
        if "'" in value or not tag.replace("_", "").isalnum():  # would break out of the filter's syntax
            return None
        versions = self.client.search_model_versions(f"tags.{tag} = '{value}'")
        if not versions:
            return None
        newest = max(versions, key=lambda version: int(version.version))
        return newest.name, str(newest.version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of ``name`` at ``version``."""
        self.client.set_registered_model_alias(name, alias, version)

    def end_run(self, status: str) -> None:
        """End the run: FINISHED for a promoted or rejected model, KILLED when interrupted, else FAILED."""
        self.client.set_terminated(self._run(), status=_STATUSES.get(status, "FAILED"))

    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("no tracked run started")
        return self.run_id
