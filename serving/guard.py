"""An ASGI middleware in front of the service's API: request ids, bearer-token auth, a body size
cap, and 400 answers rewritten so their ``error`` says what is wrong.

Health, readiness and metrics stay open (probes and Prometheus scrapers carry no token); every
other path needs ``Authorization: Bearer <token>`` when the variable named by
``serving.auth_token_env`` holds a token. The token is read when the server builds its app, in
the serving process, never at import.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import uuid
from typing import Any, Awaitable, Callable

from tuneops.components.config import ServingConfig
from tuneops.components.request_context import REQUEST_ID
from tuneops.serving.metrics import service_metrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REASONS = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            413: "too_large", 415: "unsupported_media_type"}


def max_body_bytes(config: ServingConfig) -> int:
    """The largest request body worth reading: every text at its maximum length, each character
    JSON-escaped (``\\uXXXX``, 6 bytes), plus room for the envelope."""
    return config.max_items * (config.max_text_chars * 6 + 8) + 4096


class RequestGuard:
    """Pure ASGI middleware (no extra task per request, streaming untouched)."""

    def __init__(self, app: Callable, config: ServingConfig, api_paths: tuple[str, ...] = ("/classify",)) -> None:
        self.app = app
        self.token = os.environ.get(config.auth_token_env, "").strip() or None
        self.max_body = max_body_bytes(config)
        self.api_paths = frozenset(api_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        request_id = _request_id(headers.get(b"x-request-id"))
        token = REQUEST_ID.set(request_id)
        send = _counting(_with_header(send, b"x-request-id", request_id.encode()))
        try:
            if self.token is not None and not self._authorized(headers.get(b"authorization")):
                await _json(send, 401, {"error": "missing or wrong bearer token (Authorization: Bearer ...)"},
                            extra_headers=[(b"www-authenticate", b'Bearer realm="tuneops"')])
                return
            if scope["path"] in self.api_paths and scope.get("method") == "POST":
                body = await self._read_body(headers, receive)
                if body is None:
                    await _json(send, 413, {"error": f"request body over {self.max_body} bytes; "
                                                     "send fewer or shorter texts"})
                    return
                receive = _replay(body, receive)
                send = _clear_400(send)
            await self.app(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)

    def _authorized(self, header: bytes | None) -> bool:
        if not header:
            return False
        scheme, _, credentials = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        return hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the cap."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _request_id(header: bytes | None) -> str:
    """The caller's X-Request-ID when it is a sane token (for tracing across services), else new."""
    if header:
        text = header.decode("latin-1")
        if _CLIENT_REQUEST_ID.match(text):
            return text
    return uuid.uuid4().hex


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return wrapped


def _counting(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            reason = _REASONS.get(message["status"], str(message["status"]))
            service_metrics().rejected.labels(reason=reason).inc()
        await send(message)

    return wrapped


def _clear_400(send: Send) -> Send:
    """BentoML answers a request that fails validation with ``{"error": "1 validation error for
    ClassifyRequestIODescriptor", "detail": [...]}``; put the actual problems into ``error``."""
    held: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = _clearer(b"".join(chunks))
        headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped


def _clearer(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    details = data.get("detail") if isinstance(data, dict) else None
    if not isinstance(details, list) or not details:
        return body
    problems, cleaned = [], []
    for item in details:
        if not isinstance(item, dict):
            continue
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        location = item.get("loc", [])
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
        # A message that names its own field (ours do) needs no location in front of it.
        if where and not message.startswith(str(location[0])):
            message = f"{where}: {message}"
        elif not where:
            message = f"body: {message}"
        problems.append(message)
        cleaned.append({"loc": item.get("loc", []), "msg": message, "type": item.get("type")})
    return json.dumps({"error": "; ".join(problems), "detail": cleaned}).encode()


async def _json(send: Send, status: int, payload: dict, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
