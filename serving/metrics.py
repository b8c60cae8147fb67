"""tuneops' own Prometheus metrics, next to BentoML's on ``/metrics``, and the bound on the
path labels of BentoML's.

``prometheus_client`` is imported on first use, not at import time: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker after the service module is imported, and a client
imported earlier would keep its counters out of the shared ``/metrics`` output.

BentoML's request metrics label every request with its path, and every distinct label value is a
series kept for the life of the process (and in its multiprocess files): 2,000 requests to random
paths, every one answered 401, took ``/metrics`` from 61 KB to 9.8 MB and the worker from 598 to
756 MB. ``BoundedPathLabels`` wraps the whole app, outside BentoML's middleware, and shows those
metrics a route's own path or one label, ``OTHER_PATH``, for anything else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
App = Callable[..., Awaitable[None]]  # an ASGI app: (scope, receive, send)

# The one label of every path that is not a route of the service (a scanner's URLs, typos).
OTHER_PATH = "/{other}"
# Where the request's own path waits, while BentoML's middleware sees the label, until
# ``real_path`` puts it back in front of the routes (RequestGuard does, first thing).
_REAL_PATH = "tuneops.real_path"


@dataclass(frozen=True)
class ServiceMetrics:
    predictions: Any  # Counter: predictions per label and model
    rejected: Any  # Counter: requests refused before the model (4xx, or 503 while not ready) per reason
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
        rejected=Counter("tuneops_requests_rejected",
                         "Requests refused before reaching the model (4xx; 503 while not ready), per reason",
                         ["reason"]),
        swaps=Counter("tuneops_model_swaps", "Switches to a newly promoted champion without restart"),
        swap_failures=Counter("tuneops_model_swap_failures", "Promoted champions that failed to load"),
        log_failures=Counter("tuneops_prediction_log_failures", "Batches that could not be written to the log"),
    )


class BoundedPathLabels:
    """The outermost ASGI layer of the served app: the path that BentoML's metrics (and its access
    log and tracing, which sit between) see is the request's route path, a mount's prefix for a
    file under it (the docs UI), or ``OTHER_PATH``; so no request can add a series. The request's
    own path travels in the scope and ``real_path`` restores it before routing."""

    def __init__(self, app: App) -> None:
        from starlette.routing import Mount

        self.app = app
        paths, prefixes = set(), []
        # Read once: BentoML adds every route while it builds the app, before the app is served.
        for route in getattr(app, "routes", []):
            path = getattr(route, "path", "")
            if not path:
                continue
            if isinstance(route, Mount):
                prefixes.append(path)
            elif "{" not in path:  # a templated route's paths would each be a label of their own
                paths.add(path)
        self.paths, self.prefixes = frozenset(paths), tuple(prefixes)

    def label(self, path: str) -> str:
        """What the metrics call a request to ``path``."""
        if path in self.paths:
            return path
        for prefix in self.prefixes:
            if path.startswith(prefix + "/"):
                return prefix
        return OTHER_PATH

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            label = self.label(scope["path"])
            if label != scope["path"]:
                scope = {**scope, "path": label, _REAL_PATH: scope["path"]}
        await self.app(scope, receive, send)


def real_path(scope: Scope) -> Scope:
    """``scope`` with the request's own path again, as BoundedPathLabels found it."""
    real = scope.get(_REAL_PATH)
    if real is None:
        return scope
    restored = {key: value for key, value in scope.items() if key != _REAL_PATH}
    restored["path"] = real
    return restored
