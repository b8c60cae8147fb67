"""The tuneops BentoML service: load the champion once, validate input, predict, log.

Run it with ``tuneops serve`` (which sets the environment described in serving/settings.py and
runs ``bentoml serve tuneops.serving.service:TuneopsClassifier``), or from a bento / the serving image.

Endpoints:
- ``POST /classify`` with the task's request body (text classification: ``{"texts": ["...", ...]}``)
  -> ``[{"label", "score", "probabilities", "model_tag", "request_id"}, ...]``, one entry per
  input, in order. Inputs of concurrent requests are grouped by BentoML's adaptive batcher into
  one forward pass of up to ``max_batch_size``.
- ``GET /healthz`` (alive), ``GET /readyz`` (200 with the served model's tag; 503 with the reason
  while no model is served, and ``/classify`` is then a 503 with it too), ``GET /metrics``
  (Prometheus: BentoML's request and batch-size metrics, their path label bounded to the routes,
  plus ``tuneops_predictions_total{label,model_tag}``).

The service always starts, model or not (serving/model_holder.py): a process that failed at
start-up for a damaged champion would be restarted into the same failure. It serves the champion,
else the most recent previous champion that verifies, else nothing until one appears.

The ``serving`` config is read when this module is imported, because BentoML takes the batching
settings and the request schema as decorator arguments; the schema is the task's
(``Task.request_model``), and the task is the one the served model's manifest names. Everything
else (the model, the token, the log) is set up when the service is instantiated in the serving
process. The service never names a modality: the task encodes inputs and says what is logged.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException

from tuneops.components.monitoring.prediction_log import INPUT, PredictionLog
from tuneops.components.paths import kept_inputs_dir, prediction_log_dir
from tuneops.serving.guard import RequestGuard
from tuneops.serving.metrics import BoundedPathLabels, service_metrics
from tuneops.serving.model_holder import ModelHolder, served_task
from tuneops.serving.openapi import with_guard_responses
from tuneops.serving.schemas import ClassPrediction, Readiness
from tuneops.serving.settings import pinned_model, predictor_runtime, serving_config_from_env

logger = logging.getLogger("tuneops.serving")

# Passes of 16 inputs pad little and keep a CPU as busy per input as larger ones
# (benchmarks/bench_serving.py; ServingConfig.forward_batch_size). The int8 graph has less fixed
# cost per pass, so shorter passes win: 8 texts per pass ran 320 texts/s, 16 300, 32 255 (MiniLM,
# one thread, demo reviews).
CPU_FORWARD_BATCH = 16
INT8_FORWARD_BATCH = 8

CONFIG = serving_config_from_env()
PINNED_TAG = pinned_model()
TASK = served_task(PINNED_TAG)
# One field, ``inputs`` (published under the task's own name, e.g. "texts"): BentoML passes it to
# ``classify`` by that name.
ClassifyRequest = TASK.request_model(CONFIG)


class _BoundedLabelService(bentoml.Service):
    """BentoML's service whose served app is wrapped in BoundedPathLabels (serving/metrics.py):
    BentoML's middleware, its metrics among them, sits inside the app it builds, so only a layer
    around the whole app can bound what they see. ``service_class`` is BentoML's hook for this.
    Its OpenAPI spec also lists the guard's answers (serving/openapi.py)."""

    def to_asgi(self, is_main: bool = True) -> Any:
        return BoundedPathLabels(super().to_asgi(is_main))

    @property
    def openapi_spec(self) -> Any:
        # The guard's own answers (401, 413, 415, 503) belong in the published API too.
        return with_guard_responses(super().openapi_spec)


