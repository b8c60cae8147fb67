"""An ASGI middleware in front of the service's API: request ids, bearer-token auth, a body size
cap, readiness (``/readyz``, and a 503 for ``/classify`` while no model is served), file uploads
turned into the JSON request (image models), and 400 answers rewritten so their ``error`` says
what is wrong.

Health, readiness and metrics stay open (probes and Prometheus scrapers carry no token), and so
does the API's description (``/``, ``/docs.json`` and its assets: serving/openapi.py); every
other path needs ``Authorization: Bearer <token>`` when the variable named by
``serving.auth_token_env`` holds a token. The token is read when the server builds its app, in
the serving process, never at import.

A request the guard answers itself (401, 413, 415, 503) has its body read and thrown away first,
up to a bound (``drain_limit``): a client that sends its whole body before it reads (Python's
``urllib``, most simple clients) would otherwise get a broken pipe or a reset instead of the answer,
because the server closes a connection whose request it did not read to the end. Reading keeps
nothing; past the bound the answer is sent at once and the connection closes.

The guard knows the served task only by name, for two things that depend on what an input is:
the body cap (texts or base64 images) and whether a ``multipart/form-data`` upload is accepted.
An upload to an image model is parsed here (serving/multipart.py) and handed on as the JSON body
``{"images": [<base64 of each file>]}`` with its Content-Type and Content-Length replaced, so the
service validates one request format; to a text model it is a 415.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import uuid
from typing import Any, Awaitable, Callable

from tuneops.components.config import IMAGE_TASK, TEXT_TASK, ServingConfig
from tuneops.components.request_context import REQUEST_ID
from tuneops.serving.metrics import real_path, service_metrics
from tuneops.serving.multipart import UploadProblem, file_parts, is_multipart, upload_to_json
from tuneops.serving.openapi import DOCS_PAGE
from tuneops.serving.schemas import Readiness

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READY_PATH = "/readyz"
# /readyz's reason before the worker's service instance exists (any other reason is a model that did not load).
STARTING = "the service is starting"
OPEN_PATHS = frozenset({"/healthz", "/livez", READY_PATH, "/metrics"})
# The API's description (BentoML's index page with Swagger UI, the OpenAPI spec, their assets):
# open too, so a person or a client generator can read how to call the service without a token.
DOCS_PATHS, DOCS_PREFIX = frozenset({"/", "/docs.json"}), "/static_content/"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REASONS = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            413: "too_large", 415: "unsupported_media_type"}
# One 400 answer names at most this many problems (a request of 64 bad images would otherwise
# get an error line of 64 reasons), each cut to a readable length.
_MAX_PROBLEMS, _MAX_PROBLEM_CHARS = 5, 300
_JSON_ONLY = b"application/json"


# The default ceiling of a request body, whatever the per-input limits add up to.
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
# How much of a refused body is read and thrown away before the answer: a few times the cap
# covers a client that is a little over (the common case: one text too many), at most 64 MiB
# beyond it, so an image service's 64 MiB cap does not mean reading a quarter gigabyte.
DRAIN_FACTOR, DRAIN_CEILING_BYTES = 4, 64 * 2**20


def max_body_bytes(config: ServingConfig, task: str = TEXT_TASK) -> int:
    """The largest request body worth reading, plus room for the envelope.

    ``serving.max_request_bytes`` sets it; unset, it is what ``max_items`` inputs at their limits
    need, at most 64 MiB.
    Text: every text at its maximum length, each character JSON-escaped (``\\uXXXX``, 6 bytes).
    Images: every image at ``max_image_bytes``, base64-encoded (4 characters per 3 bytes), with
    its quotes and separator; a multipart upload of the same images is smaller (raw bytes plus a
    few hundred bytes of part headers each), so the one cap covers both.
    """
    if config.max_request_bytes is not None:
        return config.max_request_bytes
    if task == IMAGE_TASK:
        needed = config.max_items * (4 * -(-config.max_image_bytes // 3) + 8) + 4096
    else:
        needed = config.max_items * (config.max_text_chars * 6 + 8) + 4096
    # A request is held in memory while it is read: 64 images of 10 MB would be 853 MB.
    return min(needed, DEFAULT_MAX_REQUEST_BYTES)


def drain_limit(max_body: int) -> int:
    """The most of a refused request body that is read (and discarded) before answering."""
    return min(DRAIN_FACTOR * max_body, max_body + DRAIN_CEILING_BYTES)


class RequestGuard:
    """Pure ASGI middleware (no extra task per request, streaming untouched).

    ``readiness`` says whether the process serves a model (None: not known yet); without it, as
    in a test of the guard alone, readiness is left to the app behind.
    """

    def __init__(self, app: Callable, config: ServingConfig, task: str = TEXT_TASK,
                 api_paths: tuple[str, ...] = ("/classify",),
                 readiness: Callable[[], Readiness | None] | None = None) -> None:
        self.app = app
        self.token = os.environ.get(config.auth_token_env, "").strip() or None
        self.task = task
        self.images = task == IMAGE_TASK
        self.max_body = max_body_bytes(config, task)
        self.drain_limit = drain_limit(self.max_body)
        self.max_files, self.max_file_bytes = config.max_items, config.max_image_bytes
        self.api_paths = frozenset(api_paths)
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = real_path(scope)  # the metrics saw a bounded label; routing needs the real path
        if scope["type"] == "http" and scope["path"] == READY_PATH and self.readiness is not None:
            await _ready_answer(send, self.readiness())
            return
        if scope["type"] == "http" and scope["path"] == "/" and scope.get("method") in ("GET", "HEAD"):
            await _html(send, DOCS_PAGE)
            return
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or _is_docs(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        request_id = _request_id(headers.get(b"x-request-id"))
        token = REQUEST_ID.set(request_id)
        send = _counting(_with_header(send, b"x-request-id", request_id.encode()))
        try:
            if self.token is not None and not self._authorized(headers.get(b"authorization")):
                await self._drain(headers, receive)
                await _json(send, 401, {"error": "missing or wrong bearer token (Authorization: Bearer ...)"},
                            extra_headers=[(b"www-authenticate", b'Bearer realm="tuneops"')])
                return
            if scope["path"] in self.api_paths and scope.get("method") == "POST":
                content_type = headers.get(b"content-type")
                upload = is_multipart(content_type)
                if upload and not self.images:
                    await self._drain(headers, receive)
                    await _json(send, 415, {"error": f"multipart uploads are for image models; this service answers "
                                                     f"{self.task} requests: send JSON"})
                    return
                body = await self._read_body(headers, receive)
                if body is None:
                    fewer = "send fewer or smaller images" if self.images else "send fewer or shorter texts"
                    await _json(send, 413, {"error": f"request body over {self.max_body} bytes; {fewer}"})
                    return
                state = self.readiness() if self.readiness is not None else None
                if self.readiness is not None and (state is None or not state.ready):
                    service_metrics().rejected.labels(reason="not_ready").inc()
                    await _json(send, 503, {"error": f"not ready: {_why_not_ready(state)}"})
                    return
                if upload:
                    try:
                        files = file_parts(body, content_type, self.max_files, self.max_file_bytes)
                    except UploadProblem as problem:
                        await _json(send, problem.status, {"error": str(problem)})
                        return
                    body = upload_to_json(files)
                    scope = _with_json_body(scope, len(body))
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
        """The whole body, or None as soon as it is known to be over the cap (then the rest of
        it is drained, up to the drain limit)."""
        declared = _declared_length(headers)
        if declared is not None and declared > self.max_body:
            await self._drain(headers, receive)
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                if message.get("more_body", False):
                    await self._drain(headers, receive, size)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _drain(self, headers: dict[bytes, bytes], receive: Receive, received: int = 0) -> None:
        """Read and discard what is left of the request body, up to ``drain_limit`` bytes in all.

        Nothing to read when the request has no body, or when the client sent
        ``Expect: 100-continue``: it waits for the answer before sending the body. A body declared
        over the limit is not read at all.
        """
        declared = _declared_length(headers)
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if (not declared and not chunked) or headers.get(b"expect", b"").lower() == b"100-continue":
            return
        if declared is not None and declared > self.drain_limit:
            return
        while received <= self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _declared_length(headers: dict[bytes, bytes]) -> int | None:
    declared = headers.get(b"content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


def _why_not_ready(state: Readiness | None) -> str:
    if state is None:
        return STARTING
    return state.reason or "no model is loaded"


async def _ready_answer(send: Send, state: Readiness | None) -> None:
    """``/readyz``: 200 with the served model (and why it is not the champion, if it is not),
    or 503 with why nothing is served."""
    if state is None or not state.ready:
        await _json(send, 503, {"ready": False, "error": _why_not_ready(state)})
        return
    payload: dict[str, Any] = {"ready": True, "model_tag": state.model_tag}
    if state.reason:
        payload["warning"] = state.reason
    await _json(send, 200, payload)


def _is_docs(path: str) -> bool:
    return path in DOCS_PATHS or path.startswith(DOCS_PREFIX)


def _request_id(header: bytes | None) -> str:
    """The caller's X-Request-ID when it is a sane token (for tracing across services), else new."""
    if header:
        text = header.decode("latin-1")
        if _CLIENT_REQUEST_ID.match(text):
            return text
    return uuid.uuid4().hex


