"""The id of the HTTP request being served, visible to code that parses its body.

Serving's request guard sets it; a task's request model stamps it on every input, so that a batch
mixing the inputs of many requests (adaptive batching) logs each prediction under its own request.
"""

from __future__ import annotations

import contextvars

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tuneops_request_id", default=None)
