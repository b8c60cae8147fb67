"""The tuneops BentoML service: load the champion once, validate input, predict, log.

Run it with ``tuneops serve`` (which sets the environment described in serving/settings.py and
runs ``bentoml serve tuneops.serving.service:TuneopsClassifier``), or from a bento / the serving image.

Endpoints:
- ``POST /classify`` ``{"texts": ["...", ...]}`` -> ``[{"label", "score", "probabilities",
  "model_tag", "request_id"}, ...]``, one entry per text, in order. Texts of concurrent requests
  are grouped by BentoML's adaptive batcher into one forward pass of up to ``max_batch_size``.
- ``GET /healthz`` (alive), ``GET /readyz`` (a model is loaded), ``GET /metrics`` (Prometheus:
  BentoML's request and batch-size metrics plus ``tuneops_predictions_total{label,model_tag}``).

The ``serving`` config is read when this module is imported, because BentoML takes the batching
settings as decorator arguments; everything else (the model, the token, the log) is set up when
the service is instantiated in the serving process.
"""

from __future__ import annotations

import collections
import logging

import bentoml

from tuneops.components.paths import prediction_log_dir
from tuneops.components.monitoring.prediction_log import PredictionLog, hash_text
from tuneops.serving.guard import RequestGuard
from tuneops.serving.metrics import service_metrics
from tuneops.serving.model_holder import ModelHolder
from tuneops.serving.schemas import RequestText, TextPrediction, request_model
from tuneops.serving.settings import pinned_model, serving_config_from_env

logger = logging.getLogger("tuneops.serving")

# Passes of 16 texts pad little and keep a CPU as busy per text as larger ones
# (benchmarks/bench_serving.py; ServingConfig.forward_batch_size).
CPU_FORWARD_BATCH = 16

CONFIG = serving_config_from_env()
ClassifyRequest = request_model(CONFIG)


@bentoml.service(
    name="tuneops_classifier",
    workers=CONFIG.workers,
    traffic={"timeout": CONFIG.request_timeout_s},
)
class TuneopsClassifier:
    """Text classification with the champion model (or a pinned one)."""

    def __init__(self) -> None:
        _share_bentoml_logging()
        self.config = CONFIG
        if CONFIG.torch_threads:
            import torch

            torch.set_num_threads(CONFIG.torch_threads)
        self.metrics = service_metrics()
        self.log = PredictionLog(prediction_log_dir())
        self.holder = ModelHolder(
            pinned_tag=pinned_model(),
            check_interval_s=CONFIG.reload_check_s,
            on_swap=lambda previous, new: self.metrics.swaps.inc(),
            on_swap_failure=lambda tag, reason: self.metrics.swap_failures.inc(),
        )
        self.holder.load_initial()
        self.holder.start_watching()

    @bentoml.api(
        batchable=CONFIG.adaptive_batching,
        max_batch_size=CONFIG.max_batch_size,
        max_latency_ms=CONFIG.max_latency_ms,
        input_spec=ClassifyRequest,
    )
    def classify(self, texts: list[str]) -> list[TextPrediction]:
        """Label, score and every class probability for each text, with the model's tag."""
        model = self.holder.current  # read once: a champion switch applies from the next batch
        predictor = model.predictor
        probabilities = predictor.predict_proba([str(text) for text in texts], batch_size=self._pass_size(predictor))
        best = probabilities.argmax(axis=1)
        results, records = [], []
        for text, row, index in zip(texts, probabilities, best):
            label = predictor.labels[index]
            result = {
                "label": label,
                "score": float(row[index]),
                "probabilities": {name: float(p) for name, p in zip(predictor.labels, row)},
                "model_tag": model.tag,
                "request_id": text.request_id if isinstance(text, RequestText) else "",
            }
            results.append(result)
            records.append({**result, "text": hash_text(text) if self.config.log_text == "hash" else str(text)})
        self._record(records, model.tag)
        return results

    def _pass_size(self, predictor) -> int:
        """Texts per forward pass (Predictor sorts the batch by length before splitting it)."""
        if self.config.forward_batch_size:
            return self.config.forward_batch_size
        return self.config.max_batch_size if predictor.device == "cuda" else CPU_FORWARD_BATCH

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
        return self.holder.ready

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


TuneopsClassifier.add_asgi_middleware(RequestGuard, config=CONFIG)