def _with_json_body(scope: Scope, length: int) -> Scope:
    """A copy of ``scope`` whose headers describe a JSON body of ``length`` bytes (the rewritten upload)."""
    kept = [(name, value) for name, value in scope.get("headers", [])
            if name.lower() not in (b"content-type", b"content-length", b"content-encoding", b"transfer-encoding")]
    return {**scope, "headers": [*kept, (b"content-type", _JSON_ONLY), (b"content-length", str(length).encode())]}


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
        # One line, of a readable length: a message may quote an input (an image is megabytes).
        message = _shortened(" ".join(str(item.get("msg", "")).split()).removeprefix("Value error, "))
        location = item.get("loc", [])
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
        # A message that names its own field (ours do) needs no location in front of it.
        if where and not message.startswith(str(location[0])):
            message = f"{where}: {message}"
        elif not where:
            message = f"body: {message}"
        problems.append(message)
        # loc, msg and type only, never an "input": for an image that would echo megabytes of base64.
        cleaned.append({"loc": item.get("loc", []), "msg": message, "type": item.get("type")})
    shown = problems[:_MAX_PROBLEMS]
    if len(problems) > len(shown):
        shown.append(f"and {len(problems) - len(shown)} more")
    return json.dumps({"error": "; ".join(shown), "detail": cleaned}).encode()


def _shortened(message: str) -> str:
    if len(message) <= _MAX_PROBLEM_CHARS:
        return message
    return message[: _MAX_PROBLEM_CHARS - 3].rstrip() + "..."


async def _html(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send: Send, status: int, payload: dict, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
