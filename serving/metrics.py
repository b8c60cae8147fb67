"""tuneops' own Prometheus metrics, next to BentoML's on ``/metrics``.

``prometheus_client`` is imported on first use, not at import time: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker after the service module is imported, and a client
imported earlier would keep its counters out of the shared ``/metrics`` output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServiceMetrics:
    predictions: Any  # Counter: predictions per label and model
    rejected: Any  # Counter: 4xx answers per reason
    swaps: Any  # Counter: champion switches done in-process
    swap_failures: Any  # Counter: new champions that could not be loaded
    log_failures: Any  # Counter: batches whose predictions could not be logged


@functools.cache
def service_metrics() -> ServiceMetrics:
    """The process's metric objects (created once: Prometheus refuses duplicate names)."""
    from prometheus_client import Counter

    return ServiceMetrics(
        predictions=Counter("tuneops_predictions", "Predictions served, per predicted label and model",
                            ["label", "model_tag"]),
        rejected=Counter("tuneops_requests_rejected", "Requests answered with a 4xx, per reason", ["reason"]),
        swaps=Counter("tuneops_model_swaps", "Switches to a newly promoted champion without restart"),
        swap_failures=Counter("tuneops_model_swap_failures", "Promoted champions that failed to load"),
        log_failures=Counter("tuneops_prediction_log_failures", "Batches that could not be written to the log"),
    )