@bentoml.service(
    name="tuneops_classifier",
    workers=CONFIG.workers,
    traffic={"timeout": CONFIG.request_timeout_s},
    service_class=_BoundedLabelService,
)
class TuneopsClassifier:
    """Classification with the champion model (or a pinned one)."""

    def __init__(self) -> None:
        _share_bentoml_logging()
        self.config = CONFIG
        if CONFIG.torch_threads:
            import torch

            torch.set_num_threads(CONFIG.torch_threads)
        self.metrics = service_metrics()
        self.log = PredictionLog(prediction_log_dir())
        self.holder = ModelHolder(
            pinned_tag=PINNED_TAG,
            task_name=TASK.name,
            # After the thread count is set: the int8 session takes torch's.
            runtime=predictor_runtime(CONFIG),
            check_interval_s=CONFIG.reload_check_s,
            on_swap=lambda previous, new: self.metrics.swaps.inc(),
            on_swap_failure=lambda tag, reason: self.metrics.swap_failures.inc(),
        )
        # Never raises: without a model the service is up and not ready, and says why.
        self.holder.start()

    @bentoml.api(
        batchable=CONFIG.adaptive_batching,
        max_batch_size=CONFIG.max_batch_size,
        max_latency_ms=CONFIG.max_latency_ms,
        input_spec=ClassifyRequest,
    )
    def classify(self, inputs: list[Any]) -> list[ClassPrediction]:
        """Label, score and every class probability for each input, with the model's tag."""
        model = self.holder.current  # read once: a champion switch applies from the next batch
        predictor = model.predictor
        probabilities = predictor.predict_proba(list(inputs), batch_size=self._pass_size(predictor))
        best = probabilities.argmax(axis=1)
        results, records = [], []
        for value, row, index in zip(inputs, probabilities, best):
            label = predictor.labels[index]
            result = {
                "label": label,
                "score": float(row[index]),
                "probabilities": {name: float(p) for name, p in zip(predictor.labels, row)},
                "model_tag": model.tag,
                # The request model stamped each input with its request's id (batches mix requests).
                "request_id": getattr(value, "request_id", ""),
            }
            results.append(result)
            records.append({**result, INPUT: predictor.task.log_value(value, self.config.log_text)})
        self._record(records, model.tag)
        if self.config.keep_images:
            self._keep(predictor.task, inputs)
        return results

    def _keep(self, task, inputs: list[Any]) -> None:
        """Keep the batch's inputs as files (``serving.keep_images``). As with the log, a failed
        write is logged and counted, and the predictions still go out."""
        directory = kept_inputs_dir()
        for value in inputs:
            try:
                task.keep_input(value, directory)
            except OSError as error:
                self.metrics.log_failures.inc()
                logger.error("keeping a served input failed: %s", error)

    def _pass_size(self, predictor) -> int:
        """Inputs per forward pass (the predictor orders the batch by cost before splitting it)."""
        if self.config.forward_batch_size:
            return self.config.forward_batch_size
        if predictor.device.startswith("cuda"):
            return self.config.max_batch_size
        return INT8_FORWARD_BATCH if predictor.runner is not None else CPU_FORWARD_BATCH

    def _record(self, records: list[dict], model_tag: str) -> None:
        """Log the batch and count it. A full disk must not take predictions down with it:
        a failed write is logged and counted (tuneops_prediction_log_failures_total)."""
        try:
            self.log.append(records)
        except OSError as error:
            self.metrics.log_failures.inc()
            logger.error("prediction log write failed for %d predictions: %s", len(records), error)
        for label, count in collections.Counter(record["label"] for record in records).items():
            self.metrics.predictions.labels(label=label, model_tag=model_tag).inc(count)

    def __is_ready__(self) -> bool:
        # BentoML's own /readyz asks this where the guard does not answer (its clients, a bare app).
        return self.holder.ready

    def readiness(self) -> Readiness:
        """Whether a model is served, which one, and why not (for the guard's /readyz)."""
        return self.holder.readiness()

    @bentoml.on_shutdown
    def close(self) -> None:
        self.holder.stop()
        self.log.close()


def _share_bentoml_logging() -> None:
    """Send tuneops' serving messages (model switches, log failures) wherever BentoML's go:
    the server configures only its own loggers. And keep clients' invalid requests out of the
    error log: BentoML logs each one with a traceback, though it is already answered with a 400,
    in the access log and counted in tuneops_requests_rejected_total."""
    ours, theirs = logging.getLogger("tuneops"), logging.getLogger("bentoml")
    if not ours.handlers and theirs.handlers:
        for handler in theirs.handlers:
            ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False
    endpoint_logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(item, _ClientErrorFilter) for item in endpoint_logger.filters):
        endpoint_logger.addFilter(_ClientErrorFilter())


class _ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, ValidationError)


def _readiness() -> Readiness | None:
    """The readiness of this process's service instance (one per worker), None before it exists."""
    try:
        instance = bentoml.get_current_service()
    except BentoMLException:
        return None
    return instance.readiness() if instance is not None else None


TuneopsClassifier.add_asgi_middleware(RequestGuard, config=CONFIG, task=TASK.name, readiness=_readiness)
